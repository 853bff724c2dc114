"""The one place where a berth container, data volume or generated password becomes a resource.

Every component builds its containers through `container()`, so restart policy, logging, env
ordering, secrecy of env, networks, resources and replacement order are decided once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, cast

import pulumi
import pulumi_docker as docker
import pulumi_random as random

from berth.plan.containers import (
    SERVICE_RESTART,
    clean_path,
    docker_name,
    effective_logging,
    env_list,
    healthcheck,
    log_args,
    needs_data_network,
    resolve_image,
    resource_args,
    seconds,
    waits_for,
)
from berth.settings import Cadence, Resources, Settings
from berth.settings.apps import Workload

# How long `pulumi up` waits for a data service to turn healthy before it fails the update.
SERVICE_WAIT_SECONDS = 300


@dataclass(frozen=True)
class ServiceArgs:
    """What every service component receives: the settings and what the stack built before it."""

    settings: Settings
    images: Mapping[str, pulumi.Input[str]]
    edge_network: pulumi.Input[str]
    data_network: pulumi.Input[str]
    # Generated values workloads may reference, e.g. "postgres.url" -> a secret Output.
    secrets: Mapping[str, pulumi.Output[str]] = field(default_factory=dict)
    # Resources a workload may depend on by name: data services, apps and jobs created so far.
    after: Mapping[str, pulumi.Resource] = field(default_factory=dict)
    # Values that must hold before a workload starts, e.g. a job's exit code being 0.
    gates: Mapping[str, pulumi.Output[str]] = field(default_factory=dict)
    # Named volumes apps share: settings name -> docker volume name.
    volumes: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Placement:
    """Where a container sits: networks (by docker name) and the aliases it answers to there."""

    networks: Sequence[pulumi.Input[str]]
    aliases: Sequence[str]


@dataclass
class ContainerSpec:
    """What differs between berth's containers; everything else is decided in `container()`."""

    image: str
    placement: Placement
    env: Mapping[str, str] = field(default_factory=dict)
    secret_env: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    command: Sequence[str] | None = None
    health: tuple[list[str], Cadence] | None = None
    resources: Resources = field(default_factory=Resources)
    volumes: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)  # container path -> volume name
    read_only_volumes: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)  # mounted read-only
    uploads: Sequence[docker.ContainerUploadArgs] = ()
    # A fixed docker name makes the container delete-before-replace (data services, the proxy);
    # apps leave it None and are replaced create-before-delete behind their alias, unless stop_first.
    fixed_name: str | None = None
    stop_first: bool = False
    grace: timedelta = timedelta(seconds=60)
    restart: str = SERVICE_RESTART
    wait_timeout: int = SERVICE_WAIT_SECONDS
    extra: Mapping[str, object] = field(default_factory=dict)
    create_timeout: int | None = None
    local_logs: bool = False  # json-file rotation whatever the stack's driver (the ELK services)


def container(resource_name: str, service: ServiceArgs, spec: ContainerSpec, parent: pulumi.Resource,
              depends_on: Sequence[pulumi.Resource] = ()) -> docker.Container:
    """A container with berth's defaults; with a healthcheck, `pulumi up` waits until it is healthy."""
    settings, health = service.settings, spec.health
    check = healthcheck(*health) if health else None
    args: dict[str, Any] = {
        "image": service.images[resolve_image(spec.image, settings.images)],
        "envs": _envs(spec.env, spec.secret_env),
        "command": list(spec.command) if spec.command is not None else None,
        "restart": spec.restart,
        "networks_advanced": [docker.ContainerNetworksAdvancedArgs(name=network, aliases=list(spec.placement.aliases))
                              for network in spec.placement.networks],
        "volumes": [docker.ContainerVolumeArgs(volume_name=volume, container_path=path)
                    for path, volume in sorted(spec.volumes.items())]
                   + [docker.ContainerVolumeArgs(volume_name=volume, container_path=path, read_only=True)
                      for path, volume in sorted(spec.read_only_volumes.items())],
        "uploads": list(spec.uploads),
        "healthcheck": docker.ContainerHealthcheckArgs(**check) if check else None,
        "wait": health is not None,
        "wait_timeout": spec.wait_timeout if health is not None else None,
        "destroy_grace_seconds": seconds(spec.grace),
        "stop_timeout": seconds(spec.grace),
        "name": spec.fixed_name,
        **log_args(effective_logging(settings, spec.local_logs), tag=spec.fixed_name or resource_name),
        **resource_args(spec.resources),
        **spec.extra,
    }
    extra_labels = cast(list[docker.ContainerLabelArgs], spec.extra.get("labels") or [])
    args["labels"] = [*extra_labels, *replace_on_label(check, cast(Mapping[str, str] | None, spec.extra.get("tmpfs")))]
    return docker.Container(
        resource_name,
        **{key: value for key, value in args.items() if value is not None and value != []},
        opts=pulumi.ResourceOptions(
            parent=parent,
            depends_on=list(depends_on),
            delete_before_replace=spec.fixed_name is not None or spec.stop_first,
            # A one-shot's captured output lands in the state: a job that prints a URL must not leak it.
            additional_secret_outputs=["container_logs"] if spec.extra.get("logs") else None,
            custom_timeouts=pulumi.CustomTimeouts(create=f"{spec.create_timeout}s") if spec.create_timeout else None,
        ),
    )


def replace_on_label(check: Mapping[str, Any] | None,
                     tmpfs: Mapping[str, str] | None) -> list[docker.ContainerLabelArgs]:
    """A label whose value changes with the healthcheck and tmpfs, so that changing them replaces the container.

    The provider updates both in place, and docker's ContainerUpdate ignores them: the change was
    recorded and never applied (kreuzwerker/terraform-provider-docker#988). Labels force a new container.
    """
    if not check and not tmpfs:
        return []
    digest = hashlib.sha256(json.dumps({"healthcheck": check, "tmpfs": tmpfs}, sort_keys=True).encode()).hexdigest()
    return [docker.ContainerLabelArgs(label="berth.replace-on", value=digest[:16])]


# A one-shot container: `pulumi up` waits for it to exit and keeps its logs; docker never restarts it.
ONE_SHOT = {"attach": True, "must_run": False, "logs": True}


class JobFailed(pulumi.RunError):
    """A one-shot container exited non-zero; what depends on it is not created.

    A RunError: the SDK prints its message as one line and no traceback, where any other exception
    raised in an apply shows as "Program failed with an unhandled exception" and a traceback.
    """


def exit_gate(job: docker.Container, name: str) -> pulumi.Output[str]:
    """Resolves to "exit-0" once the one-shot container succeeded, or fails the update.

    The provider records a failed run as a created container with its exit code, and a container
    whose inputs did not change is not run again: the message says how to re-run it.
    """

    def require_zero(args: list[Any]) -> str:
        code, urn = args
        if code != 0:
            raise JobFailed(f"job {name} exited with {code}; see its logs (`docker logs` on the host). It will not "
                            f"run again by itself: fix the cause, then run `pulumi up --replace '{urn}'`")
        return "exit-0"

    return pulumi.Output.all(job.exit_code, job.urn).apply(require_zero)


def setup_job(resource_name: str, service: ServiceArgs, parent: pulumi.Resource, server: pulumi.Resource,
              entrypoint: Sequence[str], **fields: Any) -> tuple[docker.Container, pulumi.Output[str]]:
    """A data service's one-shot setup (databases, buckets, passwords) and its exit gate.

    It runs `entrypoint` + `command` on the data network once `server` is healthy, and again whenever
    its own inputs (script, credentials, image) change; the script must be safe to re-run. `fields`
    are the rest of its ContainerSpec (image, command, env, uploads...).

    The job waits for `server` by an explicit dependency only, never by taking one of its outputs: a
    fixed-name server is replaced delete-before-replace, and Pulumi first deletes every resource
    whose inputs come from it and must be replaced too, which would take the dependent apps down
    with it.
    """
    job = container(resource_name, service, ContainerSpec(
        placement=Placement(networks=[service.data_network], aliases=[]),
        restart="no",
        extra={"entrypoints": list(entrypoint), **ONE_SHOT},
        **fields,
    ), parent=parent, depends_on=[server])
    return job, exit_gate(job, resource_name)


def data_volume(resource_name: str, settings: Settings, volume: str, parent: pulumi.Resource) -> docker.Volume:
    """A named volume that outlives every container: retained on delete, protected where data is."""
    return docker.Volume(
        resource_name,
        name=docker_name(settings, volume),
        labels=[docker.VolumeLabelArgs(label="berth.environment", value=settings.environment)],
        opts=pulumi.ResourceOptions(parent=parent, retain_on_delete=True, protect=settings.protect_data),
    )


def password(resource_name: str, parent: pulumi.Resource, given: object | None = None,
             length: int = 32, special: bool = False) -> pulumi.Output[str]:
    """A given secret from settings, or one generated with pulumi-random; a secret Output either way."""
    if given is not None:
        return pulumi.Output.secret(given.get_secret_value())  # type: ignore[attr-defined]
    generated = random.RandomPassword(resource_name, length=length, special=special,
                                      opts=pulumi.ResourceOptions(parent=parent))
    return pulumi.Output.secret(generated.result)


def upload(path: str, content: pulumi.Input[str], *, secret: bool) -> docker.ContainerUploadArgs:
    """A file written into the container before it starts; secret content stays a secret Output."""
    body = pulumi.Output.secret(content) if secret else content
    return docker.ContainerUploadArgs(file=path, content=body)


def _envs(env: Mapping[str, str], secret_env: Mapping[str, pulumi.Input[str]]) -> pulumi.Input[list[str]]:
    if not secret_env:
        return env_list(env)
    names = sorted(secret_env)
    values = pulumi.Output.all(*(secret_env[name] for name in names))
    return pulumi.Output.secret(values.apply(lambda vs: env_list({**env, **dict(zip(names, vs, strict=True))})))


def workload_spec(args: ServiceArgs, workload: Workload, env: Mapping[str, str], one_shot: bool = False,
                  **fields: object) -> ContainerSpec:
    """The ContainerSpec of an app or job: its env, secrets by reference, volumes, user and networks."""
    networks = [args.edge_network]
    if needs_data_network(workload):
        networks.append(args.data_network)
    extra: dict[str, object] = {
        "user": workload.user,
        "read_only": workload.read_only or None,
        "tmpfs": dict(workload.tmpfs) or None,
        "working_dir": clean_path(workload.working_dir) if workload.working_dir else None,
        # A failed job fails this input, so nothing that needs the job starts after it failed.
        "labels": [docker.ContainerLabelArgs(label=f"berth.after.{dep}", value=args.gates[dep])
                   for dep in waits_for(workload) if dep in args.gates] or None,
        **(ONE_SHOT if one_shot else {}),
    }
    return ContainerSpec(
        image=workload.image,
        placement=Placement(networks=networks, aliases=list(fields.pop("aliases", []))),  # type: ignore[call-overload]
        env=env,
        secret_env={name: args.secrets[ref] for name, ref in workload.secrets.items()},
        command=workload.command,
        resources=workload.resources,
        volumes={path: args.volumes[volume] for volume, path in workload.volumes.items()},
        extra={key: value for key, value in extra.items() if value is not None},
        **fields,  # type: ignore[arg-type]
    )


def dependencies(args: ServiceArgs, workload: Workload) -> list[pulumi.Resource]:
    """The resources a workload waits for: data services healthy, apps healthy, jobs finished."""
    return [args.after[name] for name in waits_for(workload)]
