"""berth's certbot loop, uploaded into the stack's certbot container (berth/plan/acme.py).

    python3 acme.py run      the container's process: order, then renew twice a day
    python3 acme.py once     one attempt now (order what is missing, renew what is due)
    python3 acme.py deploy   certbot's deploy hook: hand nginx the new certificate
    python3 acme.py health   the container's healthcheck

One certificate (lineage BERTH_ACME_CERT_NAME) for every name in BERTH_ACME_DOMAINS, ordered with
the HTTP-01 challenge from the webroot nginx serves. A name added to the list is ordered at once;
a removed one is dropped when the certificate is next due. nginx gets the key and the chain as one
file, written with one rename (BERTH_ACME_SHARED/live/tls.pem), which it watches. Everything is
logged to the container's log; the status of the last attempt is what the healthcheck reports.
Stdlib only, plus the certbot and cryptography of the certbot image.
"""

from __future__ import annotations

import datetime
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ENV = os.environ
LIVE = Path("/etc/letsencrypt/live")
SHARED = Path(ENV.get("BERTH_ACME_SHARED", "/var/lib/berth-acme"))
WEBROOT = SHARED / "webroot"
SERVED = SHARED / "live" / "tls.pem"
SERVED_INFO = SHARED / "live" / "tls.json"
STATUS = Path("/tmp/berth-acme-status.json")
HOOK = f"python3 {Path(__file__).resolve()} deploy"
# certbot's packaging runs `certbot renew` twice a day at a random minute; so does this loop.
RENEW_SECONDS = int(ENV.get("BERTH_ACME_RENEW_SECONDS", "43200"))
RETRY_SECONDS = int(ENV.get("BERTH_ACME_RETRY_SECONDS", "900"))
WARN_DAYS = int(ENV.get("BERTH_ACME_WARN_DAYS", "14"))
# How long the first order waits for nginx to serve the webroot (nginx may start after certbot).
PROXY_WAIT_SECONDS = int(ENV.get("BERTH_ACME_PROXY_WAIT_SECONDS", "120"))


class Failed(Exception):
    """An order, a renewal or the webroot self-test failed; the message says what and why."""


def log(message: str) -> None:
    """One line in the container's log."""
    print(f"berth-acme: {message}", flush=True)


def names() -> list[str]:
    """The names the certificate must carry."""
    return [name for name in ENV["BERTH_ACME_DOMAINS"].split(",") if name]


def lineage() -> Path:
    """The live directory (certbot's) of the certificate."""
    return LIVE / ENV["BERTH_ACME_CERT_NAME"]


def _not_after(cert: object) -> datetime.datetime:
    value = getattr(cert, "not_valid_after_utc", None)  # cryptography >= 42; older ones are naive UTC
    return value if value is not None else cert.not_valid_after.replace(tzinfo=datetime.UTC)  # type: ignore[attr-defined]


def current() -> tuple[set[str], datetime.datetime, datetime.datetime, str] | None:
    """The names, start, end and key type (ecdsa, rsa) of the lineage's certificate, if there is one."""
    path = lineage() / "cert.pem"
    if not path.exists():
        return None
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import rsa

    cert = x509.load_pem_x509_certificate(path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    start = getattr(cert, "not_valid_before_utc", None) or cert.not_valid_before.replace(tzinfo=datetime.UTC)
    key_type = "rsa" if isinstance(cert.public_key(), rsa.RSAPublicKey) else "ecdsa"
    return set(san.get_values_for_type(x509.DNSName)), start, _not_after(cert), key_type


def certbot(*args: str) -> None:
    """Run certbot with its output in the container's log; Failed with its last lines if it fails."""
    command = ["certbot", *args, "--non-interactive"]
    shown = " ".join("***" if prev == "--eab-hmac-key" else arg
                     for prev, arg in zip(["", *command[:-1]], command, strict=True))
    log(f"running {shown}")
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        print(line, end="", flush=True)
        tail = (tail + [line.strip()])[-6:]
    if proc.wait() != 0:
        raise Failed(f"certbot {args[0]} exited with {proc.returncode}: " + " | ".join(t for t in tail if t))


def key_type() -> str:
    """The key type settings ask for: ecdsa or rsa."""
    return "rsa" if ENV.get("BERTH_ACME_KEY_TYPE") == "rsa" else "ecdsa"


def order(domains: list[str], *extra: str) -> None:
    """Certonly for exactly these names: a new certificate, or the lineage's names or key type changed."""
    self_test(domains[0])
    key = (["--key-type", "ecdsa", "--elliptic-curve", "secp256r1"] if key_type() == "ecdsa"
           else ["--key-type", "rsa", "--rsa-key-size", "2048"])
    email = ENV.get("BERTH_ACME_EMAIL")
    account = ["--email", email, "--no-eff-email"] if email else ["--register-unsafely-without-email"]
    if ENV.get("BERTH_ACME_EAB_KID"):
        account += ["--eab-kid", ENV["BERTH_ACME_EAB_KID"], "--eab-hmac-key", ENV["BERTH_ACME_EAB_HMAC_KEY"]]
    certbot("certonly", "--agree-tos", "--webroot", "-w", str(WEBROOT), "--server", ENV["BERTH_ACME_SERVER"],
            "--cert-name", ENV["BERTH_ACME_CERT_NAME"], *[arg for name in domains for arg in ("-d", name)],
            *key, *account, "--deploy-hook", HOOK, *extra)


def self_test(host: str) -> None:
    """Serve a token from the webroot and fetch it through nginx, as the CA will: fail early and say why."""
    token = secrets.token_urlsafe(24)
    challenge = WEBROOT / ".well-known" / "acme-challenge"
    challenge.mkdir(parents=True, exist_ok=True, mode=0o755)
    path = challenge / f"berth-self-test-{token}"
    path.write_text(token)
    url = f"http://{ENV.get('BERTH_ACME_PROXY', 'proxy')}/.well-known/acme-challenge/{path.name}"
    deadline = time.monotonic() + PROXY_WAIT_SECONDS
    error = ""
    try:
        while time.monotonic() < deadline:
            try:
                request = urllib.request.Request(url, headers={"Host": host})
                with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - our own proxy
                    if response.read().decode() == token:
                        return
                    error = "nginx answered with other content"
            except OSError as exc:
                error = str(exc)
            time.sleep(1)
        raise Failed(f"nginx does not serve the webroot ({url} for {host}: {error}); "
                     "the CA could not validate either")
    finally:
        path.unlink(missing_ok=True)


def due(start: datetime.datetime, end: datetime.datetime) -> bool:
    """Certbot's own rule: renew in the last third of the lifetime, at most 30 days before the end."""
    left = end - datetime.datetime.now(datetime.UTC)
    return left < min(datetime.timedelta(days=30), (end - start) / 3)


def attempt() -> None:
    """Order when names are missing (or removed ones at renewal time), else let certbot renew when due."""
    want = names()
    have = current()
    if have is None:
        log(f"no certificate yet: ordering one for {', '.join(want)}")
        order(want)
    elif missing := [name for name in want if name not in have[0]]:
        log(f"{', '.join(missing)} not on the certificate: ordering one for {', '.join(want)}")
        order(want)
    elif have[3] != key_type():
        # certbot renews with the lineage's old key type unless told both the name and the new type.
        log(f"the certificate has an {have[3]} key, settings ask for {key_type()}: ordering a new one")
        order(want, "--force-renewal")
    elif (extra := sorted(have[0] - set(want))) and due(have[1], have[2]):
        log(f"renewing without {', '.join(extra)}, which the proxy no longer serves")
        order(want)
    else:
        certbot("renew", "--cert-name", ENV["BERTH_ACME_CERT_NAME"], "--no-random-sleep-on-renew",
                "--deploy-hook", HOOK)
    deploy()


def deploy() -> None:
    """Write key + chain as the one file nginx watches, with one rename; skip if it is already there."""
    source = Path(ENV.get("RENEWED_LINEAGE") or lineage())
    data = (source / "privkey.pem").read_bytes() + (source / "fullchain.pem").read_bytes()
    if SERVED.exists() and SERVED.read_bytes() == data:
        return
    SERVED.parent.mkdir(parents=True, exist_ok=True)
    have = current()
    assert have is not None
    tmp = SERVED.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    SERVED_INFO.write_text(json.dumps({"names": sorted(have[0]), "not_after": have[2].timestamp()}))
    os.replace(tmp, SERVED)
    log(f"certificate for {', '.join(sorted(have[0]))} (valid until {have[2]:%Y-%m-%d %H:%M} UTC) handed to nginx")


def write_status(state: str, error: str = "") -> None:
    """What the healthcheck reports: pending, ok or failed (with the error)."""
    STATUS.write_text(json.dumps({"state": state, "error": error, "at": time.time()}))


def once() -> int:
    """One attempt now, as the loop makes it (`docker exec <certbot> python3 acme.py once`); 1 if it failed."""
    WEBROOT.mkdir(parents=True, exist_ok=True, mode=0o755)
    try:
        attempt()
    except Failed as error:
        log(f"ERROR: {error}")
        write_status("failed", str(error))
        return 1
    write_status("ok")
    return 0


def run() -> None:
    """The container's process: an attempt now, then twice a day (every RETRY_SECONDS after a failure)."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # PID 1 ignores signals it has no handler for
    WEBROOT.mkdir(parents=True, exist_ok=True, mode=0o755)
    write_status("pending")
    while True:
        try:
            attempt()
            write_status("ok")
            delay = RENEW_SECONDS * random.uniform(0.75, 1.0)  # noqa: S311 - spreading load, not a secret
        except Failed as error:
            log(f"ERROR: {error}; next attempt in {RETRY_SECONDS}s")
            write_status("failed", str(error))
            delay = RETRY_SECONDS
        time.sleep(delay)


def health() -> int:
    """0 when the last attempt did not fail and nginx has a certificate for every name, good for WARN_DAYS+."""
    try:
        status = json.loads(STATUS.read_text())
    except (OSError, ValueError):
        status = {"state": "pending"}
    if status["state"] == "failed":
        print(f"the last order or renewal failed: {status['error']}")
        return 1
    try:
        info = json.loads(SERVED_INFO.read_text())
    except (OSError, ValueError):
        print("no certificate yet" + (" (ordering)" if status["state"] == "pending" else ""))
        return 1
    if missing := [name for name in names() if name not in info["names"]]:
        ordering = " (ordering)" if status["state"] == "pending" else ""
        print(f"{', '.join(missing)} not on the certificate yet{ordering}")
        return 1
    left = info["not_after"] - time.time()
    if left < WARN_DAYS * 86400:
        print(f"the certificate expires in {left / 86400:.1f} days (less than {WARN_DAYS}) and was not renewed")
        return 1
    print(f"certificate for {', '.join(info['names'])} valid for {left / 86400:.0f} more days")
    return 0


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "run"
    if command == "run":
        run()
    elif command == "once":
        sys.exit(once())
    elif command == "deploy":
        deploy()
    elif command == "health":
        sys.exit(health())
    else:
        sys.exit(f"usage: {sys.argv[0]} run|once|deploy|health")
