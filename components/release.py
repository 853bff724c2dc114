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
from berth.plan.release import exact_digest, next_history, release_content, workloads
from berth.settings.release import ReleasePlan
from components.stack import Stack


def release_history(plan: ReleasePlan, stack: Stack) -> pulumi.Output[list[dict[str, Any]]]:
    """The stack's releases after this update, newest first; the head is its `release`."""
    settings = plan.settings
    keys = [(kind, name, ref) for kind, names in workloads(settings).items() for name, ref in names.items()]
    resolved = [resolve_image(ref, settings.images) for _, _, ref in keys]
    running: list[pulumi.Output[Any]] = [c.id for app in stack.apps.values() for c in app.containers]
    running += [job.exit_gate for job in stack.jobs.values()]

    def build(values: list[Any]) -> list[dict[str, Any]]:
        digests, ids = values[:len(keys)], values[len(keys):2 * len(keys)]
        images: dict[str, dict[str, dict[str, str]]] = {"apps": {}, "jobs": {}, "services": {}}
        for (kind, name, ref), digest, image_id in zip(keys, digests, ids, strict=True):
            images[kind][name] = {"image": ref, "digest": exact_digest(digest), "image_id": image_id or ""}
        content = release_content(settings, images, plan.rollback_of)
        return next_history(content, plan.history, plan.keep, plan.now)

    return pulumi.Output.all(*(stack.images.digests[r] for r in resolved), *(stack.images.ids[r] for r in resolved),
                             *running).apply(build)
