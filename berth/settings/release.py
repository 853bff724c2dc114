"""Promotion and rollback: which exact images a stack runs, read from releases before any resource exists.

The only place berth reads a StackReference (DESIGN principle 1). `plan_release()` reads

- the source stack's `release` output (`promote_from`), and
- this stack's own `releases` output (its history, newest first; `rollback` and the release time),

and returns the settings with each promoted or rolled-back workload's `image` replaced by its
exact digest (`repo@sha256:…`). Components get those plain settings as always.

The outputs are resolved before the Stack component is built, the way Pulumi's own synchronous
invokes (`pulumi.runtime.invoke`, every provider's `get_*` function) resolve theirs: by pumping the
event loop until the value is there (`pulumi.runtime.sync_await._sync_await`). So a refusal is one
ConfigError line before any resource is declared, and `pulumi preview` shows the digests themselves.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationError

from berth.errors import ConfigError
from berth.settings.base import BerthModel, Duration, Name, in_range, matching

if TYPE_CHECKING:
    from berth.settings.root import Settings

# How many releases a stack keeps in its `releases` output unless `release_history` says otherwise.
DEFAULT_RELEASE_HISTORY = 10
# What a rollback cannot undo; printed by every preview and update that rolls back.
ROLLBACK_WARNING = ("a rollback runs older images only: it does not undo database migrations or any data written "
                    "since (restore a backup for that)")

StackName = Annotated[str, AfterValidator(matching(
    r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)?", "a stack name like staging, or org/project/stack"))]
ReleaseId = Annotated[str, AfterValidator(matching(r"previous|[0-9a-f]{12}",
                                                   "previous, or a release id (12 hex) from the releases output"))]
ReleaseHistory = Annotated[int, AfterValidator(in_range(1, 100))]


class PromoteFrom(BerthModel):
    """Run exactly the images another stack's last release runs (prod from staging, staging from dev)."""

    stack: StackName
    # Apps (or jobs) to take from the source; every enabled app and job when not given.
    apps: list[Name] | None = None
    # Refuse a source release older than this.
    max_age: Duration | None = None


PromoteFromField = Annotated[PromoteFrom, BeforeValidator(lambda v: {"stack": v} if isinstance(v, str) else v)]


# -- releases as read back (written by berth/plan/release.py) ------------------------------------


class _Read(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class ImageEntry(_Read):
    """One workload's image in a release: as configured, the registry digest ("" if local), the image ID."""

    image: str
    digest: str
    image_id: str


class Release(_Read):
    """A stack's `release` output."""

    id: str
    time: datetime
    blueprint: str | None = None
    environment: str
    settings_hash: str
    apps: dict[str, ImageEntry] = {}
    jobs: dict[str, ImageEntry] = {}
    services: dict[str, ImageEntry] = {}
    rollback_of: str | None = None

    def entry(self, kind: str, name: str) -> ImageEntry | None:
        """The image of apps.<name>, jobs.<name> or services.<name>, if this release runs it."""
        return getattr(self, kind).get(name)

    def names(self, kind: str) -> str:
        """What it runs of a kind, for messages: apps ['backend', 'frontend']."""
        return f"{kind} {sorted(getattr(self, kind))}"


# -- the plan -----------------------------------------------------------------------------------

# (stack, output name) -> the output's plain value, or None when the stack exports no such output.
Reader = Callable[[str, str], Any]


@dataclass(frozen=True)
class ReleasePlan:
    """The settings to deploy, and what the release outputs are built from."""

    settings: Settings
    history: tuple[dict[str, Any], ...]  # this stack's releases, newest first, as read
    keep: int
    now: datetime
    rollback_of: str | None = None
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def plan_release(settings: Settings, read: Reader, own_stack: str, now: datetime) -> ReleasePlan:
    """The settings with promoted or rolled-back images as exact digests; a ConfigError for every refusal.

    A promotion takes every image of the source (apps, jobs, data services, proxy), or only the apps
    and jobs it lists. A rollback takes apps and jobs only: a data service's older image may not read
    the data files a newer one wrote. A rollback wins over `promote_from` (prod keeps promote_from
    set; a rollback is the exception).
    """
    history = _history(read(own_stack, "releases"))
    plan = ReleasePlan(settings, tuple(raw for raw, _ in history), settings.release_history, now)
    if settings.rollback is not None:
        return _rollback(plan, [release for _, release in history])
    if settings.promote_from is not None:
        return _promote(plan, settings.promote_from, read, own_stack)
    return plan


def _promote(plan: ReleasePlan, source: PromoteFrom, read: Reader, own_stack: str) -> ReleasePlan:
    settings, where = plan.settings, "promote_from"
    stack = qualified(source.stack, own_stack)
    if stack == own_stack:
        raise ConfigError.one(f"{where}.stack", f"{source.stack!r} is this stack itself")
    raw = read(stack, "release")
    if raw is None:
        raise ConfigError.one(where, f"stack {source.stack} exports no release yet: deploy it first "
                                     f"(`pulumi up -s {source.stack}`); a failed update exports none")
    release = _parse(raw, where, f"stack {source.stack}'s release")
    if release.blueprint != settings.blueprint:
        raise ConfigError.one(where, f"stack {source.stack} runs blueprint {release.blueprint or '(none)'}, this "
                                     f"stack {settings.blueprint or '(none)'}: promotion moves one system between "
                                     "stacks")
    age = plan.now - release.time
    if source.max_age is not None and age > source.max_age:
        raise ConfigError.one(f"{where}.max_age", f"stack {source.stack}'s release {release.id} is from "
                                                  f"{release.time:%Y-%m-%d %H:%M}Z, {_days(age)} old, older "
                                                  f"than {_days(source.max_age)}")
    wanted = set(source.apps) if source.apps is not None else None
    problems: list[tuple[str, str]] = []
    images: dict[str, dict[str, str]] = {"apps": {}, "jobs": {}, "services": {}}
    services = [] if wanted is not None else [("services", key) for key in service_images(settings)]
    for kind, name in [*_workloads(settings), *services]:
        if wanted is not None and name not in wanted:
            continue
        entry = release.entry(kind, name)
        path = f"{where}.apps" if wanted is not None else where
        if entry is None:
            limit = "" if wanted is not None else "; list the apps and jobs to promote in promote_from.apps"
            problems.append((path, f"{kind}.{name}: stack {source.stack} does not run it (release {release.id} "
                                   f"has {release.names(kind)}){limit}"))
        elif not entry.digest:
            problems.append((path, f"{kind}.{name}: stack {source.stack} runs the local image {entry.image} "
                                   f"({entry.image_id[:19]}), which has no registry digest; push it to a registry "
                                   f"and deploy {source.stack} from there, then promote"))
        else:
            images[kind][name] = entry.digest
    if problems:
        raise ConfigError(problems)
    notes = tuple(f"promote_from {source.stack}: release {release.id} of {release.time:%Y-%m-%d %H:%M}Z: "
                  f"{kind}.{name} runs {digest}" for kind in images for name, digest in sorted(images[kind].items()))
    return replace(plan, settings=with_images(settings, images), notes=notes)


def _rollback(plan: ReleasePlan, history: list[Release]) -> ReleasePlan:
    settings, wanted = plan.settings, plan.settings.rollback
    if not history:
        raise ConfigError.one("rollback", "this stack has no releases yet: there is nothing to roll back to")
    head = history[0]
    if wanted == "previous":
        # Once rolled back, "previous" stays on the release it went back to (the head), until cleared.
        if head.rollback_of is not None:
            target = head
        elif len(history) > 1:
            target = history[1]
        else:
            raise ConfigError.one("rollback", f"release {head.id} is the only one in this stack's history")
    else:
        found = [release for release in history if release.id == wanted]
        if not found:
            raise ConfigError.one("rollback", f"{wanted} is not in this stack's releases "
                                              f"({', '.join(r.id for r in history)})")
        target = found[0]
    images: dict[str, dict[str, str]] = {"apps": {}, "jobs": {}}
    warnings = [f"rollback to release {target.id} of {target.time:%Y-%m-%d %H:%M}Z; {ROLLBACK_WARNING}"]
    problems: list[tuple[str, str]] = []
    for kind, name in _workloads(settings):
        entry, current = target.entry(kind, name), head.entry(kind, name)
        if entry is None:
            warnings.append(f"rollback: {kind}.{name} is not in release {target.id}; it keeps its image "
                            f"{_workload(settings, kind, name).image}")
        elif not entry.digest:
            problems.append(("rollback", f"{kind}.{name} ran the local image {entry.image} in release {target.id}, "
                                         "which has no registry digest to go back to exactly"))
        else:
            images[kind][name] = entry.digest
            was = current.digest or current.image if current is not None else "(not running)"
            if was != entry.digest:
                warnings.append(f"rollback: {kind}.{name} goes back from {was} to {entry.digest}")
    if problems:
        raise ConfigError(problems)
    return replace(plan, settings=with_images(settings, images), rollback_of=head.rollback_of or head.id,
                   warnings=tuple(warnings))


# -- the images of a stack, by the settings path that names them -----------------------------------

# Data services' and the proxy's images: release key -> the settings attributes that hold it.
SERVICE_IMAGES: dict[str, tuple[str, ...]] = {
    "postgres": ("postgres", "image"), "redis": ("redis", "image"), "rabbitmq": ("rabbitmq", "image"),
    "minio": ("minio", "image"), "minio.client": ("minio", "client_image"),
    "elasticsearch": ("elk", "elasticsearch", "image"), "logstash": ("elk", "logstash", "image"),
    "kibana": ("elk", "kibana", "image"), "proxy": ("proxy", "image"), "certbot": ("proxy", "tls", "acme", "image"),
}


def service_images(settings: Settings) -> dict[str, str]:
    """Release key -> image reference of every data service (and setup client), the proxy and certbot the stack runs."""
    on = {name: settings.service(name) is not None for name in ("postgres", "redis", "rabbitmq", "minio",
                                                                "elasticsearch", "logstash", "kibana")}
    on["minio.client"] = on["minio"] and bool(settings.minio and settings.minio.buckets)
    on["proxy"] = settings.proxy is not None and settings.proxy.enabled
    on["certbot"] = on["proxy"] and settings.proxy is not None and settings.proxy.tls.acme is not None
    return {key: _get(settings, SERVICE_IMAGES[key]) for key, running in on.items() if running}


def _get(settings: Settings, path: tuple[str, ...]) -> str:
    node: Any = settings
    for attr in path:
        node = getattr(node, attr)
    return str(node)


def _set(node: Any, path: tuple[str, ...], value: str) -> Any:
    if len(path) == 1:
        return node.model_copy(update={path[0]: value})
    return node.model_copy(update={path[0]: _set(getattr(node, path[0]), path[1:], value)})


# -- reading ------------------------------------------------------------------------------------


def qualified(stack: str, own_stack: str) -> str:
    """`staging` -> `<org>/<project>/staging`, in this stack's organization and project."""
    if "/" in stack:
        return stack
    org, project, _ = own_stack.split("/")
    return f"{org}/{project}/{stack}"


def stack_reference_reader() -> Reader:
    """Reads stack outputs through one pulumi.StackReference per stack, resolved before any resource exists."""
    import pulumi
    from pulumi.runtime.sync_await import _sync_await

    references: dict[str, pulumi.StackReference] = {}

    def read(stack: str, output: str) -> Any:
        if stack not in references:
            references[stack] = pulumi.StackReference(stack)
        details = _sync_await(references[stack].get_output_details(output))
        return details.value if details.value is not None else details.secret_value

    return read


def own_stack() -> str:
    """`<org>/<project>/<stack>` of the running program (`organization` on a self-managed backend)."""
    import pulumi

    return f"{pulumi.get_organization() or 'organization'}/{pulumi.get_project()}/{pulumi.get_stack()}"


def release_clock() -> datetime:
    """Now, or SOURCE_DATE_EPOCH when set (the reproducible-builds convention; `berth synth` sets it)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    return datetime.fromtimestamp(int(epoch), UTC) if epoch else datetime.now(UTC)


def _history(raw: Any) -> list[tuple[dict[str, Any], Release]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError.one("release_history", "this stack's releases output is not a list of releases")
    return [(dict(item), _parse(item, "release_history", f"this stack's releases[{i}]"))
            for i, item in enumerate(raw)]


def _parse(raw: Any, where: str, what: str) -> Release:
    try:
        return Release.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise ConfigError.one(where, f"{what} is not a berth release ({field}: {first['msg']})") from None


def _workloads(settings: Settings) -> list[tuple[str, str]]:
    return [("apps", name) for name in sorted(settings.enabled_apps)] + [
        ("jobs", name) for name in sorted(settings.enabled_jobs)]


def _workload(settings: Settings, kind: str, name: str) -> Any:
    return (settings.apps if kind == "apps" else settings.jobs)[name]


def with_images(settings: Settings, images: dict[str, dict[str, str]]) -> Settings:
    """`settings` with the images of apps, jobs and services (release keys) replaced by the given references."""
    update = {kind: {name: w.model_copy(update={"image": images[kind][name]}) if name in images.get(kind, {}) else w
                     for name, w in getattr(settings, kind).items()} for kind in ("apps", "jobs")}
    changed = settings.model_copy(update=update)
    for key, ref in images.get("services", {}).items():
        changed = _set(changed, SERVICE_IMAGES[key], ref)
    return changed


def _days(delta: timedelta) -> str:
    days = delta.total_seconds() / 86400
    return f"{days:.1f}d" if days >= 1 else f"{delta.total_seconds() / 3600:.1f}h"


def check_promotion(settings: Settings) -> None:
    """Cross-field rules: promote_from.apps names this stack's enabled apps or jobs."""
    source = settings.promote_from
    if source is not None and source.apps is not None:
        known = set(settings.enabled_apps) | set(settings.enabled_jobs)
        for i, name in enumerate(source.apps):
            if name not in known:
                raise ValueError(f"promote_from.apps[{i}]: {name!r} is not one of this stack's apps or jobs "
                                 f"{sorted(known)}")
