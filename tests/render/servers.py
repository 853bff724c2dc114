"""Throwaway real servers (Debian's PostgreSQL 15 and RabbitMQ 3.10) for the render tests.

Each server lives in its own temp dir on free ports and is always stopped and removed, even when
starting it failed halfway. A missing binary is a failure, never a skip.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PG_BIN = Path("/usr/lib/postgresql/15/bin")
RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
EPMD = "/usr/bin/epmd"
PG_OS_USER = "postgres"


def require(*paths: Path | str) -> None:
    """Fail (not skip) when a server binary is missing: no render tier may pass by skipping."""
    missing = [str(p) for p in paths if not Path(p).exists()]
    assert not missing, f"render tests need these binaries (Debian packages): {missing}"


def tool(name: str) -> str:
    """The path of a real program (sbin included); in CI a missing tool is a failure, never a skip."""
    path = shutil.which(name, path=os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin")
    assert path, f"{name} is not installed (apt-get install {name}); the render tests need the real program"
    return path


def free_ports(count: int) -> list[int]:
    """Distinct TCP ports that were free on every address a moment ago.

    The sockets stay open until all are chosen: asked one at a time, the kernel may hand out the
    same port twice (which made nginx see two default servers on one port).
    """
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("", 0))
        return [sock.getsockname()[1] for sock in socks]


def free_port() -> int:
    """A TCP port that was free a moment ago."""
    return free_ports(1)[0]


def run(argv: Sequence[str], *, env: Mapping[str, str] | None = None, input: str | None = None,
        timeout: float = 60, check: bool = False, **popen: Any) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing text output; with check=True a failure shows its stdout and stderr."""
    result = subprocess.run(list(argv), env=dict(env) if env is not None else None, input=input, text=True,
                            capture_output=True, timeout=timeout, encoding="utf-8", errors="replace", **popen)
    if check and result.returncode != 0:
        raise AssertionError(f"{list(argv)} exited {result.returncode}\nstdout:\n{result.stdout}\n"
                             f"stderr:\n{result.stderr}")
    return result


# ---------------------------------------------------------------- PostgreSQL


@dataclass
class PostgresCluster:
    """A running throwaway cluster: trust on the unix socket, scram-sha-256 on 127.0.0.1."""

    root: Path
    port: int
    superuser: str

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    def psql(self, sql: str, *, database: str, user: str | None = None, password: str | None = None,
             tcp: bool = False, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run SQL from stdin through psql (as the image does), stopping at the first error."""
        env = {**_base_env(), "PGCLIENTENCODING": "UTF8", "PGCONNECT_TIMEOUT": "10"}
        if password is not None:
            env["PGPASSWORD"] = password
        host = "127.0.0.1" if tcp else str(self.socket_dir)
        argv = [str(PG_BIN / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", host,
                "-p", str(self.port), "-U", user or self.superuser, "-d", database, "-f", "-"]
        return run(argv, env=env, input=sql, timeout=timeout)


def _base_env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


def _pg_user() -> dict:
    # Run as the postgres OS user straight from Popen (tests run as root, which initdb and postgres refuse).
    entry = pwd.getpwnam(PG_OS_USER)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


@contextlib.contextmanager
def postgres_cluster(superuser: str, password: str, default_database: str) -> Iterator[PostgresCluster]:
    """Start a cluster like the image does (initdb, then the superuser's default database); always clean up.

    The postmaster is this process's own child (no pg_ctl daemonising), so stopping it also reaps it.
    """
    require(PG_BIN / "initdb", PG_BIN / "postgres", PG_BIN / "psql", PG_BIN / "pg_isready")
    # Not pytest's tmp_path: its parents are 0700 root, and the server runs as the postgres OS user.
    root = Path(tempfile.mkdtemp(prefix="berth-pg-"))
    process: subprocess.Popen[bytes] | None = None
    try:
        _init_cluster(root, superuser, password)
        process, cluster = _start_cluster(root, superuser)
        if default_database != "postgres":
            created = cluster.psql(f'CREATE DATABASE "{default_database}";', database="postgres")
            assert created.returncode == 0, created.stderr
        yield cluster
    finally:
        if process is not None:
            _stop(process, signal.SIGINT)  # SIGINT: fast shutdown
        shutil.rmtree(root, ignore_errors=True)


def _init_cluster(root: Path, superuser: str, password: str) -> None:
    user = _pg_user()
    root.chmod(0o755)
    (root / "sock").mkdir()
    pwfile = root / "pwfile"
    pwfile.write_text(password + "\n")
    for path in (root, root / "sock", pwfile):
        os.chown(path, user["user"], user["group"])
    run([str(PG_BIN / "initdb"), "-D", str(root / "data"), "-U", superuser, f"--pwfile={pwfile}",
         "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"],
        env=_base_env(), timeout=120, check=True, **user)
    pwfile.unlink()


def _start_cluster(root: Path, superuser: str, attempts: int = 3) -> tuple[subprocess.Popen[bytes], PostgresCluster]:
    # A free port can be taken between picking and binding it: pick again a few times.
    for _ in range(attempts):
        port = free_port()
        argv = [str(PG_BIN / "postgres"), "-D", str(root / "data"), "-c", "listen_addresses=127.0.0.1",
                "-p", str(port), "-k", str(root / "sock")]
        with open(root / "log", "ab") as log:
            process = subprocess.Popen(argv, env=_base_env(), stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, **_pg_user())
        if _wait_ready(process, root, port):
            return process, PostgresCluster(root=root, port=port, superuser=superuser)
        _stop(process, signal.SIGINT)
    raise AssertionError(f"postgres did not start:\n{(root / 'log').read_text(errors='replace')}")


def _wait_ready(process: subprocess.Popen[bytes], root: Path, port: int, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        probe = [str(PG_BIN / "pg_isready"), "-q", "-h", str(root / "sock"), "-p", str(port)]
        if run(probe, env=_base_env(), timeout=15).returncode == 0:
            return True
        time.sleep(0.1)
    return False


def _stop(process: subprocess.Popen[bytes], sig: signal.Signals, timeout: float = 30) -> None:
    """Signal a child, then SIGKILL it if it lingers; either way wait for it, so no zombie is left."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


# ---------------------------------------------------------------- RabbitMQ


@dataclass
class RabbitNode:
    """A running throwaway RabbitMQ node with its own epmd, cookie, ports and data directory."""

    root: Path
    nodename: str
    amqp_port: int
    management_port: int
    epmd_port: int
    server: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    epmd: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def definitions_path(self) -> Path:
        return self.root / "definitions.json"

    def env(self) -> dict[str, str]:
        """The env every server and CLI process of this node needs (cookie in HOME, private epmd)."""
        return {
            **_base_env(),
            "PATH": f"{RABBIT_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(self.root / "home"),
            "RABBITMQ_NODENAME": self.nodename,
            "ERL_EPMD_PORT": str(self.epmd_port),
        }

    def ctl(self, *args: str, tool: str = "rabbitmqctl", timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a RabbitMQ CLI tool against this node."""
        return run([str(RABBIT_BIN / tool), "-n", self.nodename, *args], env=self.env(), timeout=timeout)

    def log(self) -> str:
        """The tail of everything the node wrote, for failure messages."""
        files = sorted((self.root / "log").glob("*")) + [self.root / "console.log"]
        return "\n".join(f.read_text(errors="replace")[-8000:] for f in files if f.is_file())


@contextlib.contextmanager
def rabbit_node(config: Callable[[RabbitNode], str], definitions_json: str, *,
                nodename: str = "berthtest@localhost", boot_timeout: float = 120) -> Iterator[RabbitNode]:
    """Boot a node with ``config(node)`` as rabbitmq.conf and ``node.definitions_path`` holding the definitions.

    Always stops the node and its epmd, and removes its files.
    """
    require(RABBIT_BIN / "rabbitmq-server", RABBIT_BIN / "rabbitmqctl", RABBIT_BIN / "rabbitmq-diagnostics", EPMD)
    root = Path(tempfile.mkdtemp(prefix="berth-rabbit-"))
    node = RabbitNode(root=root, nodename=nodename, amqp_port=free_port(), management_port=free_port(),
                      epmd_port=free_port())
    try:
        _write_rabbit_files(node, config, definitions_json)
        _start_epmd(node)
        _start_rabbit(node, boot_timeout)
        yield node
    finally:
        _stop_rabbit(node)
        shutil.rmtree(root, ignore_errors=True)


def _write_rabbit_files(node: RabbitNode, config: Callable[[RabbitNode], str], definitions_json: str) -> None:
    for sub in ("home", "mnesia", "log", "conf.d"):
        (node.root / sub).mkdir()
    node.definitions_path.write_text(definitions_json)
    (node.root / "rabbitmq.conf").write_text(config(node))
    # The management plugin must be on, or management.* keys are unknown and the config is rejected.
    (node.root / "enabled_plugins").write_text("[rabbitmq_management].\n")


def _start_epmd(node: RabbitNode) -> None:
    # Our own epmd in the foreground, as our child: the VM would otherwise start a daemon that outlives
    # the test (and becomes a zombie of init), and a private port keeps parallel runs apart.
    process = node.epmd = subprocess.Popen([EPMD, "-port", str(node.epmd_port)], env=node.env(),
                                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while run([EPMD, "-port", str(node.epmd_port), "-names"], timeout=10).returncode != 0:
        assert process.poll() is None and time.monotonic() < deadline, "epmd did not start"
        time.sleep(0.05)


def _server_env(node: RabbitNode) -> dict[str, str]:
    root = node.root
    return {
        **node.env(),
        "RABBITMQ_MNESIA_BASE": str(root / "mnesia"),
        "RABBITMQ_LOG_BASE": str(root / "log"),
        "RABBITMQ_CONFIG_FILE": str(root / "rabbitmq.conf"),
        "RABBITMQ_CONFIG_FILES": str(root / "conf.d"),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(root / "advanced.config"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(root / "enabled_plugins"),
        "RABBITMQ_CONF_ENV_FILE": str(root / "rabbitmq-env.conf"),
        "RABBITMQ_PID_FILE": str(root / "rabbit.pid"),
        # Default would be the AMQP port + 20000, which may be taken or out of range.
        "RABBITMQ_DIST_PORT": str(free_port()),
    }


def _start_rabbit(node: RabbitNode, boot_timeout: float) -> None:
    with open(node.root / "console.log", "wb") as console:
        # Own session, so teardown can kill the whole process group the VM spawns.
        process = node.server = subprocess.Popen([str(RABBIT_BIN / "rabbitmq-server")], env=_server_env(node),
                                                 stdout=console, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                 start_new_session=True)
    deadline = time.monotonic() + boot_timeout
    while (remaining := deadline - time.monotonic()) > 0:
        if process.poll() is not None:
            raise AssertionError(f"rabbitmq-server exited {process.returncode}:\n{node.log()}")
        waited = node.ctl("await_startup", "--timeout", str(max(5, int(remaining))), timeout=remaining + 15)
        if waited.returncode == 0:
            return
        time.sleep(1)  # not registered with epmd yet
    raise AssertionError(f"rabbitmq did not start in {boot_timeout}s:\n{node.log()}")


def _stop_rabbit(node: RabbitNode) -> None:
    """Stop the node cleanly if it runs, then make sure the VM, its helpers and epmd are gone and reaped."""
    server = node.server
    if server is not None:
        if server.poll() is None:
            node.ctl("stop", timeout=60)
        _stop(server, signal.SIGTERM)
        # Helpers the VM spawned in its session (erl_child_setup, inet_gethost) go with it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
    if node.epmd is not None:
        _stop(node.epmd, signal.SIGTERM)
