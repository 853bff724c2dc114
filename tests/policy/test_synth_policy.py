"""The synthesized state of every blueprint × stack against the policy pack.

prod is synthesized as it is deployed: promoted from staging (`promote_from: staging`, staging's
release from its own synth answering the StackReference), so it runs nothing by tag. dev is checked
too, although the pack is only advisory there.

Every mandatory rule passes for every blueprint in every stack (staging and prod use Let's Encrypt).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import pytest
from harness import synth_violations

from berth.synth import synth
from policy.rules import mandatory_names

ROOT = Path(__file__).resolve().parents[2]
BLUEPRINTS = sorted(path.stem for path in (ROOT / "blueprints").glob("*.yaml"))
STACKS = ("dev", "staging", "prod")


@cache
def deployed(stack: str, blueprint: str) -> dict[str, Any]:
    if stack != "prod":
        return synth(stack, blueprint)
    release = deployed("staging", blueprint)["outputs"]["release"]
    return synth("prod", blueprint, raw_overrides={"promote_from": "staging"},
                 references={"staging": {"release": release}})


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("blueprint", BLUEPRINTS)
def test_every_mandatory_rule_passes(stack, blueprint):
    found = synth_violations(deployed(stack, blueprint), stack)
    mandatory = mandatory_names(stack) or mandatory_names("prod")  # dev: held to the same rules
    assert {rule: messages for rule, messages in found.items() if rule in mandatory} == {}


def test_a_self_signed_certificate_is_caught_in_prod():
    overrides = {"proxy": {"tls": {"mode": "self-signed", "acme": None}}}
    found = synth_violations(synth("prod", "praxifi", raw_overrides=overrides), "prod")
    assert found["berth-tls-outside-dev"] == [
        "proxy-tls-cert: a self-signed certificate in prod; browsers refuse it, use a CA-issued one"]


def test_prod_running_tags_is_caught():
    found = synth_violations(synth("prod", "praxifi"), "prod")
    assert sorted(found["berth-images-pinned-in-prod"]) == sorted(
        f"image {ref} is not pinned by digest in prod: promote it (berth:promote_from) or give repo@sha256:<digest>"
        for ref in ("certbot/certbot:v4.0.0", "ghcr.io/praxifi/aiml-engine:latest", "ghcr.io/praxifi/frontend:latest",
                    "nginx:1.27-alpine", "redis:7-alpine"))


def test_unprotected_volumes_in_prod_are_caught():
    # Settings refuse protect_data: false in prod without an opt-out; the policy pack must catch it even so.
    result = synth("prod", "praxifi", raw_overrides={
        "protect_data": False, "allow_insecure": {"unprotected_data": "the policy pack must still catch it"}})
    volumes = sorted(r["inputs"]["name"] for r in result["resources"] if r["type"] == "docker:index/volume:Volume")
    assert "praxifi-prod-redis_data" in volumes
    assert sorted(synth_violations(result, "prod")["berth-data-volumes-protected"]) == [
        f"volume {name} is not protected in prod: set berth:protect_data: true" for name in volumes]


def test_a_published_app_port_is_caught():
    result = synth("staging", "praxifi")
    backend = next(r for r in result["resources"] if r["name"] == "backend-0")
    backend["inputs"]["ports"] = [{"internal": 8000, "external": 8000, "ip": "0.0.0.0", "protocol": "tcp"}]
    assert synth_violations(result, "staging")["berth-only-proxy-publishes-ports"] == [
        "backend-0 publishes 0.0.0.0:8000: only the proxy may publish ports; reach it through the proxy or on the "
        "stack's networks"]
