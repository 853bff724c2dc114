"""The applier maps every field berth's synth emits, and refuses (naming it) anything it does not map."""

from __future__ import annotations

import copy

import pytest
import readback
from applier import (
    CONTAINER,
    IMAGE,
    MAPPED_FIELDS,
    NETWORK,
    VOLUME,
    Applier,
    UnmappedFieldError,
    check_mapped,
    go_duration_ns,
    health_config,
)
from engine_config import BLUEPRINTS, engine_synth

from berth.synth import synth

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def synths() -> dict[str, dict]:
    """Every blueprint under the dev stack (nothing excluded: MinIO and ELK included) and the engine stack.

    One more sets the opt-in fields no blueprint uses, so that they too are proven mapped.
    """
    results = {f"dev/{b}": synth("dev", b, reveal=True) for b in BLUEPRINTS}
    results |= {f"engine/{b}": engine_synth(b) for b in BLUEPRINTS}
    results["dev/praxifi+opt-in"] = synth("dev", "praxifi", reveal=True, raw_overrides={
        "apps": {"backend": {"healthcheck": {"start_interval": "1s"}}}})
    return results


def emitted_fields(results: dict[str, dict]) -> dict[str, set[str]]:
    fields: dict[str, set[str]] = {}
    for result in results.values():
        for record in result["resources"]:
            if record["type"] in MAPPED_FIELDS:
                fields.setdefault(record["type"], set()).update(record["inputs"])
    return fields


def test_every_emitted_field_is_mapped(synths: dict[str, dict]) -> None:
    for result in synths.values():
        check_mapped(result["resources"])  # raises, naming every unmapped type, field and option
    emitted = emitted_fields(synths)
    for kind, fields in emitted.items():
        assert fields <= set(MAPPED_FIELDS[kind]), (kind, fields - set(MAPPED_FIELDS[kind]))
    print("applier maps, per type: " + "; ".join(f"{k.rsplit(':', 1)[-1]}: {', '.join(sorted(v))}"
                                                  for k, v in MAPPED_FIELDS.items()))


def test_every_mapped_field_has_a_read_back_rule(synths: dict[str, dict]) -> None:
    """What the applier applies, the read-back tier reads back: no field falls between the two."""
    rules = {CONTAINER: readback.CONTAINER_FIELDS, NETWORK: readback.NETWORK_FIELDS,
             VOLUME: readback.VOLUME_FIELDS, IMAGE: readback.IMAGE_FIELDS}
    for kind, fields in MAPPED_FIELDS.items():
        if kind in rules:
            assert set(fields) <= set(rules[kind]), (kind, set(fields) - set(rules[kind]))
    for result in synths.values():
        for record in result["resources"]:
            if record["type"] in rules:
                assert not readback.unknown_fields(record["type"], record["inputs"], rules[record["type"]])


def _one(result: dict, kind: str, name: str | None = None) -> tuple[list[dict], dict]:
    records = copy.deepcopy(result["resources"])
    record = next(r for r in records if r["type"] == kind and (name is None or r["name"] == name))
    return records, record


@pytest.mark.parametrize(("change", "named"), [
    (lambda r: r["inputs"].__setitem__("privileged", True), "unmapped input field 'privileged'"),
    (lambda r: r["inputs"].__setitem__("networkMode", "host"), "unmapped input field 'networkMode'"),
    (lambda r: r["inputs"]["networksAdvanced"][0].__setitem__("ipv4Address", "10.0.0.9"),
     "unmapped input field networksAdvanced.'ipv4Address'"),
    (lambda r: r["inputs"]["networksAdvanced"][0].__setitem__("gwPriority", 10),
     "unmapped input field networksAdvanced.'gwPriority'"),
    (lambda r: r["inputs"].__setitem__("capabilities", {"adds": ["NET_ADMIN"]}),
     "unmapped input field 'capabilities'"),
    (lambda r: r["options"].__setitem__("replace_on_changes", ["image"]), "unmapped option 'replace_on_changes'"),
    (lambda r: r["options"].__setitem__("custom_timeouts", {"delete": "5m"}),
     "unmapped option custom_timeouts.delete"),
    (lambda r: r.__setitem__("type", "docker:index/service:Service"),
     "unmapped resource type 'docker:index/service:Service'"),
    (lambda r: r.__setitem__("provider", None), "no explicit provider"),
])
def test_an_unmapped_container_field_is_an_error_naming_it(synths: dict[str, dict], change, named: str) -> None:
    records, record = _one(synths["engine/praxifi"], CONTAINER, "backend-0")
    change(record)
    with pytest.raises(UnmappedFieldError) as refused:
        check_mapped(records)
    assert named in str(refused.value)
    assert "backend-0" in str(refused.value)


def test_unmapped_fields_of_other_types_are_errors(synths: dict[str, dict]) -> None:
    records, network = _one(synths["engine/praxifi"], NETWORK)
    network["inputs"]["ipamConfigs"] = [{"subnet": "10.9.0.0/24"}]
    with pytest.raises(UnmappedFieldError, match="unmapped input field 'ipamConfigs'"):
        check_mapped(records)
    records, image = _one(synths["engine/praxifi"], IMAGE)
    image["inputs"]["keepLocally"] = False
    with pytest.raises(UnmappedFieldError, match="keepLocally must be true"):
        check_mapped(records)
    records = copy.deepcopy(synths["engine/praxifi"]["resources"])
    records.append({"type": "command:local:Command", "name": "x", "parent": None, "provider": None,
                    "inputs": {"create": "true"}, "options": {}})
    with pytest.raises(UnmappedFieldError, match="unmapped resource type 'command:local:Command'"):
        check_mapped(records)


def test_the_applier_refuses_before_creating_anything(synths: dict[str, dict]) -> None:
    result = copy.deepcopy(synths["engine/praxifi"])
    next(r for r in result["resources"] if r["type"] == CONTAINER)["inputs"]["privileged"] = True
    with pytest.raises(UnmappedFieldError):
        Applier(client=None, result=result)  # type: ignore[arg-type] - refused before any engine call


@pytest.mark.parametrize(("text", "ns"), [
    ("10s", 10 * 10**9), ("1m0s", 60 * 10**9), ("2m0s", 120 * 10**9), ("500ms", 5 * 10**8),
    ("1h0m0s", 3600 * 10**9), ("1m30s", 90 * 10**9), ("1.5s", 15 * 10**8),
])
def test_go_durations_become_nanoseconds(text: str, ns: int) -> None:
    assert go_duration_ns(text) == ns


def test_a_healthcheck_becomes_the_engine_api_health_config(synths: dict[str, dict]) -> None:
    backend = next(r for r in synths["dev/praxifi+opt-in"]["resources"] if r["name"] == "backend-0")
    assert health_config(backend["inputs"]["healthcheck"]) == {
        "Test": backend["inputs"]["healthcheck"]["tests"], "Retries": 5, "Interval": 60 * 10**9,
        "Timeout": 15 * 10**9, "StartPeriod": 60 * 10**9, "StartInterval": 10**9}


def test_a_dependency_on_a_component_waits_for_all_of_it(synths: dict[str, dict]) -> None:
    applier = Applier(client=None, result=synths["engine/sentineliq"])  # type: ignore[arg-type]
    names = [r["name"] for r in applier.records]
    proxy = applier._index_of_container("proxy-container")
    server = applier._index_of_container("server-0")
    deps_of_server = {names[i] for i in applier._deps[server]}
    assert {"postgres-container", "redis-container", "migrate-job"} <= deps_of_server
    assert "server-0" in {names[i] for i in applier._deps[proxy]}
