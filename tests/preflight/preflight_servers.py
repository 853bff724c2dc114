"""A real sshd and a real TLS dockerd on loopback, for the preflight tier (conftest.py) and bench/.

- sshd: Debian's openssh-server, `/usr/sbin/sshd -D -f <own config>` on a free port with its own host
  key; a real deploy user in the docker group whose shell runs `docker` against this machine's engine.
- dockerd: a second engine with its OWN data root, exec root, pidfile and unix socket, no bridge and no
  iptables, listening on tcp://127.0.0.1:<free port> with --tlsverify; certificates made here with
  cryptography. It never touches the shared engine, and it is stopped at the end of the session.

A missing tool or a server that does not come up raises: the tier FAILS, nothing is skipped.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import grp
import ipaddress
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEPLOY_USER = "berthpf"  # the remote host's deploy user (created once, in the docker group)
OUTSIDER = "berthpfout"  # a user who may log in but is not in the docker group
START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()[-2000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {START_TIMEOUT:g}s:\n{log.read_text()[-2000:]}")


def wait_for_engine(sock: Path, process: subprocess.Popen, log: Path) -> None:
    """The docker CLI answers on the engine's own unix socket: it is initialised, not just listening."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dockerd exited with {process.returncode}:\n{log.read_text()[-2000:]}")
        if subprocess.run([tool("docker"), "-H", f"unix://{sock}", "version"], capture_output=True).returncode == 0:
            return
        time.sleep(0.2)
    raise RuntimeError(f"dockerd did not answer on {sock} after {START_TIMEOUT:g}s:\n{log.read_text()[-2000:]}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def tool(path: str) -> str:
    found = shutil.which(path)
    assert found, f"{path} is missing (scripts/test.sh installs it)"
    return found


# -- ssh --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sshd:
    port: int
    user: str
    host_key_line: str  # "ssh-ed25519 AAAA..." as in known_hosts
    outsider: str
    client_key: Path  # authorized for both users
    stranger_key: Path  # not authorized
    folder: Path

    @property
    def url(self) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}"

    def known_hosts(self, name: str, lines: list[str]) -> Path:
        path = self.folder / f"known_hosts-{name}"
        path.write_text("".join(f"{line}\n" for line in lines))
        return path

    def entry(self, key_line: str | None = None) -> str:
        return f"[127.0.0.1]:{self.port} {key_line or self.host_key_line}"


def keygen(path: Path) -> Path:
    subprocess.run([tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
                   check=True)
    return path


def login_user(name: str, groups: list[str], authorized: Path) -> None:
    """A real user with a home, a login shell and one authorized key (kept for the next run)."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", *(["--groups", ",".join(groups)]
                                                                            if groups else []), name], check=True)
    user = pwd.getpwnam(name)
    # A '!' password marks the account locked, and sshd (UsePAM no) refuses locked accounts even for keys.
    subprocess.run(["usermod", "--password", "*", name], check=True)
    assert [group for group in groups if name not in grp.getgrnam(group).gr_mem] == []
    ssh_dir = Path(user.pw_dir) / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(authorized.read_text())
    (ssh_dir / "authorized_keys").chmod(0o600)
    for path in (ssh_dir, ssh_dir / "authorized_keys"):
        os.chown(path, user.pw_uid, user.pw_gid)


@contextlib.contextmanager
def running_sshd(folder: Path) -> Iterator[Sshd]:
    host_key = keygen(folder / "host_ed25519")
    client, stranger = keygen(folder / "client_ed25519"), keygen(folder / "stranger_ed25519")
    login_user(DEPLOY_USER, ["docker"], folder / "client_ed25519.pub")
    login_user(OUTSIDER, [], folder / "client_ed25519.pub")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    port = free_port()
    config = folder / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}", f"PidFile {folder / 'sshd.pid'}",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
        "UsePAM no", f"AllowUsers {DEPLOY_USER} {OUTSIDER}", "LogLevel VERBOSE", ""]))
    log = folder / "sshd.log"
    with log.open("wb") as out:
        process = subprocess.Popen([tool("/usr/sbin/sshd"), "-D", "-e", "-f", str(config)], stdout=out, stderr=out)
    try:
        wait_for_port(port, process, log)
        key_type, key_body = (folder / "host_ed25519.pub").read_text().split()[:2]
        yield Sshd(port, DEPLOY_USER, f"{key_type} {key_body}", OUTSIDER, client, stranger, folder)
    finally:
        stop(process)


# -- TLS dockerd -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    cert: str
    key: str


@dataclass(frozen=True)
class TlsEngine:
    port: int
    ca: str
    client: Pair
    expired_client: Pair
    foreign_client: Pair  # signed by another CA
    other_ca: str

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_ca(common: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key, now = _key(), dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(common)).issuer_name(_name(common))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def issue(ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate], common: str, *, server: bool,
          valid_days: tuple[int, int] = (-1, 30)) -> Pair:
    ca_key, ca_cert = ca
    key, now = _key(), dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(common)).issuer_name(ca_cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now + dt.timedelta(days=valid_days[0]))
               .not_valid_after(now + dt.timedelta(days=valid_days[1]))
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                                     else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return Pair(cert.public_bytes(serialization.Encoding.PEM).decode(), _pem_key(key))


def ca_pem(ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate]) -> str:
    return ca[1].public_bytes(serialization.Encoding.PEM).decode()


# The second engine's default bridge: link-local, so no route anywhere depends on it.
BRIDGE, BRIDGE_ADDRESS = "berthpf0", "169.254.213.1/30"


@contextlib.contextmanager
def running_tls_engine(folder: Path) -> Iterator[TlsEngine]:
    ca, other = make_ca("berth-preflight CA"), make_ca("berth-preflight other CA")
    server = issue(ca, "127.0.0.1", server=True)
    files = {"ca.pem": ca_pem(ca), "server.pem": server.cert, "server-key.pem": server.key,
             "daemon.json": "{}\n"}
    for name, text in files.items():
        (folder / name).write_text(text)
        (folder / name).chmod(0o600)
    port = free_port()
    log = folder / "dockerd.log"
    command = [
        tool("dockerd"), "--config-file", str(folder / "daemon.json"),
        "--data-root", str(folder / "data"), "--exec-root", str(folder / "exec"),
        "--pidfile", str(folder / "dockerd.pid"), "-H", f"unix://{folder / 'docker.sock'}",
        "-H", f"tcp://127.0.0.1:{port}", "--tlsverify", "--tlscacert", str(folder / "ca.pem"),
        "--tlscert", str(folder / "server.pem"), "--tlskey", str(folder / "server-key.pem"),
        # Not --bridge=none: a dockerd started so deletes the host's docker0 (moby/moby#26989), the
        # shared engine's default bridge. A bridge of its own, made here, it leaves alone.
        f"--bridge={BRIDGE}", "--iptables=false", "--ip-masq=false", "--ip-forward=false",
    ]
    subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True, check=False)  # a leftover
    for step in (["link", "add", BRIDGE, "type", "bridge"], ["addr", "add", BRIDGE_ADDRESS, "dev", BRIDGE],
                 ["link", "set", BRIDGE, "up"]):
        subprocess.run(["ip", *step], capture_output=True, check=True)
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
    try:
        wait_for_port(port, process, log)
        wait_for_engine(folder / "docker.sock", process, log)
        yield TlsEngine(port, ca_pem(ca), issue(ca, "berth-client", server=False),
                        issue(ca, "berth-expired-client", server=False, valid_days=(-30, -1)),
                        issue(other, "berth-foreign-client", server=False), ca_pem(other))
    finally:
        stop(process)
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True, check=False)
