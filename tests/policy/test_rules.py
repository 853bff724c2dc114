"""Each rule of the policy pack, with resources that pass it and resources that fail it.

As in pulumi-policy's own tests: the validate functions are called directly with the SDK's args
objects (tests/policy/harness.py); the PolicyPack itself is only built in policy/__main__.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from harness import policy_resource, resource_args, stack_args, violations
from pulumi_policy import EnforcementLevel, ResourceValidationPolicy, StackValidationPolicy

from policy import rules
from policy.rules import REMOTE_IMAGE, SELF_SIGNED_CERT, VOLUME

ROOT = Path(__file__).resolve().parents[2]
APP = ("berth:stack:Stack", "berth:app:AppService")
PROXY = ("berth:stack:Stack", "berth:proxy:NginxProxy")
POSTGRES = ("berth:stack:Stack", "berth:data:Postgres")
HARDENED = {"healthcheck": {"tests": ["CMD", "true"]}, "memory": 512, "restart": "unless-stopped"}


def port(external: int, internal: int = 8080, ip: str = "0.0.0.0") -> dict:
    return {"internal": internal, "external": external, "ip": ip, "protocol": "tcp"}


# -- no container other than the proxy publishes a port --------------------------------------------


def test_proxy_may_publish_ports():
    args = resource_args({"ports": [port(443, 443)]}, "proxy-container", parents=PROXY)
    assert violations(rules.only_proxy_publishes_ports, args) == []


def test_an_app_publishing_a_port_fails():
    args = resource_args({"ports": [port(8080)]}, "backend-0", parents=APP)
    assert violations(rules.only_proxy_publishes_ports, args) == [
        "backend-0 publishes 0.0.0.0:8080: only the proxy may publish ports; reach it through the proxy or on the "
        "stack's networks"]


def test_an_app_without_ports_passes_and_other_types_are_not_judged():
    assert violations(rules.only_proxy_publishes_ports, resource_args({}, parents=APP)) == []
    assert violations(rules.only_proxy_publishes_ports,
                      resource_args({"ports": [port(1)]}, resource_type=VOLUME)) == []


# -- no data service port on anything but 127.0.0.1 -----------------------------------------------


def test_data_port_on_loopback_passes():
    args = resource_args({"ports": [port(5432, 5432, "127.0.0.1")]}, "postgres-container", parents=POSTGRES)
    assert violations(rules.data_ports_on_loopback, args) == []


@pytest.mark.parametrize("ip", ["0.0.0.0", "203.0.113.7"])
def test_data_service_port_on_a_public_address_fails(ip):
    args = resource_args({"ports": [port(15432, 5432, ip)]}, "postgres-container", parents=POSTGRES)
    assert violations(rules.data_ports_on_loopback, args) == [
        f"postgres-container publishes data port 5432 on {ip}: a data service port is published on 127.0.0.1 only"]


def test_a_data_port_published_by_any_container_counts():
    args = resource_args({"ports": [port(6379, 6379)]}, "cache-0", parents=APP)
    assert len(violations(rules.data_ports_on_loopback, args)) == 1
    # A port without an ip is published on every address.
    assert len(violations(rules.data_ports_on_loopback, resource_args(
        {"ports": [{"internal": 5432, "external": 5432}]}, parents=POSTGRES))) == 1
    assert violations(rules.data_ports_on_loopback, resource_args({"ports": [port(8080)]}, parents=APP)) == []


# -- every long-running container: healthcheck, memory limit, restart policy ------------------------


def test_a_hardened_container_passes():
    assert violations(rules.long_running_hardened, resource_args(HARDENED)) == []


def test_each_missing_piece_is_named():
    assert violations(rules.long_running_hardened, resource_args({"restart": "no"}, "backend-0")) == [
        "backend-0 is long-running without a healthcheck, a memory limit, a restart policy "
        "(always, unless-stopped, on-failure)"]
    assert violations(rules.long_running_hardened, resource_args({**HARDENED, "memory": 0})) == [
        "app-0 is long-running without a memory limit"]
    assert violations(rules.long_running_hardened, resource_args({**HARDENED, "healthcheck": {"tests": []}})) == [
        "app-0 is long-running without a healthcheck"]


def test_one_shot_jobs_are_not_long_running():
    job = {"attach": True, "mustRun": False, "restart": "no"}
    assert violations(rules.long_running_hardened, resource_args(job, "migrate-job")) == []


# -- data volumes protected in prod ---------------------------------------------------------------


def test_protected_volume_in_prod_passes():
    args = resource_args({"name": "x-prod-pg"}, "postgres-data", VOLUME, protect=True, config={"environment": "prod"})
    assert violations(rules.data_volumes_protected, args) == []


def test_unprotected_volume_fails_in_prod_only():
    prod = resource_args({"name": "x-prod-pg"}, "postgres-data", VOLUME, config={"environment": "prod"})
    assert violations(rules.data_volumes_protected, prod) == [
        "volume x-prod-pg is not protected in prod: set berth:protect_data: true"]
    staging = resource_args({"name": "x-staging-pg"}, "postgres-data", VOLUME, config={"environment": "staging"})
    assert violations(rules.data_volumes_protected, staging) == []


# -- no plaintext credentials ---------------------------------------------------------------------


def test_generated_credentials_pass():
    envs = ["DATABASE_URL=postgresql://app:Vb3xQ9mZ2kLw8RtY4nPs6HjD1cFg7AeU@postgres:5432/app",
            "JWT_SECRET=Vb3xQ9mZ2kLw8RtY4nPs6HjD1cFg7AeU", "LOG_LEVEL=info", "PUBLIC_URL=https://example.com/"]
    assert violations(rules.no_plaintext_credentials, resource_args({"envs": envs})) == []


@pytest.mark.parametrize("env", ["DB_PASSWORD=changeme", "API_KEY=abc123", "STRIPE_SECRET=short-one",
                                 "AMQP_URL=amqp://guest:guest@rabbitmq:5672/", "S3_ACCESS_KEY=minioadmin"])
def test_typed_credentials_fail(env):
    found = violations(rules.no_plaintext_credentials, resource_args({"envs": [env]}))
    assert found == [f"app-0: env {env.split('=')[0]} holds what looks like a plaintext credential; take it from a "
                     "generated secret (secrets: {ENV: secrets.<name>}) or give it as a Pulumi secret"]
    assert env.split("=", 1)[1] not in found[0]  # the value itself is never printed


# -- TLS on outside dev, not self-signed in prod -----------------------------------------------------


def proxy(*internal: int):
    return policy_resource({"ports": [port(p, p) for p in internal]}, "proxy-container", parents=PROXY)


def test_tls_in_staging_with_a_self_signed_certificate_passes():
    cert = policy_resource({}, "proxy-tls-cert", SELF_SIGNED_CERT, parents=PROXY)
    assert violations(rules.tls_outside_dev, stack_args([proxy(80, 443), cert], {"environment": "staging"})) == []


def test_no_tls_fails_outside_dev_and_passes_in_dev():
    assert violations(rules.tls_outside_dev, stack_args([proxy(80)], {"environment": "staging"})) == [
        "proxy-container: the proxy serves no TLS (port 443) in staging"]
    assert violations(rules.tls_outside_dev, stack_args([proxy(80)], {"environment": "dev"})) == []


def test_self_signed_fails_in_prod():
    cert = policy_resource({}, "proxy-tls-cert", SELF_SIGNED_CERT, parents=PROXY)
    assert violations(rules.tls_outside_dev, stack_args([proxy(80, 443), cert], {"environment": "prod"})) == [
        "proxy-tls-cert: a self-signed certificate in prod; browsers refuse it, use a CA-issued one"]
    assert violations(rules.tls_outside_dev, stack_args([proxy(80, 443)], {"environment": "prod"})) == []


# -- privileged / Docker socket only where allowed, with a reason ----------------------------------


def test_an_ordinary_container_passes():
    props = {"volumes": [{"volumeName": "x-prod-data", "containerPath": "/data"}]}
    assert violations(rules.privileged_or_socket, resource_args(props)) == []


@pytest.mark.parametrize("props, what", [
    ({"privileged": True}, "runs privileged"),
    ({"volumes": [{"hostPath": "/var/run/docker.sock", "containerPath": "/var/run/docker.sock"}]},
     "mounts the Docker socket (/var/run/docker.sock)"),
    ({"mounts": [{"source": "/run/docker.sock", "target": "/s", "type": "bind"}]},
     "mounts the Docker socket (/run/docker.sock)"),
])
def test_privileged_or_socket_fails(props, what):
    assert violations(rules.privileged_or_socket, resource_args(props, "agent-0")) == [
        f"agent-0 {what}: that is root on the host; allow it only with a reason in this policy's config: "
        "allow: {<resource name>: <reason>}"]


def test_allowed_with_a_reason_passes_and_a_blank_reason_does_not():
    props = {"privileged": True}
    allowed = {"allow": {"agent-0": "the backup agent snapshots LVM volumes"}}
    assert violations(rules.privileged_or_socket, resource_args(props, "agent-0", config=allowed)) == []
    blank = {"allow": {"agent-0": "  "}}
    assert len(violations(rules.privileged_or_socket, resource_args(props, "agent-0", config=blank))) == 1


# -- images pinned by digest in prod ------------------------------------------------------------------


def test_digest_pinned_image_passes_in_prod():
    args = resource_args({"name": "ghcr.io/acme/api@sha256:" + "a" * 64}, "images-x", REMOTE_IMAGE,
                         config={"environment": "prod"})
    assert violations(rules.images_pinned_in_prod, args) == []


def test_a_tag_fails_in_prod_only():
    prod = resource_args({"name": "ghcr.io/acme/api:1.4"}, "images-x", REMOTE_IMAGE, config={"environment": "prod"})
    assert violations(rules.images_pinned_in_prod, prod) == [
        "image ghcr.io/acme/api:1.4 is not pinned by digest in prod: promote it (berth:promote_from) or give "
        "repo@sha256:<digest>"]
    staging = resource_args({"name": "ghcr.io/acme/api:1.4"}, "images-x", REMOTE_IMAGE,
                            config={"environment": "staging"})
    assert violations(rules.images_pinned_in_prod, staging) == []


# -- the pack: enforcement by environment ------------------------------------------------------------


def test_mandatory_in_prod_and_staging_advisory_in_dev():
    assert rules.enforcement_for("prod") is EnforcementLevel.MANDATORY
    assert rules.enforcement_for("staging") is EnforcementLevel.MANDATORY
    assert rules.enforcement_for("dev") is EnforcementLevel.ADVISORY


def test_the_environment_comes_from_the_stack_config():
    config = json.dumps({"berth:environment": "staging", "berth:blueprint": "praxifi"})
    assert rules.stack_environment({"PULUMI_CONFIG": config, "PULUMI_STACK": "stg"}) == "staging"
    assert rules.stack_environment({"PULUMI_STACK": "dev"}) == "dev"
    assert rules.stack_environment({}) == "prod"  # unknown: the strictest


def test_environment_rules_get_the_environment():
    assert rules.initial_config("dev") == {name: {"environment": "dev"} for name in (
        "berth-data-volumes-protected", "berth-tls-outside-dev", "berth-images-pinned-in-prod")}


def test_every_rule_is_in_the_pack_once():
    names = [policy.name for policy in rules.POLICIES]
    assert len(names) == len(set(names)) == 8
    assert sum(isinstance(p, StackValidationPolicy) for p in rules.POLICIES) == 1
    assert all(isinstance(p, (ResourceValidationPolicy, StackValidationPolicy)) for p in rules.POLICIES)


def test_the_pack_is_built_only_in_its_main():
    """policy/__main__.py builds the pack with the stack's environment (the analyzer then serves it)."""
    probe = (
        "import sys, runpy, pulumi_policy\n"
        "made = []\n"
        "class Pack:\n"
        "    def __init__(self, **kw): made.append(kw)\n"
        "pulumi_policy.PolicyPack = Pack\n"
        "runpy.run_path(sys.argv[1], run_name='__main__')\n"
        "kw = made[0]\n"
        "print(len(made), kw['name'], kw['enforcement_level'].value, len(kw['policies']),"
        " kw['initial_config']['berth-images-pinned-in-prod']['environment'])\n")
    for environment, level in (("prod", "mandatory"), ("staging", "mandatory"), ("dev", "advisory")):
        env = {"PULUMI_CONFIG": json.dumps({"berth:environment": environment}), "PATH": "/usr/bin:/bin"}
        run = subprocess.run([sys.executable, "-c", probe, str(ROOT / "policy" / "__main__.py")], env=env,
                             capture_output=True, text=True, check=False, timeout=60)
        assert (run.returncode, run.stderr) == (0, "")
        assert run.stdout.split() == ["1", "berth", level, "8", environment]
