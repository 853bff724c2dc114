"""Backups, proven on the real engine: back up, destroy, restore (in place and into new targets), compare.

Every blueprint with backups is deployed and its data round-tripped:
- praxifi: Redis (AOF off, RDB on) and three app volumes (uploads, outputs, logs), plus an off-host
  SFTP repository (Debian's openssh-server in a container of the test), the schedule, the health,
  corruption and the secrets;
- ai-present-finder: Postgres with five isolated databases (and the superuser's two), RabbitMQ, and
  an unchanged cluster that is not dumped again;
- webprometrics (the db_data volume that holds db.json) and databaseai (its databases), by one
  round trip of every database and volume a blueprint backs up;
- sentineliq: its databases by the same round trip, and MinIO's buckets on a real MinIO server.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shlex
import subprocess
import tarfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote
from xml.etree import ElementTree

import docker
import docker.errors
import pytest
from conftest import ROOT, Deployed, deploy

from berth.plan import backups as plan
from berth.plan.backups import forget_args
from berth.settings import load_settings

HERE = Path(__file__).resolve().parent
SFTP_IMAGE = "berth-backup-test/sftp"
SFTP_NAME = "berth-backup-test-sftp"
BINARY = bytes(range(256)) * 64 + b"\x00\xff end"
# What every test of the tier printed: nothing of it may hold the repository password.
OUTPUTS: list[str] = []


def run(dep: Deployed, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = dep.berth(*args, check=check)
    OUTPUTS.extend((done.stdout, done.stderr))
    return done


def container_of(dep: Deployed, resource: str) -> str:
    """The docker name of one of the stack's containers, by its resource name (e.g. backend-0)."""
    return next(c.docker_name for i, c in dep.applier.state.items()
                if dep.applier.records[i]["name"] == resource and c.kind.endswith("Container"))


def files_digest(dep: Deployed, volume: str) -> dict[str, str]:
    """path -> sha256 of every file in a docker volume, read by a throwaway container of the backup image."""
    image = dep.engine.api.inspect_container(dep.name("backup"))["Image"]
    out = dep.engine.containers.run(image, ["sh", "-c", "cd /v && find . -type f -exec sha256sum {} + | sort -k2"],
                                    entrypoint=[], volumes={volume: {"bind": "/v", "mode": "ro"}}, remove=True,
                                    network_mode="none")
    return {line.split(None, 1)[1]: line.split(None, 1)[0] for line in out.decode().splitlines()}


def redis_values(box, *connect: str) -> dict[str, str]:  # noqa: ANN001
    """Every key of a Redis and its DUMP (type, value and TTL-less encoding) in hex, read in one exec."""
    cli = " ".join(["redis-cli", *connect])
    script = (f"{cli} --scan | sort | while read -r key; do printf '%s ' \"$key\"; "
              f"{cli} --raw dump \"$key\" | od -An -v -tx1 | tr -d ' \\n'; echo; done")
    code, out = box.exec_run(["sh", "-c", script])
    assert code == 0, out
    values = dict(line.split(" ", 1) for line in out.decode().splitlines())
    assert all(values.values()), values  # every key has a value
    return values


def empty_volume(dep: Deployed, volume: str) -> None:
    """Delete every file of a docker volume (as root, in a throwaway container of the backup image)."""
    image = dep.engine.api.inspect_container(dep.name("backup"))["Image"]
    dep.engine.containers.run(image, ["find", "/v", "-mindepth", "1", "-delete"], entrypoint=[], remove=True,
                              volumes={volume: {"bind": "/v", "mode": "rw"}}, network_mode="none")


def write_files(dep: Deployed, container: str, directory: str, seed: str) -> None:
    """A text file, a binary file (every byte value) and a nested one into a mounted volume."""
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w") as tar:
        for name, data in ((f"{seed}.txt", f"text of {seed}\n".encode()), (f"{seed}.bin", BINARY + seed.encode()),
                           (f"nested/deeper/{seed}.json", json.dumps({"seed": seed}).encode())):
            entry = tarfile.TarInfo(name)
            entry.size, entry.mode = len(data), 0o640
            tar.addfile(entry, io.BytesIO(data))
    assert dep.engine.api.put_archive(container, directory, payload.getvalue())


def new_name(output: str, kind: str) -> str:
    match = re.search(rf"into the new {kind} (\S+?)[ ;(]", output)
    assert match, output
    return match.group(1)


# -- praxifi: Redis, app volumes, off-host, schedule, health, corruption, secrets ---------------------------


@pytest.fixture(scope="module")
def sftp(engine: docker.DockerClient) -> Iterator[dict[str, str]]:
    """An SFTP server (Debian's openssh-server) with a key pair for restic, outside the stack."""
    engine.images.build(path=str(HERE / "sftp"), tag=SFTP_IMAGE, rm=True, network_mode="host",
                        buildargs={"BASE": "berth-engine/debian:bookworm"})
    _remove(engine, SFTP_NAME)
    for stale in engine.networks.list(names=[SFTP_NAME]):
        stale.remove()
    network = engine.networks.create(SFTP_NAME, driver="bridge", internal=True)
    box = engine.containers.run(SFTP_IMAGE, name=SFTP_NAME, detach=True, network=SFTP_NAME)
    try:
        for _ in range(100):
            key = box.exec_run(["cat", "/home/restic/client_key"]).output.decode()
            host = box.exec_run(["cat", "/etc/ssh/ssh_host_ed25519_key.pub"]).output.decode()
            if key.startswith("-----BEGIN") and host.startswith("ssh-ed25519"):
                break
            time.sleep(0.2)
        yield {"key": key, "known_hosts": f"sftp {host.strip()}", "container": SFTP_NAME}
    finally:
        _remove(engine, SFTP_NAME)
        network.remove()


def _remove(engine: docker.DockerClient, name: str) -> None:
    try:
        engine.api.remove_container(name, force=True)
    except docker.errors.NotFound:
        pass


@pytest.fixture(scope="module")
def praxifi(engine: docker.DockerClient, sftp: dict[str, str]) -> Iterator[Deployed]:
    extra = {"check_subset": "100%",
             "repositories": {"offsite": {"url": "sftp://restic@sftp/srv/restic/praxifi", "ssh_key": sftp["key"],
                                          "known_hosts": sftp["known_hosts"]}}}
    for dep in deploy(engine, "praxifi", extra):
        # The off-host server joins the stack's edge network (the backup container's way out).
        edge = engine.networks.get(dep.name("edge"))
        edge.connect(sftp["container"], aliases=["sftp"])
        try:
            yield dep
        finally:
            edge.disconnect(sftp["container"], force=True)


class TestPraxifi:
    """Redis and the app volumes: round trip; then the schedule, off-host, health, corruption, secrets."""

    VOLUMES = {"uploads_data": "/app/uploads", "outputs_data": "/app/outputs", "logs_data": "/app/logs"}

    def redis(self, dep: Deployed, *args: str) -> bytes:
        return dep.engine.containers.get(dep.name("redis")).exec_run(["redis-cli", "--raw", *args]).output

    def redis_state(self, dep: Deployed) -> dict[str, str]:
        return redis_values(dep.engine.containers.get(dep.name("redis")))

    def test_round_trip_redis_and_volumes(self, praxifi: Deployed) -> None:
        dep = praxifi
        backend = container_of(dep, "backend-0")
        for i in range(50):
            self.redis(dep, "set", f"session:{i}", f"memory {i}")
        self.redis(dep, "hset", "user:1", "name", "Ada", "lang", "en")
        self.redis(dep, "rpush", "queue", "a", "b", "c")
        assert dep.engine.api.put_archive(dep.name("redis"), "/tmp", _tar("binary", BINARY))
        dep.exec(dep.name("redis"), "sh", "-c", "redis-cli -x set binary </tmp/binary")
        for volume, path in self.VOLUMES.items():
            write_files(dep, backend, path, volume)
        keys = self.redis_state(dep)
        assert len(keys) == 53 and self.redis(dep, "get", "binary").startswith(BINARY)
        digests = {volume: files_digest(dep, dep.name(volume)) for volume in self.VOLUMES}
        assert all(len(d) == 3 for d in digests.values())

        done = run(dep, "backup", "now")
        assert re.search(r"berth-backup: ok schedule=manual items=redis,volumes\.logs_data,volumes\.outputs_data,"
                         r"volumes\.uploads_data unchanged= added=\S+ duration=\d+s repositories=local,offsite",
                         done.stdout), done.stdout
        ids = dep.latest_ids()

        # destroy: flush Redis, empty every volume
        self.redis(dep, "flushall")
        for volume in self.VOLUMES:
            empty_volume(dep, dep.name(volume))
        assert self.redis_state(dep) == {}

        # into new targets: a new volume with the RDB, a new volume per app volume; the live ones untouched
        done = run(dep, "restore", "--snapshot", ids["redis"], "redis")
        restored = new_name(done.stdout, "volume")
        assert self.redis_state(dep) == {}
        assert self.rdb_keys(dep, restored) == keys
        for volume in self.VOLUMES:
            done = run(dep, "restore", "--snapshot", ids[f"volumes.{volume}"], f"volumes.{volume}")
            assert files_digest(dep, new_name(done.stdout, "volume")) == digests[volume]
            assert files_digest(dep, dep.name(volume)) == {}

        # in place: the writers are stopped, the data replaced, the writers started again
        done = run(dep, "restore", "--in-place", "--snapshot", ids["redis"], "redis")
        assert f"stopping {dep.name('redis')}" in done.stderr
        self.wait_redis(dep)
        assert self.redis_state(dep) == keys
        for volume in self.VOLUMES:
            done = run(dep, "restore", "--in-place", "--snapshot", ids[f"volumes.{volume}"], f"volumes.{volume}")
            assert backend in done.stderr  # named as stopped meanwhile
            assert files_digest(dep, dep.name(volume)) == digests[volume]
        assert dep.engine.api.inspect_container(backend)["State"]["Running"]

    def rdb_keys(self, dep: Deployed, volume: str) -> dict[str, str]:
        """The keys of an RDB in a volume, as a Redis server started on it (the stack's image) serves them."""
        image = dep.engine.api.inspect_container(dep.name("redis"))["Image"]
        box = dep.engine.containers.run(image, ["redis-server", "--port", "0", "--unixsocket", "/tmp/r.sock",
                                                "--dir", "/data", "--appendonly", "no"],
                                        volumes={volume: {"bind": "/data", "mode": "rw"}}, detach=True,
                                        network_mode="none")
        try:
            for _ in range(100):
                if b"PONG" in box.exec_run(["redis-cli", "-s", "/tmp/r.sock", "ping"]).output:
                    break
                time.sleep(0.1)
            return redis_values(box, "-s", "/tmp/r.sock")
        finally:
            box.remove(force=True)

    def wait_redis(self, dep: Deployed) -> None:
        for _ in range(150):
            if b"PONG" in self.redis(dep, "ping"):
                return
            time.sleep(0.2)
        raise AssertionError("redis did not come back after the in-place restore")

    def test_the_schedule_fires(self, praxifi: Deployed) -> None:
        """Every minute in this tier: two scheduled runs, each one summary line."""
        deadline = time.monotonic() + 150
        while True:
            logs = dep_logs(praxifi)
            runs = re.findall(r"berth-backup: ok schedule=backup items=\S+ unchanged=\S* added=\S+ duration=\d+s "
                              r"repositories=\S+", logs)
            if len(runs) >= 2:
                break
            assert time.monotonic() < deadline, f"fewer than two scheduled runs in 150s:\n{logs}"
            time.sleep(5)
        times = [s["time"] for s in praxifi.snapshots() if "redis" in (s.get("tags") or [])]
        assert len({t[:16] for t in times}) >= 2  # runs in two different minutes
        assert praxifi.health() == "healthy"

    def test_retention_keeps_exactly_the_policy(self, praxifi: Deployed) -> None:
        """Each blueprint's policy, on snapshots with set times (one a day for 40 days, two on the last four),
        in a scratch repository: restic keeps exactly the snapshots its documented algorithm keeps."""
        backup = praxifi.name("backup")
        script = ("set -e; . /berth/lib.sh; export RESTIC_REPOSITORY=/tmp/retention; rm -rf /tmp/retention; "
                  "restic init -q; echo x >/tmp/f; "
                  "while read -r t; do restic backup -q --host h --tag berth --time \"$t\" /tmp/f; done </tmp/times")
        start = datetime(2026, 1, 1, 1, 0, tzinfo=UTC)
        times = [start + timedelta(days=i) for i in range(40)]
        times += [start + timedelta(days=i, hours=12) for i in range(36, 40)]  # two on each of the last days
        text = "".join(f"{t:%Y-%m-%d %H:%M:%S}\n" for t in times)
        praxifi.engine.api.put_archive(backup, "/tmp", _tar("times", text.encode()))
        praxifi.exec(backup, "sh", "-c", script)
        for blueprint in ("praxifi", "webprometrics", "sentineliq", "ai-present-finder", "databaseai"):
            retention = load_settings({"environment": "dev"}, blueprint=blueprint).backups.retention
            out = praxifi.exec(backup, "sh", "-c", ". /berth/lib.sh; RESTIC_REPOSITORY=/tmp/retention restic forget "
                               "--dry-run --json --group-by host,tags " + " ".join(forget_args(retention)))
            kept = sorted(datetime.fromisoformat(s["time"].replace("Z", "+00:00")).replace(microsecond=0)
                          for group in json.loads(out) for s in group["keep"])
            assert kept == sorted(expected_kept(times, retention)), blueprint
            if blueprint == "praxifi":  # by hand: daily 7 keeps the last snapshot of each of the last 7 days
                assert kept == [start + timedelta(days=d) for d in (33, 34, 35)] + [
                    start + timedelta(days=d, hours=12) for d in (36, 37, 38, 39)]
        praxifi.exec(backup, "rm", "-rf", "/tmp/retention")

    def test_the_password_appears_nowhere(self, praxifi: Deployed) -> None:
        password = praxifi.result["outputs"]["backup_password"]
        assert len(password) == 48
        backup = praxifi.name("backup")
        inspect = json.dumps(praxifi.engine.api.inspect_container(backup))
        env = praxifi.exec(backup, "env")
        logs = dep_logs(praxifi)
        masked = subprocess.run([*PYTHON_BERTH, "synth", "--stack", "backup", "--blueprint", "praxifi"], cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout
        listed = run(praxifi, "backup", "list").stdout
        for where, text in (("docker inspect", inspect), ("env in the container", env), ("container logs", logs),
                            ("CLI output", "\n".join(OUTPUTS)), ("backup list", listed)):
            assert password not in text, where
        assert json.loads(masked)["outputs"]["backup_password"] == "[secret]"
        container = next(r for r in json.loads(masked)["resources"] if r["name"] == "backup-container")
        uploads = container["inputs"]["uploads"]
        assert {u["file"]: u["content"] for u in uploads}["/run/berth/restic-password"] == "[secret]"
        # ...while the container does hold it, as an uploaded file (not in its env or config)
        assert praxifi.exec(backup, "cat", "/run/berth/restic-password") == password

    def test_health_turns_unhealthy_when_the_last_success_is_too_old(self, praxifi: Deployed) -> None:
        """Runs held back (the run lock taken) and the last success 3 periods ago: unhealthy; a run heals it."""
        backup = praxifi.name("backup")
        praxifi.wait_health("healthy")
        holder = praxifi.engine.api.exec_create(backup, ["flock", "/backups/state/lock", "sleep", "25"])
        praxifi.engine.api.exec_start(holder["Id"], detach=True)
        time.sleep(1)
        praxifi.exec(backup, "sh", "-c", "echo $(($(date +%s) - 180)) >/backups/state/last-success-backup")
        praxifi.wait_health("unhealthy", timeout=20)
        probe = praxifi.engine.api.inspect_container(backup)["State"]["Health"]["Log"][-1]["Output"]
        assert re.search(r"backup: last success 1[89]\ds ago", probe), probe
        assert "ok schedule=manual" in run(praxifi, "backup", "now").stdout  # waits for the lock; covers every item
        praxifi.wait_health("healthy", timeout=20)

    def test_corruption_fails_check_health_and_cli(self, praxifi: Deployed) -> None:
        """Bytes flipped in a pack file: check fails, the container turns unhealthy, the CLI exits non-zero."""
        assert run(praxifi, "backup", "check").returncode == 0
        praxifi.wait_health("healthy")
        backup = praxifi.name("backup")
        pack = praxifi.exec(backup, "sh", "-c", "find /backups/repo/data -type f | head -n 1").strip()
        praxifi.exec(backup, "sh", "-c",
                     f"printf 'BERTH-CORRUPTED' | dd of={pack} bs=1 seek=64 conv=notrunc 2>/dev/null")
        done = run(praxifi, "backup", "check", check=False)
        assert done.returncode != 0
        assert re.search(r"(?i)(pack|blob).*(does not match|invalid|error)", done.stdout + done.stderr), done
        assert "check FAILED repositories=local" in done.stdout
        praxifi.wait_health("unhealthy", timeout=30)
        probe = praxifi.engine.api.inspect_container(backup)["State"]["Health"]["Log"][-1]["Output"]
        assert "last check failed: local" in probe


    def test_off_host_restore_from_it_alone(self, praxifi: Deployed) -> None:
        """The host's repository gone (after the corruption above): the SFTP server's copy restores alone."""
        dep = praxifi
        backup = dep.name("backup")
        gone = "flock /backups/state/lock rm -rf /backups/repo /backups/state/check-failed"
        dep.exec(backup, "sh", "-c", gone)
        write_files(dep, container_of(dep, "backend-0"), "/app/uploads", "offsite")
        expected = files_digest(dep, dep.name("uploads_data"))
        done = run(dep, "backup", "now", "volumes")
        assert "repositories=local,offsite" in done.stdout
        assert "volumes.uploads_data" in run(dep, "backup", "--repository", "offsite", "list").stdout
        dep.exec(backup, "sh", "-c", gone)  # only the SFTP server has the backups now
        assert "volumes.uploads_data" not in run(dep, "backup", "list", check=False).stdout
        done = run(dep, "restore", "--repository", "offsite", "volumes.uploads_data")
        assert "repository offsite" in done.stderr
        assert files_digest(dep, new_name(done.stdout, "volume")) == expected
        stored = dep.engine.containers.get(SFTP_NAME).exec_run(["find", "/srv/restic/praxifi", "-type", "f"]).output
        assert b"/data/" in stored and b"/snapshots/" in stored and b"offsite" not in stored  # encrypted


PYTHON_BERTH = [__import__("sys").executable, "-m", "berth"]


def dep_logs(dep: Deployed) -> str:
    return dep.engine.api.logs(dep.name("backup"), stdout=True, stderr=True).decode(errors="replace")


def _tar(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        entry = tarfile.TarInfo(name)
        entry.size = len(data)
        tar.addfile(entry, io.BytesIO(data))
    return buffer.getvalue()


def expected_kept(times: list[datetime], retention: Any) -> set[datetime]:
    """restic's documented forget algorithm: newest first, each rule keeps the first snapshot of each of
    its N most recent periods (last: every snapshot); within keeps what is newer than latest - duration."""
    rules = {"last": lambda t: t, "hourly": lambda t: t.strftime("%Y%m%d%H"), "daily": lambda t: t.date(),
             "weekly": lambda t: t.isocalendar()[:2], "monthly": lambda t: (t.year, t.month)}
    left = {rule: getattr(retention, rule) for rule in rules if getattr(retention, rule) is not None}
    seen: dict[str, object] = {}
    kept: set[datetime] = set()
    newest = max(times)
    for t in sorted(times, reverse=True):
        for rule, count in left.items():
            bucket = rules[rule](t)
            if count > 0 and seen.get(rule) != bucket:
                seen[rule] = bucket
                left[rule] = count - 1
                kept.add(t)
        if retention.within is not None and t > newest - _duration(retention.within):
            kept.add(t)
    return kept


def _duration(text: str) -> timedelta:
    days = {"y": 365, "m": 30, "d": 1}
    total = timedelta()
    for number, unit in re.findall(r"(\d+)([ymdh])", text):
        total += timedelta(hours=int(number)) if unit == "h" else timedelta(days=int(number) * days[unit])
    return total


# -- ai-present-finder: Postgres (every database) and RabbitMQ ----------------------------------------------


@pytest.fixture(scope="module")
def apf(engine: docker.DockerClient) -> Iterator[Deployed]:
    yield from deploy(engine, "ai-present-finder", {})


# Backup runs the unchanged-data test allows for the cluster's own WAL (checkpoint, standby snapshot) to settle.
SETTLE_RUNS = 4
QUERY = "SELECT id, encode(payload, 'hex'), note FROM berth_rows ORDER BY id"


def psql(dep: Deployed, db: str, sql: str, role: str | None = None) -> str:
    """SQL as the superuser (or SET ROLE to a database's owner) in the stack's Postgres; its output."""
    prefix = f"SET ROLE {role}; " if role else ""
    return dep.exec(dep.name("postgres"), "psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-U", dep.settings.postgres.user,
                    "-d", db, "-c", prefix + sql)


def owners(dep: Deployed) -> dict[str, str]:
    """Every database berth provisions, and the role that owns it."""
    pg = dep.settings.postgres
    return {db: spec.owner or db for db, spec in pg.databases.items()} | {pg.database: pg.user}


def write_rows(dep: Deployed, db: str, owner: str) -> str:
    """500 rows with binary and non-ASCII values into a new table of DB (as its owner); the query's output."""
    psql(dep, db, "CREATE TABLE berth_rows (id int PRIMARY KEY, payload bytea, note text); "
         f"INSERT INTO berth_rows SELECT g, sha256(('{db}' || g)::bytea) || '\\x00ff'::bytea, "
         f"'row ' || g || ' of {db} ' || repeat('é', g % 7) FROM generate_series(1, 500) g",
         owner if owner != dep.settings.postgres.user else None)
    return psql(dep, db, QUERY)


class TestAiPresentFinder:
    """Every Postgres database and RabbitMQ's definitions: back up, destroy, restore both ways, compare."""

    def mq(self, dep: Deployed, method: str, path: str, body: object | None = None) -> str:
        data = ["-H", "content-type: application/json", "--data-binary", json.dumps(body)] if body is not None else []
        return dep.exec(dep.name("backup"), "curl", "-fsS", "-K", "/run/berth/rabbitmq.curlrc", "-X", method,
                        *data, f"http://rabbitmq:15672/api/{path}")

    def definitions(self, dep: Deployed, text: str | None = None) -> dict[str, Any]:
        doc = json.loads(text if text is not None else self.mq(dep, "GET", "definitions"))
        doc = {k: v for k, v in doc.items() if k not in ("rabbit_version", "rabbitmq_version", "product_name",
                                                         "product_version")}
        return {k: sorted(v, key=lambda x: json.dumps(x, sort_keys=True)) if isinstance(v, list) else v
                for k, v in doc.items()}

    def test_round_trip_every_database(self, apf: Deployed) -> None:
        dep = apf
        roles = owners(dep)
        for db, owner in roles.items():
            role = owner if owner != dep.settings.postgres.user else None
            psql(dep, db, "CREATE TABLE berth_rows (id int PRIMARY KEY, payload bytea, note text); "
                      f"INSERT INTO berth_rows SELECT g, sha256(('{db}' || g)::bytea) || '\\x00ff'::bytea, "
                      f"'row ' || g || ' of {db} ' || repeat('é', g % 7) FROM generate_series(1, 500) g", role)
        before = {db: psql(dep, db, QUERY) for db in roles}
        assert all(len(rows.splitlines()) == 500 for rows in before.values())

        run(dep, "backup", "now", "postgres")
        ids = dep.latest_ids()
        assert {f"postgres.databases.{db}" for db in roles} | {"postgres.globals"} <= set(ids)
        assert "CREATE ROLE" in run(dep, "restore", "--snapshot", ids["postgres.globals"], "postgres.globals").stdout

        for db, owner in roles.items():
            # a new database beside the live one, owned by the same role
            done = run(dep, "restore", "--snapshot", ids[f"postgres.databases.{db}"], f"postgres.databases.{db}")
            target = new_name(done.stdout, "database")
            assert psql(dep, target, QUERY) == before[db]
            assert psql(dep, "postgres", f"SELECT pg_get_userbyid(datdba) FROM pg_database "
                                              f"WHERE datname = '{target}'").strip() == owner
            # destroy, then in place
            if db == dep.settings.postgres.database:
                psql(dep, db, "DROP TABLE berth_rows")
            else:
                psql(dep, "postgres", f"DROP DATABASE {db} WITH (FORCE)")
            run(dep, "restore", "--in-place", "--snapshot", ids[f"postgres.databases.{db}"], f"postgres.databases.{db}")
            assert psql(dep, db, QUERY) == before[db]
            # as berth provisions it: the owner may connect, no other role may
            privileges = (f"SELECT has_database_privilege('{owner}', '{db}', 'CONNECT'), "
                          f"bool_or(has_database_privilege(rolname, '{db}', 'CONNECT')) FROM pg_roles "
                          f"WHERE rolname <> '{owner}' AND NOT rolsuper AND rolname NOT LIKE 'pg%'")
            assert psql(dep, "postgres", privileges).strip() in ("t|f", "t|")

    def test_round_trip_rabbitmq(self, apf: Deployed) -> None:
        dep = apf
        self.mq(dep, "PUT", "vhosts/berth-test")
        self.mq(dep, "PUT", "users/berth-tester", {"password": "tester-pw", "tags": "management"})
        self.mq(dep, "PUT", "permissions/berth-test/berth-tester", {"configure": ".*", "write": ".*", "read": ".*"})
        self.mq(dep, "PUT", "queues/berth-test/orders", {"durable": True, "arguments": {"x-max-length": 1000}})
        before = self.definitions(dep)
        assert any(q["name"] == "orders" for q in before["queues"])

        run(dep, "backup", "now", "rabbitmq")
        ids = dep.latest_ids()
        printed = run(dep, "restore", "--snapshot", ids["rabbitmq"], "rabbitmq").stdout  # to stdout: nothing replaced
        assert self.definitions(dep, printed) == before

        self.mq(dep, "DELETE", "vhosts/berth-test")
        self.mq(dep, "DELETE", "users/berth-tester")
        assert self.definitions(dep) != before
        done = run(dep, "restore", "--in-place", "--snapshot", ids["rabbitmq"], "rabbitmq")
        assert "importing RabbitMQ's definitions" in done.stderr
        assert self.definitions(dep) == before

    def test_unchanged_databases_are_not_dumped_again(self, apf: Deployed) -> None:
        """A run that finds the cluster where the last dumps left it keeps their snapshots; a write dumps anew."""
        dep = apf

        def listed(line: str, field: str) -> dict[str, str]:
            """item -> snapshot (or '') of one field of the summary line."""
            found = re.search(rf"berth-backup: ok .*\b{field}=(\S*)", line)
            assert found, line
            return dict((*entry.split("@", 1), "")[:2] for entry in found.group(1).split(",") if entry)

        everything = {"postgres.globals"} | {f"postgres.databases.{db}" for db in psql(
            dep, "postgres", "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate").split()}
        # The tier's earlier writes leave WAL of the server's own to come: a checkpoint (forced here, so
        # the timed one finds nothing to do) and the standby snapshot bgwriter logs within 15 s of them.
        psql(dep, "postgres", "CHECKPOINT")
        run(dep, "backup", "now", "postgres")  # the dumps the next runs compare the cluster with
        for _ in range(SETTLE_RUNS):
            before = dep.latest_ids()
            line = run(dep, "backup", "now", "postgres").stdout
            ended = datetime.now(UTC)
            if set(listed(line, "unchanged")) == everything:
                break
            time.sleep(16)
        else:
            raise AssertionError(f"no run in {SETTLE_RUNS} found the cluster unchanged: {line}")
        assert listed(line, "items") == {}  # nothing dumped
        # No snapshot was made while the run held the run lock (its duration= starts once it has the
        # lock; the every-minute schedule may run before or after it), and each kept snapshot is its item's.
        held = re.search(r" duration=(\d+)s ", line)
        assert held, line
        began = ended - timedelta(seconds=int(held.group(1)))
        snapshots = dep.snapshots()
        assert not [s for s in snapshots if began <= datetime.fromisoformat(s["time"].replace("Z", "+00:00")) <= ended]
        tags = {s["short_id"]: set(s["tags"]) for s in snapshots}
        assert all(item in tags[snapshot[:8]] for item, snapshot in listed(line, "unchanged").items()), line

        db = dep.settings.postgres.database
        psql(dep, db, "CREATE TABLE berth_after (note text); INSERT INTO berth_after VALUES ('written later')")
        line = run(dep, "backup", "now", "postgres").stdout
        # One write anywhere: everything is dumped again, by this run or by the every-minute schedule
        # if it ran first (then this run finds the new dumps unchanged).
        after = dep.latest_ids()
        assert all(after[item] != before[item] for item in everything), (line, before, after)
        assert set(listed(line, "items")) in (everything, set()), line
        done = run(dep, "restore", f"postgres.databases.{db}")
        target = new_name(done.stdout, "database")
        assert psql(dep, target, "SELECT note FROM berth_after").strip() == "written later"


# -- the other seeds: WebProMetrics' db.json volume, DataBaseAI's databases ------------------------------------


@pytest.fixture(scope="module", params=["webprometrics", "databaseai"])
def seed(request: pytest.FixtureRequest, engine: docker.DockerClient) -> Iterator[Deployed]:
    yield from deploy(engine, request.param, {})


def test_round_trip_of_every_item(seed: Deployed) -> None:
    """Each item of the blueprint's data: written, backed up, destroyed, restored beside and in place, compared."""
    round_trip_databases_and_volumes(seed)


def round_trip_databases_and_volumes(dep: Deployed) -> None:
    """Every database and app volume the blueprint backs up: written, backed up, destroyed, restored both ways."""
    mounts = {volume: (name, path) for name, app in dep.settings.enabled_apps.items()
              for volume, path in app.volumes.items()}
    items = set(plan.items(dep.settings))
    assert items & {"postgres", "volumes"}, f"{dep.blueprint} backs up no database or volume"
    rows = {db: write_rows(dep, db, owner) for db, owner in owners(dep).items()} if "postgres" in items else {}
    files = {}
    for volume in plan.volumes(dep.settings):
        app, path = mounts[volume]
        write_files(dep, container_of(dep, f"{app}-0"), path, f"{dep.blueprint}-{volume}")
        files[volume] = files_digest(dep, dep.name(volume))
        assert len(files[volume]) >= 3
    done = run(dep, "backup", "now")
    assert "berth-backup: ok " in done.stdout, done.stdout
    ids = dep.latest_ids()

    for db, before in rows.items():
        tag = f"postgres.databases.{db}"
        restored = run(dep, "restore", "--snapshot", ids[tag], tag)
        assert psql(dep, new_name(restored.stdout, "database"), QUERY) == before
        psql(dep, db, "DROP TABLE berth_rows")
        run(dep, "restore", "--in-place", "--snapshot", ids[tag], tag)
        assert psql(dep, db, QUERY) == before
    for volume, before in files.items():
        tag = f"volumes.{volume}"
        restored = run(dep, "restore", "--snapshot", ids[tag], tag)
        assert files_digest(dep, new_name(restored.stdout, "volume")) == before
        empty_volume(dep, dep.name(volume))
        assert files_digest(dep, dep.name(volume)) == {}
        run(dep, "restore", "--in-place", "--snapshot", ids[tag], tag)
        assert files_digest(dep, dep.name(volume)) == before
    # the writers are back after an in-place restore
    for app in dep.settings.enabled_apps:
        assert dep.engine.containers.get(container_of(dep, f"{app}-0")).status == "running", app


# -- sentineliq: MinIO's buckets (a real MinIO server) ------------------------------------------------------

MINIO_IMAGE = "berth-engine/minio:latest"
BUCKETS = ("sentineliq-files", "berth-media")
# Every object is written and read back with curl's own SigV4 signing, not with rclone (which backs up).
S3 = ('. /berth/lib.sh; s3() { curl -fsS --aws-sigv4 aws:amz:us-east-1:s3 '
      '--user "$RCLONE_CONFIG_MINIO_ACCESS_KEY_ID:$RCLONE_CONFIG_MINIO_SECRET_ACCESS_KEY" "$@"; }; ')


def objects(seed: str) -> dict[str, bytes]:
    """A text, a binary (every byte value), a nested and an empty object, and a key with a space."""
    return {f"{seed}.txt": f"text of {seed}\n".encode(), f"{seed}.bin": BINARY + seed.encode(),
            "a/b/c.bin": bytes(reversed(BINARY)) + seed.encode(), "empty": b"",
            "deep/er/still/with space.json": json.dumps({"seed": seed}).encode()}


@pytest.fixture(scope="module")
def sentineliq(engine: docker.DockerClient) -> Iterator[Deployed]:
    """SentinelIQ with a real MinIO server; Elasticsearch, Logstash and Kibana stay out (no server here).

    The bucket job (minio/mc) has no local image: buckets are [] and the test makes its own with curl.
    """
    raw = {"minio": {"enabled": True, "buckets": [], "healthcheck": {"interval": "2s", "start_period": "0s"}},
           "images": {"minio/minio:latest": MINIO_IMAGE},
           "apps": {"server": {"depends_on": ["migrate", "postgres", "redis", "minio"]}}}
    # Only Logstash's address is dropped from the blueprint: the server keeps MinIO's keys and endpoint.
    yield from deploy(engine, "sentineliq", {}, raw, drops=[("apps", "server", "env", "LOGSTASH_HOST")])


class TestSentineliq:
    """MinIO's buckets: back up (twice: the mirror is a cache), destroy, restore into new buckets and in place."""

    def s3(self, dep: Deployed, script: str) -> str:
        return dep.exec(dep.name("backup"), "sh", "-c", S3 + script)

    def put(self, dep: Deployed, bucket: str, objs: dict[str, bytes]) -> None:
        payload = io.BytesIO()
        with tarfile.open(fileobj=payload, mode="w") as tar:
            for i, data in enumerate(objs.values()):
                entry = tarfile.TarInfo(f"berth-objects/{i}")
                entry.size = len(data)
                tar.addfile(entry, io.BytesIO(data))
        dep.exec(dep.name("backup"), "rm", "-rf", "/tmp/berth-objects")
        assert dep.engine.api.put_archive(dep.name("backup"), "/tmp", payload.getvalue())
        uploads = "; ".join(f"s3 -T /tmp/berth-objects/{i} 'http://minio:9000/{bucket}/{quote(key)}' >/dev/null"
                            for i, key in enumerate(objs))
        self.s3(dep, f"set -e; {uploads}; rm -rf /tmp/berth-objects")

    def listing(self, dep: Deployed, bucket: str) -> dict[str, str]:
        """key -> sha256 of every object of a bucket (ListObjectsV2, then a GET of each)."""
        xml = self.s3(dep, f"s3 'http://minio:9000/{bucket}?list-type=2&max-keys=1000'")
        ns = {"s3": "http://s3.amazonaws.com/doc/2006-03-01/"}
        root = ElementTree.fromstring(xml)
        assert root.findtext("s3:IsTruncated", namespaces=ns) == "false"
        keys = sorted(e.text or "" for e in root.findall("s3:Contents/s3:Key", ns))
        if not keys:
            return {}
        gets = "; ".join(f"s3 'http://minio:9000/{bucket}/{quote(key)}' | sha256sum" for key in keys)
        sums = self.s3(dep, f"set -e; {gets}").split()[::2]
        return dict(zip(keys, sums, strict=True))

    def buckets(self, dep: Deployed) -> list[str]:
        root = ElementTree.fromstring(self.s3(dep, "s3 http://minio:9000/"))
        return sorted(e.text or "" for e in root.iter("{http://s3.amazonaws.com/doc/2006-03-01/}Name"))

    def test_round_trip_databases(self, sentineliq: Deployed) -> None:
        """SentinelIQ's databases, as for the other seeds (its Redis goes through the same code Praxifi proves)."""
        round_trip_databases_and_volumes(sentineliq)

    def test_round_trip_every_bucket(self, sentineliq: Deployed) -> None:
        dep = sentineliq
        for bucket in BUCKETS:
            self.s3(dep, f"s3 -X PUT http://minio:9000/{bucket}")
            self.put(dep, bucket, objects(bucket))
        before = {bucket: self.listing(dep, bucket) for bucket in BUCKETS}
        expected = {key: hashlib.sha256(data).hexdigest() for key, data in objects("berth-media").items()}
        assert before["berth-media"] == expected and len(before["sentineliq-files"]) == 5

        done = run(dep, "backup", "now", "minio")
        assert re.search(r"berth-backup: ok schedule=manual items=minio\.buckets\.berth-media,"
                         r"minio\.buckets\.sentineliq-files unchanged= added=\S+ duration=\d+s repositories=local",
                         done.stdout), done.stdout
        ids = dep.latest_ids()
        mirrored = "/backups/mirror/minio/sentineliq-files/a/b/c.bin"
        stamp = dep.exec(dep.name("backup"), "stat", "-c", "%i %Y %Z", mirrored)
        # a second run: the mirror is a cache, rclone downloads nothing that did not change
        self.put(dep, "sentineliq-files", {"later.txt": b"written after the first backup\n"})
        run(dep, "backup", "now", "minio")
        assert dep.exec(dep.name("backup"), "stat", "-c", "%i %Y %Z", mirrored) == stamp
        assert dep.exec(dep.name("backup"), "cat", "/backups/mirror/minio/sentineliq-files/later.txt")
        # the snapshot layout restic dump reads: /minio/<bucket>/<key>
        media = ids["minio.buckets.berth-media"]
        listed = dep.exec(dep.name("backup"), "sh", "-c",
                          f"sh /berth/restore.sh local {media} dump minio.buckets.berth-media 2>/dev/null | tar -t")
        assert "minio/berth-media/a/b/c.bin" in listed.split()

        # destroy: objects deleted and one overwritten in one bucket, the other bucket removed whole
        self.s3(dep, "s3 -X DELETE http://minio:9000/sentineliq-files/a/b/c.bin; "
                     "s3 -X DELETE http://minio:9000/sentineliq-files/empty")
        self.put(dep, "sentineliq-files", {"sentineliq-files.bin": b"overwritten"})
        self.s3(dep, "for k in $(s3 'http://minio:9000/berth-media?list-type=2' | grep -o '<Key>[^<]*' | cut -c6- "
                     "| sed 's/ /%20/g'); do s3 -X DELETE \"http://minio:9000/berth-media/$k\"; done; "
                     "s3 -X DELETE http://minio:9000/berth-media")
        assert "berth-media" not in self.buckets(dep)
        broken = self.listing(dep, "sentineliq-files")

        # into a new bucket: a valid S3 name, the live bucket untouched
        for bucket in BUCKETS:
            done = run(dep, "restore", "--snapshot", ids[f"minio.buckets.{bucket}"], f"minio.buckets.{bucket}")
            target = new_name(done.stdout, "bucket")
            assert re.fullmatch(rf"{bucket}-restored-\d{{14}}", target) and len(target) <= 63
            assert self.listing(dep, target) == before[bucket]
        assert self.listing(dep, "sentineliq-files") == broken and "berth-media" not in self.buckets(dep)

        # in place: the apps that take MinIO's keys stop meanwhile; objects not in the snapshot go
        server = container_of(dep, "server-0")
        for bucket in BUCKETS:
            done = run(dep, "restore", "--in-place", "--snapshot", ids[f"minio.buckets.{bucket}"],
                       f"minio.buckets.{bucket}")
            assert f"replacing every object of bucket {bucket}" in done.stderr
            assert f"Stopping meanwhile: {server}" in done.stderr
            assert self.listing(dep, bucket) == before[bucket]
        assert dep.engine.containers.get(server).status == "running"

    def test_minios_keys_appear_nowhere_but_the_secret_file(self, sentineliq: Deployed) -> None:
        minio = sentineliq.engine.api.inspect_container(sentineliq.name("minio"))
        env = dict(e.split("=", 1) for e in minio["Config"]["Env"])
        secret = env["MINIO_ROOT_PASSWORD"]
        backup = sentineliq.name("backup")
        inspect = json.dumps(sentineliq.engine.api.inspect_container(backup))
        for where, text in (("docker inspect", inspect), ("env in the container", sentineliq.exec(backup, "env")),
                            ("container logs", dep_logs(sentineliq)), ("CLI output", "\n".join(OUTPUTS))):
            assert secret not in text, where
        assert "RCLONE_CONFIG_MINIO_ACCESS_KEY_ID" not in inspect
        assert f"RCLONE_CONFIG_MINIO_SECRET_ACCESS_KEY={shlex.quote(secret)}" in sentineliq.exec(
            backup, "cat", "/run/berth/services.env")
