"""berth's stand-in application: one image plays every app of every blueprint, driven by env.

Serve mode (env STANDIN_PORTS="8000,9000" or PORT; one HTTP server thread per port):
  GET  /health, GET $HEALTH_PATH   200 {"status":"ok"} if every dependency is reachable, else 503
  GET  /deps                       200 {name: {"ok": bool, "detail": str}}
  GET  /pgcheck?url=<postgres url> 200 {"ok": bool, "detail": str}
  GET  /events, */events, */sse*, */stream*, */progress*
                                   text/event-stream: "data: 1" .. "data: 5", 0.5 s apart
  GET  /static/<file>              small fixed body; text/css, application/javascript, text/plain
  POST /data/<name>                store the body as <name> in every data dir
  GET  /data/<name>                that file from the first data dir (404 if missing)
  anything else (GET/POST/PUT/PATCH/DELETE)
                                   200 {"app", "host", "port", "path", "query", "method",
                                        "headers", "body_length"}
Job mode (neither STANDIN_PORTS nor PORT set, or STANDIN_MODE=job): check the dependencies (retrying
for up to 30 s), record a row in berth_standin_migrations on the first postgres dependency, exit 0,
or 1 if a dependency failed; STANDIN_JOB_EXIT=<n> overrides the exit code.

Dependencies are every postgres(ql)://, redis:// and amqp:// URL found in any environment variable
value (named after the variable), plus S3_ENDPOINT (a TCP check). Each check really authenticates,
with the stdlib only: PostgreSQL v3 protocol (SCRAM-SHA-256, md5, cleartext) + SELECT 1; Redis
AUTH + PING; AMQP 0-9-1 handshake up to Connection.Open-Ok on the URL's vhost.
Data dirs: env DATA_DIRS (comma list), else the container's non-tmpfs mount points.
Command-line arguments are ignored. SIGTERM stops accepting, drains requests (10 s), exits 0.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import os
import re
import secrets
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

CHECK_TIMEOUT = 2.0  # seconds per dependency check
HEALTH_CACHE = 1.0  # seconds a dependency result may be reused by /health
DRAIN_TIMEOUT = 10.0  # seconds in-flight requests get after SIGTERM
JOB_RETRY_FOR = 30.0  # seconds job mode retries failing dependencies

URL_RE = re.compile(r"\b(?:postgres(?:ql)?(?:\+\w+)?|redis|amqp)://[^\s\"'<>,;]+")


class CheckFailed(Exception):
    pass


def log(*parts: object) -> None:
    print("standin:", *parts, flush=True)


# --------------------------------------------------------------------------- wire helpers


class Wire:
    """A TCP connection whose every read and write shares one deadline."""

    def __init__(self, host: str, port: int, timeout: float = CHECK_TIMEOUT):
        self.deadline = time.monotonic() + timeout
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise CheckFailed(f"cannot connect to {host}:{port}: {exc}") from None

    def _arm(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise CheckFailed("timed out")
        self.sock.settimeout(left)

    def send(self, data: bytes) -> None:
        self._arm()
        self.sock.sendall(data)

    def recv_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            self._arm()
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise CheckFailed("connection closed by server")
            buf += chunk
        return buf

    def recv_line(self) -> bytes:
        buf = b""
        while not buf.endswith(b"\r\n"):
            buf += self.recv_exact(1)
        return buf[:-2]

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _userinfo(url: urllib.parse.SplitResult) -> tuple[str, str | None]:
    user = urllib.parse.unquote(url.username) if url.username else ""
    password = urllib.parse.unquote(url.password) if url.password is not None else None
    return user, password


def _run_check(fn, url: str) -> tuple[bool, str]:
    try:
        return True, fn(url)
    except CheckFailed as exc:
        return False, str(exc)
    except (OSError, ValueError, struct.error) as exc:
        return False, f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------- PostgreSQL


class Postgres:
    """Just enough of the PostgreSQL v3 frontend protocol: startup, auth, simple query."""

    def __init__(self, url: str, timeout: float = CHECK_TIMEOUT):
        parts = urllib.parse.urlsplit(url)
        self.user, self.password = _userinfo(parts)
        self.user = self.user or "postgres"
        self.database = urllib.parse.unquote(parts.path.lstrip("/")) or self.user
        self.wire = Wire(parts.hostname or "localhost", parts.port or 5432, timeout)
        try:
            self._startup()
        except BaseException:
            self.wire.close()
            raise

    def _send(self, kind: bytes, payload: bytes) -> None:
        self.wire.send(kind + struct.pack("!I", len(payload) + 4) + payload)

    def _recv(self) -> tuple[bytes, bytes]:
        kind = self.wire.recv_exact(1)
        (length,) = struct.unpack("!I", self.wire.recv_exact(4))
        return kind, self.wire.recv_exact(length - 4)

    def _recv_ok(self) -> tuple[bytes, bytes]:
        """The next message; an ErrorResponse raises CheckFailed with the server's message."""
        kind, body = self._recv()
        if kind == b"E":
            raise CheckFailed(self._error_text(body))
        return kind, body

    def _recv_auth(self, expected: int) -> bytes:
        kind, body = self._recv_ok()
        if kind != b"R" or struct.unpack("!I", body[:4])[0] != expected:
            raise CheckFailed(f"expected authentication message {expected}, got {kind!r}")
        return body[4:]

    @staticmethod
    def _error_text(body: bytes) -> str:
        fields = {f[:1]: f[1:].decode(errors="replace") for f in body.split(b"\0") if f}
        return f"{fields.get(b'S', 'ERROR')}: {fields.get(b'M', '?')}"

    def _need_password(self) -> bytes:
        if self.password is None:
            raise CheckFailed("server asks for a password and the URL has none")
        return self.password.encode()

    def _startup(self) -> None:
        params = {"user": self.user, "database": self.database, "application_name": "berth-standin"}
        body = (
            struct.pack("!I", 196608)
            + b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in params.items())
            + b"\0"
        )
        self.wire.send(struct.pack("!I", len(body) + 4) + body)
        while True:
            kind, body = self._recv_ok()
            if kind == b"R":
                self._authenticate(body)
            elif kind == b"Z":
                return
            # ParameterStatus, BackendKeyData and notices need no answer

    def _authenticate(self, body: bytes) -> None:
        (code,) = struct.unpack("!I", body[:4])
        if code == 0:  # AuthenticationOk
            return
        if code == 3:  # cleartext
            self._send(b"p", self._need_password() + b"\0")
        elif code == 5:  # md5
            inner = hashlib.md5(self._need_password() + self.user.encode()).hexdigest()
            digest = hashlib.md5(inner.encode() + body[4:8]).hexdigest()
            self._send(b"p", b"md5" + digest.encode() + b"\0")
        elif code == 10:  # SASL
            mechanisms = body[4:].split(b"\0")
            if b"SCRAM-SHA-256" not in mechanisms:
                raise CheckFailed(f"no supported SASL mechanism in {mechanisms}")
            self._scram_sha_256()
        else:
            raise CheckFailed(f"unsupported authentication request {code}")

    def _scram_sha_256(self) -> None:
        password = self._need_password()
        nonce = base64.b64encode(secrets.token_bytes(18)).decode()
        client_first = f"n=,r={nonce}"
        first = ("n,," + client_first).encode()
        self._send(b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", len(first)) + first)

        server_first = self._recv_auth(11).decode()  # AuthenticationSASLContinue
        attrs = dict(item.split("=", 1) for item in server_first.split(","))
        if not attrs["r"].startswith(nonce):
            raise CheckFailed("SCRAM nonce mismatch")
        salted = hashlib.pbkdf2_hmac("sha256", password, base64.b64decode(attrs["s"]), int(attrs["i"]))
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        final_bare = f"c=biws,r={attrs['r']}"
        auth_message = f"{client_first},{server_first},{final_bare}".encode()
        signature = hmac.digest(hashlib.sha256(client_key).digest(), auth_message, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        self._send(b"p", f"{final_bare},p={base64.b64encode(proof).decode()}".encode())

        server_final = self._recv_auth(12).decode()  # AuthenticationSASLFinal
        server_key = hmac.digest(salted, b"Server Key", "sha256")
        expected = base64.b64encode(hmac.digest(server_key, auth_message, "sha256")).decode()
        if server_final != f"v={expected}":
            raise CheckFailed("SCRAM server signature mismatch")

    def query(self, sql: str) -> list[str]:
        """Run sql (simple query protocol); return the command tags."""
        self._send(b"Q", sql.encode() + b"\0")
        tags, error = [], None
        while True:
            kind, body = self._recv()
            if kind == b"E":  # the query failed; ReadyForQuery still follows
                error = error or self._error_text(body)
            elif kind == b"C":
                tags.append(body.rstrip(b"\0").decode())
            elif kind == b"Z":
                if error is not None:
                    raise CheckFailed(error)
                return tags

    def close(self) -> None:
        try:
            self._send(b"X", b"")
        except (OSError, CheckFailed):
            pass
        self.wire.close()


def check_postgres(url: str) -> str:
    pg = Postgres(url)
    try:
        pg.query("SELECT 1")
    finally:
        pg.close()
    return f"SELECT 1 as {pg.user} on {pg.database}"


# --------------------------------------------------------------------------- Redis


def check_redis(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    user, password = _userinfo(parts)
    db = parts.path.lstrip("/")

    def command(wire: Wire, *args: str) -> str:
        wire.send(
            f"*{len(args)}\r\n".encode()
            + b"".join(f"${len(a.encode())}\r\n".encode() + a.encode() + b"\r\n" for a in args)
        )
        reply = wire.recv_line().decode(errors="replace")
        if reply.startswith("-"):
            raise CheckFailed(f"{args[0]}: {reply[1:]}")
        return reply[1:]

    with Wire(parts.hostname or "localhost", parts.port or 6379) as wire:
        if password is not None:
            command(wire, "AUTH", *([user] if user else []), password)
        if db:
            command(wire, "SELECT", db)
        pong = command(wire, "PING")
        if pong != "PONG":
            raise CheckFailed(f"PING answered {pong!r}")
    return "PONG" + (" (authenticated)" if password is not None else "")


# --------------------------------------------------------------------------- AMQP 0-9-1


def _shortstr(s: str) -> bytes:
    data = s.encode()
    return struct.pack("!B", len(data)) + data


def _longstr(data: bytes) -> bytes:
    return struct.pack("!I", len(data)) + data


def _table(items: dict) -> bytes:
    out = b""
    for key, value in items.items():
        out += _shortstr(key)
        if isinstance(value, bool):
            out += b"t" + struct.pack("!B", value)
        elif isinstance(value, dict):
            out += b"F" + _table(value)
        else:
            out += b"S" + _longstr(str(value).encode())
    return _longstr(out)


class Amqp:
    """Connection-level AMQP 0-9-1 on channel 0."""

    def __init__(self, wire: Wire):
        self.wire = wire

    def send(self, class_id: int, method_id: int, args: bytes) -> None:
        payload = struct.pack("!HH", class_id, method_id) + args
        self.wire.send(struct.pack("!BHI", 1, 0, len(payload)) + payload + b"\xce")

    def recv(self) -> tuple[tuple[int, int], bytes]:
        header = self.wire.recv_exact(7)
        if header.startswith(b"AMQP"):
            raise CheckFailed("server does not speak AMQP 0-9-1")
        kind, _channel, size = struct.unpack("!BHI", header)
        payload = self.wire.recv_exact(size)
        if self.wire.recv_exact(1) != b"\xce":
            raise CheckFailed("bad AMQP frame end")
        if kind != 1:  # heartbeats and others: not expected here
            return self.recv()
        method = struct.unpack("!HH", payload[:4])
        if method == (10, 50):  # Connection.Close from the server
            code, text = struct.unpack("!H", payload[4:6])[0], payload[7 : 7 + payload[6]].decode()
            try:
                self.send(10, 51, b"")  # Close-Ok
            except (OSError, CheckFailed):
                pass
            raise CheckFailed(f"server closed the connection: {code} {text}")
        return method, payload[4:]

    def expect(self, method: tuple[int, int], what: str) -> bytes:
        got, args = self.recv()
        if got != method:
            raise CheckFailed(f"expected {what}, got method {got}")
        return args


def check_amqp(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    user, password = _userinfo(parts)
    user, password = user or "guest", "guest" if password is None else password
    vhost = urllib.parse.unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    with Wire(parts.hostname or "localhost", parts.port or 5672) as wire:
        amqp = Amqp(wire)
        wire.send(b"AMQP\x00\x00\x09\x01")
        start = amqp.expect((10, 10), "Connection.Start")
        properties_len = struct.unpack("!I", start[2:6])[0]
        mechanisms_at = 6 + properties_len
        mechanisms_len = struct.unpack("!I", start[mechanisms_at : mechanisms_at + 4])[0]
        mechanisms = start[mechanisms_at + 4 : mechanisms_at + 4 + mechanisms_len].split()
        if b"PLAIN" not in mechanisms:
            raise CheckFailed(f"server offers no PLAIN mechanism: {mechanisms}")
        client_properties = {"product": "berth-standin", "capabilities": {"authentication_failure_close": True}}
        amqp.send(
            10,
            11,
            _table(client_properties)
            + _shortstr("PLAIN")
            + _longstr(f"\0{user}\0{password}".encode())
            + _shortstr("en_US"),
        )
        tune = amqp.expect((10, 30), "Connection.Tune")
        channel_max, frame_max, _heartbeat = struct.unpack("!HIH", tune[:8])
        amqp.send(10, 31, struct.pack("!HIH", channel_max, frame_max, 0))  # no heartbeats
        amqp.send(10, 40, _shortstr(vhost) + _shortstr("") + b"\0")
        amqp.expect((10, 41), "Connection.Open-Ok")
        amqp.send(10, 50, struct.pack("!H", 200) + _shortstr("bye") + struct.pack("!HH", 0, 0))
        amqp.expect((10, 51), "Connection.Close-Ok")
    return f"opened vhost {vhost!r} as {user}"


# --------------------------------------------------------------------------- S3 (TCP only)


def check_tcp_endpoint(url: str) -> str:
    parts = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    with Wire(parts.hostname or "localhost", port):
        pass
    return f"TCP connect to {parts.hostname}:{port}"


# --------------------------------------------------------------------------- dependencies

CHECKERS = {"postgres": check_postgres, "postgresql": check_postgres, "redis": check_redis, "amqp": check_amqp}


def discover_dependencies(environ: dict[str, str]) -> dict[str, tuple]:
    """name -> (checker, url) for every dependency URL in the environment."""
    deps = {}
    for var in sorted(environ):
        urls = URL_RE.findall(environ[var])
        for i, url in enumerate(urls):
            scheme = url.split("://", 1)[0].split("+", 1)[0]
            name = var if len(urls) == 1 else f"{var}[{i}]"
            deps[name] = (CHECKERS[scheme], url)
    if environ.get("S3_ENDPOINT"):
        deps["S3_ENDPOINT"] = (check_tcp_endpoint, environ["S3_ENDPOINT"])
    return deps


class Dependencies:
    """Checks every dependency in parallel; results are cached for HEALTH_CACHE seconds."""

    def __init__(self, deps: dict[str, tuple]):
        self.deps = deps
        self._lock = threading.Lock()
        self._at = float("-inf")
        self._results: dict[str, dict] = {}

    def check(self, names=None) -> dict[str, dict]:
        names = list(self.deps if names is None else names)
        if not names:
            return {}
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            futures = {n: pool.submit(_run_check, *self.deps[n]) for n in names}
        return {n: dict(zip(("ok", "detail"), f.result(), strict=True)) for n, f in futures.items()}

    def cached(self) -> dict[str, dict]:
        with self._lock:  # one check at a time; waiting callers reuse its result
            if time.monotonic() - self._at > HEALTH_CACHE:
                self._results = self.check()
                self._at = time.monotonic()
            return self._results


# --------------------------------------------------------------------------- data dirs

PSEUDO_MOUNTS = ("/etc/hosts", "/etc/hostname", "/etc/resolv.conf")


def _unescape_mount(path: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), path)


def discover_data_dirs() -> list[str]:
    if os.environ.get("DATA_DIRS"):
        return [d.strip() for d in os.environ["DATA_DIRS"].split(",") if d.strip()]
    dirs = []
    try:
        with open("/proc/self/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return dirs
    for line in lines:
        fields, _, after = line.partition(" - ")
        mount_point = _unescape_mount(fields.split()[4])
        fstype = after.split()[0] if after else ""
        if (
            mount_point == "/"
            or fstype == "tmpfs"
            or mount_point in PSEUDO_MOUNTS
            or any(mount_point == p or mount_point.startswith(p + "/") for p in ("/proc", "/sys", "/dev"))
            or not os.path.isdir(mount_point)
            or mount_point in dirs
        ):
            continue
        dirs.append(mount_point)
    return dirs


# --------------------------------------------------------------------------- HTTP

STATIC_TYPES = {".css": "text/css", ".js": "application/javascript"}
STATIC_BODY = b"/* berth stand-in static asset */\n"
SSE_EVENTS, SSE_INTERVAL = 5, 0.5


def is_stream_path(path: str) -> bool:
    return path.endswith("/events") or any(s in path for s in ("/sse", "/stream", "/progress"))


class Handler(http.server.BaseHTTPRequestHandler):
    # HTTP/1.0 (the default): one request per connection, so a request in flight is an open
    # connection, which is what the SIGTERM drain waits for
    server_version = "berth-standin/1"
    timeout = 60

    # -- plumbing

    @property
    def app(self) -> StandIn:
        return self.server.app

    def _path(self) -> tuple[str, str]:
        path, _, query = getattr(self, "path", "").partition("?")  # unset on a bad request line
        return path, query

    def _is_health(self) -> bool:
        return self._path()[0] in self.app.health_paths

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, code: int, obj) -> None:
        self._send(code, (json.dumps(obj) + "\n").encode(), "application/json")

    def log_message(self, fmt: str, *args) -> None:
        if not self._is_health():
            sys.stdout.write(
                f"{self.address_string()} :{self.server.server_port} [{self.log_date_time_string()}] {fmt % args}\n"
            )
            sys.stdout.flush()

    # -- endpoints

    def do_GET(self) -> None:
        path, query = self._path()
        if path in self.app.health_paths:
            results = self.app.deps.cached()
            if all(r["ok"] for r in results.values()):
                self._json(200, {"status": "ok"})
            else:
                self._json(503, {"status": "unavailable", "deps": results})
        elif path == "/deps":
            self._json(200, self.app.deps.cached())
        elif path == "/pgcheck":
            url = urllib.parse.parse_qs(query).get("url", [""])[0]
            ok, detail = _run_check(check_postgres, url) if url else (False, "no url= given")
            self._json(200, {"ok": ok, "detail": detail})
        elif is_stream_path(path):
            self._stream()
        elif path.startswith("/static/"):
            ext = os.path.splitext(path)[1]
            self._send(200, STATIC_BODY, STATIC_TYPES.get(ext, "text/plain"))
        elif path.startswith("/data/"):
            self._data_get(path[len("/data/") :])
        else:
            self._echo(b"")

    def do_POST(self) -> None:
        path, _ = self._path()
        body = self._body()
        if path.startswith("/data/"):
            self._data_put(path[len("/data/") :], body)
        else:
            self._echo(body)

    def do_PUT(self) -> None:
        self._echo(self._body())

    do_PATCH = do_DELETE = do_PUT

    def _echo(self, body: bytes) -> None:
        path, query = self._path()
        self._json(
            200,
            {
                "app": os.environ.get("APP_NAME", ""),
                "host": socket.gethostname(),
                "port": self.server.server_port,
                "path": path,
                "query": query,
                "method": self.command,
                "headers": dict(self.headers.items()),
                "body_length": len(body),
            },
        )

    def _stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            for n in range(1, SSE_EVENTS + 1):
                self.wfile.write(f"data: {n}\n\n".encode())
                self.wfile.flush()
                if n < SSE_EVENTS:
                    time.sleep(SSE_INTERVAL)
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True

    def _data_file(self, name: str, directory: str) -> str | None:
        if not name or "/" in name or name in (".", ".."):
            return None
        return os.path.join(directory, name)

    def _data_get(self, name: str) -> None:
        dirs = self.app.data_dirs
        path = self._data_file(name, dirs[0]) if dirs else None
        if path is None:
            self._json(404, {"error": "no data dir" if not dirs else "bad name"})
            return
        try:
            with open(path, "rb") as f:
                content = f.read()
        except FileNotFoundError:
            self._json(404, {"error": f"{path} does not exist"})
        except OSError as exc:
            self._json(500, {"error": str(exc)})
        else:
            self._send(200, content, "application/octet-stream")

    def _data_put(self, name: str, body: bytes) -> None:
        if not self.app.data_dirs:
            self._json(500, {"error": "no data dir (set DATA_DIRS or mount a volume)"})
            return
        if self._data_file(name, "/") is None:
            self._json(400, {"error": "bad name"})
            return
        written, errors = [], {}
        for directory in self.app.data_dirs:
            path = self._data_file(name, directory)
            try:
                with open(path, "wb") as f:
                    f.write(body)
                written.append(path)
            except OSError as exc:
                errors[path] = str(exc)
        self._json(500 if errors else 200, {"written": written, "errors": errors, "bytes": len(body)})


class Server(http.server.ThreadingHTTPServer):
    """Dual-stack where possible; counts in-flight requests so SIGTERM can drain them."""

    # socketserver listens with a backlog of 5; a burst of connections to a container that has just
    # become the only target would overflow it (dropped SYNs, connect timeouts in the proxy).
    request_queue_size = 511

    def __init__(self, port: int, app: StandIn):
        self.app = app
        self.address_family = socket.AF_INET6 if socket.has_ipv6 else socket.AF_INET
        try:
            super().__init__(("::" if self.address_family == socket.AF_INET6 else "", port), Handler)
        except OSError:  # no IPv6 in this network namespace
            self.address_family = socket.AF_INET
            super().__init__(("", port), Handler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        # not HTTPServer.server_bind: its getfqdn() is a DNS lookup, slow on internal networks
        socketserver.TCPServer.server_bind(self)
        self.server_name = socket.gethostname()
        self.server_port = self.server_address[1]

    def process_request_thread(self, request, client_address) -> None:
        with self.app.inflight_cv:
            self.app.inflight += 1
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.app.inflight_cv:
                self.app.inflight -= 1
                self.app.inflight_cv.notify_all()


# --------------------------------------------------------------------------- modes


class StandIn:
    def __init__(self, environ: dict[str, str]):
        self.environ = environ
        self.deps = Dependencies(discover_dependencies(environ))
        self.health_paths = {"/health", environ.get("HEALTH_PATH") or "/health"}
        self.data_dirs = discover_data_dirs()
        self.inflight = 0
        self.inflight_cv = threading.Condition()

    def ports(self) -> list[int]:
        raw = self.environ.get("STANDIN_PORTS") or self.environ.get("PORT") or ""
        return [int(p) for p in raw.split(",") if p.strip()]

    def serve(self, ports: list[int]) -> int:
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        servers = [Server(port, self) for port in ports]
        for server in servers:
            threading.Thread(target=server.serve_forever, daemon=True).start()
        log(
            f"app={self.environ.get('APP_NAME', '')!r} ports={ports} "
            f"deps={sorted(self.deps.deps)} data_dirs={self.data_dirs}"
        )
        while not stop.wait(3600):
            pass
        log("SIGTERM: no longer accepting, draining in-flight requests")
        for server in servers:
            server.shutdown()
            server.server_close()
        deadline = time.monotonic() + DRAIN_TIMEOUT
        with self.inflight_cv:
            while self.inflight and self.inflight_cv.wait(max(0.0, deadline - time.monotonic())):
                pass
            left = self.inflight
        log(f"stopped ({left} request(s) cut off)" if left else "stopped cleanly")
        return 0

    def job(self) -> int:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        deadline = time.monotonic() + JOB_RETRY_FOR
        results = self.deps.check()
        while not all(r["ok"] for r in results.values()) and time.monotonic() < deadline:
            time.sleep(1)
            failing = [n for n, r in results.items() if not r["ok"]]
            results.update(self.deps.check(failing))
        failed = {n: r["detail"] for n, r in results.items() if not r["ok"]}
        if failed:
            log("job: dependency check FAILED:", json.dumps(failed))
        else:
            log(f"job: dependencies ok: {', '.join(results) or '(none)'}")
            pg = next((url for check, url in self.deps.deps.values() if check is check_postgres), None)
            if pg is not None:
                ok, detail = _run_check(migrate, pg)
                log(f"job: migration {'ok' if ok else 'FAILED'}: {detail}")
                if not ok:
                    failed["migration"] = detail
        code = 1 if failed else 0
        if self.environ.get("STANDIN_JOB_EXIT"):
            code = int(self.environ["STANDIN_JOB_EXIT"])
        log(f"job: exit {code}")
        return code


def migrate(url: str) -> str:
    pg = Postgres(url, timeout=10)
    try:
        pg.query(
            "CREATE TABLE IF NOT EXISTS berth_standin_migrations"
            "(id serial PRIMARY KEY, at timestamptz DEFAULT now());"
            "INSERT INTO berth_standin_migrations DEFAULT VALUES"
        )
    finally:
        pg.close()
    return f"row added to berth_standin_migrations in {pg.database}"


def main() -> int:
    app = StandIn(dict(os.environ))
    ports = app.ports()
    if ports and os.environ.get("STANDIN_MODE") != "job":
        return app.serve(ports)
    return app.job()


if __name__ == "__main__":
    sys.exit(main())
