"""RabbitMQ: a data volume, a fixed node name, users/vhosts/queues from a definitions file, and the container."""

from __future__ import annotations

from collections.abc import Callable

import pulumi

from berth.plan import rabbitmq as plan
from berth.plan.containers import docker_name
from berth.settings.services import RabbitMQSettings
from components.common import ContainerSpec, Placement, ServiceArgs, container, data_volume, password, upload

NODE_HOST = "rabbitmq"
CONF_PATH = "/etc/rabbitmq/conf.d/20-berth.conf"


class RabbitMQ(pulumi.ComponentResource):
    """RabbitMQ on the data network; the management UI (15672) is never published.

    The node name is fixed (rabbit@rabbitmq, with the container's hostname set to match), because
    RabbitMQ keeps its database under a directory named after the node: a replacement container
    with another hostname would start empty beside the old data.
    """

    def __init__(self, name: str, args: ServiceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("berth:data:RabbitMQ", name, None, opts)
        settings = args.settings
        mq = settings.rabbitmq
        assert mq is not None
        self.volume = data_volume(f"{name}-data", settings, mq.volume, self)
        self.passwords = {mq.admin_user: password(f"{name}-admin-password", self, mq.admin_password)}
        for user, spec in sorted(mq.users.items()):
            self.passwords[user] = password(f"{name}-{user}-password", self, spec.password)
        self.urls: dict[str, pulumi.Output[str]] = {
            user: pulumi.Output.secret(pw.apply(_url_with(mq, user))) for user, pw in self.passwords.items()}
        definitions = pulumi.Output.all(**self.passwords).apply(lambda pws: plan.definitions_json(mq, pws))
        self.container = container(f"{name}-container", args, ContainerSpec(
            image=mq.image,
            placement=Placement(networks=[args.data_network], aliases=[NODE_HOST]),
            env={"RABBITMQ_NODENAME": f"rabbit@{NODE_HOST}"},
            health=(plan.healthcheck_test(), mq.healthcheck),
            resources=mq.resources,
            volumes={"/var/lib/rabbitmq": self.volume.name},
            uploads=[upload(CONF_PATH, plan.rabbitmq_conf(), secret=False),
                     upload(plan.DEFINITIONS_PATH, definitions, secret=True)],
            fixed_name=docker_name(settings, "rabbitmq"),
            grace=mq.stop_grace,
            extra={"hostname": NODE_HOST},
        ), parent=self)
        self.refs = {"rabbitmq.admin_password": self.passwords[mq.admin_user], "rabbitmq.url": self.urls[mq.admin_user]}
        for user in sorted(mq.users):
            self.refs[f"rabbitmq.users.{user}.password"] = self.passwords[user]
            self.refs[f"rabbitmq.users.{user}.url"] = self.urls[user]
        self.register_outputs({"volume": self.volume.name})


def _url_with(mq: RabbitMQSettings, user: str) -> Callable[[str], str]:
    """The user's AMQP URL (on its first vhost) for a given password."""
    vhost = mq.users[user].vhosts[0] if user in mq.users else mq.vhosts[0]
    return lambda pw: plan.amqp_url(user, pw, NODE_HOST, vhost)
