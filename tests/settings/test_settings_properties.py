"""Properties of settings validation and units, checked with hypothesis.

Whatever value lands at whatever key of a valid config, validation either accepts it or raises
ConfigError with one `berth:<path>: <rule>` line per problem, naming where it went wrong. Never
another exception, never a traceback.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rawconfig import inject, known_paths

from berth.errors import ConfigError
from berth.settings import Settings, load_settings
from berth.units import go_duration, parse_bytes, parse_duration

# Cross-section rules report where the dangling reference is, not the key that was changed.
REFERENCE_RULE = re.compile(r"is not one of|is not in|goes to")
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-10, max_value=70000),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=10), inner, max_size=3)),
    max_leaves=8,
)


def related(a: str, b: str) -> bool:
    """One path is the other or lies under it (`apps.x` and `apps.x.port`, `a.b` and `a.b[0]`)."""
    return a == b or b.startswith((f"{a}.", f"{a}[")) or a.startswith((f"{b}.", f"{b}["))


def validate(raw: dict[str, Any]) -> Settings | ConfigError:
    try:
        return load_settings(raw)
    except ConfigError as error:
        return error


def assert_well_formed(error: ConfigError) -> None:
    """One `berth:<path>: <rule>` line per problem: no path or rule may break the line."""
    expected = [f"berth:{path}: {rule}" if path else f"berth: {rule}" for path, rule in error.problems]
    assert str(error).split("\n") == expected
    assert all(rule.strip() for _, rule in error.problems)


def test_the_baseline_has_paths_at_every_depth(raw_config, format_loc):
    paths = {format_loc(loc) for loc in known_paths(raw_config())}
    assert {"apps", "apps.backend.resources.limits.cpus", "proxy.sites[1].routes[0].rate_limit",
            "registries[0].password", "rabbitmq.queues[0].vhost"} <= paths


@FUZZ
@given(data=st.data(), value=values)
def test_any_value_anywhere_validates_or_names_the_path(raw_config, format_loc, data, value):
    loc = data.draw(st.sampled_from(known_paths(raw_config())), label="path")
    result = validate(inject(raw_config(), loc, value))
    if isinstance(result, Settings):
        return
    assert_well_formed(result)
    injected = format_loc(loc)
    assert any(related(path, injected) or REFERENCE_RULE.search(rule) or names_the_field(rule, injected)
               for path, rule in result.problems), (injected, str(result))


def names_the_field(rule: str, injected: str) -> bool:
    """A rule across fields (wait_timeout against the healthcheck) names the other field in its text."""
    parts = injected.split(".")
    return any(".".join(parts[i:]) in rule for i in range(2, len(parts) - 1))


def wrong_kind(original: object) -> st.SearchStrategy[object]:
    """Values of a different JSON kind than the baseline has at that key, and never null."""
    if isinstance(original, dict):
        return st.one_of(st.integers(), st.text(max_size=10), st.lists(st.integers(), max_size=2))
    if isinstance(original, list):
        return st.one_of(st.integers(), st.booleans(), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))
    return st.one_of(st.lists(st.text(max_size=5), max_size=2),
                     st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))


@FUZZ
@given(data=st.data())
def test_a_value_of_the_wrong_kind_is_reported_at_its_own_path(raw_config, format_loc, data):
    raw = raw_config()
    loc = data.draw(st.sampled_from(known_paths(raw)), label="path")
    node: Any = raw
    for step in loc:
        node = node[step]
    value = data.draw(wrong_kind(node), label="value")
    result = validate(inject(raw, loc, value))
    assert isinstance(result, ConfigError), (format_loc(loc), value)
    assert_well_formed(result)
    injected = format_loc(loc)
    assert all(related(path, injected) for path, _ in result.problems), (injected, str(result))


SECRET_PATHS = [
    "redis.password", "postgres.password", "postgres.databases.shop.password", "rabbitmq.admin_password",
    "rabbitmq.users.worker.password", "secrets.api-key.value", "secrets.jwt", "registries[0].password",
    "elk.elastic_password",
]
MARKER = "S3cr3tMarker"
# Integers are not here: they are read as their digits, as `pulumi config set --path` writes them.
secret_values = st.one_of(
    st.text(min_size=1, max_size=10).map(lambda text: [f"{MARKER}{text}"]),
    st.text(max_size=10).map(lambda text: {"pass": f"{MARKER}{text}"}),
    st.floats(min_value=1e9, max_value=1e15),
)


@FUZZ
@given(path=st.sampled_from(SECRET_PATHS), value=secret_values)
def test_a_bad_secret_is_reported_without_its_value(raw_config, path, value):
    result = validate(raw_config({path: value}))
    assert isinstance(result, ConfigError)
    text = str(result)
    assert text.startswith(f"berth:{path}")
    assert MARKER not in text
    if isinstance(value, float):
        assert str(value) not in text and str(int(value)) not in text


# -- units ---------------------------------------------------------------------------------------

GO_DURATION = re.compile(r"0s|[1-9]\d{0,2}ms|(?:[1-9]\d*h\d{1,2}m|[1-9]\d?m)?\d{1,2}(?:\.\d{1,3})?s")


@settings(max_examples=500)
@given(st.integers(min_value=0, max_value=10**10))
def test_go_duration_round_trips(milliseconds):
    duration = timedelta(milliseconds=milliseconds)
    text = go_duration(duration)
    assert GO_DURATION.fullmatch(text), text
    assert parse_duration(text) == duration


@settings(max_examples=200)
@given(st.integers(min_value=1, max_value=10**5), st.sampled_from(["h", "m", "s", "ms", "d"]))
def test_parse_duration_of_one_unit(number, unit):
    factor = {"h": 3600_000, "m": 60_000, "s": 1000, "ms": 1, "d": 86_400_000}[unit]
    assert parse_duration(f"{number}{unit}") == timedelta(milliseconds=number * factor)


SIZE_UNITS = [("", 1), ("b", 1), ("k", 1024), ("kb", 1024), ("KiB", 1024), ("m", 1024**2), ("MiB", 1024**2),
              ("M", 1024**2), ("g", 1024**3), ("Gb", 1024**3), ("GiB", 1024**3), ("t", 1024**4)]


@settings(max_examples=200)
@given(st.integers(min_value=0, max_value=2**22), st.sampled_from(SIZE_UNITS))
def test_parse_bytes_multiplies_by_powers_of_1024(number, unit):
    suffix, factor = unit
    assert parse_bytes(f"{number}{suffix}") == number * factor
