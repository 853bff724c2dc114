"""Operator commands for a stack's backups, run INSIDE its backup container over the stack's transport.

    python -m berth backup  --stack S now [ITEM ...] | list | check   [--repository NAME]
    python -m berth restore --stack S [--snapshot ID|latest] [--repository NAME] [--in-place] WHAT

WHAT is ``postgres.databases.<db>``, ``postgres.globals``, ``redis``, ``rabbitmq``, ``minio.buckets.<bucket>``
or ``volumes.<name>``.
The docker CLI talks to ``host.url`` (unix://, ssh://user@host or tcp:// with TLS), as the provider does;
restic runs in the backup container, so the repository password never leaves the host. A restore
never overwrites unless ``--in-place`` is given: a database goes into a new database, a volume (and
Redis's RDB) into a new volume, a MinIO bucket into a new bucket (``<bucket>-restored-<UTC time>``),
RabbitMQ's definitions to stdout. ``--in-place`` prints what it replaces, stops the containers that
write it (for a bucket: the apps and jobs that take MinIO's keys), restores, and starts them again.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from berth.plan import backups as plan
from berth.plan.containers import docker_name
from berth.settings import Settings, from_stack_files, load_settings

EXIT_USAGE = 2


class OpsError(Exception):
    """A command that cannot run as asked; the message says why."""


def add_commands(commands: argparse._SubParsersAction) -> None:
    """The `backup` and `restore` subcommands."""
    backup = commands.add_parser("backup", help="run, list or check a stack's backups (in its backup container)")
    backup.add_argument("--stack", required=True)
    backup.add_argument("--blueprint", help="a file in blueprints/, instead of the stack's own")
    backup.add_argument("--repository", default=plan.LOCAL, help="local (default) or an off-host repository's name")
    backup.add_argument("action", choices=("now", "list", "check"))
    backup.add_argument("items", nargs="*",
                        help="with now: only these items (postgres, redis, rabbitmq, minio, volumes)")
    restore = commands.add_parser("restore", help="restore one thing from a backup; never overwrites unless --in-place")
    restore.add_argument("--stack", required=True)
    restore.add_argument("--blueprint", help="a file in blueprints/, instead of the stack's own")
    restore.add_argument("--snapshot", default="latest", help="a snapshot ID from `backup list`, or latest")
    restore.add_argument("--repository", default=plan.LOCAL)
    restore.add_argument("--in-place", action="store_true", help="replace the live data (stops its writers meanwhile)")
    restore.add_argument("what", help="postgres.databases.<db>, postgres.globals, redis, rabbitmq, "
                         "minio.buckets.<bucket> or volumes.<name>")


def run(args: argparse.Namespace) -> int:
    """Run `backup` or `restore`; an error is one line on stderr and a non-zero exit."""
    settings = load_settings(from_stack_files(args.stack), args.blueprint)
    if plan.backups(settings) is None:
        print(f"berth: stack {args.stack} has no backups (settings: backups)", file=sys.stderr)
        return EXIT_USAGE
    ops = Ops(settings)
    try:
        if args.command == "backup":
            return ops.backup(args.action, args.items, args.repository)
        return ops.restore(args.what, args.snapshot, args.repository, args.in_place)
    except OpsError as error:
        print(f"berth: {error}", file=sys.stderr)
        return 1


class Ops:
    """The docker CLI against the stack's host, and the steps of each command."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.container = docker_name(settings, "backup")

    # -- transport -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _docker_base(self) -> Iterator[list[str]]:
        host = self.settings.host
        if not host.url.startswith("tcp://") or host.ca is None:
            yield ["docker", "-H", host.url]
            return
        with tempfile.TemporaryDirectory(prefix="berth-tls-") as tls:
            flags = ["--tlsverify"]
            for name, value in (("ca", host.ca), ("cert", host.cert), ("key", host.key)):
                if value is not None:
                    path = Path(tls) / f"{name}.pem"
                    path.write_text(value.get_secret_value())
                    path.chmod(0o600)
                    flags += [f"--tls{'cacert' if name == 'ca' else name}", str(path)]
            yield ["docker", "-H", host.url, *flags]

    def docker(self, *args: str, stdin: int | None = None, capture: bool = False,
               stdout: int | None = None) -> subprocess.CompletedProcess[str]:
        """One docker CLI call; its output goes to ours unless captured."""
        with self._docker_base() as base:
            return subprocess.run([*base, *args], stdin=stdin, text=True, check=False,
                                  stdout=subprocess.PIPE if capture else stdout,
                                  stderr=subprocess.PIPE if capture else None)

    def _must(self, *args: str) -> str:
        result = self.docker(*args, capture=True)
        if result.returncode != 0:
            raise OpsError(f"docker {' '.join(args[:2])}: {result.stderr.strip()}")
        return result.stdout.strip()

    def exec(self, *command: str) -> int:
        """A script in the backup container, its output streamed to ours."""
        return self.docker("exec", self.container, *command).returncode

    def piped(self, source: Sequence[str], sink: Sequence[str]) -> None:
        """`docker exec <backup> source | docker sink`: a restore streamed from the backup container into a helper."""
        with self._docker_base() as base:
            producer = subprocess.Popen([*base, "exec", self.container, *source], stdout=subprocess.PIPE)
            consumer = subprocess.run([*base, *sink], stdin=producer.stdout, check=False)
            assert producer.stdout is not None
            producer.stdout.close()
            if producer.wait() != 0 or consumer.returncode != 0:
                raise OpsError(f"the restore stream failed (source exit {producer.returncode}, "
                               f"target exit {consumer.returncode})")

    # -- backup --------------------------------------------------------------------------------

    def backup(self, action: str, items: list[str], repository: str) -> int:
        """now: a run like a scheduled one; list: the snapshots; check: restic check of every repository."""
        if action == "now":
            return self.exec("sh", f"{plan.SCRIPTS_DIR}/backup.sh", *items)
        if action == "check":
            return self.exec("sh", f"{plan.SCRIPTS_DIR}/check.sh")
        return self.exec("sh", f"{plan.SCRIPTS_DIR}/restic.sh", repository, "snapshots", "--tag", plan.TAG)

    # -- restore -------------------------------------------------------------------------------

    def restore(self, what: str, snapshot: str, repository: str, in_place: bool) -> int:
        """Restore WHAT from a snapshot; see the module docstring."""
        restore = ["sh", f"{plan.SCRIPTS_DIR}/restore.sh", repository, snapshot]
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
        if what.startswith("postgres.databases."):
            return self._restore_database(what.split(".", 2)[2], restore, stamp, in_place)
        if what in ("postgres.globals", "rabbitmq") and not in_place:
            return self.exec(*restore, "dump", what)
        if what == "rabbitmq":
            print("berth: importing RabbitMQ's definitions into rabbitmq: users, vhosts, permissions, queues, "
                  "exchanges and policies of the snapshot are created or overwritten; nothing else is deleted",
                  file=sys.stderr)
            return self.exec(*restore, "rabbitmq")
        if what == "redis":
            return self._restore_redis(restore, stamp, in_place)
        if what.startswith("volumes."):
            return self._restore_volume(what.split(".", 1)[1], restore, stamp, in_place)
        if what.startswith("minio.buckets."):
            return self._restore_bucket(what.split(".", 2)[2], restore, stamp, in_place)
        raise OpsError(f"cannot restore {what!r}: name postgres.databases.<db>, postgres.globals, redis, rabbitmq, "
                       "minio.buckets.<bucket> or volumes.<name>")

    def _restore_database(self, db: str, restore: list[str], stamp: str, in_place: bool) -> int:
        pg = self.settings.postgres
        if "postgres" not in plan.items(self.settings) or pg is None:
            raise OpsError("postgres is not backed up in this stack")
        owner = (pg.databases[db].owner or db) if db in pg.databases else pg.user
        if not in_place:
            target = f"{db}_restored_{stamp}"
            code = self.exec(*restore, "postgres", db, target, owner, "new")
            if code == 0:
                print(f"berth: restored into the new database {target} (owner {owner}); {db} is untouched")
            return code
        writers = self._writers(self._database_users(db))
        print(f"berth: replacing database {db} on postgres with the backup; its current contents are dropped. "
              f"Stopping meanwhile: {', '.join(writers) or 'nothing'}", file=sys.stderr)
        with self._stopped(writers):
            return self.exec(*restore, "postgres", db, db, owner, "replace")

    def _restore_redis(self, restore: list[str], stamp: str, in_place: bool) -> int:
        rd = self.settings.redis
        if "redis" not in plan.items(self.settings) or rd is None:
            raise OpsError("redis is not backed up in this stack")
        redis = docker_name(self.settings, "redis")
        source = [*restore, "dump", "redis"]
        if not in_place:
            volume = self._new_volume(f"{rd.volume}-restored-{stamp}")
            self._staged(source, volume, "/data", self._image(redis), plan.REDIS_RESTORE_SH, rd.persistence)
            print(f"berth: restored Redis's RDB into the new volume {volume} (dump.rdb); the live Redis is untouched")
            return 0
        volume = docker_name(self.settings, rd.volume)
        print(f"berth: replacing Redis's whole dataset (volume {volume}) with the backup; stopping {redis} meanwhile",
              file=sys.stderr)
        with self._stopped([redis]):
            self._staged(source, volume, "/data", self._image(redis), plan.REDIS_RESTORE_SH, rd.persistence)
        return 0

    def _restore_volume(self, name: str, restore: list[str], stamp: str, in_place: bool) -> int:
        if name not in plan.volumes(self.settings):
            raise OpsError(f"volume {name!r} is not backed up (backed up: {plan.volumes(self.settings)})")
        image = self._image(self.container)
        source = [*restore, "dump", f"volumes.{name}"]
        if not in_place:
            volume = self._new_volume(f"{name}-restored-{stamp}")
            self._staged(source, volume, "/target", image, plan.VOLUME_RESTORE_SH)
            print(f"berth: restored volume {name} into the new volume {volume}; the live volume is untouched")
            return 0
        volume = docker_name(self.settings, name)
        writers = [c for c in self._must("ps", "--filter", f"volume={volume}", "--format", "{{.Names}}").split()
                   if c != self.container]
        print(f"berth: replacing every file of volume {volume} with the backup; stopping meanwhile: "
              f"{', '.join(writers) or 'nothing'}", file=sys.stderr)
        with self._stopped(writers):
            self._staged(source, volume, "/target", image, plan.VOLUME_RESTORE_SH)
        return 0

    def _restore_bucket(self, bucket: str, restore: list[str], stamp: str, in_place: bool) -> int:
        if "minio" not in plan.items(self.settings):
            raise OpsError("minio is not backed up in this stack")
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
            raise OpsError(f"{bucket!r} is not an S3 bucket name (3-63 of a-z, 0-9, '.', '-')")
        if not in_place:
            target = plan.restored_bucket(bucket, stamp)
            code = self.exec(*restore, "minio", bucket, target, "new")
            if code == 0:
                print(f"berth: restored bucket {bucket} into the new bucket {target}; {bucket} is untouched")
            return code
        writers = self._writers(self._minio_users())
        print(f"berth: replacing every object of bucket {bucket} on minio with the backup; objects not in it are "
              f"deleted. Stopping meanwhile: {', '.join(writers) or 'nothing'}", file=sys.stderr)
        with self._stopped(writers):
            return self.exec(*restore, "minio", bucket, bucket, "replace")

    def _staged(self, source: list[str], volume: str, path: str, image: str, script: str, *args: str) -> None:
        """Stream the snapshot into a staging area of the volume; only a whole one replaces what is there."""
        try:
            self.piped(source, self._helper(volume, path, image, script, "stage", *args))
        except OpsError:
            self.docker(*self._helper(volume, path, image, script, "discard", *args))
            raise
        if self.docker(*self._helper(volume, path, image, script, "swap", *args)).returncode != 0:
            raise OpsError(f"the staged restore could not replace the contents of volume {volume}")

    # -- helpers -------------------------------------------------------------------------------

    def _helper(self, volume: str, path: str, image: str, script: str, *args: str) -> list[str]:
        """A one-shot container with `volume` at `path` that runs `script` on the restore stream."""
        return ["run", "--rm", "-i", "--network", "none", "-v", f"{volume}:{path}", "--entrypoint", "sh",
                image, "-c", script, "restore", *args]

    def _image(self, container: str) -> str:
        return self._must("inspect", "--format", "{{.Image}}", container)

    def _new_volume(self, name: str) -> str:
        volume = docker_name(self.settings, name)
        if self.docker("volume", "inspect", volume, capture=True).returncode == 0:
            raise OpsError(f"volume {volume} exists; not overwritten")
        self._must("volume", "create", "--label", f"berth.environment={self.settings.environment}",
                   "--label", "berth.restored=true", volume)
        return volume

    def _database_users(self, db: str) -> list[str]:
        """The apps and jobs that take this database's credentials."""
        pg = self.settings.postgres
        assert pg is not None
        refs = {f"postgres.databases.{db}.url", f"postgres.databases.{db}.password"}
        if db == pg.database:
            refs |= {"postgres.url", "postgres.password"}
        return self._users(refs)

    def _minio_users(self) -> list[str]:
        """The apps and jobs that take MinIO's credentials."""
        return self._users({"minio.access_key", "minio.secret_key"})

    def _users(self, refs: set[str]) -> list[str]:
        """The enabled apps and jobs that take any of these secrets, sorted."""
        workloads = {**self.settings.enabled_apps, **self.settings.enabled_jobs}
        return sorted(name for name, w in workloads.items() if set(w.secrets.values()) & refs)

    def _writers(self, workloads: list[str]) -> list[str]:
        """Running containers that answer to one of these names on the stack's data network."""
        if not workloads:
            return []
        network = docker_name(self.settings, "data")
        found = []
        for container in self._must("ps", "--filter", f"network={network}", "--format", "{{.Names}}").split():
            aliases = self._must("inspect", "--format",
                                 f'{{{{range (index .NetworkSettings.Networks "{network}").Aliases}}}}{{{{.}}}} '
                                 "{{end}}", container).split()
            if set(aliases) & set(workloads):
                found.append(container)
        return found

    @contextlib.contextmanager
    def _stopped(self, containers: list[str]) -> Iterator[None]:
        for container in containers:
            self._must("stop", container)
        try:
            yield
        finally:
            for container in containers:
                self._must("start", container)
