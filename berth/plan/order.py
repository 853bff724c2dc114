"""The order in which jobs and apps are declared: every dependency before its dependents."""

from __future__ import annotations

from berth.settings import Settings


def start_order(settings: Settings) -> list[tuple[str, str]]:
    """(kind, name) of enabled jobs and apps, dependencies first; ties keep jobs, then apps, by name.

    Settings already rejected cycles, so this always finishes.
    """
    workloads = {**{n: ("apps", w) for n, w in settings.enabled_apps.items()},
                 **{n: ("jobs", w) for n, w in settings.enabled_jobs.items()}}
    ordered: list[tuple[str, str]] = []
    placed: set[str] = set()

    def place(name: str) -> None:
        if name in placed or name not in workloads:
            return
        placed.add(name)
        kind, workload = workloads[name]
        for dep in sorted(workload.depends_on):
            place(dep)
        ordered.append((kind, name))

    for name in sorted(settings.enabled_jobs) + sorted(settings.enabled_apps):
        place(name)
    return ordered
