"""Job: a one-shot container (e.g. migrations) that must exit 0 before what depends on it starts."""

from __future__ import annotations

import pulumi

from berth.plan.containers import workload_env
from components.common import ServiceArgs, container, dependencies, exit_gate, workload_spec


class Job(pulumi.ComponentResource):
    """Runs the job's container to completion (`attach`), then checks its exit code.

    `exit_gate` resolves to "exit-0" or fails the update; dependents take it as an input, so
    they are created only after a successful run.
    """

    def __init__(self, name: str, args: ServiceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("berth:job:Job", name, None, opts)
        job = args.settings.jobs[name]
        spec = workload_spec(args, job, workload_env(args.settings, job), restart="no", create_timeout=job.timeout,
                             one_shot=True)
        self.container = container(f"{name}-job", args, spec, parent=self, depends_on=dependencies(args, job))
        self.exit_gate = exit_gate(self.container, name)
        self.register_outputs({"exit_code": self.container.exit_code})
