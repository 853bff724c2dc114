"""berth: the stack's settings -> one Stack component -> outputs. Run by `pulumi up` and by `berth synth`."""

import pulumi

from berth.errors import ConfigError
from berth.settings import from_pulumi_config, load_settings
from components.stack import Stack

try:
    settings = load_settings(from_pulumi_config())
except ConfigError as error:
    # RunError ends the program with this message alone: one line per problem, no traceback.
    raise pulumi.RunError(str(error)) from None

stack = Stack(f"{settings.name}-{settings.environment}", settings)

pulumi.export("environment", settings.environment)
pulumi.export("host", settings.host.url)
pulumi.export("networks", {"edge": stack.networks.edge.name, "data": stack.networks.data.name})
pulumi.export("volumes", stack.volumes.names)
pulumi.export("apps", {name: [c.name for c in app.containers] for name, app in stack.apps.items()})
pulumi.export("connections", pulumi.Output.secret(stack.connections))
if stack.backup is not None:
    # Without it the backups cannot be read: `pulumi stack output --show-secrets backup_password`.
    pulumi.export("backup_password", stack.backup.password)
if stack.proxy is not None:
    pulumi.export("urls", stack.urls)
