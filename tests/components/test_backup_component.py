"""The Backup component under Pulumi's mocks (offline synth): what it declares, and what stays secret."""

from __future__ import annotations

import json

import pytest

from berth.synth import synth


def records(stack: str, blueprint: str, reveal: bool = False, **overrides: object) -> dict:
    result = synth(stack, blueprint, reveal=reveal, raw_overrides=overrides or None)
    return {"result": result, **{r["name"]: r for r in result["resources"]}}


@pytest.fixture(scope="module")
def apf() -> dict:
    return records("prod", "ai-present-finder")


@pytest.fixture(scope="module")
def praxifi() -> dict:
    return records("dev", "praxifi", backups={"repositories": {"offsite": {
        "url": "sftp://restic@backup.example.com/srv/restic",
        "ssh_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nUFJJVkFURS1LRVktVEVYVA==\n-----END OPENSSH PRIVATE KEY-----\n",
        "known_hosts": "backup.example.com ssh-ed25519 AAAA"}}})


def test_one_component_with_its_children(apf):
    assert apf["backup"]["type"] == "berth:backup:Backup"
    children = {name for name, r in apf.items() if name != "result" and r["parent"] == "backup"}
    assert children == {"backup-restic-password", "backup-repository", "backup-image", "backup-container"}


def test_the_repository_password_is_generated_and_exported_secret(apf):
    password = apf["backup-restic-password"]
    assert password["type"] == "random:index/randomPassword:RandomPassword"
    assert password["inputs"] == {"length": 48, "special": False}
    assert apf["result"]["outputs"]["backup_password"] == "[secret]"
    revealed = synth("prod", "ai-present-finder", reveal=True)
    value = revealed["outputs"]["backup_password"]
    assert len(value) == 48 and value.isalnum()
    container = next(r for r in revealed["resources"] if r["name"] == "backup-container")
    uploads = {u["file"]: u["content"] for u in container["inputs"]["uploads"]}
    assert uploads["/run/berth/restic-password"] == value
    assert value not in json.dumps(container["inputs"]["envs"] if "envs" in container["inputs"] else [])


def test_the_repository_volume_is_retained_and_protected_in_prod(apf):
    volume = apf["backup-repository"]
    assert volume["inputs"]["name"] == "ai-present-finder-prod-backups"
    assert volume["options"]["retain_on_delete"] is True and volume["options"]["protect"] is True


def test_the_image_is_built_from_the_stacks_postgres_image(apf):
    image = apf["backup-image"]
    assert image["type"] == "docker:index/image:Image"
    assert image["inputs"]["build"] == {"context": "images/backup", "dockerfile": "images/backup/Dockerfile",
                                        "args": {"BASE": "postgres:16"}}
    assert image["inputs"]["skipPush"] is True
    assert image["inputs"]["imageName"].startswith("ai-present-finder-prod-backup:")
    assert "images-postgres-16" in image["options"]["depends_on"]  # the base is pulled first
    assert apf["backup-container"]["inputs"]["image"] == image["inputs"]["imageName"]
    assert apf["backup-container"]["inputs"]["memory"] == 1024


def test_the_container_runs_the_scheduler_with_secrets_as_files_only(apf):
    inputs = apf["backup-container"]["inputs"]
    assert inputs["name"] == "ai-present-finder-prod-backup"
    assert inputs["entrypoints"] == ["python3", "/usr/local/lib/berth/scheduler.py"]
    assert inputs["healthcheck"]["tests"] == ["CMD", "sh", "/berth/health.sh"]
    assert "envs" not in inputs  # nothing secret (or otherwise) in its environment
    uploads = {u["file"]: u["content"] for u in inputs["uploads"]}
    for secret in ("/run/berth/restic-password", "/run/berth/services.env", "/run/berth/rabbitmq.curlrc"):
        assert uploads[secret] == "[secret]", secret
    assert {"/berth/lib.sh", "/berth/backup.sh", "/berth/check.sh", "/berth/restore.sh", "/berth/health.sh",
            "/berth/restic.sh", "/berth/schedule.json", "/berth/periods"} <= set(uploads)
    assert [n["name"] for n in inputs["networksAdvanced"]] == ["ai-present-finder-prod-data"]
    assert set(apf["backup-container"]["options"]["depends_on"]) >= {"postgres-container", "rabbitmq-container"}


def test_app_volumes_are_mounted_read_only(praxifi):
    mounts = {m["containerPath"]: m for m in praxifi["backup-container"]["inputs"]["volumes"]}
    assert mounts["/backups"] == {"volumeName": "praxifi-dev-backups", "containerPath": "/backups"}
    for volume in ("uploads_data", "outputs_data", "logs_data"):
        assert mounts[f"/volumes/{volume}"] == {"volumeName": f"praxifi-dev-{volume}",
                                                "containerPath": f"/volumes/{volume}", "readOnly": True}


def test_off_host_repositories_reach_out_through_the_edge_network_with_secret_keys(praxifi):
    inputs = praxifi["backup-container"]["inputs"]
    assert [n["name"] for n in inputs["networksAdvanced"]] == ["praxifi-dev-data", "praxifi-dev-edge"]
    uploads = {u["file"]: u["content"] for u in inputs["uploads"]}
    assert uploads["/run/berth/offsite.key"] == "[secret]"
    assert uploads["/run/berth/offsite.known_hosts"] == "backup.example.com ssh-ed25519 AAAA\n"
    assert "UFJJVkFURS1LRVktVEVYVA" not in json.dumps(praxifi["result"])
    # without Postgres, the image starts FROM the settings' base image (the build pulls it)
    assert praxifi["backup-image"]["inputs"]["build"]["args"] == {"BASE": "debian:bookworm-slim"}


def test_no_backups_section_no_backup_component():
    result = synth("dev", "praxifi", raw_overrides={"backups": {"enabled": False}})
    assert not [r for r in result["resources"] if r["name"].startswith("backup")]
    assert "backup_password" not in result["outputs"]  # nor an earlier synth's export


def test_minios_keys_reach_the_backup_only_in_the_secret_services_file():
    revealed = synth("dev", "sentineliq", reveal=True)
    by_name = {r["name"]: r for r in revealed["resources"]}
    container = by_name["backup-container"]["inputs"]
    uploads = {u["file"]: u["content"] for u in container["uploads"]}
    minio_env = dict(e.split("=", 1) for e in by_name["minio-container"]["inputs"]["envs"])
    access, secret = minio_env["MINIO_ROOT_USER"], minio_env["MINIO_ROOT_PASSWORD"]
    services = uploads["/run/berth/services.env"]
    assert f"export RCLONE_CONFIG_MINIO_ACCESS_KEY_ID={access}\n" in services
    assert f"export RCLONE_CONFIG_MINIO_SECRET_ACCESS_KEY={secret}\n" in services
    assert "envs" not in container
    others = {path: text for path, text in uploads.items() if path != "/run/berth/services.env"}
    assert secret not in json.dumps({**container, "uploads": others})
    masked = records("dev", "sentineliq")
    assert {u["file"]: u["content"] for u in masked["backup-container"]["inputs"]["uploads"]}[
        "/run/berth/services.env"] == "[secret]"
    assert "minio-buckets" in masked["backup-container"]["options"]["depends_on"]  # after the buckets exist


def test_minios_keys_stay_out_when_minio_is_not_backed_up():
    revealed = synth("dev", "sentineliq", reveal=True, raw_overrides={"backups": {"include": ["postgres"]}})
    container = next(r for r in revealed["resources"] if r["name"] == "backup-container")["inputs"]
    services = {u["file"]: u["content"] for u in container["uploads"]}["/run/berth/services.env"]
    assert "RCLONE" not in services and "PGPASSWORD" in services
