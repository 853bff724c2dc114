"""berth's Postgres start script run against a real PostgreSQL 15 cluster initialised with another password.

The cluster is what a retained volume holds after a destroyed or lost state: its superuser still has
the password it was initialised with. The script must make the current one true before the server
starts, and refuse nothing but what the server itself could not take.
"""

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
from servers import PG_BIN, _base_env, _init_cluster, _pg_user, _start_cluster, _stop, run

from berth.plan.postgres import START_SCRIPT

OLD_PASSWORD = "initialised-with-this"
# Quotes, backslashes, a double quote, shell and SQL metacharacters, unicode.
NEW_PASSWORDS = ["plain0123456789abcdef", "it's \"q\" \\back\\ $x `y` ; --", "ünïcødé ☃ %s %n"]


def _start_script_run(root: Path, superuser: str, password: str) -> subprocess.CompletedProcess[str]:
    """Run START_SCRIPT as the postgres OS user, with the image's entrypoint replaced by a recorder.

    The recorder runs a single-user postgres as the image's entrypoint does (`exec "$@"` once it has
    stepped down); the server start itself is only recorded.
    """
    bin_dir = root / "bin"
    bin_dir.mkdir(exist_ok=True)
    handover = bin_dir / "docker-entrypoint.sh"
    handover.write_text('#!/bin/sh\n[ "$2" = --single ] && exec "$@"\necho "handed over: $*"\n')
    script = bin_dir / "berth-postgres-start"
    script.write_text(START_SCRIPT)
    for path in (handover, script):
        path.chmod(0o755)
    env = {**_base_env(), "PATH": f"{bin_dir}:{PG_BIN}:/usr/bin:/bin", "PGDATA": str(root / "data"),
           "POSTGRES_USER": superuser, "POSTGRES_PASSWORD": password}
    return run(["/bin/sh", str(script), "postgres"], env=env, timeout=120, **_pg_user())


@pytest.fixture
def cluster_root():
    root = Path(tempfile.mkdtemp(prefix="berth-pgstart-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("new_password", NEW_PASSWORDS)
def test_the_superuser_takes_the_current_password_on_a_retained_cluster(cluster_root, new_password):
    _init_cluster(cluster_root, "postgres", OLD_PASSWORD)
    result = _start_script_run(cluster_root, "postgres", new_password)
    assert result.returncode == 0, result.stderr
    assert "handed over: postgres" in result.stdout
    assert new_password not in result.stdout + result.stderr
    process, cluster = _start_cluster(cluster_root, "postgres")
    try:
        ok = cluster.psql("SELECT current_user;", database="postgres", password=new_password, tcp=True)
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.strip() == "postgres"
        refused = cluster.psql("SELECT 1;", database="postgres", password=OLD_PASSWORD, tcp=True)
        assert refused.returncode != 0
        assert "password authentication failed" in refused.stderr
    finally:
        _stop(process, signal.SIGINT)


def test_a_superuser_of_another_name_is_reset_too(cluster_root):
    _init_cluster(cluster_root, "admin", OLD_PASSWORD)
    result = _start_script_run(cluster_root, "admin", "the-new-one")
    assert result.returncode == 0, result.stderr
    process, cluster = _start_cluster(cluster_root, "admin")
    try:
        ok = cluster.psql("SELECT current_user;", database="postgres", user="admin", password="the-new-one", tcp=True)
        assert ok.returncode == 0, ok.stderr
    finally:
        _stop(process, signal.SIGINT)


def test_an_empty_volume_is_left_to_the_image(cluster_root):
    (cluster_root / "data").mkdir()
    os.chown(cluster_root, _pg_user()["user"], _pg_user()["group"])
    os.chown(cluster_root / "data", _pg_user()["user"], _pg_user()["group"])
    result = _start_script_run(cluster_root, "postgres", "whatever")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "handed over: postgres"  # no single-user run: initdb is the image's


def test_a_control_character_is_refused_before_the_server_sees_it(cluster_root):
    _init_cluster(cluster_root, "postgres", OLD_PASSWORD)
    result = _start_script_run(cluster_root, "postgres", "two\nlines")
    assert result.returncode == 1
    assert "cannot hold control characters" in result.stderr
    assert "handed over" not in result.stdout
