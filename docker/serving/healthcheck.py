"""Container HEALTHCHECK: GET /ping on the server's port; exit 0 only on HTTP 200."""

import os
import sys
import urllib.request

url = f"http://127.0.0.1:{os.environ.get('PORT', '8080')}/ping"
try:
    with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback only
        sys.exit(0 if resp.status == 200 else 1)
except Exception:  # noqa: BLE001 - any failure is "unhealthy"
    sys.exit(1)
