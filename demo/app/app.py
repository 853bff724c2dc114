"""berth's demo app: one page that proves the stack works end to end.

GET /        an HTML page: the PostgreSQL server's version and this page's visits stored there, the
             Redis server's version and a counter kept there. Each visit writes to both.
GET /health  200 {"postgres": "ok", "redis": "ok"} when both answer, else 503 with the error.
Env: DATABASE_URL (postgresql://...), REDIS_URL (redis://...), PORT (8000).
"""

from __future__ import annotations

import html
import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg2
import redis

DATABASE_URL = os.environ["DATABASE_URL"]
REDIS_URL = os.environ["REDIS_URL"]
PORT = int(os.environ.get("PORT", "8000"))
TIMEOUT = 3  # seconds for each dependency


def postgres(visit: bool) -> dict[str, object]:
    """The server's version, and the visits recorded in the demo's table (one more if visit)."""
    with psycopg2.connect(DATABASE_URL, connect_timeout=TIMEOUT) as conn, conn.cursor() as cur:
        cur.execute("SELECT current_setting('server_version'), current_database(), current_user")
        version, database, user = cur.fetchone()
        cur.execute("CREATE TABLE IF NOT EXISTS visits (at timestamptz NOT NULL DEFAULT now())")
        if visit:
            cur.execute("INSERT INTO visits DEFAULT VALUES")
        cur.execute("SELECT count(*) FROM visits")
        (visits,) = cur.fetchone()
    return {"version": version, "database": database, "user": user, "visits": visits}


def cache(visit: bool) -> dict[str, object]:
    """The server's version, and the page-view counter kept in Redis (one more if visit)."""
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT)
    try:
        views = client.incr("berth-demo:views") if visit else int(client.get("berth-demo:views") or 0)
        return {"version": client.info("server")["redis_version"], "views": views}
    finally:
        client.close()


def check(probe, visit: bool) -> dict[str, object]:
    """What probe found, with ok: True, or ok: False and the error."""
    try:
        return {"ok": True, **probe(visit)}
    except Exception as error:  # noqa: BLE001 - any failure is what the page shows
        return {"ok": False, "error": f"{type(error).__name__}: {error}".strip()}


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>berth demo</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:40em;margin:3em auto;padding:0 1em}}
.ok{{color:#176f2c}}.bad{{color:#b00020}}code{{background:#f3f3f3;padding:0 .2em}}</style></head>
<body><h1>berth demo</h1>
<p>This page is served by the demo app behind berth's nginx proxy (TLS), on the stack's edge network.
It reached its services on the internal data network:</p>
<ul>
<li class="{pg_class}"><b>PostgreSQL</b>: {pg}</li>
<li class="{redis_class}"><b>Redis</b>: {cache}</li>
</ul>
<p>Reload the page: both counters go up. They live on the stack's data volumes, so they survive
every <code>pulumi up</code>.</p>
</body></html>
"""


def page() -> str:
    """The demo page, after one visit written to each service."""
    pg, rd = check(postgres, True), check(cache, True)
    pg_text = (f"connected to PostgreSQL {pg['version']} as {pg['user']} on database {pg['database']}; "
               f"{pg['visits']} visits recorded" if pg["ok"] else f"not reachable ({pg['error']})")
    rd_text = (f"connected to Redis {rd['version']}; {rd['views']} page views counted" if rd["ok"]
               else f"not reachable ({rd['error']})")
    return PAGE.format(pg=html.escape(pg_text), cache=html.escape(rd_text),
                       pg_class="ok" if pg["ok"] else "bad", redis_class="ok" if rd["ok"] else "bad")


class Handler(BaseHTTPRequestHandler):
    """GET / (the page) and /health (both services answer)."""

    server_version = "berth-demo"

    def do_GET(self) -> None:  # noqa: N802 - http.server's method name
        """Answer the page, the health report, or 404."""
        if self.path == "/health":
            result = {"postgres": check(postgres, False), "redis": check(cache, False)}
            healthy = all(item["ok"] for item in result.values())
            self.reply(200 if healthy else 503, "application/json", json.dumps(result))
        elif self.path in ("/", "/index.html"):
            self.reply(200, "text/html; charset=utf-8", page())
        else:
            self.reply(404, "text/plain", "not found\n")

    def reply(self, status: int, content_type: str, body: str) -> None:
        """Send a whole response, never cached."""
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
        """Log requests to stderr, health checks left out."""
        if not self.path.startswith("/health"):
            sys.stderr.write("demo: " + format % args + "\n")


def main() -> None:
    """Serve on PORT until SIGTERM."""
    server = ThreadingHTTPServer(("0.0.0.0", PORT), Handler)
    # docker stop sends SIGTERM: finish the requests in flight, then exit 0
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"demo: listening on :{PORT}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
