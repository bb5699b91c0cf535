"""The proxy's nginx.conf, rendered from the endpoints' state (a pure function)."""

from __future__ import annotations

from pathlib import Path

from mlrig.core.deploy.state import Endpoint

# one JSON object per request (escape=json): a retried request names every backend it tried,
# comma-separated in upstream_addr/_status/_response_time (`traffic.attempts` splits them)
LOG_FORMAT = (
    '    log_format mlrig_ep escape=json \'{"msec":$msec,"status":$status,\'\n'
    '        \'"request_time":$request_time,"method":"$request_method","uri":"$uri",\'\n'
    '        \'"upstream_addr":"$upstream_addr","upstream_status":"$upstream_status",\'\n'
    '        \'"upstream_response_time":"$upstream_response_time",\'\n'
    '        \'"request_id":"$request_id"}\';\n'
)


def render(
    port: int,
    endpoints: list[Endpoint],
    folder: Path,
    run: Path,
    log: Path,
    user: str | None = None,
    access_logs: Path | None = None,
) -> str:
    """One server on 127.0.0.1:port; per endpoint an upstream weighted by its traffic split
    and /endpoints/NAME/{invocations,ping}; invocations keyed (auth_basic, hashes only)
    unless the endpoint is public. The key is checked by nginx: the model never sees a
    request without one, nor the Authorization header of one with it. `user`: the workers'
    user when the master runs as root (else nginx's default, nobody, could not read the
    stack's private files); like the stack's other services, they run as its owner.
    `access_logs`: a folder where each endpoint's requests are logged as JSON lines (which
    backend answered, its status and time: what canary limits and `deploy logs` read)."""
    upstreams, locations = [], []
    for ep in sorted(endpoints, key=lambda e: e.name):
        serving = [b for b in ep.backends if b.weight > 0]
        if not serving:
            continue
        servers = "".join(
            f"        server 127.0.0.1:{b.port} weight={b.weight} max_fails=0;\n" for b in serving
        )
        upstreams.append(f"    upstream ep_{ep.name} {{\n{servers}        keepalive 16;\n    }}\n")
        # which version answered: X-Model-Version, from the server nginx picked
        versions = "".join(f'        "127.0.0.1:{b.port}" "{b.version}";\n' for b in serving)
        upstreams.append(
            f"    map $upstream_addr $ep_{ep.name.replace('-', '_')}_version {{\n"
            f'        default "";\n{versions}    }}\n'
        )
        auth = (
            ""
            if ep.public
            else (
                f'            auth_basic "mlrig endpoint {ep.name}";\n'
                f"            auth_basic_user_file {folder / ep.name / 'htpasswd'};\n"
            )
        )
        logged = (
            f"            access_log {access_logs / (ep.name + '.log')} mlrig_ep"
            " buffer=32k flush=1s;\n"
            if access_logs is not None
            else ""
        )
        for path in ("invocations", "ping"):
            keyed = auth if path == "invocations" else ""
            locations.append(
                f"        location = /endpoints/{ep.name}/{path} {{\n{keyed}{logged}"
                f"            proxy_pass http://ep_{ep.name}/{path};\n"
                "            proxy_http_version 1.1;\n"
                '            proxy_set_header Connection "";\n'
                '            proxy_set_header Authorization "";\n'
                f"            add_header X-Model-Version $ep_{ep.name.replace('-', '_')}_version;\n"
                "            proxy_next_upstream error timeout http_502 http_503;\n"
                "        }\n"
            )
    temp = "".join(
        f"    {kind}_temp_path {run / ('nginx-' + kind)};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        "# written by mlrig deploy: edits are overwritten\n"
        "daemon off;\n" + (f"user {user};\n" if user else "") + "worker_processes 1;\n"
        f"pid {run / 'nginx.master.pid'};\n"
        f"error_log {log} warn;\n"
        "events { worker_connections 1024; }\n"
        "http {\n"
        "    access_log off;\n"
        f"{LOG_FORMAT}"
        "    server_tokens off;\n"
        # No keep-alive towards clients: a reload's old worker closes its idle keep-alive
        # connections at once, and a client sending on one just then gets a reset or an
        # empty answer (reproduced: 1-5 failed POSTs per 40 reloads at 100 req/s, none
        # with this; tests/integration/test_proxy_reload.py). Each request costs a
        # loopback connect instead (+0.4-0.5 ms p50, docs/concepts/endpoints.md).
        "    keepalive_timeout 0;\n"
        "    client_max_body_size 64m;\n"
        f"{temp}"
        f"{''.join(upstreams)}"
        "    server {\n"
        f"        listen 127.0.0.1:{port};\n"
        f"{''.join(locations)}"
        "        location / { return 404; }\n"
        "    }\n"
        "}\n"
    )
