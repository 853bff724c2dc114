"""The read-back tier's instrument: what pulumi-docker would hold in its state for what Docker reports.

pulumi-docker 5.2.0 bridges kreuzwerker/terraform-provider-docker at commit 5074970c (v4.5.0; its
`upstream` submodule, unchanged since v5.1.0; the two patches in patches/ touch no Read). After a
Create, and on every refresh, the provider's Read turns `docker inspect` into the state; `pulumi
preview` then diffs the program's inputs against that state with the SDK's rules:

- a field the program writes must equal its read-back form exactly (a list in order, a set in any);
- a field it leaves out plans as its schema Default or the type's zero value ("", 0, false, empty),
  unless the schema marks it Computed: a non-Computed field that Docker fills in (memory_swap) is a
  diff on every preview;
- a field Read never sets keeps what the program wrote, whatever Docker holds.

Each conversion below is one function that mirrors one Go function of the provider, named in its
docstring. They are written from the provider's source, not from berth's writers (berth/units.py,
berth/plan/containers.py), so the tier checks berth against the provider, not against itself.

Every input field the applier maps must have a rule here (CONTAINER_FIELDS, NETWORK_FIELDS,
VOLUME_FIELDS, IMAGE_FIELDS); a synth field without one is a failure, as in the applier.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

NS_PER_S = 10**9
MIB = 1024 * 1024


# -- Go conversions ------------------------------------------------------------------------------


def go_duration_string(ns: int) -> str:
    """Go's time.Duration.String(), which Read uses for every healthcheck duration.

    Mirrors the standard library's format(): below one second the unit shrinks to ms, µs or ns with
    a fraction (fmtFrac); from one second on, "<h>h<m>m<s.frac>s", the hours and minutes left out
    while they are zero.
    """
    if ns == 0:
        return "0s"
    sign, u = ("-", -ns) if ns < 0 else ("", ns)
    if u < NS_PER_S:
        if u < 1000:
            return f"{sign}{u}ns"
        digits, unit = (3, "µs") if u < 10**6 else (6, "ms")
        return f"{sign}{_fmt_frac(u, digits)}{unit}"
    seconds = u // NS_PER_S
    out = _fmt_frac(seconds % 60 * NS_PER_S + u % NS_PER_S, 9) + "s"
    minutes = seconds // 60
    if minutes:
        out = f"{minutes % 60}m{out}"
        if minutes // 60:
            out = f"{minutes // 60}h{out}"
    return sign + out


def _fmt_frac(value: int, digits: int) -> str:
    """Go's fmtFrac + fmtInt: value / 10**digits, trailing fraction zeros and a bare point omitted."""
    fraction = value % 10**digits
    text = str(fraction).rjust(digits, "0").rstrip("0")
    return f"{value // 10**digits}" + (f".{text}" if text else "")


def nano_int64_to_decimal_string(nano: int) -> str:
    """helpers.go nanoInt64ToDecimalString: the `cpus` state for HostConfig.NanoCPUs.

    big.Rat(nano, 1e9).FloatString(9); if that string holds exactly nine "0" characters,
    FloatString(1) instead (rounded half away from zero), else the 9-decimal string with its trailing
    zeros trimmed (which leaves "10." for 10).
    """
    if nano == 0:
        return "0"
    rat = Fraction(nano, NS_PER_S)
    text = _float_string(rat, 9)
    if text.count("0") == 9:
        return _float_string(rat, 1)
    return text.rstrip("0")


def _float_string(rat: Fraction, prec: int) -> str:
    """Go's big.Rat.FloatString(prec): `prec` decimals, the last one rounded half away from zero."""
    negative = rat < 0
    scaled = abs(rat) * 10**prec
    q, r = divmod(scaled.numerator, scaled.denominator)
    if 2 * r >= scaled.denominator:
        q += 1
    whole, frac = divmod(q, 10**prec)
    text = f"{whole}.{str(frac).rjust(prec, '0')}" if prec else str(whole)
    return ("-" if negative else "") + text


def memory_mib(value: int | None) -> int:
    """Read's `container.HostConfig.Memory/1024/1024` (Go's integer division), also for memory_reservation."""
    whole = abs(value or 0) // MIB
    return whole if (value or 0) >= 0 else -whole


def memory_swap_state(value: int | None) -> int:
    """Read's memory_swap: MemorySwap/1024/1024 when positive, else as it is (-1 is unlimited swap)."""
    value = value or 0
    return value // MIB if value > 0 else value


def flatten_container_ports(port_map: Mapping[str, list[dict[str, str]] | None] | None) -> list[dict[str, Any]]:
    """resource_docker_container_structures.go flattenContainerPorts: NetworkSettings.Ports as the
    `ports` list, sorted by internal port (byPortAndProtocol compares the port number only), one
    entry per host binding."""
    out: list[dict[str, Any]] = []
    keys = sorted(port_map or {}, key=lambda key: int(key.split("/")[0]))
    for key in keys:
        internal, protocol = key.split("/")
        for binding in (port_map or {}).get(key) or []:
            out.append({"internal": int(internal), "external": int(binding.get("HostPort") or 0),
                        "ip": binding.get("HostIp", ""), "protocol": protocol})
    return out


def flatten_ulimits(ulimits: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """flattenUlimits: HostConfig.Ulimits as the `ulimit` set."""
    return [{"name": u["Name"], "soft": u["Soft"], "hard": u["Hard"]} for u in ulimits or []]


def flatten_extra_hosts(hosts: list[str] | None) -> list[dict[str, str]]:
    """flattenExtraHosts: "host:ip" entries as the `host` set."""
    return [{"host": entry.split(":")[0], "ip": entry.split(":")[1]} for entry in hosts or []]


def docker_container_mounts(mounts: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """getDockerContainerMounts: HostConfig.Mounts (not Binds) as the `mounts` set."""
    return [{"target": m.get("Target"), "source": m.get("Source"), "type": m.get("Type"),
             "read_only": bool(m.get("ReadOnly"))} for m in mounts or []]


def healthcheck_state(health: dict[str, Any] | None) -> dict[str, Any] | None:
    """Read's healthcheck block: Config.Healthcheck with every duration through Duration.String()."""
    if health is None:
        return None
    return {"tests": list(health.get("Test") or []),
            "interval": go_duration_string(health.get("Interval") or 0),
            "timeout": go_duration_string(health.get("Timeout") or 0),
            "startPeriod": go_duration_string(health.get("StartPeriod") or 0),
            "startInterval": go_duration_string(health.get("StartInterval") or 0),
            "retries": health.get("Retries") or 0}


def map_to_label_set(labels: Mapping[str, str] | None) -> list[dict[str, str]]:
    """helpers.go mapToLabelSet: a labels map as the `labels` set of {label, value}."""
    return [{"label": key, "value": value} for key, value in (labels or {}).items()]


def container_image(inspect: dict[str, Any], written: str) -> str:
    """Read's image: the container's image ID if the program wrote a "sha256:" ID, else Config.Image."""
    return inspect["Image"] if written.startswith("sha256:") else inspect["Config"]["Image"]


# -- the state Read produces ---------------------------------------------------------------------


def container_state(inspect: dict[str, Any], inputs: Mapping[str, Any]) -> dict[str, Any]:
    """resource_docker_container_funcs.go resourceDockerContainerRead, in the Pulumi input names.

    Only the fields Read sets; `inputs` decides the ones Read sets conditionally (ports, ulimit,
    log_opts, networks_advanced, image).
    """
    host, config, state = inspect["HostConfig"], inspect["Config"], inspect["State"]
    settings = inspect.get("NetworkSettings") or {}
    out: dict[str, Any] = {
        "name": inspect["Name"].lstrip("/"),
        "rm": bool(host.get("AutoRemove")),
        "readOnly": bool(host.get("ReadonlyRootfs")),
        "image": container_image(inspect, inputs.get("image", "")),
        "hostname": config.get("Hostname") or "",
        "domainname": config.get("Domainname") or "",
        "command": list(config.get("Cmd") or []),
        "entrypoints": list(config.get("Entrypoint") or []),
        "user": config.get("User") or "",
        "dns": list(host.get("Dns") or []),
        "dnsOpts": list(host.get("DnsOptions") or []),
        "securityOpts": list(host.get("SecurityOpt") or []),
        "dnsSearches": list(host.get("DnsSearch") or []),
        "publishAllPorts": bool(host.get("PublishAllPorts")),
        "restart": (host.get("RestartPolicy") or {}).get("Name") or "",
        "maxRetryCount": (host.get("RestartPolicy") or {}).get("MaximumRetryCount") or 0,
        "init": bool(host.get("Init")),
        "workingDir": config.get("WorkingDir") or "",
        "capabilities": ([{"adds": host.get("CapAdd") or [], "drops": host.get("CapDrop") or []}]
                         if host.get("CapAdd") or host.get("CapDrop") else []),
        "runtime": host.get("Runtime") or "",
        "platform": inspect.get("Platform") or "",
        "mounts": docker_container_mounts(host.get("Mounts")),
        "tmpfs": dict(host.get("Tmpfs") or {}),
        "hosts": flatten_extra_hosts(host.get("ExtraHosts")),
        "privileged": bool(host.get("Privileged")),
        "memory": memory_mib(host.get("Memory")),
        "memoryReservation": memory_mib(host.get("MemoryReservation")),
        "memorySwap": memory_swap_state(host.get("MemorySwap")),
        "shmSize": memory_mib(host.get("ShmSize")),
        "cpuShares": host.get("CpuShares") or 0,
        "cpuSet": host.get("CpusetCpus") or "",
        "logDriver": (host.get("LogConfig") or {}).get("Type") or "",
        "storageOpts": dict(host.get("StorageOpt") or {}),
        "networkMode": host.get("NetworkMode") or "",
        "usernsMode": host.get("UsernsMode") or "",
        "sysctls": dict(host.get("Sysctls") or {}),
        "ipcMode": host.get("IpcMode") or "",
        "groupAdds": list(host.get("GroupAdd") or []),
        "tty": bool(config.get("Tty")),
        "stdinOpen": bool(config.get("OpenStdin")),
        "stopSignal": config.get("StopSignal") or "",
        "stopTimeout": config.get("StopTimeout") or 0,
    }
    for field, key in (("deviceReadBps", "BlkioDeviceReadBps"), ("deviceReadIops", "BlkioDeviceReadIOps"),
                       ("deviceWriteBps", "BlkioDeviceWriteBps"), ("deviceWriteIops", "BlkioDeviceWriteIOps")):
        out[field] = [{"path": d["Path"], "rate": d["Rate"]} for d in host.get(key) or []]
    if (host.get("NanoCpus") or 0) > 0:  # else Read leaves cpus as it was
        out["cpus"] = nano_int64_to_decimal_string(host["NanoCpus"])
    out["logOpts"] = dict((host.get("LogConfig") or {}).get("Config") or {}) if inputs.get("logOpts") else {}
    if inputs.get("ulimits"):
        out["ulimits"] = flatten_ulimits(host.get("Ulimits"))
    if (state.get("Running") or inputs.get("mustRun", True)) and inputs.get("ports"):
        out["ports"] = flatten_container_ports(settings.get("Ports"))
    if config.get("Healthcheck") is not None:
        out["healthcheck"] = healthcheck_state(config["Healthcheck"])
    if not inputs.get("networksAdvanced"):  # Read fills networks_advanced only while it is empty
        out["networksAdvanced"] = [{"name": net.get("NetworkID") or name, "aliases": net.get("Aliases") or []}
                                   for name, net in (settings.get("Networks") or {}).items()]
    if not state.get("Running") and inputs.get("mustRun", True):
        out["mustRun"] = False  # a stopped container that must run drifts on purpose
    return out


def network_state(inspect: dict[str, Any]) -> dict[str, Any]:
    """resource_docker_network_funcs.go resourceDockerNetworkReadRefreshFunc."""
    ipam = inspect.get("IPAM") or {}
    return {
        "name": inspect["Name"],
        "labels": map_to_label_set(inspect.get("Labels")),
        "driver": inspect.get("Driver") or "",
        "internal": bool(inspect.get("Internal")),
        "attachable": bool(inspect.get("Attachable")),
        "ingress": bool(inspect.get("Ingress")),
        "ipv6": bool(inspect.get("EnableIPv6")),
        "ipamDriver": ipam.get("Driver") or "",
        "ipamOptions": dict(ipam.get("Options") or {}),
        "options": dict(inspect.get("Options") or {}),
    }


def volume_state(inspect: dict[str, Any]) -> dict[str, Any]:
    """resource_docker_volume.go resourceDockerVolumeRead."""
    return {
        "name": inspect["Name"],
        "labels": map_to_label_set(inspect.get("Labels")),
        "driver": inspect.get("Driver") or "",
        "driverOpts": dict(inspect.get("Options") or {}),
    }


# -- the schema: how a field plans when the program leaves it out --------------------------------

READ = "read"  # Read sets it; not Computed: left out, it plans as its default (or zero)
COMPUTED = "computed"  # Read sets it; Computed: left out, whatever Docker holds is no diff
SUPPRESSED_IF_EMPTY = "suppressed"  # a DiffSuppressFunc treats an empty input as "no change"
KEPT = "kept"  # Read never sets it: the state keeps the input


@dataclass(frozen=True)
class Rule:
    """How one input field compares after a Read."""

    kind: str
    default: Any = None  # the schema Default, or the zero value of the field's type
    is_set: bool = False  # a TypeSet: order does not matter
    why: str = ""


def _r(default: Any, is_set: bool = False) -> Rule:
    return Rule(READ, default, is_set)


def _kept(why: str) -> Rule:
    return Rule(KEPT, why=why)


_NOT_READ = "resourceDockerContainerRead never sets it"
# resource_docker_container.go's schema for every field Read sets, plus the ones berth may write.
CONTAINER_FIELDS: dict[str, Rule] = {
    "name": _r(""), "rm": _r(False), "readOnly": _r(False), "image": _r(""),
    "hostname": Rule(COMPUTED), "domainname": _r(""),
    "command": Rule(COMPUTED), "entrypoints": Rule(COMPUTED),
    "user": Rule(SUPPRESSED_IF_EMPTY), "workingDir": Rule(SUPPRESSED_IF_EMPTY),
    "dns": _r([], True), "dnsOpts": _r([], True), "dnsSearches": _r([], True),
    "securityOpts": Rule(COMPUTED, is_set=True), "publishAllPorts": _r(False),
    "restart": _r("no"), "maxRetryCount": _r(0), "init": Rule(COMPUTED),
    "capabilities": _r([], True), "runtime": Rule(COMPUTED), "platform": Rule(COMPUTED),
    "mounts": _r([], True), "tmpfs": _r({}), "hosts": _r([], True), "ulimits": _r([], True),
    "privileged": _r(False),
    "deviceReadBps": _r([], True), "deviceReadIops": _r([], True),
    "deviceWriteBps": _r([], True), "deviceWriteIops": _r([], True),
    "memory": _r(0), "memoryReservation": _r(0), "memorySwap": _r(0), "shmSize": Rule(COMPUTED),
    "cpus": _r(None), "cpuShares": _r(0), "cpuSet": _r(""),
    "logDriver": Rule(COMPUTED), "logOpts": _r({}), "storageOpts": _r({}),
    "networkMode": _r("bridge"), "usernsMode": _r(""), "sysctls": _r({}), "ipcMode": Rule(COMPUTED),
    "groupAdds": _r([], True), "tty": _r(False), "stdinOpen": _r(False),
    "stopSignal": Rule(COMPUTED), "stopTimeout": Rule(COMPUTED),
    "healthcheck": Rule(COMPUTED), "ports": _r([]), "networksAdvanced": _r([], True), "mustRun": _r(True),
    # Read leaves these alone: "We decided not to set the environment variables and labels" (#242,
    # #269 upstream), networks_advanced only while empty, and the create-time options.
    "envs": _kept(_NOT_READ + " (env comes partly from the image)"),
    "labels": _kept(_NOT_READ + " (labels come partly from the image)"),
    "volumes": _kept(_NOT_READ), "uploads": _kept(_NOT_READ + ": uploads cannot be read back"),
    "wait": _kept(_NOT_READ), "waitTimeout": _kept(_NOT_READ), "attach": _kept(_NOT_READ),
    "logs": _kept(_NOT_READ), "destroyGraceSeconds": _kept(_NOT_READ),
}
# The healthcheck block's sub-fields and their schema Defaults.
HEALTHCHECK_DEFAULTS = {"tests": [], "interval": "0s", "timeout": "0s", "startPeriod": "0s", "startInterval": "0s",
                        "retries": 0}
NETWORK_FIELDS: dict[str, Rule] = {
    "name": _r(""), "labels": _r([], True), "driver": Rule(COMPUTED), "internal": Rule(COMPUTED),
    "attachable": _r(False), "ingress": _r(False), "ipv6": _r(False), "ipamDriver": _r("default"),
    "ipamOptions": _r({}), "options": Rule(COMPUTED),
}
VOLUME_FIELDS: dict[str, Rule] = {
    "name": Rule(COMPUTED), "labels": _r([], True), "driver": Rule(COMPUTED), "driverOpts": _r({}),
}
IMAGE_FIELDS: dict[str, Rule] = {
    "name": _kept("resourceDockerImageRead sets only image_id and repo_digest"),
    "keepLocally": _kept("resourceDockerImageRead sets only image_id and repo_digest"),
}


# -- comparing -----------------------------------------------------------------------------------


def unknown_fields(kind: str, inputs: Mapping[str, Any], rules: Mapping[str, Rule]) -> list[str]:
    """Inputs the read-back has no rule for: each one is a failure, never skipped."""
    return [f"{kind}: input field {field!r} has no read-back rule in tests/engine/readback.py"
            for field in sorted(set(inputs) - set(rules))]


def diff(inputs: Mapping[str, Any], state: Mapping[str, Any], rules: Mapping[str, Rule]) -> list[str]:
    """Every field whose planned value (written, else default) differs from the read-back state."""
    problems = []
    for field in sorted(set(rules) & (set(inputs) | set(state))):
        rule = rules[field]
        if rule.kind == KEPT or field not in state:
            continue  # the state keeps what was written (Read left it alone)
        written = field in inputs
        if not written and rule.kind in (COMPUTED, SUPPRESSED_IF_EMPTY):
            continue
        if rule.kind == SUPPRESSED_IF_EMPTY and inputs[field] in ("", None):
            continue
        planned = inputs[field] if written else rule.default
        got = state[field]
        if field == "healthcheck" and written:
            planned = {**HEALTHCHECK_DEFAULTS, **inputs[field]}
        if _normal(planned, rule.is_set) != _normal(got, rule.is_set):
            source = "synth writes" if written else "synth leaves it out, so it plans as"
            problems.append(f"{field}: {source} {json.dumps(planned)}, the provider reads back {json.dumps(got)}")
    return problems


def _normal(value: Any, is_set: bool) -> Any:
    """One comparable form: SDK zero values for None, sorted members for a set, sets nested in objects too."""
    if value is None:
        return None
    if isinstance(value, dict):
        return {key: _normal(item, key in ("aliases", "adds", "drops")) for key, item in sorted(value.items())
                if item not in (None, [], {})}
    if isinstance(value, list):
        items = [_normal(item, False) for item in value]
        return sorted(items, key=lambda item: json.dumps(item, sort_keys=True)) if is_set else items
    return value



def check(applier: Any, instrument_label: str) -> tuple[list[str], dict[str, int]]:
    """Read every container, network and volume of an applied deployment back and compare it with synth.

    Returns the problems (each naming the resource and the field) and how many fields were compared
    per resource type. `instrument_label` is the applier's own label (not a synth input), left out.
    """
    api = applier.api
    problems: list[str] = []
    counts: dict[str, int] = {}
    image_ids: dict[str, str] = {}
    for record in applier.records:
        kind, name, inputs = record["type"], record["name"], dict(record["inputs"])
        where = f"{name} ({kind.rsplit(':', 1)[-1]})"
        if kind == "docker:index/remoteImage:RemoteImage":
            problems += [f"{where}: {p}" for p in unknown_fields(kind, inputs, IMAGE_FIELDS)]
            image_ids[inputs["name"]] = api.inspect_image(inputs["name"])["Id"]
            counts[kind] = counts.get(kind, 0) + len(inputs)
            continue
        if kind == "docker:index/container:Container":
            created = applier.created(name)
            inspect = api.inspect_container(created.docker_id)
            inputs.setdefault("name", created.docker_name)  # Pulumi's autoname is an input too
            state, rules = container_state(inspect, inputs), CONTAINER_FIELDS
            problems += [f"{where}: {p}" for p in applied(inspect, inputs)]
        elif kind == "docker:index/network:Network":
            state, rules = network_state(api.inspect_network(inputs["name"])), NETWORK_FIELDS
        elif kind == "docker:index/volume:Volume":
            state, rules = volume_state(api.inspect_volume(inputs["name"])), VOLUME_FIELDS
        else:
            continue  # the provider, components, random and tls resources have nothing on the engine
        if "labels" in state and kind != "docker:index/container:Container":
            state["labels"] = [item for item in state["labels"] if item["label"] != instrument_label]
        problems += [f"{where}: {p}" for p in unknown_fields(kind, inputs, rules) + diff(inputs, state, rules)]
        counts[kind] = counts.get(kind, 0) + len(set(rules) & (set(inputs) | set(state)))
    for record in applier.records:  # a container runs the image ID its RemoteImage reads back
        if record["type"] == "docker:index/container:Container" and record["inputs"]["image"] in image_ids:
            running = api.inspect_container(applier.created(record["name"]).docker_id)["Image"]
            if running != image_ids[record["inputs"]["image"]]:
                problems.append(f"{record['name']} (Container): image: runs {running}, but its RemoteImage "
                                f"reads back image_id {image_ids[record['inputs']['image']]}")
    return problems, counts


def applied(inspect: dict[str, Any], inputs: Mapping[str, Any]) -> list[str]:
    """The fields Read never reads back are on the engine as synth wrote them (the state keeps them)."""
    config, host = inspect["Config"], inspect["HostConfig"]
    problems = [f"envs: {line.split('=', 1)[0]} is not in the container's env"
                for line in inputs.get("envs") or [] if line not in (config.get("Env") or [])]
    labels = config.get("Labels") or {}
    problems += [f"labels: {item['label']} is {labels.get(item['label'])!r}, synth writes {item['value']!r}"
                 for item in inputs.get("labels") or [] if labels.get(item["label"]) != item["value"]]
    binds = host.get("Binds") or []
    problems += [f"volumes: {v['volumeName']} is not mounted at {v['containerPath']}"
                 for v in inputs.get("volumes") or []
                 if f"{v['volumeName']}:{v['containerPath']}:{'ro' if v.get('readOnly') else 'rw'}" not in binds]
    networks = (inspect.get("NetworkSettings") or {}).get("Networks") or {}
    wanted = {net["name"]: net.get("aliases") or [] for net in inputs.get("networksAdvanced") or []}
    if wanted and set(networks) != set(wanted):
        problems.append(f"networksAdvanced: on {sorted(networks)}, synth writes {sorted(wanted)}")
    for name, aliases in wanted.items():
        missing = set(aliases) - set((networks.get(name) or {}).get("Aliases") or [])
        if name in networks and missing:
            problems.append(f"networksAdvanced: {name} lacks aliases {sorted(missing)}")
    return problems
