"""The host preflight against a real sshd, a real TLS dockerd and this machine's engine.

Every case asserts the exact one problem (config path and cause): a case the preflight cannot map
to its cause fails here.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pulumi
import pytest
from preflight_servers import Pair, Sshd, TlsEngine, free_port, keygen

from berth import preflight
from berth.errors import ConfigError
from berth.settings import load_settings
from berth.settings.host import HostSettings
from berth.synth import synth

ENGINE = "unix:///var/run/docker.sock"


def one_problem(host: HostSettings, timeout: float = preflight.TIMEOUT) -> tuple[str, str]:
    report = preflight.check_host(host, timeout)
    assert report.engine is None and len(report.problems) == 1, report
    return report.problems[0]


def line(problem: tuple[str, str]) -> str:
    return str(ConfigError([problem]))


# -- ssh ------------------------------------------------------------------------------------------


def ssh_host(sshd: Sshd, known: list[str], key: Path | None = None, **extra: object) -> HostSettings:
    known_hosts = sshd.known_hosts(str(len(known)) + (key.name if key else ""), known)
    opts = ["-F", "/dev/null", "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes"]
    return HostSettings(url=sshd.url, ssh_opts=opts, ssh_key=str(key or sshd.client_key), **extra)


def test_ssh_with_the_matching_host_key_reaches_the_engine(sshd):
    report = preflight.check_host(ssh_host(sshd, [sshd.entry()]))
    assert report.problems == [] and report.warnings == []
    local = subprocess.run(["docker", "version", "--format", "{{.Server.Version}} {{.Server.APIVersion}}"],
                           capture_output=True, text=True, check=True).stdout.split()
    assert [report.engine.version, report.engine.api] == local  # the same engine, seen through sshd


def test_ssh_runs_what_the_provider_runs(sshd):
    host = ssh_host(sshd, [sshd.entry()])
    command = preflight.ssh_command(host)
    assert command[:3] == ["ssh", "-o", "BatchMode=yes"]
    assert command[3:3 + len(host.ssh_args)] == host.ssh_args
    assert command[-7:] == ["-p", str(sshd.port), "--", "127.0.0.1", "docker", "system", "dial-stdio"]
    assert ["-l", sshd.user] == command[-9:-7]


def test_ssh_changed_host_key(sshd, tmp_path):
    keygen(tmp_path / "impostor")
    key_type, body = (tmp_path / "impostor.pub").read_text().split()[:2]
    problem = one_problem(ssh_host(sshd, [sshd.entry(f"{key_type} {body}")]))
    assert line(problem) == (f"berth:host.url: ssh host key for 127.0.0.1:{sshd.port} does not match known_hosts "
                             "(the host was reinstalled, or this is not it)")


def test_ssh_unknown_host(sshd):
    problem = one_problem(ssh_host(sshd, []))
    assert line(problem) == (f"berth:host.url: ssh host key for 127.0.0.1:{sshd.port} is not in known_hosts "
                             "(add it: ssh-keyscan -p <port> <host> >> ~/.ssh/known_hosts)")


def test_ssh_unknown_host_without_strict_checking_is_refused_in_batch_mode(sshd):
    # ssh's default (StrictHostKeyChecking=ask) would prompt; the provider has no one to answer.
    known_hosts = sshd.known_hosts("empty-ask", [])
    host = HostSettings(url=sshd.url, ssh_opts=["-F", "/dev/null", "-o", f"UserKnownHostsFile={known_hosts}"],
                        ssh_key=str(sshd.client_key))
    assert one_problem(host)[1].startswith(f"ssh host key for 127.0.0.1:{sshd.port} is not in known_hosts")


def test_ssh_refused_client_key(sshd):
    problem = one_problem(ssh_host(sshd, [sshd.entry()], key=sshd.stranger_key))
    assert line(problem) == (f"berth:host.url: ssh refused user {sshd.user} at 127.0.0.1:{sshd.port}: none of our "
                             f"keys is authorized (set host.ssh_key, or add the public key to "
                             f"~{sshd.user}/.ssh/authorized_keys)")


def test_ssh_closed_port(sshd):
    port = free_port()
    host = HostSettings(url=f"ssh://{sshd.user}@127.0.0.1:{port}", ssh_opts=["-F", "/dev/null"])
    assert line(one_problem(host)) == (f"berth:host.url: ssh to 127.0.0.1:{port}: connection refused "
                                       "(is sshd listening on that port?)")


def test_ssh_server_that_never_answers_times_out(sshd):
    with socket.socket() as silent:  # accepts (in the kernel) but never sends an ssh banner
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        host = HostSettings(url=f"ssh://{sshd.user}@127.0.0.1:{port}", ssh_opts=["-F", "/dev/null"])
        assert line(one_problem(host, timeout=1.0)) == (
            f"berth:host.url: ssh to 127.0.0.1:{port}: no answer (timed out; firewall, or a wrong address?)")


def test_ssh_user_outside_the_docker_group(sshd):
    host = ssh_host(sshd, [sshd.entry()])
    outsider = HostSettings(url=f"ssh://{sshd.outsider}@127.0.0.1:{sshd.port}", ssh_opts=host.ssh_opts,
                            ssh_key=host.ssh_key)
    assert line(one_problem(outsider)) == (
        f"berth:host.url: {sshd.outsider} on 127.0.0.1:{sshd.port} may not use the docker socket "
        "(add it to the docker group)")


def test_ssh_key_readable_by_others_is_named(sshd, tmp_path):
    loose = tmp_path / "loose_ed25519"
    loose.write_bytes(sshd.client_key.read_bytes())
    loose.chmod(0o644)
    problem = one_problem(ssh_host(sshd, [sshd.entry()], key=loose))
    assert line(problem) == (f"berth:host.ssh_key: {loose} is readable by others (mode 0644) and ssh ignores it: "
                             f"chmod 600 {loose}")


def test_ssh_missing_key_file_is_named(sshd, tmp_path):
    problem = one_problem(ssh_host(sshd, [sshd.entry()], key=tmp_path / "nope"))
    assert line(problem) == f"berth:host.ssh_key: {tmp_path / 'nope'} is not a file here"


def test_ssh_socket_path_in_the_url_is_the_remote_socket(sshd):
    host = ssh_host(sshd, [sshd.entry()])
    missing = HostSettings(url=f"{sshd.url}/run/berth-preflight-none.sock", ssh_opts=host.ssh_opts,
                           ssh_key=host.ssh_key)
    path, cause = one_problem(missing)
    assert (path, cause) == ("host.url",
                             f"docker answers on 127.0.0.1:{sshd.port}, but its engine is not running (no socket)")


# -- tcp + TLS ------------------------------------------------------------------------------------


def tls_host(engine: TlsEngine, ca: str | None = None, client: Pair | None = None, port: int | None = None
             ) -> HostSettings:
    pair = client or engine.client
    return HostSettings(url=f"tcp://127.0.0.1:{port or engine.port}", ca=ca or engine.ca, cert=pair.cert,
                        key=pair.key)


def test_tls_with_the_right_ca_and_client_certificate_reaches_the_engine(tls_engine):
    report = preflight.check_host(tls_host(tls_engine))
    assert report.problems == [] and report.engine is not None
    assert report.engine.api_tuple >= preflight.MIN_API


def test_tls_wrong_ca(tls_engine):
    problem = one_problem(tls_host(tls_engine, ca=tls_engine.other_ca))
    assert line(problem) == (f"berth:host.ca: the server's certificate at 127.0.0.1:{tls_engine.port} is not "
                             "signed by this CA")


def test_tls_expired_client_certificate(tls_engine):
    problem = one_problem(tls_host(tls_engine, client=tls_engine.expired_client))
    assert problem[0] == "host.cert"
    assert problem[1].startswith("the server refused the client certificate (bad certificate): it expired on ")


def test_tls_client_certificate_of_another_ca(tls_engine):
    problem = one_problem(tls_host(tls_engine, client=tls_engine.foreign_client))
    assert line(problem) == ("berth:host.cert: the server refused the client certificate (bad certificate): it is "
                             "not signed by a CA the engine trusts (dockerd --tlscacert)")


def test_tls_key_of_another_pair(tls_engine):
    mixed = Pair(tls_engine.client.cert, tls_engine.foreign_client.key)
    assert line(one_problem(tls_host(tls_engine, client=mixed))) == (
        "berth:host.key: does not belong to host.cert (a key from another pair)")


def test_tls_closed_port(tls_engine):
    port = free_port()
    assert line(one_problem(tls_host(tls_engine, port=port))) == (
        f"berth:host.url: 127.0.0.1:{port}: connection refused (nothing listens on that port)")


def test_tls_server_that_never_answers_times_out(tls_engine):
    with socket.socket() as silent:  # listens (the kernel completes the handshake) but never reads
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        assert line(one_problem(tls_host(tls_engine, port=port), timeout=1.0)) == (
            f"berth:host.url: 127.0.0.1:{port}: no TLS answer within 1s")


def test_tls_engine_reached_without_a_client_certificate(tls_engine):
    # The provider speaks TLS only when cert and key are set: with ca alone it sends plain HTTP.
    host = HostSettings(url=tls_engine.url, ca=tls_engine.ca)
    report = preflight.check_host(host)
    assert report.problems == [("host.cert", f"127.0.0.1:{tls_engine.port} speaks TLS: set host.ca, host.cert "
                                             "and host.key (the provider uses TLS only with a client certificate)")]
    assert report.warnings == ["berth:host.ca: the provider uses TLS only with host.cert and host.key; without them "
                               "ca is ignored and the engine is reached over plain HTTP"]


def test_client_key_never_stays_on_disk(tls_engine):
    folder = tempfile.gettempdir()
    before = set(os.listdir(folder))
    preflight.check_host(tls_host(tls_engine))
    preflight.check_host(tls_host(tls_engine, client=tls_engine.expired_client))
    left = [name for name in set(os.listdir(folder)) - before if name.startswith("berth-preflight-")]
    assert left == []


def test_tcp_without_a_port(tls_engine):
    # Settings refuse it (the host URL grammar), before the preflight could be reached.
    with pytest.raises(ConfigError) as caught:
        load_settings({"environment": "dev", "host": {"url": "tcp://127.0.0.1", "ca": tls_engine.ca,
                                                      "cert": tls_engine.client.cert, "key": tls_engine.client.key}})
    assert str(caught.value) == ("berth:host.url: url 'tcp://127.0.0.1': '127.0.0.1' names no port (the engine's "
                                 "TLS port is usually 2376)")


# -- unix -----------------------------------------------------------------------------------------


def test_unix_socket_of_this_machine_answers():
    report = preflight.check_host(HostSettings(url=ENGINE))
    assert report.problems == [] and report.engine is not None and report.engine.api_tuple >= (1, 41)


def test_unix_missing_socket(tmp_path):
    path = tmp_path / "docker.sock"
    assert line(one_problem(HostSettings(url=f"unix://{path}"))) == (
        f"berth:host.url: docker socket {path} does not exist (is dockerd running?)")


def test_unix_path_that_is_not_a_socket(tmp_path):
    path = tmp_path / "docker.sock"
    path.write_text("")
    assert line(one_problem(HostSettings(url=f"unix://{path}"))) == (
        f"berth:host.url: docker socket {path} is not a socket")


def test_unix_socket_nobody_listens_on(tmp_path):
    path = tmp_path / "docker.sock"
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(path))  # bound, never listening: connect is refused
        assert line(one_problem(HostSettings(url=f"unix://{path}"))) == (
            f"berth:host.url: docker socket {path}: connection refused (is dockerd running?)")


@pytest.fixture
def http_socket(tmp_path) -> Iterator[tuple[Path, list[bytes]]]:
    """A unix socket that answers each connection with the next canned reply (not Docker's engine)."""
    path, replies = tmp_path / "other.sock", []
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(replies.pop(0))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield path, replies
    server.close()


def reply(status: int, body: bytes) -> bytes:
    return f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


def test_unix_socket_of_something_else(http_socket):
    path, replies = http_socket
    replies.append(reply(404, b"not here"))
    assert line(one_problem(HostSettings(url=f"unix://{path}"))) == (
        "berth:host.url: the other side is not a Docker engine (/_ping: 404)")


def test_engine_older_than_berth_supports_is_refused(http_socket):
    path, replies = http_socket
    replies.append(reply(200, b"OK") + reply(200, b'{"Version": "19.03.15", "ApiVersion": "1.40"}'))
    report = preflight.check_host(HostSettings(url=f"unix://{path}"))
    assert report.engine == preflight.Engine("19.03.15", "1.40")
    assert report.problems == [("host.url", "Docker 19.03.15 (API 1.40) is older than berth supports: "
                                            "Docker 20.10 (API 1.41) or later")]


# -- features, switches, and the program ----------------------------------------------------------


def test_start_interval_on_an_engine_before_25_is_a_warning(valid):
    settings = valid({"host": {"url": ENGINE}, "apps.backend.healthcheck.start_interval": "2s"})
    report = preflight.check(settings)
    assert report.problems == []
    assert report.warnings == [
        f"berth:apps.backend.healthcheck.start_interval: Docker {report.engine.version} (API 1.41) ignores "
        "start_interval; it needs Docker 25 (API 1.44) or later"]


def test_the_program_stops_with_one_line_before_any_resource(tls_engine):
    port = free_port()
    host = {"url": f"tcp://127.0.0.1:{port}", "ca": tls_engine.ca, "cert": tls_engine.client.cert,
            "key": tls_engine.client.key}
    with pytest.raises(pulumi.RunError) as caught:
        synth("dev", raw_overrides={"host": host}, preflight=True)
    assert str(caught.value) == f"berth:host.url: 127.0.0.1:{port}: connection refused (nothing listens on that port)"


def test_preflight_false_switches_it_off():
    result = synth("dev", raw_overrides={"host": {"url": "unix:///nonexistent/docker.sock", "preflight": False}},
                   preflight=True)
    assert result["resources"]


def test_synth_skips_it_by_default_and_says_so():
    run = subprocess.run([sys.executable, "-m", "berth", "synth", "--stack", "staging", "--format", "tree"],
                         capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
    assert run.returncode == 0, run.stderr
    assert run.stderr == ("berth: synth skips the host preflight (ssh://deploy@staging.example.com:22 is not "
                          "contacted); --preflight runs it\n")
    # staging provisions its host: a bare VPS has no Docker yet, so the preflight says it steps aside
    with_it = subprocess.run([sys.executable, "-m", "berth", "synth", "--stack", "staging", "--preflight"],
                             capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
    assert with_it.returncode == 0, with_it.stderr
    assert ("info: berth: host preflight skipped: host.provision sets up Docker on "
            "ssh://deploy@staging.example.com:22 in this update") in with_it.stderr
    # without provisioning, the same host is reached, and fails as it must here
    with pytest.raises(pulumi.RunError) as failed:
        synth("staging", raw_overrides={"host": {"provision": {"enabled": False}}}, preflight=True)
    assert str(failed.value).startswith("berth:host.url: ssh to staging.example.com:22")


def test_synth_preflight_names_tls_material_it_cannot_decrypt(tls_engine):
    from berth.settings.loader import UNDECRYPTED

    host = HostSettings(url=tls_engine.url, ca=UNDECRYPTED, cert=tls_engine.client.cert, key=tls_engine.client.key)
    assert line(one_problem(host)) == ("berth:host.ca: is encrypted in the stack file and synth cannot decrypt it; "
                                       "`pulumi preview` runs the preflight with it")


def test_synth_with_preflight_reports_the_engine_it_found():
    run = subprocess.run([sys.executable, "-m", "berth", "synth", "--stack", "dev", "--preflight"],
                         capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
    assert run.returncode == 0, run.stderr
    local = subprocess.run(["docker", "version", "--format", "Docker {{.Server.Version}}, API {{.Server.APIVersion}}"],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert run.stderr.startswith(f"info: berth: host unix:///var/run/docker.sock: {local} (preflight for up, ")
    assert len(run.stderr.splitlines()) == 1


def test_the_second_engine_leaves_the_shared_engines_bridge_alone(tls_engine):
    """A dockerd with --bridge=none deletes docker0 (moby/moby#26989), breaking every other tier's builds."""
    shown = subprocess.run(["ip", "-brief", "link", "show", "docker0"], capture_output=True, text=True)
    assert shown.returncode == 0 and shown.stdout.startswith("docker0"), shown.stderr
