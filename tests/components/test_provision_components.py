"""The Provisioning component under Pulumi's mocks: its Commands, their secrets, and what waits for them."""

from __future__ import annotations

import json
import logging
import subprocess

import pytest

from berth.errors import ConfigError
from berth.plan.provision import STEPS, scripts

PROVISIONED = ("staging", "prod")
COMMAND = "command:remote:Command"


def commands(synth) -> list[dict]:
    return synth.of_type(COMMAND)


@pytest.fixture(scope="module")
def private_key(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("key") / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path.read_text()


@pytest.mark.parametrize("stack", PROVISIONED)
def test_one_command_per_step_in_order_under_the_component(synth_of, stack):
    synth = synth_of(stack, "sentineliq")  # has Elasticsearch: the sysctl step is there
    component = synth.named("provision")
    assert (component["type"], component["parent"]) == ("berth:provision:Provisioning", f"sentineliq-{stack}")
    names = [f"provision-{step.replace('_', '-')}" for step in STEPS]
    assert sorted(r["name"] for r in commands(synth)) == sorted(names)
    for before, after in zip(names, names[1:], strict=False):
        assert synth.named(after)["options"]["depends_on"] == [before]
    assert synth.named(names[0])["options"]["depends_on"] == []
    assert all(r["parent"] == "provision" for r in commands(synth))


@pytest.mark.parametrize("stack", PROVISIONED)
def test_each_command_carries_its_scripts_hash_not_triggers_and_deletes_nothing(synth_of, stack):
    synth = synth_of(stack, "sentineliq")
    rendered = {s.step.replace("_", "-"): s for s in scripts(synth.settings)}
    for record in commands(synth):
        script = rendered[record["name"].removeprefix("provision-")]
        inputs = record["inputs"]
        assert inputs["create"] == f": berth-provision {script.step} sha256={script.digest}; sh -s"
        assert inputs["stdin"] == script.text
        assert "triggers" not in inputs and "delete" not in inputs and "update" not in inputs
        assert (inputs["logging"], inputs["addPreviousOutputInEnv"]) == ("none", False)


@pytest.mark.parametrize("stack", PROVISIONED)
def test_connection_and_outputs_are_secret(synth_of, stack):
    for record in commands(synth_of(stack, "sentineliq")):
        assert record["inputs"]["connection"] == "[secret]"
        assert set(record["options"]["additional_secret_outputs"]) >= {"connection", "stdout", "stderr"}


# Raw synth overrides cannot be `secure:` values: the guardrail is opted out of, with the reason.
PLAIN_IN_TEST = {"plaintext_secret": "a test's raw overrides cannot be secure: values"}


def test_the_connection_holds_the_verified_host_key_and_the_private_key(synth_with, private_key):
    overrides = {"host": {"provision": {"ssh": {"private_key": private_key}}}, "allow_insecure": PLAIN_IN_TEST}
    revealed = synth_with("prod", "sentineliq", reveal=True, overrides=overrides)
    connection = revealed.named("provision-docker")["inputs"]["connection"]
    host_key = revealed.settings.host.provision.ssh.host_key
    assert (connection["host"], connection["port"], connection["user"]) == ("prod.example.com", 22, "root")
    assert (connection["hostKey"], connection["privateKey"]) == (host_key, private_key)
    masked = synth_with("prod", "sentineliq", overrides=overrides)
    body = "".join(line for line in private_key.splitlines() if not line.startswith("-----"))
    assert body[:40] not in json.dumps(masked.result)


def test_a_sudo_password_makes_stdin_secret(synth_with):
    overrides = {"host": {"provision": {"ssh": {"user": "ops", "sudo_password": "sudo-pw-123456"}}},
                 "allow_insecure": PLAIN_IN_TEST}
    synth = synth_with("staging", "praxifi", overrides=overrides)
    for record in commands(synth):
        assert record["inputs"]["stdin"] == "[secret]"
        assert "sudo -S -k" in record["inputs"]["create"]
    assert "sudo-pw-123456" not in json.dumps(synth.result)


@pytest.mark.parametrize("stack", PROVISIONED)
def test_every_docker_resource_waits_for_provisioning(synth_of, stack):
    synth = synth_of(stack, "sentineliq")
    provider = synth.named("host-docker")
    assert set(provider["options"]["depends_on"]) == {r["name"] for r in commands(synth)}
    docker = [r for r in synth.resources if r["type"].startswith("docker:")]
    # every docker resource is created through that provider, which exists only once provisioning is done
    assert docker and {r["provider"] for r in docker} == {"host-docker"}


def test_dev_does_not_provision(synth_of):
    synth = synth_of("dev", "sentineliq")
    assert commands(synth) == [] and synth.named("host-docker")["options"]["depends_on"] == []


def test_a_changed_setting_changes_one_commands_create(synth_of, synth_with):
    before = {r["name"]: r["inputs"]["create"] for r in commands(synth_of("prod", "sentineliq"))}
    after = {r["name"]: r["inputs"]["create"] for r in commands(
        synth_with("prod", "sentineliq", overrides={"host": {"provision": {"firewall": {"allow_tcp": [8443]}}}}))}
    assert [name for name in before if before[name] != after[name]] == ["provision-firewall"]


def test_the_host_key_is_required_before_anything_is_declared(synth_with):
    with pytest.raises(ConfigError, match=r"^berth:host\.provision\.ssh\.host_key: is required outside dev"):
        synth_with("prod", "sentineliq", overrides={"host": {"provision": {"ssh": {"host_key": None}}}})


def test_dev_without_a_host_key_says_it_is_not_verified(synth_with, caplog):
    overrides = {"host": {"url": "ssh://deploy@dev.example.com", "provision": {"enabled": True}}}
    with caplog.at_level(logging.WARNING):
        synth = synth_with("dev", "praxifi", overrides=overrides, reveal=True)
    assert "hostKey" not in synth.named("provision-docker")["inputs"]["connection"]
    assert any("host key is NOT verified" in record.getMessage() for record in caplog.records), caplog.text
