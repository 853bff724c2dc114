"""Volumes: the named volumes apps and jobs mount, shared by name across them."""

from __future__ import annotations

import pulumi

from berth.settings import Settings
from components.common import data_volume


class Volumes(pulumi.ComponentResource):
    """One retained (and in prod protected) docker volume per volume name that a workload mounts."""

    def __init__(self, name: str, settings: Settings, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("berth:volumes:Volumes", name, None, opts)
        workloads = (*settings.enabled_apps.values(), *settings.enabled_jobs.values())
        volumes = sorted({volume for workload in workloads for volume in workload.volumes})
        self.names: dict[str, pulumi.Output[str]] = {
            volume: data_volume(f"volume-{volume}", settings, volume, self).name for volume in volumes
        }
        self.register_outputs({"names": self.names})
