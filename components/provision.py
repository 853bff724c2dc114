"""Provisioning: berth's host scripts (berth/plan/provision.py) run over SSH, one remote.Command per step.

Creates a ``command:remote:Command`` per enabled step, each after the one before. The connection
(private key, sudo password) is a secret, and so are stdout and stderr: the scripts run as root
and echo host state. Nothing is undone on destroy: Docker, the firewall and the rest stay on the
host (no ``delete`` command), so a destroyed stack never leaves a host without its firewall.
"""

from __future__ import annotations

import pulumi
from pulumi_command import remote

from berth.plan.provision import Script, remote_command, remote_stdin, scripts
from berth.settings import Settings
from berth.settings.provision import target

# The remote scripts install packages: give a slow mirror time before pulumi-command gives up dialing.
DIAL_ERROR_LIMIT = 20
PER_DIAL_TIMEOUT = 30


class Provisioning(pulumi.ComponentResource):
    """Makes ``host.url``'s machine a hardened Docker host before any docker resource is created."""

    def __init__(self, name: str, settings: Settings, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("berth:provision:Provisioning", name, None, opts)
        ssh = settings.host.provision.ssh
        where = target(settings.host.url)
        if ssh.host_key is None:
            # Only dev gets here (settings require the key elsewhere); say it out loud, every run.
            pulumi.log.warn(f"host.provision.ssh.host_key is not set: {where.host}'s host key is NOT verified "
                            "(dev only); set it to stop trusting whoever answers", self)
        self.connection = pulumi.Output.secret(remote.ConnectionArgs(
            host=where.host,
            port=where.port,
            user=ssh.user,
            private_key=None if ssh.private_key is None else ssh.private_key.get_secret_value(),
            host_key=ssh.host_key,
            dial_error_limit=DIAL_ERROR_LIMIT,
            per_dial_timeout=PER_DIAL_TIMEOUT,
        ))
        self.steps: list[remote.Command] = []
        for script in scripts(settings):
            self.steps.append(self._step(name, script, settings))
        self.register_outputs({"steps": [script.step for script in scripts(settings)]})

    def _step(self, name: str, script: Script, settings: Settings) -> remote.Command:
        ssh = settings.host.provision.ssh
        stdin = remote_stdin(script, ssh)
        return remote.Command(
            f"{name}-{script.step.replace('_', '-')}",
            connection=self.connection,
            # The content hash is in `create`: a changed script is an update that runs it again.
            # `triggers` would replace the resource on every change (pulumi/pulumi-command#855).
            create=remote_command(script, ssh),
            stdin=pulumi.Output.secret(stdin) if ssh.sudo_password is not None else stdin,
            add_previous_output_in_env=False,
            logging=remote.Logging.NONE,
            opts=pulumi.ResourceOptions(parent=self, depends_on=self.steps[-1:],
                                        additional_secret_outputs=["stdout", "stderr"]),
        )
