"""Images: one docker.RemoteImage per distinct image reference the stack runs."""

from __future__ import annotations

from collections.abc import Iterable

import pulumi
import pulumi_docker as docker

from berth.plan.containers import image_slug, resolve_image
from berth.settings import Settings


class Images(pulumi.ComponentResource):
    """Pulls every image once (with the provider's registry credentials) and keeps it on the host.

    Containers run the pulled image's ID, so a new tag or digest replaces the container, and a
    tag that moves upstream does not until the image is pulled again.
    """

    def __init__(self, name: str, settings: Settings, refs: Iterable[str],
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("berth:images:Images", name, None, opts)
        resolved = sorted({resolve_image(ref, settings.images) for ref in refs})
        self.ids: dict[str, pulumi.Output[str]] = {}
        # `repo[:tag]@sha256:…` as the host pulled it; empty for an image only built locally.
        self.digests: dict[str, pulumi.Output[str]] = {}
        for ref in resolved:
            image = docker.RemoteImage(f"{name}-{image_slug(ref)}", name=ref, keep_locally=True,
                                       opts=pulumi.ResourceOptions(parent=self))
            self.ids[ref] = image.image_id
            self.digests[ref] = image.repo_digest
        self.register_outputs({"images": resolved})

