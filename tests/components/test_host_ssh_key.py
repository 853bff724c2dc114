"""host.ssh_key reaches the docker provider as ssh options, so the provider and the preflight use one key."""

from __future__ import annotations

import json

from berth.preflight import ssh_command

KEY = "/home/ci/.ssh/deploy_ed25519"


def test_ssh_key_is_in_the_providers_ssh_opts_and_the_preflights_command(synth_with):
    synth = synth_with("prod", "praxifi", overrides={"host": {"ssh_key": KEY}})
    provider = synth.named("host-docker")["inputs"]
    opts = json.loads(provider["sshOpts"])
    # prod provisions its host: the verified host key's options first, then the stack's own
    assert opts[-8:] == ["-o", "StrictHostKeyChecking=yes", "-o", "ServerAliveInterval=30",
                         "-i", KEY, "-o", "IdentitiesOnly=yes"]
    assert opts[:4] == ["-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=/dev/null"]
    command = ssh_command(synth.settings.host)
    assert command[3:3 + len(opts)] == opts  # after BatchMode=yes, exactly what the provider runs ssh with
