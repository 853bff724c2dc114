"""berth: the stack's settings -> one Stack component -> outputs. Run by `pulumi up` and by `berth synth`."""

import pulumi

from berth.errors import ConfigError
from berth.preflight import preflight
from berth.settings import from_pulumi_config, insecure_warnings, load_settings
from berth.settings.release import own_stack, plan_release, release_clock, stack_reference_reader
from components.release import release_history
from components.stack import Stack

try:
    # Promotion and rollback swap images for exact digests read from releases, before any resource.
    release = plan_release(load_settings(from_pulumi_config()), stack_reference_reader(), own_stack(), release_clock())
except ConfigError as error:
    # RunError ends the program with this message alone: one line per problem, no traceback.
    raise pulumi.RunError(str(error)) from None
for line in release.warnings:
    pulumi.log.warn(line)
for line in release.notes:
    pulumi.log.info(line)
settings = release.settings
for warning in insecure_warnings(settings):
    pulumi.log.warn(warning)

preflight(settings)  # reach the host as the provider will; one line per problem, before any resource

stack = Stack(f"{settings.name}-{settings.environment}", settings)
history = release_history(release, stack)

pulumi.export("environment", settings.environment)
pulumi.export("host", settings.host.url)
pulumi.export("networks", {"edge": stack.networks.edge.name, "data": stack.networks.data.name})
pulumi.export("volumes", stack.volumes.names)
pulumi.export("apps", {name: [c.name for c in app.containers] for name, app in stack.apps.items()})
pulumi.export("connections", pulumi.Output.secret(stack.connections))
pulumi.export("release", history.apply(lambda releases: releases[0]))
pulumi.export("releases", history)
if stack.backup is not None:
    # Without it the backups cannot be read: `pulumi stack output --show-secrets backup_password`.
    pulumi.export("backup_password", stack.backup.password)
if stack.proxy is not None:
    pulumi.export("urls", stack.urls)
