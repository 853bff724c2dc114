"""Promotion for real: stack A's applied state -> its release -> stack B runs A's exact images; then B rolls back.

Two stacks of the praxifi blueprint on the local engine (environments promo-a and promo-b, their
own proxy ports), the apps' images pulled from a real registry on loopback. Each release is built
by berth's own code (berth.plan.release.observed_history) from what Docker reports for the images
the stack runs (RepoDigests and Id, as pulumi-docker's RemoteImage reads them), and handed to the
next synth as the StackReference's outputs:

1. A runs the stand-in v2 from the registry; its release names the registry digest of each app, and
   the data service and proxy images (built locally, no registry digest) as local images;
2. B runs v1 (its release B1), then `promote_from: {stack: promo-a, apps: [backend, frontend]}`:
   the containers whose image changed are replaced, and B's containers run A's image IDs (B2);
3. B sets `rollback: previous`: its apps go back to B1's digests under 150 GET/s through B's
   proxy, with no failed request.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import docker
import pytest
from applier import Applier, cleanup
from engine_config import engine_settings, overrides
from engine_host import METRICS
from probes import Deployment, Load
from registry import free_port

from berth.errors import ConfigError
from berth.plan.containers import resolve_image, split_image
from berth.plan.release import observed_history, workloads
from berth.settings import Settings
from berth.settings.release import plan_release
from berth.synth import synth

BLUEPRINT = "praxifi"
OWN = "organization/berth/engine"  # the Pulumi stack synth runs as; promo-a and promo-b are environments
STANDIN = "berth-engine/standin"
REPOSITORY = "berth-promote/standin"
PROMOTED = ["backend", "frontend"]
LOAD_RATE, LOAD_THREADS = 150.0, 8


@dataclass
class Stack:
    """One applied stack: what it was told (raw overrides), its settings, synth result, and releases."""

    environment: str
    extra: dict[str, Any]
    settings: Settings
    result: dict[str, Any]
    applier: Applier
    history: list[dict[str, Any]] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def release(self) -> dict[str, Any]:
        return self.history[0]


# The apps' own 30 s probe interval is their first health verdict on Docker 20.10 (no start_interval):
# probed every 2 s, a replacement is healthy within seconds, and the tier stays short.
FAST_HEALTH = {"interval": "2s", "timeout": "2s"}


def stack_extra(environment: str, app_image: str) -> dict[str, Any]:
    return {"environment": environment, "proxy": {"http_port": free_port(), "https_port": free_port()},
            "apps": {app: {"image": app_image, "healthcheck": FAST_HEALTH} for app in PROMOTED}}


def replace_all(stack: Stack, changes: dict[str, str]) -> float:
    """Replace the changed containers at once, as the engine does with independent resources; seconds taken."""
    begin = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(changes)) as pool:
        for future in [pool.submit(stack.applier.replace, name, new_image=image) for name, image in changes.items()]:
            future.result()
    return time.monotonic() - begin


def planned(extra: dict[str, Any], references: dict[str, dict[str, Any]]) -> tuple[Settings, dict[str, Any]]:
    """The settings the program deploys after reading the releases, and synth's revealed state for them."""
    def read(stack: str, output: str) -> Any:
        return references.get(stack.rsplit("/", 1)[-1], {}).get(output)

    plan = plan_release(engine_settings(BLUEPRINT, extra), read, OWN, datetime.now(UTC))
    result = synth("engine", BLUEPRINT, reveal=True, raw_overrides=overrides(BLUEPRINT, extra), references=references)
    return plan.settings, result


def real_history(engine: docker.DockerClient, settings: Settings, history: list[dict[str, Any]],
                 rollback_of: str | None = None) -> list[dict[str, Any]]:
    """The stack's releases after this apply, from the images Docker holds for what it runs."""
    observed: dict[str, dict[str, tuple[str | None, str | None]]] = {}
    for kind, refs in workloads(settings).items():
        for name, ref in refs.items():
            resolved = resolve_image(ref, settings.images)
            image = engine.api.inspect_image(resolved)
            repository = split_image(resolved)[0]
            digest = next((d for d in image.get("RepoDigests") or [] if d.startswith(repository + "@")), None)
            observed.setdefault(kind, {})[name] = (digest, image["Id"])
    return observed_history(settings, observed, history, settings.release_history, datetime.now(UTC), rollback_of)


def image_of(stack: Stack, resource: str) -> str:
    return stack.applier.api.inspect_container(stack.applier.created(resource).docker_id)["Image"]


def app_containers(stack: Stack) -> list[str]:
    return sorted(r["name"] for r in stack.applier.container_records() if r["parent"] in PROMOTED)


def changed_images(stack: Stack, result: dict[str, Any]) -> dict[str, str]:
    """Container resource -> its new image input, for each container whose image the new synth changed."""
    new = {r["name"]: r["inputs"]["image"] for r in result["resources"] if r["type"].endswith("container:Container")}
    return {r["name"]: new[r["name"]] for r in stack.applier.container_records()
            if new.get(r["name"]) != r["inputs"]["image"]}


@pytest.fixture(scope="module")
def pushed(engine: docker.DockerClient, registry: str) -> Iterator[dict[str, str]]:
    """Two versions of the stand-in pushed to the registry: {"v1"|"v2": tag ref, "v1@"|"v2@": digest ref}.

    berth-engine/standin:latest and :v2 are one image; a label on top makes two (two digests).
    """
    refs: dict[str, str] = {}
    repository = f"{registry}/{REPOSITORY}"
    for version in ("v1", "v2"):
        dockerfile = f"FROM {STANDIN}:latest\nLABEL berth.promote.version={version}\n"
        engine.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=f"{repository}:{version}", rm=True,
                            pull=False)
        for line in engine.api.push(repository, tag=version, stream=True, decode=True):
            if "error" in line:
                pytest.fail(f"push of {repository}:{version} failed: {line['error']}")
        digests = [d for d in engine.api.inspect_image(f"{repository}:{version}")["RepoDigests"]
                   if d.startswith(repository + "@")]
        assert len(digests) == 1, digests
        refs[version], refs[version + "@"] = f"{repository}:{version}", digests[0]
    assert refs["v1@"] != refs["v2@"]
    yield refs
    for version in ("v1", "v2"):
        try:
            engine.api.remove_image(refs[version], force=True)  # our own test images only
        except docker.errors.APIError:
            pass


def deploy(engine: docker.DockerClient, environment: str, extra: dict[str, Any],
           references: dict[str, dict[str, Any]]) -> Stack:
    settings, result = planned(extra, references)
    applier = Applier(engine, result)
    cleanup(engine, applier.stack, applier.stack + "-")
    stack = Stack(environment, extra, settings, result, applier)
    stack.report = applier.apply()
    stack.history = real_history(engine, settings, [])
    return stack


@pytest.fixture(scope="module")
def stacks(engine: docker.DockerClient, pushed: dict[str, str]) -> Iterator[dict[str, Stack]]:
    """A on v2, B on v1, both applied from their synth state; always torn down, volumes included."""
    made: dict[str, Stack] = {}
    begin = time.monotonic()
    try:
        made["a"] = deploy(engine, "promo-a", stack_extra("promo-a", pushed["v2"]), {})
        made["b"] = deploy(engine, "promo-b", stack_extra("promo-b", pushed["v1"]), {})
        METRICS["promotion"] = {"apply_a_b_seconds": round(time.monotonic() - begin, 1)}
        yield made
    finally:
        for stack in made.values():
            stack.applier.teardown(keep_retained=False)
        for name in (f"{BLUEPRINT}-promo-a", f"{BLUEPRINT}-promo-b"):
            cleanup(engine, name, name + "-")


class TestPromotion:
    """Run in order: each step leaves B as the next one expects."""

    def test_release_of_a_names_registry_digests_and_local_images(self, stacks, pushed):
        release = stacks["a"].release
        assert {app: release["apps"][app]["digest"] for app in PROMOTED} == {app: pushed["v2@"] for app in PROMOTED}
        # Data services and the proxy run images built on this host: no registry digest, only an image ID.
        assert sorted(release["services"]) == ["proxy", "redis"]
        for entry in release["services"].values():
            assert entry["digest"] == "" and entry["image_id"].startswith("sha256:")
        assert stacks["b"].release["apps"]["backend"]["digest"] == pushed["v1@"]

    def test_promoting_local_images_is_refused(self, stacks):
        extra = {**stacks["b"].extra, "promote_from": "promo-a"}
        with pytest.raises(ConfigError) as error:
            planned(extra, {"promo-a": {"release": stacks["a"].release}})
        lines = str(error.value).splitlines()
        assert [line.split(": ")[1] for line in lines] == ["services.redis", "services.proxy"]
        assert all("which has no registry digest" in line for line in lines)

    def test_b_promoted_from_a_runs_a_image_ids(self, engine, stacks, pushed):
        a, b = stacks["a"], stacks["b"]
        b.extra = {**b.extra, "promote_from": {"stack": "promo-a", "apps": PROMOTED}}
        settings, result = planned(b.extra, {"promo-a": {"release": a.release}, "engine": {"releases": b.history}})
        changes = changed_images(b, result)
        assert changes == {name: pushed["v2@"] for name in app_containers(b)}
        engine.api.pull(pushed["v2@"])  # from the registry, by digest
        promoted_s = replace_all(b, changes)
        for resource in app_containers(b):
            twin = next(r for r in app_containers(a) if r == resource)
            assert image_of(b, resource) == image_of(a, twin)
        b.settings, b.result = settings, result
        b.history = real_history(engine, settings, b.history)
        assert [r["apps"]["frontend"]["digest"] for r in b.history] == [pushed["v2@"], pushed["v1@"]]
        METRICS["promotion"]["promote_replace_seconds"] = round(promoted_s, 1)

    def test_rollback_under_load_fails_no_request(self, engine, stacks, pushed):
        b = stacks["b"]
        extra = {**b.extra, "rollback": "previous"}
        settings, result = planned(extra, {"engine": {"releases": b.history}})
        changes = changed_images(b, result)
        assert changes == {name: pushed["v1@"] for name in app_containers(b)}
        dep = Deployment(BLUEPRINT, settings, result, b.applier, engine, b.report)
        host = dep.server_names()[0][1]  # the frontend's site: no rate limit on it
        load = Load(dep, host, "/promote-rollback", get_rate=LOAD_RATE, post_rate=0, threads=LOAD_THREADS)
        load.start()
        try:
            time.sleep(3)
            replace_s = replace_all(b, changes)
            time.sleep(5)  # the old containers are gone: traffic must keep flowing to the new ones
        finally:
            load.stop()
        elapsed = load.t_end - load.t_begin
        failed = [(round(s.t - load.t_begin, 2), s.status, s.error) for s in load.gets if not s.ok]
        numbers = {"gets": len(load.gets), "get_rate_per_s": round(len(load.gets) / elapsed, 1),
                   "failed": len(failed), "seconds": round(elapsed, 1), "containers_replaced": len(changes),
                   "replace_seconds": round(replace_s, 1)}
        METRICS["promotion"]["rollback_under_load"] = numbers
        print(f"rollback of promo-b under load: {numbers}")
        assert failed == []
        assert numbers["get_rate_per_s"] >= 100
        for resource in app_containers(b):
            assert image_of(b, resource) == engine.api.inspect_image(pushed["v1@"])["Id"]
        history = real_history(engine, settings, b.history, rollback_of=b.history[0]["id"])
        assert history[0]["rollback_of"] == b.history[0]["id"]
        assert history[0]["apps"]["frontend"]["digest"] == pushed["v1@"]
        # The same setting on the next update stays on this release: nothing more to replace.
        _, again = planned(extra, {"engine": {"releases": history}})
        assert changed_images(b, again) == {}
