"""The stack's `release` and `releases` outputs: the exact images it runs, and its last N releases.

No resources: the release is computed from the RemoteImages' repo digests and image IDs, and it
resolves only once every app container is up (healthy, `wait=True`) and every job exited 0, so an
update that fails never exports a release of what did not come up (Pulumi also keeps the outputs of
the last successful update when one fails, pulumi/pulumi#14752).
"""

from __future__ import annotations

from typing import Any

import pulumi

from berth.plan.containers import resolve_image
from berth.plan.release import observed_history, workloads
from berth.settings.release import ReleasePlan
from components.stack import Stack


def release_history(plan: ReleasePlan, stack: Stack) -> pulumi.Output[list[dict[str, Any]]]:
    """The stack's releases after this update, newest first; the head is its `release`."""
    settings = plan.settings
    keys = [(kind, name, resolve_image(ref, settings.images))
            for kind, names in workloads(settings).items() for name, ref in names.items()]
    running: list[pulumi.Output[Any]] = [c.id for app in stack.apps.values() for c in app.containers]
    running += [job.exit_gate for job in stack.jobs.values()]

    def build(values: list[Any]) -> list[dict[str, Any]]:
        observed: dict[str, dict[str, tuple[str | None, str | None]]] = {}
        for (kind, name, _), digest, image_id in zip(keys, values[:len(keys)], values[len(keys):2 * len(keys)],
                                                     strict=True):
            observed.setdefault(kind, {})[name] = (digest, image_id)
        return observed_history(settings, observed, plan.history, plan.keep, plan.now, plan.rollback_of)

    return pulumi.Output.all(*(stack.images.digests[ref] for _, _, ref in keys),
                             *(stack.images.ids[ref] for _, _, ref in keys), *running).apply(build)
