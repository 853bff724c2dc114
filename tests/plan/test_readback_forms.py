"""Written form == read-back form, for random valid CPU, memory and duration settings.

berth's writers (berth/plan/containers.py, berth/units.py) against the read-back tier's mirror of the
provider's Read (tests/engine/readback.py, written from the provider's Go source), over a model of
what Docker stores: NanoCPUs as an int, memory in bytes, durations in nanoseconds.
"""

from __future__ import annotations

import functools
import importlib.util
import posixpath
import sys
from datetime import timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from berth.plan.containers import healthcheck, resource_args
from berth.settings import Cadence, Resources
from berth.settings.loader import BLUEPRINTS as BLUEPRINTS_DIR
from berth.synth import synth
from berth.units import go_duration

MIB = 1024**2


def _engine_module(name: str):
    """A module of tests/engine (not a package, and not on this tier's path), loaded once."""
    key = f"berth_engine_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, Path(__file__).parents[1] / "engine" / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


readback = _engine_module("readback")
applier = _engine_module("applier")
# What the provider's Create makes of berth's strings, so what Docker stores: NanoCPUs and nanoseconds.
parse_cpus = applier.parse_cpus  # docker/cli opts.ParseCPUs
parse_go_duration = applier.go_duration_ns  # time.ParseDuration


cpus = st.one_of(
    st.decimals(min_value=Decimal("0.001"), max_value=Decimal("64"), places=3),
    st.decimals(min_value=Decimal("0.000000001"), max_value=Decimal("4"), places=9),
    st.integers(min_value=1, max_value=128).map(Decimal),
)


@given(cpus)
def test_a_cpu_limit_berth_accepts_reads_back_as_written(value: Decimal) -> None:
    try:
        resources = Resources.model_validate({"limits": {"cpus": float(value)}})
    except ValidationError as error:
        assert "limits.cpus" in str(error)  # refused, and the message names the key
        return
    written = resource_args(resources)["cpus"]
    stored = parse_cpus(written)  # HostConfig.NanoCPUs
    assert Fraction(stored, 10**9) == Fraction(value)  # the limit docker applies is the one asked for
    assert readback.nano_int64_to_decimal_string(stored) == written


@pytest.mark.parametrize(("value", "written"), [(2, "2.0"), (1, "1.0"), (10, "10."), (0.5, "0.5"), (1.25, "1.25"),
                                                (0.1, "0.1"), (100, "100."), (12, "12.0")])
def test_known_cpu_forms(value: float, written: str) -> None:
    assert resource_args(Resources.model_validate({"limits": {"cpus": value}}))["cpus"] == written


@pytest.mark.parametrize(("value", "read_back"), [(0.05, "0.1"), (0.01, "0.0"), (0.02, "0.0"), (10.05, "10.1")])
def test_cpu_limits_the_provider_would_change_are_refused(value: float, read_back: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Resources.model_validate({"limits": {"cpus": value}})
    assert f'read back by the docker provider as "{read_back}"' in str(refused.value)


@given(st.integers(min_value=6, max_value=256 * 1024), st.one_of(st.none(), st.integers(min_value=0, max_value=4096)),
       st.one_of(st.none(), st.integers(min_value=6, max_value=256 * 1024)))
def test_memory_reads_back_as_written(memory_mib: int, extra_swap_mib: int | None, reserved_mib: int | None) -> None:
    limits: dict[str, object] = {"memory": f"{memory_mib}m"}
    if extra_swap_mib is not None:
        limits["memory_swap"] = f"{memory_mib + extra_swap_mib}m"
    reservations = {"memory": f"{reserved_mib}m"} if reserved_mib is not None and reserved_mib <= memory_mib else {}
    args = resource_args(Resources.model_validate({"limits": limits, "reservations": reservations}))
    # what docker stores: the provider sends MiB × 2^20; without memory_swap docker fills in twice the memory
    memory = args["memory"] * MIB
    swap = args["memory_swap"] * MIB if args.get("memory_swap") else 2 * memory
    assert readback.memory_mib(memory) == args["memory"] == memory_mib
    assert readback.memory_swap_state(swap) == args.get("memory_swap", 0)
    if reservations:
        assert readback.memory_mib(args["memory_reservation"] * MIB) == args["memory_reservation"] == reserved_mib


@pytest.mark.parametrize(("value", "rule"), [("5m", "below docker's minimum of 6m"),
                                             ("1000000", "is not a whole number of MiB"),
                                             ("7.5m", "is not a whole number of MiB")])
def test_memory_the_provider_cannot_keep_is_refused(value: str, rule: str) -> None:
    for resources in ({"limits": {"memory": value}}, {"reservations": {"memory": value}}):
        with pytest.raises(ValidationError) as refused:
            Resources.model_validate(resources)
        assert rule in str(refused.value)


def test_memory_swap_needs_memory_and_covers_it() -> None:
    for limits in ({"memory_swap": "1g"}, {"memory": "1g", "memory_swap": "512m"}):
        with pytest.raises(ValidationError) as refused:
            Resources.model_validate({"limits": limits})
        assert "memory_swap: is memory plus swap" in str(refused.value)


durations = st.timedeltas(min_value=timedelta(0), max_value=timedelta(hours=2000))


@given(durations)
def test_a_duration_reads_back_as_written(value: timedelta) -> None:
    written = go_duration(value)
    stored = parse_go_duration(written)  # time.ParseDuration in the provider's Create
    assert stored == (value.days * 86_400 + value.seconds) * 10**9 + value.microseconds * 1000
    assert readback.go_duration_string(stored) == written


@given(durations.filter(lambda d: d >= timedelta(milliseconds=1)), st.integers(min_value=1, max_value=100))
def test_a_healthcheck_reads_back_as_written(interval: timedelta, retries: int) -> None:
    cadence = Cadence(interval=interval, timeout=interval, start_period=interval * 2, retries=retries)
    written = healthcheck(["CMD", "true"], cadence)
    stored = {"Test": written["tests"], "Retries": written["retries"],
              **{api: parse_go_duration(written[field]) for field, api in (
                  ("interval", "Interval"), ("timeout", "Timeout"), ("start_period", "StartPeriod"))}}
    state = readback.healthcheck_state(stored)
    assert state is not None
    planned = {**readback.HEALTHCHECK_DEFAULTS, "tests": written["tests"], "interval": written["interval"],
               "timeout": written["timeout"], "startPeriod": written["start_period"], "retries": written["retries"]}
    assert state == planned


def docker_inspect(inputs: dict) -> dict:
    """A model of `docker inspect` for a container the provider created from `inputs` (what Docker stores)."""
    memory = inputs.get("memory", 0) * MIB
    swap = inputs["memorySwap"] * MIB if inputs.get("memorySwap") else 2 * memory  # docker's fill-in
    return {
        "Name": "/" + inputs["name"], "Image": "sha256:" + "0" * 64, "Platform": "linux",
        "Config": {"Image": inputs["image"], "Hostname": "abc", "Cmd": None, "Entrypoint": None, "User": "",
                   "WorkingDir": "", "StopTimeout": inputs.get("stopTimeout")},
        "HostConfig": {"NanoCpus": parse_cpus(inputs["cpus"]) if "cpus" in inputs else 0, "Memory": memory,
                       "MemorySwap": swap, "RestartPolicy": {"Name": inputs.get("restart", "no")},
                       "NetworkMode": "bridge", "LogConfig": {"Type": "json-file", "Config": {}}},
        "State": {"Running": True},
        "NetworkSettings": {"Networks": {}},
    }


def test_the_read_back_finds_the_diffs_issue_8_reported() -> None:
    """berth's old inputs (cpus "2", no memory_swap) diff as a real `pulumi preview` showed; the new ones do not."""
    old = {"name": "postgres", "image": "postgres:16", "restart": "unless-stopped", "cpus": "2", "memory": 2048}
    problems = readback.diff(old, readback.container_state(docker_inspect(old), old), readback.CONTAINER_FIELDS)
    assert [p.split(":")[0] for p in problems] == ["cpus", "memorySwap"], problems
    assert 'cpus: synth writes "2", the provider reads back "2.0"' in problems
    args = resource_args(Resources.model_validate({"limits": {"cpus": 2, "memory": "2g"}}))
    new = {**old, "cpus": args["cpus"], "memory": args["memory"], "memorySwap": args["memory_swap"]}
    assert readback.diff(new, readback.container_state(docker_inspect(new), new), readback.CONTAINER_FIELDS) == []


STACKS = ("dev", "staging", "prod")
BLUEPRINTS = sorted(path.stem for path in BLUEPRINTS_DIR.glob("*.yaml"))


@functools.cache
def _containers(stack: str, blueprint: str) -> list[dict]:
    return [r for r in synth(stack, blueprint)["resources"] if r["type"] == "docker:index/container:Container"]


@pytest.mark.parametrize(("stack", "blueprint"), [(s, b) for b in BLUEPRINTS for s in STACKS])
def test_every_stack_writes_read_back_forms(stack: str, blueprint: str) -> None:
    """The fields whose form Docker or the provider changes, in every container of every blueprint x stack.

    The engine tier reads whole deployments back from a real Docker; this covers the stacks it
    does not deploy (prod publishes on 0.0.0.0, other hosts, other limits).
    """
    for record in _containers(stack, blueprint):
        inputs, where = record["inputs"], record["name"]
        if "cpus" in inputs:
            assert readback.nano_int64_to_decimal_string(parse_cpus(inputs["cpus"])) == inputs["cpus"], where
        if inputs.get("memory"):
            assert inputs["memorySwap"] >= inputs["memory"], where  # else docker fills in twice the memory
            assert readback.memory_swap_state(inputs["memorySwap"] * MIB) == inputs["memorySwap"], where
        for field in ("interval", "timeout", "startPeriod", "startInterval"):
            if field in inputs.get("healthcheck", {}):
                text = inputs["healthcheck"][field]
                assert readback.go_duration_string(parse_go_duration(text)) == text, (where, field)
        if "workingDir" in inputs:
            assert inputs["workingDir"] == posixpath.normpath(inputs["workingDir"]), where
        if "ports" in inputs:
            docker_ports = {f"{p['internal']}/{p['protocol']}": [{"HostIp": p["ip"], "HostPort": str(p["external"])}]
                            for p in inputs["ports"]}
            assert readback.flatten_container_ports(docker_ports) == inputs["ports"], where
