"""Releases: what a stack runs, as exact digests, and the stack's history of them. Pure functions.

A release is a plain mapping, exported by every stack as the output `release` (and the last N as
`releases`, newest first):

    {"id": "3f9c0a1b2c4d", "time": "2026-12-01T18:00:00Z", "blueprint": "praxifi",
     "environment": "staging", "settings_hash": "…16 hex…",
     "apps": {"backend": {"image": "ghcr.io/acme/api:1.4", "digest": "ghcr.io/acme/api@sha256:…",
                          "image_id": "sha256:…"}},
     "jobs": {...}, "services": {"postgres": {...}, "proxy": {...}},
     "rollback_of": "…"  # only when a rollback made it}

`id` hashes the content (blueprint, settings hash, each workload's digest or image ID) and nothing
else, so the same images under the same settings are the same release. `time` is when that content
first became this stack's release: it is kept while the content is unchanged, so a preview right
after `pulumi up` shows no output change.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from berth.settings import Settings
from berth.settings.release import SERVICE_IMAGES, service_images

# Settings that do not shape the containers: where they run, and how the release itself is chosen.
# The workloads' images are in the release by digest, so they are left out of the hash too.
_NOT_CONTAINER_SHAPING = {"host", "registries", "promote_from", "rollback", "release_history", "blueprint"}
KINDS = ("apps", "jobs", "services")


def settings_hash(settings: Settings) -> str:
    """16 hex of the settings that shape the containers, except the images (the release has their digests).

    Secrets given in settings take part only as "**********" (pydantic's SecretStr dump): the hash
    never carries a secret, even hashed.
    """
    shape = settings.model_dump(mode="json", exclude=_NOT_CONTAINER_SHAPING)
    for kind in ("apps", "jobs"):
        for workload in shape.get(kind, {}).values():
            workload.pop("image", None)
    for key in service_images(settings):  # in the release by digest
        section = shape
        path = SERVICE_IMAGES[key]
        for attr in path[:-1]:
            section = section[attr]
        section.pop(path[-1])
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]


def exact_digest(repo_digest: str | None) -> str:
    """The provider's `repo[:tag]@sha256:…` as `repo@sha256:…`; "" for a local image (no registry digest)."""
    if not repo_digest or "@sha256:" not in repo_digest:
        return ""
    name, digest = repo_digest.split("@", 1)
    last = name.rsplit("/", 1)[-1]
    repository = name.rsplit(":", 1)[0] if ":" in last else name
    return f"{repository}@{digest}"


def workloads(settings: Settings) -> dict[str, dict[str, str]]:
    """Kind -> name -> image reference (as settings give it) of every app, job and service the stack runs."""
    return {"apps": {name: app.image for name, app in sorted(settings.enabled_apps.items())},
            "jobs": {name: job.image for name, job in sorted(settings.enabled_jobs.items())},
            "services": dict(sorted(service_images(settings).items()))}


def release_content(settings: Settings, images: Mapping[str, Mapping[str, Mapping[str, str]]],
                    rollback_of: str | None = None) -> dict[str, Any]:
    """The release of `settings` without its time: `images` is kind -> name -> {image, digest, image_id}."""
    content: dict[str, Any] = {
        "blueprint": settings.blueprint,
        "environment": settings.environment,
        "settings_hash": settings_hash(settings),
        "apps": {name: dict(entry) for name, entry in sorted(images.get("apps", {}).items())},
        "jobs": {name: dict(entry) for name, entry in sorted(images.get("jobs", {}).items())},
        "services": {name: dict(entry) for name, entry in sorted(images.get("services", {}).items())},
    }
    key = {"blueprint": content["blueprint"], "settings_hash": content["settings_hash"],
           **{kind: {n: e["digest"] or e["image_id"] for n, e in content[kind].items()} for kind in KINDS}}
    content["id"] = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    if rollback_of is not None:
        content["rollback_of"] = rollback_of
    return content


def same_release(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Same content and made the same way (a rollback's result is its own entry in the history)."""
    return a.get("id") == b.get("id") and a.get("rollback_of") == b.get("rollback_of")


def next_history(content: Mapping[str, Any], history: Sequence[Mapping[str, Any]], keep: int,
                 now: datetime) -> list[dict[str, Any]]:
    """The history after this update, newest first, at most `keep` long; its head is the release.

    Unchanged content keeps the head as it is, time included; changed content is stamped `now`.
    """
    if history and same_release(content, history[0]):
        return [dict(entry) for entry in history[:keep]]
    release = {**content, "time": iso(now)}
    return [release, *(dict(entry) for entry in history)][:keep]


def iso(moment: datetime) -> str:
    """UTC, to the second, with a Z: `2026-12-01T18:00:00Z`."""
    return moment.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")



def observed_history(settings: Settings, observed: Mapping[str, Mapping[str, tuple[str | None, str | None]]],
                     history: Sequence[Mapping[str, Any]], keep: int, now: datetime,
                     rollback_of: str | None = None) -> list[dict[str, Any]]:
    """The history after an update that runs `settings`, from what the host reports per image.

    `observed` is kind -> name -> (repo digest, image ID) as the provider reads them back.
    """
    images = {kind: {name: {"image": ref, "digest": exact_digest(observed[kind][name][0]),
                            "image_id": observed[kind][name][1] or ""} for name, ref in refs.items()}
              for kind, refs in workloads(settings).items()}
    return next_history(release_content(settings, images, rollback_of), history, keep, now)
