"""Pebble (Let's Encrypt's test CA) and pebble-challtestsrv (its DNS), run on this machine for the ACME tier.

Pebble listens for ACME on every address (certbot reaches it from its container at the host's
address) with a listener certificate made here by a throwaway CA, and requires external account
binding. Its VA resolves every name through challtestsrv, which answers with 127.0.0.1, and
validates HTTP-01 on `http_port`: the port the stack's nginx publishes on 127.0.0.1.
PEBBLE_VA_ALWAYS_VALID is never set, so every challenge is really fetched from nginx. Orders are
counted from Pebble's own log ("Added order").
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

GO_BIN_DIRS = (os.environ.get("GOBIN", ""), str(Path.home() / "go" / "bin"), "/usr/local/go/bin")


class PebbleMissing(RuntimeError):
    """pebble or pebble-challtestsrv is not installed (scripts/test.sh installs them with go install)."""


def binary(name: str) -> str:
    """The path of a Go-installed binary: on PATH, in $GOBIN or in ~/go/bin."""
    found = shutil.which(name) or next((str(Path(d) / name) for d in GO_BIN_DIRS
                                        if d and (Path(d) / name).is_file()), None)
    if found is None:
        raise PebbleMissing(f"{name} is not installed: go install github.com/letsencrypt/pebble/v2/cmd/{name}@v2.10.3")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def host_address() -> str:
    """This machine's address on its default route: what a container reaches the host at."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(("192.0.2.254", 9))  # no packet is sent: this only picks the route's source address
        return str(sock.getsockname()[0])


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def listener_cert(directory: Path, address: str) -> tuple[Path, Path, str]:
    """A CA and a certificate for Pebble's HTTPS listener (127.0.0.1, `address`); (cert, key, CA PEM)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "berth acme tier listener CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
             x509.IPAddress(ipaddress.ip_address(address))]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pebble")])).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path, key_path = directory / "listener.pem", directory / "listener.key"
    cert_path.write_text(_pem(cert))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path, _pem(ca)


@dataclass
class Pebble:
    """A running Pebble + challtestsrv pair; stop() ends both."""

    directory: Path
    http_port: int
    address: str = field(default_factory=host_address)
    acme_port: int = field(default_factory=free_port)
    management_port: int = field(default_factory=free_port)
    dns_port: int = field(default_factory=free_port)
    dns_management_port: int = field(default_factory=free_port)
    listener_ca: str = ""
    # External account binding is required, as by CAs like ZeroSSL: berth's eab settings are proven too.
    eab_kid: str = "berth-acme-tier"
    eab_hmac: str = field(default_factory=lambda: _b64url(secrets.token_bytes(32)))
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def directory_url(self) -> str:
        """The ACME directory as certbot (in a container) reaches it."""
        return f"https://{self.address}:{self.acme_port}/dir"

    @property
    def log(self) -> Path:
        return self.directory / "pebble.log"

    def start(self) -> Pebble:
        cert, key, self.listener_ca = listener_cert(self.directory, self.address)
        config = {"pebble": {
            "listenAddress": f"0.0.0.0:{self.acme_port}",
            "managementListenAddress": f"127.0.0.1:{self.management_port}",
            "certificate": str(cert), "privateKey": str(key),
            "httpPort": self.http_port, "tlsPort": free_port(),
            "ocspResponderURL": "", "externalAccountBindingRequired": True,
            "externalAccountMACKeys": {self.eab_kid: self.eab_hmac},
            "retryAfter": {"authz": 1, "order": 1},
        }}
        (self.directory / "pebble.json").write_text(json.dumps(config))
        dns = subprocess.Popen(
            [binary("pebble-challtestsrv"), "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
             "-dnsserver", f"127.0.0.1:{self.dns_port}", "-management", f"127.0.0.1:{self.dns_management_port}",
             "-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", ""],
            stdout=(self.directory / "challtestsrv.log").open("wb"), stderr=subprocess.STDOUT)
        self.processes.append(dns)
        # No PEBBLE_VA_ALWAYS_VALID: challenges are fetched from nginx. No sleep before validating, and
        # no deliberately rejected nonces, so the tier is fast; both are Pebble's chaos, not the CA's rules.
        env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0"}
        env.pop("PEBBLE_VA_ALWAYS_VALID", None)
        pebble = subprocess.Popen(
            [binary("pebble"), "-config", str(self.directory / "pebble.json"),
             "-dnsserver", f"127.0.0.1:{self.dns_port}"],
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT, env=env)
        self.processes.append(pebble)
        deadline = time.monotonic() + 30
        while True:
            try:
                self._get(f"https://127.0.0.1:{self.acme_port}/dir")
                self._dns_api("set-default-ipv4", {"ip": "127.0.0.1"})
                return self
            except OSError as error:
                if time.monotonic() > deadline or any(p.poll() is not None for p in self.processes):
                    self.stop()
                    raise RuntimeError(f"pebble did not come up: {error}\n{self.log.read_text()[-2000:]}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.listener_ca)

    def _get(self, url: str) -> str:
        with urllib.request.urlopen(url, context=self._context(), timeout=10) as response:  # noqa: S310
            return response.read().decode()

    def _dns_api(self, path: str, body: dict) -> None:
        request = urllib.request.Request(f"http://127.0.0.1:{self.dns_management_port}/{path}",
                                         data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=10):  # noqa: S310
            pass

    def add_a(self, host: str, address: str) -> None:
        """Make challtestsrv answer `address` for `host` (e.g. an address where nothing listens)."""
        self._dns_api("add-a", {"host": host + ".", "addresses": [address]})

    def root(self) -> str:
        """The PEM of the root Pebble issues under (made fresh at every start)."""
        return self._get(f"https://127.0.0.1:{self.management_port}/roots/0")

    def orders(self) -> int:
        """How many orders Pebble has received so far, from its log."""
        return self.log.read_text(errors="replace").count("Added order")
