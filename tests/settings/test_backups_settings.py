"""backups: the schedule, retention, what is backed up and the repositories; bad input names its key."""

from __future__ import annotations

from datetime import timedelta

import pytest

from berth.settings import load_settings
from berth.settings.backups import available_items, period

SFTP = {"url": "sftp://restic@backup.example.com:2222/srv/restic",
        "ssh_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=\n-----END OPENSSH PRIVATE KEY-----\n",
        "known_hosts": "[backup.example.com]:2222 ssh-ed25519 AAAA"}


def test_defaults_back_up_everything_that_holds_data(valid):
    settings = valid({"backups": {}})
    assert settings.backups.schedule == "0 2 * * *" and settings.backups.retention.daily == 7
    assert available_items(settings) == ["postgres", "redis", "rabbitmq", "minio", "volumes"]
    assert settings.backups.include is None


def test_a_stack_without_data_services_backs_up_its_volumes_only():
    settings = load_settings({"environment": "dev", "backups": {}}, blueprint="webprometrics")
    assert available_items(settings) == ["volumes"]


@pytest.mark.parametrize(("path", "rule", "changes"), [
    ("backups.schedule", "is not a 5-field cron expression", {"backups.schedule": "61 * * * *"}),
    ("backups.schedule", "is not a 5-field cron expression", {"backups.schedule": "every day"}),
    ("backups.schedule", "is not a 5-field cron expression", {"backups.schedule": "0 2 * * * *"}),
    ("backups.check_schedule", "is not a 5-field cron expression", {"backups.check_schedule": "0 25 * * *"}),
    ("backups.schedules.redis", "is not a 5-field cron expression", {"backups.schedules": {"redis": "0 2 31 2 x"}}),
    ("backups.retention", "keeps nothing", {"backups.retention": {}}),
    ("backups.retention.daily", "is not in 1..100000", {"backups.retention.daily": 0}),
    ("backups.retention.within", "is not a restic duration", {"backups.retention.within": "30 days"}),
    ("backups.include[1]", "should be 'postgres', 'redis', 'rabbitmq', 'minio' or 'volumes'",
     {"backups.include": ["postgres", "elasticsearch"]}),
    ("backups.include[1]", "is listed twice", {"backups.include": ["redis", "redis"]}),
    ("backups.schedules.elasticsearch", "should be 'postgres', 'redis', 'rabbitmq', 'minio' or 'volumes'",
     {"backups.schedules": {"elasticsearch": "0 3 * * 0"}}),
    ("backups.check_subset", "is not a percentage", {"backups.check_subset": "all"}),
    ("backups.repositories.offsite", "has scheme 'ftp'; supported: sftp:, s3:, rest:",
     {"backups.repositories": {"offsite": {"url": "ftp://host/x"}}}),
    ("backups.repositories.offsite", "has scheme 'b2'", {"backups.repositories": {"offsite": {"url": "b2:bucket:p"}}}),
    ("backups.repositories.offsite", "must be sftp://user@host[:port]/path",
     {"backups.repositories": {"offsite": {**SFTP, "url": "sftp://host/x"}}}),
    ("backups.repositories.offsite", "needs ssh_key and known_hosts",
     {"backups.repositories": {"offsite": {"url": SFTP["url"]}}}),
    ("backups.repositories.offsite", "only for an sftp repository",
     {"backups.repositories": {"offsite": {"url": "s3:https://s3.example.com/b", "ssh_key": SFTP["ssh_key"]}}}),
    ("backups.repositories.local", "'local' is the repository on the host",
     {"backups.repositories": {"local": {"url": "rest:http://h/"}}}),
])
def test_bad_input_names_the_key(assert_config_error, path, rule, changes):
    assert_config_error(path, rule, changes)


def test_included_items_must_exist_in_the_stack(assert_config_error):
    assert_config_error("backups.include[0]", "'rabbitmq' holds no data in this stack",
                        {"rabbitmq.enabled": False, "backups.include": ["rabbitmq"]})


def test_minio_is_an_item_when_the_stack_has_minio(valid, assert_config_error):
    assert "minio" in available_items(load_settings({"environment": "dev"}, blueprint="sentineliq"))
    assert valid({"backups.include": ["minio"], "backups.schedules": {"minio": "0 4 * * *"}}).backups.include == [
        "minio"]
    assert_config_error("backups.include[0]", "'minio' holds no data in this stack",
                        {"minio.enabled": False, "backups.include": ["minio"]})
    assert_config_error("backups.include[1]", "'minio' is listed twice", {"backups.include": ["minio", "minio"]})


def test_an_item_schedule_needs_the_item_backed_up(assert_config_error):
    assert_config_error("backups.schedules.rabbitmq", "is not backed up",
                        {"backups.include": ["postgres"], "backups.schedules": {"rabbitmq": "0 3 * * 0"}})


def test_the_repository_volume_is_its_own(assert_config_error):
    assert_config_error("backups.volume", "is already a volume of the stack", {"backups.volume": "uploads"})


def test_off_host_repositories_and_their_secrets(valid):
    settings = valid({"backups.repositories": {
        "offsite": SFTP,
        "s3": {"url": "s3:https://s3.example.com/bucket/berth", "env": {"AWS_ACCESS_KEY_ID": "id",
                                                                         "AWS_SECRET_ACCESS_KEY": "s3cr3t"}},
        "rest": {"url": "rest:https://user:pw@rest.example.com:8000/berth"}}})
    repos = settings.backups.repositories
    assert [r.scheme for r in repos.values()] == ["sftp", "s3", "rest"]
    assert "s3cr3t" not in repr(settings) and "BEGIN KEY" not in repr(settings)


def test_a_blueprint_cannot_name_a_workload_backup(assert_config_error):
    assert_config_error("apps.backup", "is taken by berth's own component",
                        {"apps.backup": {"image": "ghcr.io/acme/x:1", "port": 80}})


@pytest.mark.parametrize(("cron", "gap"), [
    ("0 2 * * *", timedelta(days=1)), ("0 */6 * * *", timedelta(hours=6)), ("0 3 * * 0", timedelta(days=7)),
    ("* * * * *", timedelta(minutes=1)), ("0 9 * * 1-5", timedelta(days=3)), ("0 0 1 * *", timedelta(days=31)),
])
def test_period_is_the_longest_gap(cron, gap):
    assert period(cron) == gap


@pytest.mark.parametrize(("blueprint", "schedule", "schedules", "retention"), [
    ("praxifi", "0 2 * * *", {}, {"daily": 7}),
    ("webprometrics", "0 */6 * * *", {}, {"last": 28, "weekly": 4}),
    ("sentineliq", "0 2 * * *", {}, {"daily": 30}),
    ("ai-present-finder", "0 2 * * *", {"rabbitmq": "0 3 * * 0"}, {"daily": 7, "weekly": 4}),
    ("databaseai", "0 2 * * *", {}, {"daily": 7, "weekly": 4}),
])
def test_each_blueprint_carries_its_seeds_schedule(blueprint, schedule, schedules, retention):
    backups = load_settings({"environment": "dev"}, blueprint=blueprint).backups
    assert (backups.schedule, backups.schedules) == (schedule, schedules)
    assert backups.retention.model_dump(exclude_none=True) == retention
