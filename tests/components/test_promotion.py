"""Promotion, release history and rollback: the real program under Pulumi mocks.

`berth.synth.synth` runs __main__.py under `pulumi.runtime.set_mocks` with SynthMocks, whose
`new_resource` answers `pulumi:pulumi:StackReference` with the outputs given per stack. So each
test feeds a source stack's `release` (or this stack's own `releases`) and reads what the program
declared: the RemoteImages, the containers' images, and the release outputs.
"""

from __future__ import annotations

import copy
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pulumi
import pytest

from berth.errors import ConfigError
from berth.settings import deep_merge, from_stack_files, load_settings
from berth.settings.release import ROLLBACK_WARNING, plan_release
from berth.synth import synth

OWN = "organization/berth/prod"
OLD_DIGEST = "sha256:" + "1" * 64


def containers(result: dict[str, Any], parent: str) -> list[dict[str, Any]]:
    return [r for r in result["resources"] if r["type"] == "docker:index/container:Container" and r["parent"] == parent]


def remote_images(result: dict[str, Any]) -> set[str]:
    return {r["inputs"]["name"] for r in result["resources"] if r["type"] == "docker:index/remoteImage:RemoteImage"}


def release_of(stack: str, blueprint: str = "praxifi", **overrides: Any) -> dict[str, Any]:
    return synth(stack, blueprint, raw_overrides=overrides or None)["outputs"]["release"]


def promoted(source_release: dict[str, Any] | None, blueprint: str = "praxifi", stack: str = "prod",
             promote_from: Any = "staging", **extra: Any) -> dict[str, Any]:
    references = {"staging": {"release": source_release}} if source_release is not None else {}
    return synth(stack, blueprint, raw_overrides={"promote_from": promote_from, **extra}, references=references)


def older(release: dict[str, Any], release_id: str) -> dict[str, Any]:
    """The same release with other digests: an earlier release of the same apps."""
    earlier = copy.deepcopy(release)
    for kind in ("apps", "jobs", "services"):
        for entry in earlier[kind].values():
            entry["digest"] = entry["digest"].split("@")[0] + "@" + OLD_DIGEST
    earlier["id"], earlier["time"] = release_id, "2026-11-01T09:00:00Z"
    return earlier


@pytest.fixture(scope="module")
def staging_release() -> dict[str, Any]:
    return release_of("staging")


# -- the release ---------------------------------------------------------------------------------


def test_release_names_every_app_by_exact_digest(staging_release):
    assert set(staging_release) == {"id", "time", "blueprint", "environment", "settings_hash", "apps", "jobs",
                                    "services"}
    assert sorted(staging_release["services"]) == ["certbot", "proxy", "redis"]  # staging runs letsencrypt: certbot too
    assert (staging_release["blueprint"], staging_release["environment"]) == ("praxifi", "staging")
    assert sorted(staging_release["apps"]) == ["backend", "frontend"]
    for entry in staging_release["apps"].values():
        repository = entry["image"].rsplit(":", 1)[0]
        assert entry["digest"].startswith(repository + "@sha256:") and len(entry["digest"].split("@sha256:")[1]) == 64
    # SOURCE_DATE_EPOCH (0 in synth) is the clock: two synths give the same release.
    assert staging_release["time"] == "1970-01-01T00:00:00Z"
    assert release_of("staging") == staging_release


def test_release_id_follows_images_and_container_settings(staging_release):
    bumped = release_of("staging", apps={"backend": {"image": "ghcr.io/praxifi/aiml-engine:2.0"}})
    reshaped = release_of("staging", apps={"backend": {"env": {"LOG_LEVEL": "debug"}}})
    moved = release_of("staging", host={"url": "ssh://deploy@other.example.com:22"})
    assert bumped["id"] != staging_release["id"] and bumped["settings_hash"] == staging_release["settings_hash"]
    assert reshaped["id"] != staging_release["id"] and reshaped["settings_hash"] != staging_release["settings_hash"]
    # Where the stack runs does not shape its containers.
    assert moved["id"] == staging_release["id"]


def test_jobs_are_in_the_release():
    release = release_of("staging", "sentineliq")
    assert sorted(release["jobs"]) == ["migrate"]
    assert "@sha256:" in release["jobs"]["migrate"]["digest"]


# -- promotion -----------------------------------------------------------------------------------


def test_digests_flow_from_the_source_release_to_the_containers(staging_release):
    result = promoted(staging_release)
    digests = {name: entry["digest"] for name, entry in staging_release["apps"].items()}
    assert set(digests.values()) <= remote_images(result)
    for app, digest in digests.items():
        runs = containers(result, app)
        assert runs and {c["inputs"]["image"] for c in runs} == {digest}  # the pulled digest's image ID
    release = result["outputs"]["release"]
    assert {name: entry["digest"] for name, entry in release["apps"].items()} == digests
    assert {name: entry["image"] for name, entry in release["apps"].items()} == digests
    assert release["environment"] == "prod"
    # The data services and the proxy run the source's digests too: prod runs nothing by tag.
    services = {name: entry["digest"] for name, entry in staging_release["services"].items()}
    assert {c["inputs"]["image"] for c in containers(result, "redis")} == {services["redis"]}
    assert {c["inputs"]["image"] for c in containers(result, "proxy")} == {services["proxy"]}
    assert all("@sha256:" in name for name in remote_images(result))


def test_jobs_are_promoted_with_the_apps():
    source = release_of("staging", "sentineliq")
    result = promoted(source, "sentineliq")
    assert {c["inputs"]["image"] for c in containers(result, "migrate")} == {source["jobs"]["migrate"]["digest"]}


def test_promotion_limited_to_some_apps_leaves_the_others_on_their_settings(staging_release):
    result = promoted(staging_release, promote_from={"stack": "staging", "apps": ["backend"]})
    backend = staging_release["apps"]["backend"]["digest"]
    assert {c["inputs"]["image"] for c in containers(result, "backend")} == {backend}
    assert {c["inputs"]["image"] for c in containers(result, "frontend")} == {"ghcr.io/praxifi/frontend:latest"}


def test_a_qualified_source_stack_name_is_read_as_given(staging_release):
    result = synth("prod", "praxifi", raw_overrides={"promote_from": "acme/berth/staging"},
                   references={"acme/berth/staging": {"release": staging_release}})
    assert staging_release["apps"]["backend"]["digest"] in remote_images(result)


# -- refusals: one ConfigError line each, before any resource -------------------------------------


def refusal(source_release: dict[str, Any] | None, **kwargs: Any) -> str:
    with pytest.raises(ConfigError) as error:
        promoted(source_release, **kwargs)
    return str(error.value)


def test_refuses_a_source_without_a_release():
    assert refusal(None) == ("berth:promote_from: stack staging exports no release yet: deploy it first "
                             "(`pulumi up -s staging`); a failed update exports none")


def test_refuses_an_app_the_source_does_not_run(staging_release):
    source = copy.deepcopy(staging_release)
    del source["apps"]["frontend"]
    assert refusal(source) == (
        f"berth:promote_from: apps.frontend: stack staging does not run it (release {source['id']} has apps "
        "['backend']); list the apps and jobs to promote in promote_from.apps")
    limited = refusal(source, promote_from={"stack": "staging", "apps": ["frontend"]})
    assert limited.startswith("berth:promote_from.apps: apps.frontend: stack staging does not run it")


def test_refuses_a_local_image_without_registry_digest(staging_release):
    source = copy.deepcopy(staging_release)
    source["apps"]["backend"].update(digest="", image_id="sha256:" + "ab" * 32)
    assert refusal(source) == (
        "berth:promote_from: apps.backend: stack staging runs the local image ghcr.io/praxifi/aiml-engine:latest "
        "(sha256:abababababab), which has no registry digest; push it to a registry and deploy staging from "
        "there, then promote")


def test_refuses_a_release_older_than_max_age(staging_release, monkeypatch):
    source = {**staging_release, "time": "2026-11-01T12:00:00Z"}
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(int(datetime(2026, 11, 15, 12, tzinfo=UTC).timestamp())))
    message = refusal(source, promote_from={"stack": "staging", "max_age": "7d"})
    assert message == (f"berth:promote_from.max_age: stack staging's release {source['id']} is from "
                       "2026-11-01 12:00Z, 14.0d old, older than 7.0d")
    # Within the age it promotes.
    assert promoted(source, promote_from={"stack": "staging", "max_age": "30d"})["outputs"]["release"]


def test_refuses_a_release_of_another_blueprint(staging_release):
    assert refusal({**staging_release, "blueprint": "demo"}) == (
        "berth:promote_from: stack staging runs blueprint demo, this stack praxifi: promotion moves one system "
        "between stacks")


def test_refuses_what_is_not_a_release():
    assert refusal({"id": "x"}).startswith("berth:promote_from: stack staging's release is not a berth release (")


def test_refuses_promoting_from_itself(staging_release):
    with pytest.raises(ConfigError, match=r"^berth:promote_from.stack: 'prod' is this stack itself$"):
        promoted(staging_release, promote_from="prod")


def test_promote_from_apps_must_be_this_stacks_apps():
    with pytest.raises(ConfigError, match=r"^berth:promote_from.apps\[0\]: 'nope' is not one of this stack's apps"):
        load_settings(deep_merge(from_stack_files("prod"), {"promote_from": {"stack": "staging", "apps": ["nope"]}}))


def test_every_refused_app_is_listed_at_once(staging_release):
    source = {**copy.deepcopy(staging_release), "apps": {}}
    assert len(refusal(source).splitlines()) == 2
    assert len(refusal({**source, "services": {}}).splitlines()) == 5
    assert [line.split(": ")[1] for line in refusal({**source, "services": {}}).splitlines()] == [
        "apps.backend", "apps.frontend", "services.redis", "services.proxy", "services.certbot"]


# -- release history and rollback ---------------------------------------------------------------


def test_history_is_stable_when_nothing_changed():
    first = synth("prod", "praxifi")["outputs"]
    again = synth("prod", "praxifi", references={"prod": {"releases": first["releases"]}})["outputs"]
    assert again["releases"] == first["releases"] and again["release"] == first["release"]


def test_history_rolls_over_at_n():
    current = synth("prod", "praxifi")["outputs"]["release"]
    history = [older(current, f"{i:012x}") for i in range(1, 4)]
    outputs = synth("prod", "praxifi", raw_overrides={"release_history": 3},
                    references={"prod": {"releases": history}})["outputs"]
    assert [r["id"] for r in outputs["releases"]] == [current["id"], history[0]["id"], history[1]["id"]]
    default = synth("prod", "praxifi", references={"prod": {"releases": [older(current, f"{i:012x}")
                                                                          for i in range(1, 11)]}})["outputs"]
    assert len(default["releases"]) == 10 and default["releases"][0]["id"] == current["id"]


def rollback(history: list[dict[str, Any]], target: str = "previous") -> dict[str, Any]:
    return synth("prod", "praxifi", raw_overrides={"rollback": target}, references={"prod": {"releases": history}})


def test_rollback_runs_the_previous_releases_digests():
    current = synth("prod", "praxifi")["outputs"]["release"]
    previous = older(current, "0000000000aa")
    result = rollback([current, previous])
    for app, entry in previous["apps"].items():
        assert {c["inputs"]["image"] for c in containers(result, app)} == {entry["digest"]}
    # Data services keep their images: an older one may not read the files a newer one wrote.
    assert {c["inputs"]["image"] for c in containers(result, "redis")} == {"redis:7-alpine"}
    head = result["outputs"]["release"]
    assert head["rollback_of"] == current["id"]
    assert [r["id"] for r in result["outputs"]["releases"]][1:] == [current["id"], previous["id"]]
    # While the setting stays, the next update stays on that release: no flip back, no new entry.
    again = rollback(result["outputs"]["releases"])
    assert again["outputs"]["releases"] == result["outputs"]["releases"]
    # Cleared, the stack runs its settings' images again, as a new release.
    cleared = synth("prod", "praxifi", references={"prod": {"releases": result["outputs"]["releases"]}})
    assert cleared["outputs"]["release"]["id"] == current["id"] and "rollback_of" not in cleared["outputs"]["release"]
    assert len(cleared["outputs"]["releases"]) == 4


def test_rollback_to_a_release_id():
    current = synth("prod", "praxifi")["outputs"]["release"]
    history = [current, older(current, "0000000000bb"), older(current, "0000000000cc")]
    history[2]["apps"]["backend"]["digest"] = "ghcr.io/praxifi/aiml-engine@sha256:" + "c" * 64
    result = rollback(history, "0000000000cc")
    assert {c["inputs"]["image"] for c in containers(result, "backend")} == {history[2]["apps"]["backend"]["digest"]}


def test_rollback_refusals():
    current = synth("prod", "praxifi")["outputs"]["release"]
    with pytest.raises(ConfigError, match=r"^berth:rollback: this stack has no releases yet"):
        rollback([])
    with pytest.raises(ConfigError, match=rf"^berth:rollback: release {current['id']} is the only one"):
        rollback([current])
    with pytest.raises(ConfigError, match=rf"^berth:rollback: 0000000000ff is not in this stack's releases "
                                          rf"\({current['id']}\)$"):
        rollback([current], "0000000000ff")
    local = older(current, "0000000000dd")
    local["apps"]["frontend"]["digest"] = ""
    with pytest.raises(ConfigError, match=r"^berth:rollback: apps.frontend ran the local image"):
        rollback([current, local])


def test_rollback_preview_warns_which_images_go_back(monkeypatch):
    current = synth("prod", "praxifi")["outputs"]["release"]
    previous = older(current, "0000000000aa")
    warned: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda message, *args, **kwargs: warned.append(message))
    rollback([current, previous])
    assert warned[0] == f"rollback to release 0000000000aa of 2026-11-01 09:00Z; {ROLLBACK_WARNING}"
    assert "does not undo database migrations" in warned[0]
    assert sorted(warned[1:]) == sorted(
        f"rollback: apps.{app} goes back from {entry['digest']} to {previous['apps'][app]['digest']}"
        for app, entry in current["apps"].items())


def test_rollback_keeps_an_app_the_release_did_not_have():
    settings = load_settings(from_stack_files("prod"))
    current = synth("prod", "praxifi")["outputs"]["release"]
    previous = older(current, "0000000000aa")
    del previous["apps"]["frontend"]
    plan = plan_release(settings.model_copy(update={"rollback": "previous"}),
                        lambda stack, output: [current, previous] if output == "releases" else None, OWN,
                        datetime.now(UTC))
    assert plan.settings.apps["frontend"].image == "ghcr.io/praxifi/frontend:latest"
    assert plan.settings.apps["backend"].image == previous["apps"]["backend"]["digest"]
    assert ("rollback: apps.frontend is not in release 0000000000aa; it keeps its image "
            "ghcr.io/praxifi/frontend:latest") in plan.warnings


def test_rollback_wins_over_promotion(staging_release):
    current = synth("prod", "praxifi")["outputs"]["release"]
    previous = older(current, "0000000000aa")
    result = synth("prod", "praxifi", raw_overrides={"rollback": "previous", "promote_from": "staging"},
                   references={"prod": {"releases": [current, previous]}})  # staging is not even read
    assert {c["inputs"]["image"] for c in containers(result, "backend")} == {previous["apps"]["backend"]["digest"]}


def test_time_is_kept_while_the_release_is_unchanged(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(int(datetime(2026, 12, 1, 10, tzinfo=UTC).timestamp())))
    first = synth("prod", "praxifi")["outputs"]
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(int((datetime(2026, 12, 1, 10, tzinfo=UTC)
                                                    + timedelta(hours=5)).timestamp())))
    same = synth("prod", "praxifi", references={"prod": {"releases": first["releases"]}})["outputs"]
    changed = synth("prod", "praxifi", raw_overrides={"apps": {"backend": {"image": "ghcr.io/praxifi/aiml-engine:2"}}},
                    references={"prod": {"releases": first["releases"]}})["outputs"]
    assert same["release"]["time"] == first["release"]["time"] == "2026-12-01T10:00:00Z"
    assert changed["release"]["time"] == "2026-12-01T15:00:00Z"
    assert os.environ["SOURCE_DATE_EPOCH"]  # synth leaves a caller's clock alone


def test_berth_synth_prints_a_refusal_as_one_line(tmp_path):
    """`berth synth` (and `pulumi preview`, through pulumi.RunError) print the refusal alone, exit 2."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for folder in ("berth", "components", "blueprints"):
        shutil.copytree(root / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for path in (root / "__main__.py", *root.glob("Pulumi*.yaml")):
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / "Pulumi.promo.yaml").write_text(
        "config:\n  berth:environment: promo\n  berth:blueprint: praxifi\n  berth:promote_from: staging\n")
    run = subprocess.run([sys.executable, "-m", "berth", "synth", "--stack", "promo"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120, check=False)
    assert (run.returncode, run.stdout) == (2, "")
    assert run.stderr == ("berth:promote_from: stack staging exports no release yet: deploy it first "
                          "(`pulumi up -s staging`); a failed update exports none\n")
