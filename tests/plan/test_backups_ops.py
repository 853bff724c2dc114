"""The restore command's refusals that need no Docker host: what it cannot restore, it names."""

from __future__ import annotations

import pytest

from berth.ops import Ops, OpsError
from berth.settings import load_settings


def ops(blueprint: str, **backups: object) -> Ops:
    return Ops(load_settings({"environment": "dev", "backups": backups}, blueprint=blueprint))


def test_an_unknown_what_lists_every_kind_including_minio_buckets():
    with pytest.raises(OpsError, match=r"minio\.buckets\.<bucket> or volumes\.<name>"):
        ops("sentineliq").restore("elasticsearch", "latest", "local", in_place=False)


@pytest.mark.parametrize(("blueprint", "backups", "what", "error"), [
    ("praxifi", {}, "minio.buckets.files", "minio is not backed up in this stack"),
    ("sentineliq", {"include": ["postgres"]}, "minio.buckets.sentineliq-files", "minio is not backed up"),
    ("sentineliq", {}, "minio.buckets.Bad_Name", "'Bad_Name' is not an S3 bucket name"),
    ("sentineliq", {}, "minio.buckets.x", "'x' is not an S3 bucket name"),
])
def test_a_bucket_restore_is_refused_before_any_docker_call(blueprint, backups, what, error):
    with pytest.raises(OpsError, match=error):
        ops(blueprint, **backups).restore(what, "latest", "local", in_place=True)


def test_the_apps_and_jobs_that_take_minios_keys_are_its_writers():
    assert ops("sentineliq")._minio_users() == ["server"]
