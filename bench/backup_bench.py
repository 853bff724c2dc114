"""Backup bench: berth's Postgres backup and restore against plain pg_dump -Fc / pg_restore, in one run.

    .venv/bin/python bench/backup_bench.py [--scale 70]

A pgbench database (scale 70 is about 1.05 GB) in the engine tier's Postgres stand-in, and berth's
backup image (images/backup, built FROM that Postgres image) beside it on a network of its own, holding
berth's own scripts as rendered for the databaseai blueprint (berth/plan/backups.py). Timed, each in the
backup container:
- plain: `pg_dump -Fc` of the pgbench database to a file, and `pg_restore` of that file into a new database;
  and what a cron script dumps for the same cluster (roles and every database, each to a file), which is
  what berth's run backs up;
- berth: `backup.sh postgres` (every database of the cluster, the roles, retention), twice: the second
  of unchanged data (both after a CHECKPOINT and 16 s, so the load's own WAL has settled, as on a quiet
  server);
  then a third after one row changed (everything is dumped again); and `restore.sh ... postgres`
  of the pgbench database into a new one;
then the repository's size against the plain dump's, and the -Z0 alternative for comparison.
Ratios are printed; nothing is asserted but that the restores hold the same rows.
Everything it creates is named `berth-bench-backup-*` and removed at the end.
"""

from __future__ import annotations

import argparse
import io
import re
import sys
import tarfile
import time
from pathlib import Path

import docker
import docker.errors

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from berth.plan import backups as plan  # noqa: E402
from berth.settings import load_settings  # noqa: E402

PREFIX = "berth-bench-backup"
PG_IMAGE = "berth-engine/postgres:latest"
PASSWORD = "bench-only-password"
SETTLE_SECONDS = 16
SETTINGS = load_settings({"environment": "dev", "backups": {"enabled": True}}, blueprint="databaseai")
PG = SETTINGS.postgres
# For the plain commands; berth's scripts take theirs from lib.sh and the secret files.
ENV = {"PGHOST": "postgres", "PGUSER": PG.user, "PGPASSWORD": PASSWORD, "RESTIC_PASSWORD": PASSWORD,
       "RESTIC_CACHE_DIR": "/repo-cache"}


def sh(box, script: str) -> tuple[float, str]:  # noqa: ANN001
    begin = time.monotonic()
    code, out = box.exec_run(["sh", "-c", f"set -e; {script}"], environment=ENV)
    seconds = time.monotonic() - begin
    if code != 0:
        raise SystemExit(f"failed ({code}): {script}\n{out.decode(errors='replace')[-2000:]}")
    return seconds, out.decode(errors="replace").strip()


def berth_files() -> bytes:
    """berth's scripts and secret files for the box, as one tar rooted at /."""
    files = {**plan.scripts(SETTINGS), plan.PASSWORD_FILE: PASSWORD + "\n",
             plan.SERVICES_ENV: plan.services_env(SETTINGS, PASSWORD, None)}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path, content in files.items():
            data = content.encode()
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode = len(data), 0o600
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=70, help="pgbench scale (70 is about 1.05 GB)")
    args = parser.parse_args()
    engine = docker.DockerClient(base_url="unix:///var/run/docker.sock", timeout=3600)
    cleanup(engine)
    image, _ = engine.images.build(path=str(ROOT / "images" / "backup"), tag=f"{PREFIX}:latest", rm=True,
                                   buildargs={"BASE": PG_IMAGE}, network_mode="host")
    network = engine.networks.create(f"{PREFIX}-net", driver="bridge", internal=True)
    try:
        pg = engine.containers.create(PG_IMAGE, ["postgres", "-c", "fsync=off"], name=f"{PREFIX}-postgres",
                                      environment={"POSTGRES_PASSWORD": PASSWORD, "POSTGRES_USER": PG.user,
                                                   "POSTGRES_DB": PG.database})
        network.connect(pg, aliases=["postgres"])
        pg.start()
        box = engine.containers.run(image.id, ["sleep", "infinity"], name=f"{PREFIX}-tools", detach=True,
                                    network=network.name, entrypoint=[])
        box.put_archive("/", berth_files())
        sh(box, f"mkdir -p {plan.BACKUPS_DIR}")
        sh(box, "until pg_isready -q; do sleep 0.5; done; sleep 2; until pg_isready -q; do sleep 0.5; done")
        init, _ = sh(box, f"createdb bench && pgbench -q -i -s {args.scale} bench >/dev/null 2>&1")
        _, size = sh(box, "psql -XAtc \"SELECT pg_database_size('bench')\" bench")
        print(f"pgbench scale {args.scale}: database {int(size) / 1e9:.2f} GB (generated in {init:.0f}s)", flush=True)

        plain, _ = sh(box, "pg_dump -Fc -d bench -f /tmp/plain.dump")
        _, dump_size = sh(box, "stat -c %s /tmp/plain.dump")
        # What a cron script dumps for the same cluster: the roles and every database, each to a file.
        every_db = "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate"
        plain_all, _ = sh(box, f"pg_dumpall --globals-only -f /tmp/globals.sql; "
                               f"for db in $(psql -XAtqc \"{every_db}\" -d postgres); do "
                               "pg_dump -Fc -d $db -f /tmp/all-$db.dump; done")
        # A quiet server: the load's checkpoint done, and the standby snapshot bgwriter logs after it (15 s).
        sh(box, "psql -XAtqc CHECKPOINT -d postgres")
        time.sleep(SETTLE_SECONDS)
        backup = f"sh {plan.SCRIPTS_DIR}/backup.sh postgres"
        first, log1 = sh(box, backup)
        second, log2 = sh(box, backup)
        sh(box, "psql -XAtqc 'UPDATE pgbench_branches SET bbalance = bbalance + 1 WHERE bid = 1' bench")
        third, log3 = sh(box, backup)
        _, repo_size = sh(box, f"du -sb {plan.LOCAL_REPO} | cut -f1")
        sh(box, "restic init -q --repository-version 2 -r /repo-z0")
        z0 = "pg_dump -Fc -Z0 -d bench | restic -r /repo-z0 backup -q --stdin --stdin-filename b.dump"
        z0_first, _ = sh(box, z0)
        restore_plain, _ = sh(box, "createdb r1 && pg_restore -d r1 /tmp/plain.dump")
        restore_berth, _ = sh(box, f"sh {plan.SCRIPTS_DIR}/restore.sh local latest postgres bench r2 {PG.user} new")
        _, rows = sh(box, "for d in r1 r2; do psql -XAtc 'SELECT count(*), sum(abalance) FROM pgbench_accounts' "
                          "$d; done")
        assert len(set(rows.splitlines())) == 1, rows  # the restores hold the same rows
        print(f"pg_dump -Fc to a file:           {plain:7.1f}s  ({int(dump_size) / 1e6:.0f} MB)")
        print(f"plain, the whole cluster:        {plain_all:7.1f}s  (roles + every database, each to a file)")
        print(f"berth backup (first):            {first:7.1f}s  ratio {first / plain_all:.2f}x of the whole cluster's "
              f"plain dumps (goal <= 1.25x); {first / plain:.2f}x of the pgbench database's alone")
        print(f"berth backup (unchanged data):   {second:7.1f}s  ratio {second / first:.2f}x of the first "
              f"(goal <= 0.2x)  [{unchanged(log2)}]")
        print(f"berth backup (one row changed):  {third:7.1f}s  ratio {third / first:.2f}x of the first, "
              f"{third / plain_all:.2f}x of the whole cluster's plain dumps (a steady-state full run)  "
              f"[{unchanged(log3)}]")
        print(f"  (the alternative, pg_dump -Z0 and restic compressing: first {z0_first:.1f}s = "
              f"{z0_first / plain:.2f}x)")
        print(f"pg_restore of the file:          {restore_plain:7.1f}s")
        print(f"berth restore (restore.sh):      {restore_berth:7.1f}s  ratio {restore_berth / restore_plain:.2f}x "
              "(goal <= 1.25x)")
        print(f"repository size:                 {int(repo_size) / 1e6:7.0f} MB  "
              f"ratio {int(repo_size) / int(dump_size):.2f}x of the plain dump (after three backups)")
        print(f"first run's line: {log1.splitlines()[-1]}")
    finally:
        cleanup(engine)
    return 0


def unchanged(log: str) -> str:
    """The run's `unchanged=` list: what was not dumped again."""
    found = re.search(r"unchanged=(\S*)", log)
    return f"unchanged: {found.group(1) or 'none'}" if found else "no summary line"


def cleanup(engine: docker.DockerClient) -> None:
    for name in (f"{PREFIX}-tools", f"{PREFIX}-postgres"):
        try:
            engine.api.remove_container(name, force=True, v=True)
        except docker.errors.NotFound:
            pass
    for net in engine.networks.list(names=[f"{PREFIX}-net"]):
        net.remove()


if __name__ == "__main__":
    sys.exit(main())
