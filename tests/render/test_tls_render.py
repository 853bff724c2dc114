"""The proxy's TLS in every mode, in Debian's real nginx; nginx-tls.sh and acme.py run for real.

- ``nginx -t`` accepts the rendered config in each tls.mode, and in letsencrypt mode for every
  blueprint (key and chain in one file, the HTTP-01 webroot on port 80);
- nginx-tls.sh, under dash and under busybox's sh and applets (as in the official Alpine image),
  starts nginx on the temporary certificate, swaps in a new one with a reload (no failed request on
  the way), and keeps serving the old one when nginx refuses the new;
- acme.py's deploy hook and healthcheck on real certificate files made with cryptography, and its
  decisions (order, renew, drop a name when due, change the key type) with a recording certbot.
"""

from __future__ import annotations

import datetime
import functools
import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dnsstub  # tests/render is on sys.path (pytest puts a conftest's directory there)
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from servers import free_ports, tool

from berth.plan.acme import TEMPORARY_PEM, certbot_script, watcher_env, watcher_script
from berth.plan.nginx import TLS_CERT, TLS_COMBINED, TLS_KEY, render_nginx_conf
from berth.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
BLUEPRINTS = sorted(path.stem for path in (ROOT / "blueprints").glob("*.yaml"))
NAMES = ["example.test", "www.example.test"]
NOW = datetime.datetime.now(datetime.UTC)

def cert_and_key(names: list[str] = NAMES, days: int = 90, age: int = 1) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(NOW - datetime.timedelta(days=age))
            .not_valid_after(NOW + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode())

# dev: rendering does not depend on the environment, and prod's guardrails (protect_data, TLS off) are
# settings rules proven in tests/settings.
def settings_for(tls: dict, redirect: bool = True, app_port: int = 3000):
    return load_settings({
        "environment": "dev", "domain": "example.test", "apps": {"web": {"image": "x/web:1", "port": app_port}},
        "proxy": {"tls": tls, "http_redirect": redirect, "sites": [
            {"server_names": ["{domain}", "www.{domain}"], "routes": [{"path": "/", "app": "web"}]}]}})

ACME = {"mode": "letsencrypt", "acme": {"email": "ops@example.test"}}
CERT, KEY = cert_and_key()
MODES = {
    "self-signed": ({"mode": "self-signed"}, True),
    "provided": ({"mode": "provided", "certificate": CERT, "key": KEY}, True),
    "letsencrypt": (ACME, True),
    "letsencrypt-no-redirect": (ACME, False),
    "none": ({"mode": "none"}, False),
}

def tls_files(directory: Path) -> None:
    """What the proxy finds in its tls_dir in any mode: cert.pem + key.pem, and tls.pem (key + chain)."""
    (directory / TLS_CERT).write_text(CERT)
    (directory / TLS_KEY).write_text(KEY)
    (directory / TLS_COMBINED).write_text(KEY + CERT)

def nginx_t(conf_text: str, tmp_path: Path) -> str:
    conf = tmp_path / "nginx.conf"
    conf.write_text(conf_text)
    result = subprocess.run([tool("nginx"), "-t", "-p", str(tmp_path), "-c", str(conf)],
                            capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "test is successful" in output, output
    assert "[warn]" not in output and "[emerg]" not in output, output
    return output

@pytest.mark.parametrize("mode", MODES)
def test_nginx_accepts_every_tls_mode(mode: str, tmp_path: Path) -> None:
    tls, redirect = MODES[mode]
    tls_files(tmp_path)
    settings = settings_for(tls, redirect)
    text = render_nginx_conf(settings, tls_dir=str(tmp_path), pid=str(tmp_path / "nginx.pid"), temp_dir=str(tmp_path))
    nginx_t(text, tmp_path)
    if mode.startswith("letsencrypt"):
        assert f"ssl_certificate {tmp_path}/{TLS_COMBINED};" in text
        assert f"ssl_certificate_key {tmp_path}/{TLS_COMBINED};" in text
        # Port 80 serves the webroot: in the redirect server, or (no redirect) in the site's own server.
        assert text.count("/.well-known/acme-challenge/") == 1
        assert ("location ^~ /.well-known/acme-challenge/" in text) is not redirect

@pytest.mark.parametrize("blueprint", BLUEPRINTS)
def test_nginx_accepts_every_blueprint_in_letsencrypt_mode(blueprint: str, tmp_path: Path) -> None:
    tls_files(tmp_path)
    settings = load_settings({"environment": "dev", "domain": "example.com", "blueprint": blueprint,
                              "proxy": {"tls": ACME}})
    nginx_t(render_nginx_conf(settings, tls_dir=str(tmp_path), pid=str(tmp_path / "nginx.pid"),
                              temp_dir=str(tmp_path)), tmp_path)

# -- nginx-tls.sh ---------------------------------------------------------------------------------

def served_serial(port: int) -> int:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock, \
            context.wrap_socket(sock, server_hostname=NAMES[0]) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number

def serial_of(pem: str) -> int:
    return x509.load_pem_x509_certificate(pem.encode()).serial_number

def publish(path: Path, text: str) -> None:
    """As acme.py's deploy hook does: write aside, then one rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)

class Watched:
    def __init__(self, proc: subprocess.Popen, log: Path, https_port: int, health_port: int, source: Path) -> None:
        self.proc, self.log, self.https_port, self.health_port, self.source = proc, log, https_port, health_port, source

class Answer(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *_: object) -> None:
        pass

# The official nginx image is Alpine: busybox's sh and applets. Debian's busybox stands in for them.
SHELLS = ("dash", "busybox")
APPLETS = ("cat", "cmp", "cp", "mv", "sleep", "tr")

def shell(name: str, tmp_path: Path) -> tuple[list[str], str]:
    """The command that runs a script with `name`'s sh, and a PATH where its tools come from it too."""
    if name == "dash":
        return [tool("dash")], os.environ["PATH"]
    applets = tmp_path / "applets"
    applets.mkdir()
    for applet in APPLETS:
        (applets / applet).symlink_to(tool("busybox"))
    return [tool("busybox"), "sh"], f"{applets}:{os.environ['PATH']}"

@pytest.fixture(params=SHELLS)
def watched(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Watched]:
    """nginx under nginx-tls.sh on free ports in front of a stub app, with no certificate from certbot yet."""
    http_port, https_port, health_port, app_port = free_ports(4)
    app = ThreadingHTTPServer(("127.0.0.1", app_port), Answer)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    dns = dnsstub.DnsStub({"web": ["127.0.0.1"]}, default=None).__enter__()
    tls_dir, shared = tmp_path / "tls", tmp_path / "shared"
    tls_dir.mkdir()
    temporary_cert, temporary_key = cert_and_key(["temporary.invalid"])
    (tls_dir / TEMPORARY_PEM).write_text(temporary_key + temporary_cert)
    settings = settings_for(ACME, app_port=app_port)
    conf = tmp_path / "nginx.conf"
    conf.write_text(render_nginx_conf(settings, resolver=dns.address, http_port=http_port, https_port=https_port,
                                      tls_dir=str(tls_dir), health_listen=f"127.0.0.1:{health_port}",
                                      pid=str(tmp_path / "nginx.pid"), temp_dir=str(tmp_path)))
    script = tmp_path / "nginx-tls.sh"
    script.write_text(watcher_script())
    sh, path = shell(request.param, tmp_path)
    env = {**os.environ, **watcher_env(str(tls_dir)), "BERTH_TLS_SOURCE": str(shared / "live" / "tls.pem"),
           "BERTH_NGINX_OPTS": f"-p {tmp_path} -c {conf}", "PATH": f"{Path(tool('nginx')).parent}:{path}"}
    log = tmp_path / "out.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([*sh, str(script), tool("nginx"), "-p", str(tmp_path), "-c", str(conf),
                                 "-g", "daemon off;"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    watched = Watched(proc, log, https_port, health_port, shared / "live" / "tls.pem")
    deadline = time.monotonic() + 20
    while True:
        try:
            served_serial(https_port)
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
    watched.temporary_serial = serial_of(temporary_cert)  # type: ignore[attr-defined]
    try:
        yield watched
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(15)
        dns.__exit__(None, None, None)
        app.shutdown()
        app.server_close()

def wait_for_serial(watched: Watched, serial: int, timeout: float = 10) -> float:
    begin = time.monotonic()
    while served_serial(watched.https_port) != serial:
        assert time.monotonic() - begin < timeout, watched.log.read_text()
        time.sleep(0.05)
    return time.monotonic() - begin

def test_watcher_starts_on_the_temporary_certificate_then_reloads_into_certbots(watched: Watched) -> None:
    assert served_serial(watched.https_port) == watched.temporary_serial  # type: ignore[attr-defined]
    assert "serving the temporary certificate until certbot has one" in watched.log.read_text()
    master = watched.proc.pid
    failures: list[str] = []
    answered: list[int] = []
    stop = threading.Event()

    def hammer() -> None:  # requests on fresh connections throughout the swap: each must be answered
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        while not stop.is_set():
            try:
                conn = http.client.HTTPSConnection("127.0.0.1", watched.https_port, timeout=5, context=context)
                conn.request("GET", "/", headers={"Host": NAMES[0]})
                response = conn.getresponse()
                if response.read() != b"ok" or response.status != 200:
                    failures.append(f"status {response.status}")
                answered.append(1)
                conn.close()
            except (OSError, http.client.HTTPException) as error:
                failures.append(repr(error))

    thread = threading.Thread(target=hammer)
    thread.start()
    cert, key = cert_and_key()
    publish(watched.source, key + cert)
    took = wait_for_serial(watched, serial_of(cert))
    stop.set()
    thread.join()
    assert failures == [] and len(answered) > 10
    assert took < 5
    assert "new certificate from certbot: nginx reloaded" in watched.log.read_text()
    assert watched.proc.poll() is None and watched.proc.pid == master  # a reload, not a restart

def test_watcher_keeps_serving_when_nginx_refuses_the_new_certificate(watched: Watched) -> None:
    cert, key = cert_and_key()
    publish(watched.source, key + cert)
    wait_for_serial(watched, serial_of(cert))
    other_cert, _ = cert_and_key()
    _, other_key = cert_and_key()
    publish(watched.source, other_key + other_cert)  # a key that does not belong to the certificate
    deadline = time.monotonic() + 10
    while "nginx refuses the certificate" not in watched.log.read_text():
        assert time.monotonic() < deadline, watched.log.read_text()
        time.sleep(0.1)
    time.sleep(2)
    assert served_serial(watched.https_port) == serial_of(cert)
    assert watched.log.read_text().count("nginx refuses the certificate") == 1  # refused once, not every poll

# -- acme.py: the deploy hook and the healthcheck -------------------------------------------------

def run_acme(tmp_path: Path, command: str, **env: str) -> subprocess.CompletedProcess:
    script = tmp_path / "acme.py"
    script.write_text(certbot_script())
    # The script's paths are the container's; point them into tmp_path.
    text = script.read_text().replace('Path("/etc/letsencrypt/live")', f'Path("{tmp_path}/live")').replace(
        'Path("/tmp/berth-acme-status.json")', f'Path("{tmp_path}/status.json")')
    script.write_text(text)
    environment = {**os.environ, "BERTH_ACME_SHARED": str(tmp_path / "shared"), "BERTH_ACME_CERT_NAME": "proxy",
                   "BERTH_ACME_DOMAINS": ",".join(NAMES), **env}
    return subprocess.run([sys.executable, str(script), command], env=environment, capture_output=True, text=True,
                          timeout=60)

def lineage(tmp_path: Path, days: int, age: int = 1) -> str:
    cert, key = cert_and_key(days=days, age=age)
    live = tmp_path / "live" / "proxy"
    live.mkdir(parents=True, exist_ok=True)
    (live / "cert.pem").write_text(cert)
    (live / "fullchain.pem").write_text(cert)
    (live / "privkey.pem").write_text(key)
    return key + cert

def test_deploy_hands_nginx_key_and_chain_in_one_private_file(tmp_path: Path) -> None:
    combined = lineage(tmp_path, 90)
    result = run_acme(tmp_path, "deploy", RENEWED_LINEAGE=str(tmp_path / "live" / "proxy"))
    assert result.returncode == 0, result.stderr
    served = tmp_path / "shared" / "live" / "tls.pem"
    assert served.read_text() == combined
    assert served.stat().st_mode & 0o777 == 0o600
    info = json.loads((tmp_path / "shared" / "live" / "tls.json").read_text())
    assert info["names"] == sorted(NAMES)
    assert "handed to nginx" in result.stdout

@pytest.mark.parametrize(("days", "status", "code", "says"), [
    (90, "ok", 0, "valid for"),
    (10, "ok", 1, "expires in"),
    (90, "failed", 1, "the last order or renewal failed: boom"),
    (None, "pending", 1, "no certificate yet (ordering)"),
])
def test_health(tmp_path: Path, days: int | None, status: str, code: int, says: str) -> None:
    if days is not None:
        lineage(tmp_path, days)
        assert run_acme(tmp_path, "deploy").returncode == 0
    (tmp_path / "status.json").write_text(json.dumps({"state": status, "error": "boom", "at": 0}))
    result = run_acme(tmp_path, "health")
    assert result.returncode == code, result.stdout + result.stderr
    assert says in result.stdout

# -- acme.py's decisions, with a recording stand-in for certbot ------------------------------------

FAKE_CERTBOT = '''#!{python}
"""Records its arguments; certonly writes a lineage for its -d names and runs the deploy hook, as certbot does."""
import datetime, json, os, subprocess, sys
from pathlib import Path
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

args = sys.argv[1:]
with open(os.environ["FAKE_CERTBOT_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
if os.environ.get("FAKE_CERTBOT_FAIL"):
    print("Certbot failed to authenticate some domains (authenticator: webroot)")
    sys.exit(1)
if args[0] == "certonly":
    names = [args[i + 1] for i, arg in enumerate(args) if arg == "-d"]
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048) if "rsa" in args else \\
        ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=90))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .sign(key, hashes.SHA256()))
    live = Path(os.environ["FAKE_LIVE"]) / args[args.index("--cert-name") + 1]
    live.mkdir(parents=True, exist_ok=True)
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (live / "cert.pem").write_bytes(pem)
    (live / "fullchain.pem").write_bytes(pem)
    (live / "privkey.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    hook = args[args.index("--deploy-hook") + 1]
    subprocess.run(hook, shell=True, check=True, env={{**os.environ, "RENEWED_LINEAGE": str(live)}})
'''

@pytest.fixture
def fake_certbot(tmp_path: Path) -> Iterator[dict[str, str]]:
    """certbot and python3 on PATH for acme.py, and nginx serving the webroot (a plain file server)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    certbot = bin_dir / "certbot"
    certbot.write_text(FAKE_CERTBOT.format(python=sys.executable))
    certbot.chmod(0o755)
    (bin_dir / "python3").symlink_to(sys.executable)
    webroot = tmp_path / "shared" / "webroot"
    webroot.mkdir(parents=True)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietFiles, directory=str(webroot)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield {"PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_CERTBOT_LOG": str(tmp_path / "certbot.log"),
               "FAKE_LIVE": str(tmp_path / "live"), "BERTH_ACME_PROXY": f"127.0.0.1:{server.server_port}",
               "BERTH_ACME_SERVER": "https://ca.test/dir", "BERTH_ACME_EMAIL": "ops@example.test"}
    finally:
        server.shutdown()
        server.server_close()

class QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, *_: object) -> None:
        pass

def certbot_calls(tmp_path: Path) -> list[list[str]]:
    log = tmp_path / "certbot.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

def domains(call: list[str]) -> list[str]:
    return [call[i + 1] for i, arg in enumerate(call) if arg == "-d"]

def test_once_orders_every_name_and_hands_nginx_the_certificate(tmp_path: Path, fake_certbot: dict) -> None:
    result = run_acme(tmp_path, "once", **fake_certbot)
    assert result.returncode == 0, result.stdout + result.stderr
    [call] = certbot_calls(tmp_path)
    assert call[0] == "certonly" and domains(call) == NAMES
    assert {"--webroot", "--agree-tos", "--non-interactive"} <= set(call)
    assert call[call.index("--key-type") + 1] == "ecdsa" and call[call.index("--email") + 1] == "ops@example.test"
    assert (tmp_path / "shared" / "live" / "tls.pem").exists()
    assert json.loads((tmp_path / "status.json").read_text())["state"] == "ok"
    assert run_acme(tmp_path, "health", **fake_certbot).returncode == 0

def test_an_added_name_is_ordered_at_once(tmp_path: Path, fake_certbot: dict) -> None:
    assert run_acme(tmp_path, "once", **fake_certbot).returncode == 0
    added = ",".join([*NAMES, "api.example.test"])
    assert run_acme(tmp_path, "once", **fake_certbot, BERTH_ACME_DOMAINS=added).returncode == 0
    assert domains(certbot_calls(tmp_path)[-1]) == added.split(",")

def test_a_removed_name_stays_until_the_certificate_is_due(tmp_path: Path, fake_certbot: dict) -> None:
    lineage(tmp_path, 90)  # for NAMES
    fewer = {**fake_certbot, "BERTH_ACME_DOMAINS": NAMES[0]}
    assert run_acme(tmp_path, "once", **fewer).returncode == 0
    assert certbot_calls(tmp_path)[-1][0] == "renew"  # not due: certbot's renew leaves it alone
    lineage(tmp_path, 10, age=80)  # 10 days left of 90: due
    result = run_acme(tmp_path, "once", **fewer)
    assert result.returncode == 0 and "renewing without www.example.test" in result.stdout
    call = certbot_calls(tmp_path)[-1]
    assert call[0] == "certonly" and domains(call) == [NAMES[0]]

def test_a_changed_key_type_orders_a_new_certificate(tmp_path: Path, fake_certbot: dict) -> None:
    lineage(tmp_path, 90)  # an ecdsa key
    result = run_acme(tmp_path, "once", **fake_certbot, BERTH_ACME_KEY_TYPE="rsa")
    assert result.returncode == 0, result.stdout + result.stderr
    call = certbot_calls(tmp_path)[-1]
    assert call[0] == "certonly" and call[call.index("--key-type") + 1] == "rsa" and "--force-renewal" in call

def test_a_failed_order_is_logged_and_unhealthy(tmp_path: Path, fake_certbot: dict) -> None:
    result = run_acme(tmp_path, "once", **fake_certbot, FAKE_CERTBOT_FAIL="1")
    assert result.returncode == 1
    assert "berth-acme: ERROR: certbot certonly exited with 1: Certbot failed to authenticate" in result.stdout
    health = run_acme(tmp_path, "health", **fake_certbot)
    assert health.returncode == 1 and "the last order or renewal failed" in health.stdout

def test_a_webroot_nginx_does_not_serve_fails_before_the_ca_is_asked(tmp_path: Path, fake_certbot: dict) -> None:
    closed = {**fake_certbot, "BERTH_ACME_PROXY": f"127.0.0.1:{free_ports(1)[0]}",
              "BERTH_ACME_PROXY_WAIT_SECONDS": "2"}
    result = run_acme(tmp_path, "once", **closed)
    assert result.returncode == 1 and "nginx does not serve the webroot" in result.stdout
    assert certbot_calls(tmp_path) == []

def test_health_waits_for_every_name_on_the_certificate(tmp_path: Path) -> None:
    lineage(tmp_path, 90)
    assert run_acme(tmp_path, "deploy").returncode == 0
    (tmp_path / "status.json").write_text(json.dumps({"state": "pending", "error": "", "at": 0}))
    more = run_acme(tmp_path, "health", BERTH_ACME_DOMAINS=",".join([*NAMES, "new.example.test"]))
    assert more.returncode == 1 and "new.example.test not on the certificate yet (ordering)" in more.stdout
    assert run_acme(tmp_path, "health").returncode == 0  # a replaced container with nothing to order: healthy
