"""Job: a one-shot container (e.g. migrations) that must exit 0 before what depends on it starts."""

from __future__ import annotations

import pulumi

from berth.plan.containers import workload_env
from components.common import ServiceArgs, container, dependencies, workload_spec


class JobFailed(Exception):
    """A job container exited non-zero; its dependents are not created."""


class Job(pulumi.ComponentResource):
    """Runs the job's container to completion (`attach`), then checks its exit code.

    `exit_gate` resolves to "exit-0" or fails the update; dependents take it as an input, so
    they are created only after a successful run.
    """

    def __init__(self, name: str, args: ServiceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("berth:job:Job", name, None, opts)
        job = args.settings.jobs[name]
        spec = workload_spec(
            args, job, workload_env(args.settings, job),
            restart="no",
            create_timeout=job.timeout,
        )
        spec.extra = {**spec.extra, "attach": True, "must_run": False, "logs": True}
        self.container = container(name, args, spec, parent=self, depends_on=dependencies(args, job))
        self.exit_gate: pulumi.Output[str] = self.container.exit_code.apply(lambda code: _require_zero(name, code))
        self.register_outputs({"exit_code": self.container.exit_code})


def _require_zero(name: str, code: int | None) -> str:
    if code != 0:
        raise JobFailed(f"job {name} exited with {code}; see its logs (`docker logs` on the host)")
    return "exit-0"
