"""A small applier: the exact desired state `berth synth` prints, created on a real Docker engine.

A test instrument, not a second Pulumi. It takes the records of `berth.synth.synth(..., reveal=True)`
(type, name, parent, provider, inputs, options) and does what the Pulumi engine + pulumi-docker would
do with them on a local engine, through the Docker Engine API (the `docker` package):

- networks, volumes and containers are created in dependency order (`options.dependencies`; a
  dependency on a `berth:*` component means every resource under it), independent ones in parallel;
- a `RemoteImage` means "this image must already be on the engine": nothing can be pulled here;
- a container is created, its `uploads` are written with `put_archive` before `start()`, then
  `wait: true` waits for docker's health status `healthy` (at most `waitTimeout` s), and `attach: true`
  waits for the exit (at most `custom_timeouts.create`), which must be 0 (berth's Job gate);
- `replace()` replaces ONE container as the engine would (create-before-delete unless
  `delete_before_replace`), and `teardown()` deletes in reverse dependency order, keeping
  `retain_on_delete` volumes unless told otherwise.

Every input field this file maps is listed in MAPPED_FIELDS. Any other field, resource type or
option is an error that names it (UnmappedFieldError), before anything is created: nothing is dropped
silently. pulumi-random and pulumi-tls resources and `berth:*` components are no-ops: their values
are already inlined in the revealed inputs of the containers that use them.

Every container, network and volume it creates also carries the instrument's own label
``berth.engine.stack=<stack component name>`` (not a synth input) so leftovers can be found.
"""

from __future__ import annotations

import io
import re
import secrets
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests

PROVIDER = "pulumi:providers:docker"
NETWORK = "docker:index/network:Network"
VOLUME = "docker:index/volume:Volume"
IMAGE = "docker:index/remoteImage:RemoteImage"
CONTAINER = "docker:index/container:Container"
BUILD = "docker:index/image:Image"  # built on the engine from a context in the project (skipPush)
PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Types whose values synth already inlined into the inputs of the resources that use them.
NOOP_TYPES = {
    "random:index/randomPassword:RandomPassword": "its result is inlined as a revealed secret",
    "tls:index/privateKey:PrivateKey": "its PEM is inlined in the proxy's uploads",
    "tls:index/selfSignedCert:SelfSignedCert": "its PEM is inlined in the proxy's uploads",
}
COMPONENT_PREFIX = "berth:"  # berth's ComponentResources: grouping only, nothing on the engine
INSTRUMENT_LABEL = "berth.engine.stack"

_LABEL = frozenset({"label", "value"})
# type -> input field -> None (a scalar, a list of scalars or a free-form map) or the keys its
# objects may have (a nested object, or a list of objects).
MAPPED_FIELDS: dict[str, dict[str, frozenset[str] | None]] = {
    PROVIDER: {"host": None},
    NETWORK: {"name": None, "driver": None, "internal": None, "labels": _LABEL},
    VOLUME: {"name": None, "labels": _LABEL},
    IMAGE: {"name": None, "keepLocally": None},
    BUILD: {"imageName": None, "build": frozenset({"context", "dockerfile", "args"}), "skipPush": None,
            "buildOnPreview": None},
    CONTAINER: {
        "image": None,
        "name": None,
        "hostname": None,
        "envs": None,
        "command": None,
        "entrypoints": None,
        "restart": None,
        "networksAdvanced": frozenset({"name", "aliases"}),
        "volumes": frozenset({"volumeName", "containerPath", "readOnly"}),
        "uploads": frozenset({"file", "content", "executable"}),
        "healthcheck": frozenset({"tests", "interval", "timeout", "startPeriod", "startInterval", "retries"}),
        "wait": None,
        "waitTimeout": None,
        "destroyGraceSeconds": None,
        "stopTimeout": None,
        "stopSignal": None,
        "logDriver": None,
        "logOpts": None,
        "memory": None,
        "memoryReservation": None,
        "memorySwap": None,
        "cpus": None,
        "cpuShares": None,
        "user": None,
        "readOnly": None,
        "tmpfs": None,
        "ulimits": frozenset({"name", "soft", "hard"}),
        "workingDir": None,
        "labels": _LABEL,
        "ports": frozenset({"internal", "external", "ip", "protocol"}),
        "attach": None,
        "mustRun": None,
        "logs": None,
    },
}
# Resource options of a synth record. custom_timeouts: only "create" is mapped.
# ignore_changes and additional_secret_outputs act on Pulumi's diff and state, which the applier does
# not keep: there is nothing of theirs to do on the engine.
MAPPED_OPTIONS = frozenset({"protect", "retain_on_delete", "delete_before_replace", "depends_on", "dependencies",
                            "custom_timeouts", "ignore_changes", "additional_secret_outputs"})
MAPPED_TIMEOUTS = frozenset({"create"})
RECORD_KEYS = frozenset({"type", "name", "parent", "provider", "inputs", "options"})
# pulumi-docker's defaults for fields berth leaves out.
DEFAULT_WAIT_TIMEOUT = 60
DEFAULT_ATTACH_TIMEOUT = 20 * 60
_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_GO_UNIT_NS = {"ns": 1, "us": 10**3, "µs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}


class ApplyError(RuntimeError):
    """The desired state could not be applied (an image is missing, a container never got healthy, ...)."""


class UnmappedFieldError(ApplyError):
    """The synth output holds a type, input field or option this applier does not map."""


class JobFailed(ApplyError):
    """An `attach: true` container exited non-zero (berth's Job gate)."""


def go_duration_ns(text: str) -> int:
    """Go's time.ParseDuration for the forms berth writes ("1m0s", "10s", "1.5ms") -> nanoseconds, exactly."""
    parts = _GO_DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ApplyError(f"{text!r} is not a Go duration")
    total = sum(Fraction(n) * _GO_UNIT_NS[u] for n, u in parts)
    if total.denominator != 1:
        raise ApplyError(f"{text!r} is not a whole number of nanoseconds")
    return int(total)


_HEALTH_FIELDS = {"interval": "Interval", "timeout": "Timeout", "startPeriod": "StartPeriod",
                  "startInterval": "StartInterval"}


def health_config(health: dict[str, Any]) -> dict[str, Any]:
    """A container's healthcheck input as the Engine API's HealthConfig (durations in nanoseconds)."""
    config: dict[str, Any] = {"Test": health["tests"], "Retries": health.get("retries")}
    config.update({api: go_duration_ns(health[field]) for field, api in _HEALTH_FIELDS.items() if field in health})
    return config


def check_mapped(records: Iterable[dict[str, Any]]) -> None:
    """Raise UnmappedFieldError naming every type, field and option the applier would have to drop."""
    problems: list[str] = []
    for rec in records:
        where = f"{rec.get('name')} ({rec.get('type')})"
        extra_keys = set(rec) - RECORD_KEYS
        if extra_keys:
            problems.append(f"{where}: unmapped record key(s) {sorted(extra_keys)}")
        kind = rec.get("type", "")
        options = rec.get("options", {})
        for option in sorted(set(options) - MAPPED_OPTIONS):
            problems.append(f"{where}: unmapped option {option!r}")
        for timeout in sorted(set(options.get("custom_timeouts") or {}) - MAPPED_TIMEOUTS):
            problems.append(f"{where}: unmapped option custom_timeouts.{timeout}")
        if kind.startswith(COMPONENT_PREFIX) or kind in NOOP_TYPES:
            continue
        if kind not in MAPPED_FIELDS:
            problems.append(f"{where}: unmapped resource type {kind!r}")
            continue
        fields = MAPPED_FIELDS[kind]
        for key, value in sorted(rec.get("inputs", {}).items()):
            if key not in fields:
                problems.append(f"{where}: unmapped input field {key!r}")
                continue
            allowed = fields[key]
            if allowed is None:
                continue
            for item in value if isinstance(value, list) else [value]:
                if not isinstance(item, dict):
                    problems.append(f"{where}: input field {key!r} holds {item!r}, expected an object")
                    continue
                for sub in sorted(set(item) - allowed):
                    problems.append(f"{where}: unmapped input field {key}.{sub!r}")
        if kind == IMAGE and rec.get("inputs", {}).get("keepLocally") is not True:
            problems.append(f"{where}: keepLocally must be true: deleting the shared local test image is not "
                            "something the engine tier can do")
        if kind != PROVIDER and (kind.startswith("docker:")) and not rec.get("provider"):
            problems.append(f"{where}: no explicit provider (it would use the default docker provider)")
    if problems:
        raise UnmappedFieldError("the applier does not map:\n  " + "\n  ".join(problems))


@dataclass
class Created:
    """What the applier made for one record."""

    kind: str
    docker_id: str
    docker_name: str
    hostname: str | None = None
    exit_code: int | None = None
    logs: str = ""
    t_created: float = 0.0
    t_started: float = 0.0
    t_ready: float = 0.0  # healthy, exited (attach) or running (no wait)


@dataclass
class Replacement:
    """The timeline of one `replace()` (time.monotonic values) and both containers."""

    resource: str
    delete_before_replace: bool
    old_id: str
    old_hostname: str | None
    new_id: str
    new_hostname: str | None
    t_begin: float = 0.0
    t_new_started: float = 0.0
    t_new_healthy: float = 0.0
    t_old_stop_begin: float = 0.0
    t_old_removed: float = 0.0
    grace_seconds: int = 0


class Applier:
    """Applies one synth result to the engine behind `client` (a docker.DockerClient)."""

    def __init__(self, client: docker.DockerClient, result: dict[str, Any],
                 log: Callable[[str], None] | None = None, workers: int = 8) -> None:
        check_mapped(result["resources"])  # refuse before touching the engine
        self.client = client
        self.api = client.api if client is not None else None
        self.result = result
        self.records: list[dict[str, Any]] = list(result["resources"])
        self.log = log or _print
        self.workers = workers
        self.stack = next((r["name"] for r in self.records if r["type"] == "berth:stack:Stack"),
                          f"{result.get('stack', 'stack')}")
        self.state: dict[int, Created] = {}
        # containers that failed to come up, or were replaced and not yet removed: teardown removes them
        self.orphans: list[Created] = []
        # container hostname (the stand-in echoes it) -> resource name, old containers included
        self.hostnames: dict[str, str] = {}
        self.t_apply_begin = 0.0
        self.t_apply_end = 0.0
        self._lock = threading.Lock()
        self._deps = {i: self._dependencies(i) for i in range(len(self.records))}

    # -- the graph ---------------------------------------------------------------------------

    def _indexes(self, name: str) -> list[int]:
        return [i for i, r in enumerate(self.records) if r["name"] == name]

    def _descendants(self, name: str) -> set[int]:
        found: set[int] = set()
        todo, seen = [name], set()
        while todo:
            parent = todo.pop()
            if parent in seen:
                continue
            seen.add(parent)
            for i, r in enumerate(self.records):
                if r["parent"] == parent and i not in found:
                    found.add(i)
                    todo.append(r["name"])
        return found

    def _dependencies(self, index: int) -> set[int]:
        deps: set[int] = set()
        for name in self.records[index]["options"].get("dependencies", []):
            for i in self._indexes(name):
                deps.add(i)
                if self.records[i]["type"].startswith(COMPONENT_PREFIX):
                    deps |= self._descendants(name)
        deps.discard(index)
        # the component (and the stack) that holds this resource cannot wait for it
        return {i for i in deps if index not in self._descendants_of_index(i)}

    def _descendants_of_index(self, index: int) -> set[int]:
        record = self.records[index]
        return self._descendants(record["name"]) if record["type"].startswith(COMPONENT_PREFIX) else set()

    def _run_graph(self, nodes: dict[int, set[int]], action: Callable[[int], None], stop_on_error: bool) -> None:
        done: set[int] = set()
        pending = dict(nodes)
        running: dict[Any, int] = {}
        errors: list[tuple[int, BaseException]] = []
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            while pending or running:
                if not (errors and stop_on_error):
                    finished_or_failed = done | {i for i, _ in errors}
                    for index in sorted(i for i, deps in pending.items() if deps <= finished_or_failed):
                        del pending[index]
                        running[pool.submit(action, index)] = index
                if not running:
                    if errors:
                        break
                    stuck = ", ".join(self.records[i]["name"] for i in pending)
                    raise ApplyError(f"dependency cycle among: {stuck}")
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    index = running.pop(future)
                    error = future.exception()
                    if error is not None:
                        errors.append((index, error))
                    else:
                        done.add(index)
        if errors:
            first = errors[0][1]
            if len(errors) > 1:
                others = "; ".join(f"{self.records[i]['name']}: {e}" for i, e in errors[1:])
                raise ApplyError(f"{first}\n(also failed: {others})") from first
            raise first

    # -- apply -------------------------------------------------------------------------------

    def apply(self) -> dict[str, Any]:
        """Create everything; return {"seconds": apply -> all ready, "containers": number started}."""
        self._check_provider()
        self.t_apply_begin = time.monotonic()
        self.log(f"applier: apply {self.stack}: {len(self.records)} resources")
        self._run_graph({i: set(d) for i, d in self._deps.items()}, self._create, stop_on_error=True)
        self.t_apply_end = time.monotonic()
        containers = sum(1 for c in self.state.values() if c.kind == CONTAINER)
        seconds = self.t_apply_end - self.t_apply_begin
        self.log(f"applier: {self.stack}: {containers} containers ready (healthy or exited 0) "
                 f"{seconds:.1f}s after apply began")
        return {"seconds": seconds, "containers": containers}

    def _check_provider(self) -> None:
        providers = [r for r in self.records if r["type"] == PROVIDER]
        if len(providers) != 1:
            raise ApplyError(f"expected one docker provider, found {[p['name'] for p in providers]}")
        host = providers[0]["inputs"].get("host", "")
        if not host.startswith("unix://") or not Path(host[len("unix://"):]).exists():
            raise ApplyError(f"provider {providers[0]['name']}: host {host!r} is not a unix socket on this machine")
        self.api.ping()

    def _create(self, index: int) -> None:
        rec = self.records[index]
        kind, name, inputs = rec["type"], rec["name"], rec["inputs"]
        if kind.startswith(COMPONENT_PREFIX) or kind in NOOP_TYPES or kind == PROVIDER:
            return
        if kind == IMAGE:
            self._require_image(inputs["name"], name)
            self.log(f"applier: = image {inputs['name']} (present locally; {name})")
        elif kind == BUILD:
            self._build(inputs, name)
        elif kind == NETWORK:
            created = self.api.create_network(
                inputs["name"], driver=inputs.get("driver"), internal=bool(inputs.get("internal", False)),
                labels={**_labels(inputs.get("labels")), INSTRUMENT_LABEL: self.stack}, check_duplicate=True)
            self._remember(index, Created(NETWORK, created["Id"], inputs["name"]))
            self.log(f"applier: + network {inputs['name']} driver={inputs.get('driver')} "
                     f"internal={bool(inputs.get('internal', False))}")
        elif kind == VOLUME:
            labels = {**_labels(inputs.get("labels")), INSTRUMENT_LABEL: self.stack}
            self.api.create_volume(inputs["name"], labels=labels)
            self._remember(index, Created(VOLUME, inputs["name"], inputs["name"]))
            self.log(f"applier: + volume {inputs['name']}")
        elif kind == CONTAINER:
            self._remember(index, self._run_container(rec, inputs, inputs.get("name") or _autoname(name)))
        else:  # check_mapped already refused it
            raise UnmappedFieldError(f"{name}: unmapped resource type {kind!r}")

    def _remember(self, index: int, created: Created) -> None:
        with self._lock:
            self.state[index] = created
            if created.hostname:
                self.hostnames[created.hostname] = self.records[index]["name"]

    def _build(self, inputs: dict[str, Any], what: str) -> None:
        """`docker build` of the context (paths relative to the project, as `pulumi up` runs there)."""
        if not inputs.get("skipPush"):
            raise ApplyError(f"{what}: only skipPush images can be built here (no registry)")
        build = inputs["build"]
        context = PROJECT_ROOT / build["context"]
        dockerfile = (PROJECT_ROOT / build.get("dockerfile", f"{build['context']}/Dockerfile")).relative_to(context)
        begin = time.monotonic()
        output: list[str] = []
        for chunk in self.api.build(path=str(context), dockerfile=str(dockerfile), tag=inputs["imageName"],
                                    buildargs=dict(build.get("args") or {}), rm=True, forcerm=True, decode=True,
                                    # the build's RUN steps fetch Debian packages; host networking does not
                                    # depend on the default bridge (docker0), which this shared engine may lack
                                    network_mode="host"):
            if "error" in chunk:
                raise ApplyError(f"{what}: build of {inputs['imageName']} failed: {chunk['error']}\n"
                                 + "".join(output[-20:]))
            output.append(chunk.get("stream", ""))
        self.log(f"applier: + image {inputs['imageName']} built in {time.monotonic() - begin:.1f}s ({what})")

    def _require_image(self, ref: str, what: str) -> None:
        try:
            self.api.inspect_image(ref)
        except docker.errors.ImageNotFound:
            raise ApplyError(f"{what}: image {ref} is not on the engine, and nothing can be pulled here: "
                             "build it (tests/engine/images/build.py) or map it with berth:images") from None

    def _run_container(self, rec: dict[str, Any], inputs: dict[str, Any], docker_name: str) -> Created:
        """Create, upload, start, then wait as the resource asks; the container is left as it ended."""
        name = rec["name"]
        self._require_image(inputs["image"], name)
        created = Created(CONTAINER, "", docker_name, t_created=time.monotonic())
        cid = self._create_container(inputs, docker_name)
        created.docker_id = cid
        try:
            self._upload(cid, inputs.get("uploads") or [])
            self.api.start(cid)
            created.t_started = time.monotonic()
            info = self.api.inspect_container(cid)
            created.hostname = info["Config"]["Hostname"]
            with self._lock:
                self.hostnames[created.hostname] = name
            detail = f"image={inputs['image']}"
            if inputs.get("attach"):
                timeout = _seconds(rec["options"].get("custom_timeouts", {}).get("create"), DEFAULT_ATTACH_TIMEOUT)
                created.exit_code = self._wait_exit(cid, timeout, f"{name} ({docker_name})")
                if inputs.get("logs"):
                    created.logs = self.api.logs(cid, stdout=True, stderr=True).decode(errors="replace")
                created.t_ready = time.monotonic()
                if created.exit_code != 0:
                    raise JobFailed(f"job {name} ({docker_name}) exited with {created.exit_code}:\n"
                                    f"{_tail(created.logs or self._logs(cid))}")
                detail += f" exited 0 after {created.t_ready - created.t_started:.1f}s"
            else:
                if inputs.get("mustRun", True):
                    self._require_running(cid, f"{name} ({docker_name})")
                if inputs.get("wait"):
                    timeout = int(inputs.get("waitTimeout") or DEFAULT_WAIT_TIMEOUT)
                    self.wait_healthy(cid, timeout, f"{name} ({docker_name})")
                    detail += f" healthy after {time.monotonic() - created.t_started:.1f}s"
                created.t_ready = time.monotonic()
            self.log(f"applier: + container {docker_name} ({name}) {detail}")
            return created
        except BaseException:
            # a container that failed to come up is left in place (for its logs) until teardown
            created.t_ready = time.monotonic()
            with self._lock:
                self.orphans.append(created)
            raise

    def _index_of_container(self, name: str) -> int:
        return next(i for i in self._indexes(name) if self.records[i]["type"] == CONTAINER)

    def _create_container(self, inputs: dict[str, Any], docker_name: str) -> str:
        """The container as the provider's resourceDockerContainerCreate makes it.

        On the default network mode "bridge", disconnected from bridge, then connected to each of
        networks_advanced; volumes as Binds ("volume:path:rw"); Init false; memory, memory_swap and
        memory_reservation in MiB; cpus through docker/cli's ParseCPUs. The read-back tier
        (readback.py) reads what this leaves on the engine, so anything done differently here
        would show there as a diff berth does not have.
        """
        networks = inputs.get("networksAdvanced") or []
        ports = inputs.get("ports") or []
        health = inputs.get("healthcheck")
        volumes = inputs.get("volumes") or []
        host_config = self.api.create_host_config(
            network_mode="bridge",
            restart_policy={"Name": inputs.get("restart", "no"), "MaximumRetryCount": 0},
            binds=[f"{v['volumeName']}:{v['containerPath']}:{'ro' if v.get('readOnly') else 'rw'}"
                   for v in volumes] or None,
            port_bindings={f"{p['internal']}/{p.get('protocol', 'tcp')}":
                           (p.get("ip", "0.0.0.0"), p["external"]) if "external" in p else None
                           for p in ports} or None,
            log_config=docker.types.LogConfig(type=inputs["logDriver"], config=inputs.get("logOpts") or {})
            if inputs.get("logDriver") else None,
            mem_limit=_mib(inputs.get("memory")),
            mem_reservation=_mib(inputs.get("memoryReservation")),
            memswap_limit=_swap(inputs.get("memorySwap")),
            nano_cpus=parse_cpus(inputs["cpus"]) if inputs.get("cpus") else None,
            cpu_shares=inputs.get("cpuShares"),
            read_only=bool(inputs.get("readOnly", False)) or None,
            tmpfs=dict(inputs["tmpfs"]) if inputs.get("tmpfs") else None,
            ulimits=[docker.types.Ulimit(name=u["name"], soft=u["soft"], hard=u["hard"])
                     for u in inputs.get("ulimits") or []] or None,
        )
        host_config["Init"] = False  # the provider sends init=false unless told otherwise
        config = self.api.create_container_config(
            inputs["image"],
            command=inputs.get("command"),
            entrypoint=inputs.get("entrypoints"),
            environment=list(inputs.get("envs") or []),
            hostname=inputs.get("hostname"),
            user=inputs.get("user"),
            working_dir=inputs.get("workingDir"),
            labels={**_labels(inputs.get("labels")), INSTRUMENT_LABEL: self.stack},
            ports=[(p["internal"], p.get("protocol", "tcp")) for p in ports] or None,
            volumes=[v["containerPath"] for v in volumes] or None,
            stop_signal=inputs.get("stopSignal"),
            stop_timeout=inputs.get("stopTimeout"),
            host_config=host_config,
        )
        if health:  # set after the fact: docker-py's Healthcheck type drops StartInterval
            config["Healthcheck"] = health_config(health)
        cid = self.api.create_container_from_config(config, docker_name)["Id"]
        if networks:
            self.api.disconnect_container_from_network(cid, "bridge")
        for network in networks:
            self.api.connect_container_to_network(cid, network["name"], aliases=network.get("aliases") or None)
        return cid

    def _upload(self, cid: str, uploads: list[dict[str, Any]]) -> None:
        """Each upload as pulumi-docker writes it: a tar entry at the absolute path, extracted at /."""
        for upload in uploads:
            data = upload["content"].encode()
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w") as tar:
                entry = tarfile.TarInfo(upload["file"].lstrip("/"))
                entry.size = len(data)
                entry.mode = 0o744 if upload.get("executable") else 0o644
                entry.mtime = int(time.time())
                tar.addfile(entry, io.BytesIO(data))
            if not self.api.put_archive(cid, "/", buffer.getvalue()):
                raise ApplyError(f"upload of {upload['file']} into {cid[:12]} failed")

    # -- waiting -----------------------------------------------------------------------------

    def wait_for(self, cid: str, done: Callable[[dict[str, Any]], bool], timeout: float, what: str) -> dict[str, Any]:
        """Inspect `cid` after each of its container events until `done(inspect)` holds; the daemon may restart."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | None = None
        while True:
            since = time.time()
            try:
                last = self.api.inspect_container(cid)
                if done(last):
                    return last
            except docker.errors.NotFound:
                raise ApplyError(f"{what}: the container is gone") from None
            except (requests.exceptions.ConnectionError, docker.errors.APIError):
                pass  # the daemon is restarting
            left = deadline - time.monotonic()
            if left <= 0:
                state = (last or {}).get("State", {})
                health = state.get("Health") or {}
                probes = "; ".join(f"exit {p.get('ExitCode')}: {p.get('Output', '').strip()[:200]}"
                                   for p in (health.get("Log") or [])[-3:])
                raise ApplyError(f"{what}: not done after {timeout:.0f}s (status {state.get('Status')}, "
                                 f"health {health.get('Status')}; last probes: {probes or '-'})\n"
                                 f"{_tail(self._logs(cid))}")
            self._next_event(cid, since, min(left, 40.0))

    def _next_event(self, cid: str, since: float, wait_seconds: float) -> None:
        try:
            stream = self.api.events(since=f"{since:.6f}", until=f"{time.time() + wait_seconds:.6f}",
                                     filters={"container": cid, "type": "container"}, decode=True)
            try:
                for event in stream:
                    status = event.get("status") or event.get("Action") or ""
                    if not status.startswith("exec_"):
                        return
            finally:
                stream.close()
        except (requests.exceptions.RequestException, docker.errors.APIError, OSError):
            time.sleep(0.5)  # the daemon went away: look again shortly

    def wait_healthy(self, cid: str, timeout: float, what: str) -> dict[str, Any]:
        """Docker's health status `healthy`, as pulumi-docker's `wait` waits for it."""

        def healthy(info: dict[str, Any]) -> bool:
            state = info["State"]
            if not state.get("Health"):
                raise ApplyError(f"{what}: wait is true but the container has no healthcheck")
            if state["Status"] in ("exited", "dead") and not state.get("Restarting"):
                policy = info["HostConfig"].get("RestartPolicy", {}).get("Name")
                if policy in (None, "", "no"):
                    raise ApplyError(f"{what}: exited with {state.get('ExitCode')} before it was healthy\n"
                                     f"{_tail(self._logs(cid))}")
            return state["Health"]["Status"] == "healthy"

        return self.wait_for(cid, healthy, timeout, what)

    def _wait_exit(self, cid: str, timeout: float, what: str) -> int:
        info = self.wait_for(cid, lambda i: i["State"]["Status"] in ("exited", "dead"), timeout, what)
        return int(info["State"]["ExitCode"])

    def _require_running(self, cid: str, what: str) -> None:
        time.sleep(0.1)
        state = self.api.inspect_container(cid)["State"]
        if not state["Running"] and not state.get("Restarting"):
            raise ApplyError(f"{what}: exited immediately with {state.get('ExitCode')} (must_run)\n"
                             f"{_tail(self._logs(cid))}")

    def _logs(self, cid: str) -> str:
        try:
            return self.api.logs(cid, stdout=True, stderr=True, tail=40).decode(errors="replace")
        except (docker.errors.APIError, requests.exceptions.RequestException):
            return "(no logs)"

    # -- queries -----------------------------------------------------------------------------

    def record(self, name: str, kind: str = CONTAINER) -> dict[str, Any]:
        """The synth record of the resource `name` of type `kind`."""
        matches = [r for r in self.records if r["name"] == name and r["type"] == kind]
        if len(matches) != 1:
            raise KeyError(f"no single {kind} named {name}: {len(matches)} found")
        return matches[0]

    def container_records(self) -> list[dict[str, Any]]:
        """Every container record, in synth order."""
        return [r for r in self.records if r["type"] == CONTAINER]

    def containers(self) -> dict[str, str]:
        """Resource name -> docker id of every container the applier currently holds."""
        return {self.records[i]["name"]: c.docker_id for i, c in sorted(self.state.items()) if c.kind == CONTAINER}

    def created(self, name: str) -> Created:
        """The applier's record of the container resource `name`."""
        return self.state[self._index_of_container(name)]

    def service_containers(self) -> dict[str, str]:
        """Long-running containers (not attach jobs): resource name -> docker id."""
        return {name: cid for name, cid in self.containers().items() if not self.record(name)["inputs"].get("attach")}

    # -- replace -----------------------------------------------------------------------------

    def replace(self, resource_name: str, new_image: str | None = None,
                new_inputs: dict[str, Any] | None = None) -> Replacement:
        """Replace one container as the engine would after a changed input (a new image tag, or new inputs).

        delete_before_replace false: create the new container (same inputs, a new autoname), start,
        wait healthy, then stop the old one with destroyGraceSeconds and remove it.
        delete_before_replace true: stop + remove the old one first, then create the new one.
        """
        index = self._index_of_container(resource_name)
        rec = self.records[index]
        inputs = dict(new_inputs if new_inputs is not None else rec["inputs"])
        if new_inputs is not None:
            check_mapped([{**rec, "inputs": inputs}])
        if new_image is not None:
            self._require_image(new_image, resource_name)
            inputs["image"] = new_image
        old = self.state[index]
        dbr = bool(rec["options"].get("delete_before_replace"))
        grace = int(inputs.get("destroyGraceSeconds") or 0)
        rep = Replacement(resource_name, dbr, old.docker_id, old.hostname, "", None, grace_seconds=grace)
        rep.t_begin = time.monotonic()
        self.log(f"applier: ~ replace {resource_name} ({old.docker_name}) image {rec['inputs']['image']} -> "
                 f"{inputs['image']}, delete_before_replace={dbr}, grace {grace}s")
        if dbr:
            rep.t_old_stop_begin = time.monotonic()
            self._delete_container(old, grace, attach=bool(inputs.get("attach")))
            rep.t_old_removed = time.monotonic()
        new = self._run_container(rec, inputs, inputs.get("name") or _autoname(resource_name))
        rep.new_id, rep.new_hostname = new.docker_id, new.hostname
        rep.t_new_started, rep.t_new_healthy = new.t_started, new.t_ready
        self._remember(index, new)
        rec["inputs"] = inputs  # the applier's desired state follows the replacement
        if not dbr:
            rep.t_old_stop_begin = time.monotonic()
            self._delete_container(old, grace, attach=bool(inputs.get("attach")))
            rep.t_old_removed = time.monotonic()
        self.log(f"applier: ~ replaced {resource_name}: new {new.docker_name} ready "
                 f"{rep.t_new_healthy - rep.t_begin:.1f}s after the replace began; old removed at "
                 f"{rep.t_old_removed - rep.t_begin:.1f}s")
        return rep

    def _delete_container(self, created: Created, grace: int, attach: bool) -> None:
        """pulumi-docker's delete: stop with destroy_grace_seconds (not for attach), then force-remove."""
        try:
            if grace > 0 and not attach:
                self.api.stop(created.docker_id, timeout=grace)
            self.api.remove_container(created.docker_id, v=True, force=True)
        except docker.errors.NotFound:
            pass
        self.log(f"applier: - container {created.docker_name}")

    # -- teardown ----------------------------------------------------------------------------

    def teardown(self, keep_retained: bool = True) -> dict[str, list[str]]:
        """Delete what apply created, dependents first; return {"kept": [...], "deleted": [...]}."""
        created = dict(self.state)
        reverse: dict[int, set[int]] = {i: set() for i in created}
        for i in created:
            for dep in self._deps[i]:
                if dep in reverse:
                    reverse[dep].add(i)
        kept: list[str] = []
        deleted: list[str] = []
        errors: list[str] = []
        for orphan in list(self.orphans):
            self._delete_container(orphan, 0, attach=True)
            deleted.append(orphan.docker_name)
            self.orphans.remove(orphan)

        def delete(index: int) -> None:
            rec, item = self.records[index], created[index]
            options = rec["options"]
            try:
                if keep_retained and (options.get("retain_on_delete") or options.get("protect")):
                    why = "retain_on_delete" if options.get("retain_on_delete") else "protect"
                    kept.append(item.docker_name)
                    self.log(f"applier: = kept {item.kind.rsplit(':', 1)[-1].lower()} {item.docker_name} ({why})")
                    return
                if item.kind == CONTAINER:
                    self._delete_container(item, int(rec["inputs"].get("destroyGraceSeconds") or 0),
                                           attach=bool(rec["inputs"].get("attach")))
                elif item.kind == NETWORK:
                    try:
                        self.api.remove_network(item.docker_id)
                    except docker.errors.NotFound:
                        pass
                    self.log(f"applier: - network {item.docker_name}")
                elif item.kind == VOLUME:
                    try:
                        self.api.remove_volume(item.docker_name)
                    except docker.errors.NotFound:
                        pass
                    self.log(f"applier: - volume {item.docker_name}")
                deleted.append(item.docker_name)
                with self._lock:
                    self.state.pop(index, None)
            except Exception as error:  # noqa: BLE001 - tear down as much as possible, then report
                errors.append(f"{item.docker_name}: {error}")

        self._run_graph(reverse, delete, stop_on_error=False)
        if errors:
            raise ApplyError("teardown left things behind:\n  " + "\n  ".join(errors))
        return {"kept": sorted(kept), "deleted": sorted(deleted)}


def cleanup(client: docker.DockerClient, stack: str, prefix: str, volumes: bool = True,
            log: Callable[[str], None] | None = None) -> list[str]:
    """Remove leftovers of an earlier run: containers labelled for `stack` or named `prefix*`, then its
    networks and (unless told otherwise) its volumes."""
    api = client.api
    removed: list[str] = []
    seen: set[str] = set()
    for filters in ({"label": f"{INSTRUMENT_LABEL}={stack}"}, {"name": f"^/?{re.escape(prefix)}"}):
        for item in api.containers(all=True, filters=filters):
            if item["Id"] in seen:
                continue
            seen.add(item["Id"])
            api.remove_container(item["Id"], v=True, force=True)
            removed.append("container " + item["Names"][0].lstrip("/"))
    for net in api.networks():
        if net["Name"].startswith(prefix) or (net.get("Labels") or {}).get(INSTRUMENT_LABEL) == stack:
            api.remove_network(net["Id"])
            removed.append("network " + net["Name"])
    if volumes:
        for vol in api.volumes().get("Volumes") or []:
            if vol["Name"].startswith(prefix) or (vol.get("Labels") or {}).get(INSTRUMENT_LABEL) == stack:
                api.remove_volume(vol["Name"], force=True)
                removed.append("volume " + vol["Name"])
    if removed:
        (log or _print)(f"applier: removed leftovers of {stack}: {', '.join(removed)}")
    return removed


_PRINT_LOCK = threading.Lock()


def _print(line: str) -> None:
    with _PRINT_LOCK:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def _autoname(resource_name: str) -> str:
    """Pulumi's autonaming: the resource name and a random suffix of 7 hex digits."""
    return f"{resource_name}-{secrets.token_hex(4)[:7]}"


def parse_cpus(text: str) -> int:
    """docker/cli opts.ParseCPUs, which the provider's Create uses: a decimal times 10^9, exactly."""
    try:
        nano = Fraction(text) * 10**9
    except (ValueError, ZeroDivisionError):
        raise ApplyError(f"cpus {text!r} is not a rational number") from None
    if nano.denominator != 1:
        raise ApplyError(f"cpus {text!r}: value is too precise")
    return int(nano)


def _mib(value: int | None) -> int | None:
    return value * 1024 * 1024 if value else None


def _swap(value: int | None) -> int | None:
    """memory_swap as the provider's Create sends it: MiB when positive, -1 as it is."""
    if not value:
        return None
    return value * 1024 * 1024 if value > 0 else value


def _labels(items: list[dict[str, str]] | None) -> dict[str, str]:
    return {item["label"]: item["value"] for item in items or []}


def _seconds(text: str | None, default: int) -> float:
    if not text:
        return float(default)
    return go_duration_ns(text) / 1e9


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join("    " + line for line in text.rstrip().splitlines()[-lines:])
