"""HTTP behind one door (requests): health probes and small JSON calls to services mlrig runs.

Core code never imports `requests`; connection errors are OSError subclasses, so
`mlrig.wait.wait_until` retries them as "not up yet".
"""

from __future__ import annotations
