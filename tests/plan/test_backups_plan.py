"""The backup plan: scripts, schedule, retention flags and secret files, rendered from settings and run by sh."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from berth.plan import backups as plan
from berth.settings import load_settings
from berth.settings.backups import Retention

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=\n-----END OPENSSH PRIVATE KEY-----\n"
HOSTILE = "it's $(touch /tmp/berth-pwned) `id` \"q\" \\ ; & | *"


def settings(blueprint: str = "ai-present-finder", **backups: object):
    return load_settings({"environment": "dev", "backups": backups}, blueprint=blueprint)


def test_items_default_to_everything_that_holds_data():
    assert plan.items(settings()) == ["postgres", "rabbitmq"]
    assert plan.items(settings("praxifi")) == ["redis", "volumes"]
    assert plan.volumes(settings("praxifi")) == ["logs_data", "outputs_data", "uploads_data"]
    assert plan.items(settings("databaseai")) == ["postgres"]
    assert plan.volumes(settings("databaseai")) == []


def test_one_backup_job_per_schedule_and_the_check():
    jobs = plan.schedules(settings())
    assert [(j["name"], j["cron"], j["command"]) for j in jobs] == [
        ("backup", "0 2 * * *", ["sh", "/berth/backup.sh", "--schedule", "backup", "postgres"]),
        ("backup-rabbitmq", "0 3 * * 0", ["sh", "/berth/backup.sh", "--schedule", "backup-rabbitmq", "rabbitmq"]),
        ("check", "30 4 * * 0", ["sh", "/berth/check.sh"]),
    ]
    assert [j["period_seconds"] for j in jobs] == [86400, 604800, 604800]
    assert json.loads(plan.schedule_json(settings()))["jobs"] == jobs
    assert plan.periods(settings()) == "backup 86400 postgres\nbackup-rabbitmq 604800 rabbitmq\n"


@pytest.mark.parametrize(("retention", "flags"), [
    ({"daily": 7}, ["--keep-daily", "7"]),
    ({"last": 28, "weekly": 4}, ["--keep-last", "28", "--keep-weekly", "4"]),
    ({"hourly": 24, "monthly": 12, "within": "30d"},
     ["--keep-hourly", "24", "--keep-monthly", "12", "--keep-within", "30d"]),
])
def test_forget_flags(retention, flags):
    assert plan.forget_args(Retention.model_validate(retention)) == flags


def test_sftp_repositories_pin_their_host_key_and_key():
    repo = settings(repositories={"offsite": {"url": "sftp://restic@backup.example.com:2222/srv/restic",
                                              "ssh_key": KEY, "known_hosts": "h"}}).backups.repositories["offsite"]
    assert plan.restic_url(repo) == "sftp:restic@backup.example.com:/srv/restic"
    assert plan.sftp_command(repo, "offsite") == (
        "ssh -i /tmp/berth-ssh/offsite.key -o UserKnownHostsFile=/run/berth/offsite.known_hosts "
        "-o StrictHostKeyChecking=yes -o BatchMode=yes -o ServerAliveInterval=30 -p 2222 "
        "restic@backup.example.com -s sftp")


def sh() -> str:
    found = shutil.which("dash") or shutil.which("sh")
    assert found, "the render tier needs a POSIX sh"
    return found


@pytest.mark.parametrize("blueprint", ["praxifi", "ai-present-finder", "webprometrics", "sentineliq", "databaseai"])
def test_every_script_parses_in_posix_sh(blueprint, tmp_path):
    for path, text in plan.scripts(settings(blueprint)).items():
        if path.endswith(".sh"):
            file = tmp_path / Path(path).name
            file.write_text(text)
            done = subprocess.run([sh(), "-n", str(file)], capture_output=True, text=True)
            assert done.returncode == 0, (path, done.stderr)


def test_values_reach_the_scripts_quoted_never_spliced(tmp_path):
    """A hostile repository URL and credentials: sourced by a real sh, each arrives as exactly itself."""
    url = "s3:https://s3.example.com/bucket/" + HOSTILE.replace(" ", "_")
    stack = settings(repositories={"offsite": {"url": url, "env": {"AWS_SECRET_ACCESS_KEY": HOSTILE}}})
    lib = plan.lib_sh(stack).replace("/run/berth", str(tmp_path))
    lib = lib.replace("/backups/state", str(tmp_path / "state"))
    (tmp_path / "lib.sh").write_text(lib)
    (tmp_path / "offsite.env").write_text(plan.env_file({"AWS_SECRET_ACCESS_KEY": HOSTILE}))
    (tmp_path / "services.env").write_text(plan.services_env(stack, HOSTILE, None))
    probe = (f". {tmp_path}/lib.sh; repo_args offsite; printf '%s\\n' \"$REPO_URL\" \"$PGPASSWORD\"; "
             f"set -a; . {tmp_path}/offsite.env; printf '%s\\n' \"$AWS_SECRET_ACCESS_KEY\"")
    done = subprocess.run([sh(), "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == [url, HOSTILE, HOSTILE]
    assert not Path("/tmp/berth-pwned").exists()


def test_curl_config_quotes_the_login():
    assert plan.curlrc("admin", 'p"a\\ss') == 'user = "admin:p\\"a\\\\ss"\n'


def test_the_image_is_built_from_the_stacks_own_postgres():
    assert plan.image_base(settings()) == "postgres:16"
    assert plan.image_base(settings("sentineliq")) == "postgres:16-alpine"
    assert plan.image_base(settings("praxifi")) == "debian:bookworm-slim"


def test_the_image_tag_follows_the_context_and_base(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM x\n")
    first = plan.image_tag(tmp_path, "postgres:16")
    assert plan.image_tag(tmp_path, "postgres:17") != first
    (tmp_path / "Dockerfile").write_text("FROM y\n")
    assert plan.image_tag(tmp_path, "postgres:16") != first


def test_minio_is_backed_up_by_rclone_configured_by_its_environment_only():
    stack = settings("sentineliq")
    assert plan.items(stack) == ["postgres", "redis", "minio"]
    lib = plan.lib_sh(stack)
    for line in ("RCLONE_CONFIG_MINIO_TYPE=s3", "RCLONE_CONFIG_MINIO_PROVIDER=Minio",
                 "RCLONE_CONFIG_MINIO_ENDPOINT=http://minio:9000", "RCLONE_CONFIG=/dev/null",
                 "MINIO_MIRROR=/backups/mirror"):
        assert f"\n{line}\n" in lib, line
    assert "RCLONE_CONFIG_MINIO_TYPE" in next(line for line in lib.splitlines() if line.startswith("export PGHOST"))
    assert "ACCESS_KEY" not in lib  # the keys are in the secret services.env only
    assert "RCLONE" not in plan.lib_sh(settings("praxifi"))  # no MinIO, no rclone remote
    assert "backup_minio()" in plan.BACKUP_SH and "minio.buckets.$bucket" in plan.BACKUP_SH
    assert 'minio.buckets.*) path="/minio/${what#minio.buckets.}"' in plan.RESTORE_SH


def test_minio_keys_reach_rclone_from_the_secret_file_quoted(tmp_path):
    stack = settings("sentineliq")
    lib = plan.lib_sh(stack).replace("/run/berth", str(tmp_path)).replace("/backups/state", str(tmp_path / "state"))
    (tmp_path / "lib.sh").write_text(lib)
    env = plan.services_env(stack, None, None, ("berth-admin", HOSTILE))
    assert env == ("export RCLONE_CONFIG_MINIO_ACCESS_KEY_ID=berth-admin\n"
                   f"export RCLONE_CONFIG_MINIO_SECRET_ACCESS_KEY={__import__('shlex').quote(HOSTILE)}\n")
    (tmp_path / "services.env").write_text(env)
    probe = (f". {tmp_path}/lib.sh; sh -c 'printf \"%s\\n\" \"$RCLONE_CONFIG_MINIO_ACCESS_KEY_ID\" "
             "\"$RCLONE_CONFIG_MINIO_SECRET_ACCESS_KEY\" \"$RCLONE_CONFIG_MINIO_ENDPOINT\"'")
    done = subprocess.run([sh(), "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == ["berth-admin", HOSTILE, "http://minio:9000"]  # exported to rclone
    assert not Path("/tmp/berth-pwned").exists()


@pytest.mark.parametrize(("bucket", "expected"), [
    ("sentineliq-files", "sentineliq-files-restored-20261201231500"),
    ("a" * 63, "a" * 39 + "-restored-20261201231500"),
    ("x" * 38 + "-y" + "z" * 20, "x" * 38 + "-restored-20261201231500"),  # cut, and no '-' before the suffix
    ("q" * 38 + ".r" + "s" * 20, "q" * 38 + "-restored-20261201231500"),  # nor a dot
])
def test_a_restored_bucket_gets_a_new_valid_s3_name(bucket, expected):
    from berth.settings.services import _bucket

    name = plan.restored_bucket(bucket, "20261201231500")
    assert name == expected and len(name) <= 63
    assert _bucket(name) == name
