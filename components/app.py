"""AppService: an application's containers, replaced without downtime behind one network alias."""

from __future__ import annotations

import pulumi

from berth.plan.containers import app_healthcheck_test, workload_env
from components.common import ServiceArgs, container, dependencies, workload_spec


class AppService(pulumi.ComponentResource):
    """`replicas` containers of one app, each answering to the app's name on the stack's networks.

    Containers have no fixed name, so a replacement is created (and turns healthy, `wait=True`)
    before the old one is stopped; the old one then drains for `grace` seconds. The proxy resolves
    the alias per request, so traffic moves to the new container without a reload. An app with
    `update_order: stop-first` (a single writer of its files) is stopped first instead.
    """

    def __init__(self, name: str, args: ServiceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("berth:app:AppService", name, None, opts)
        app = args.settings.apps[name]
        test = app_healthcheck_test(app)
        spec = workload_spec(
            args, app, workload_env(args.settings, app),
            aliases=[name],
            health=(test, app.healthcheck) if test and app.healthcheck else None,
            fixed_name=None,
            stop_first=app.update_order == "stop-first",
            grace=app.grace,
            restart=app.restart,
            wait_timeout=app.wait_timeout,
        )
        self.containers = [
            container(f"{name}-{index}", args, spec, parent=self, depends_on=dependencies(args, app))
            for index in range(app.replicas)
        ]
        self.register_outputs({"containers": [c.name for c in self.containers]})
