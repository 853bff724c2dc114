"""Hypothesis over the whole settings tree, generated from the pydantic models themselves.

Every field of every model (apps, jobs, services, proxy, host, ...) gets values of its own type,
of other types, and hostile text (control characters, quotes, braces, other scripts' digits).
Whatever comes out:
- validation gives Settings, or a ConfigError whose lines are each one `berth:<path>: <rule>`;
- never another exception;
- the program's reading (the engine's JSON strings through from_pulumi_config) agrees with the
  stack file's reading: the same Settings, or the same problems.
"""

from __future__ import annotations

import json
import types
import typing
from datetime import timedelta
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pulumi.runtime import config as pulumi_config
from pydantic import BaseModel, SecretStr
from rawconfig import inject, known_paths

from berth.errors import ConfigError
from berth.settings import Settings, from_pulumi_config, load_settings

HOSTILE = st.text(alphabet=st.sampled_from(
    list("abz09-_./:@ ") + ["\n", "\r", "\x00", "\t", "\x1b", '"', "'", "\\", "$", "{", "}", ";", "#", "٣", "é",
                            "\u2028", "%", "*"]), max_size=12)
NAMEISH = st.from_regex(r"[a-z][a-z0-9-]{0,6}", fullmatch=True)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.integers(-5, 70000),
                    st.floats(allow_nan=True, allow_infinity=True), HOSTILE)


def _members(annotation: Any) -> list[Any]:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = annotation.__origin__
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return [m for arg in typing.get_args(annotation) for m in _members(arg)]
    return [annotation]


def for_type(annotation: Any, depth: int = 0) -> st.SearchStrategy[Any]:
    """Values for a field: mostly of its own type, sometimes anything."""
    options = [for_member(member, depth) for member in _members(annotation) if member is not type(None)]
    own = st.one_of(options) if options else st.none()
    return st.one_of(own, own, own, SCALARS)


def for_member(member: Any, depth: int) -> st.SearchStrategy[Any]:
    origin = typing.get_origin(member)
    if isinstance(member, type) and issubclass(member, BaseModel):
        if depth > 4:
            return st.just({})
        fields = {name: st.deferred(lambda f=field: for_type(_annotation(f), depth + 1))
                  for name, field in member.model_fields.items()}
        return st.fixed_dictionaries({}, optional=fields)
    if origin is list:
        return st.lists(for_type(typing.get_args(member)[0], depth + 1), max_size=3)
    if origin is dict:
        key, value = typing.get_args(member)
        keys = st.one_of(NAMEISH, st.sampled_from(["PORT", "API_TOKEN", "/tmp", "/", "web", "postgres", "admin"]),
                         HOSTILE)
        return st.dictionaries(keys, for_type(value, depth + 1), max_size=3)
    if origin is Literal:
        return st.sampled_from(typing.get_args(member))
    simple = {
        bool: st.one_of(st.booleans(), st.sampled_from(["true", "false", "yes"])),
        int: st.one_of(st.integers(0, 70000), st.sampled_from(["8080", "0", "-1", "1e3"])),
        float: st.one_of(st.floats(0, 64), st.sampled_from(["1.5", "2"])),
        str: st.one_of(NAMEISH, HOSTILE, st.sampled_from(["/health", "10r/s", "127.0.0.1", "ssh://u@h:22", "a:1"])),
        SecretStr: st.one_of(NAMEISH, HOSTILE),
        timedelta: st.one_of(st.integers(0, 10**6), st.sampled_from(["30s", "1m30s", "0s", "500ms", "30"])),
    }
    return simple.get(member, SCALARS)


def _annotation(field: Any) -> Any:
    return typing.Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation


configs = for_member(Settings, 0).map(lambda raw: {**raw, "environment": raw.get("environment", "tree")})
TREE = settings(max_examples=400, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _depth(node: Any) -> int:
    if isinstance(node, dict):
        return 1 + max(map(_depth, node.values()), default=0)
    if isinstance(node, list):
        return 1 + max(map(_depth, node), default=0)
    return 0


def outcome(read: Any) -> Settings | list[tuple[str, str]]:
    try:
        return read()
    except ConfigError as error:
        lines = str(error).split("\n")
        assert len(lines) == len(error.problems)
        assert all(line.startswith("berth:") for line in lines), lines
        return error.problems


@pytest.fixture(scope="module")
def engine():
    saved = dict(pulumi_config.CONFIG.get())

    def read(raw: dict[str, Any]) -> Settings:
        pulumi_config.set_all_config({f"berth:{k}": v if isinstance(v, str) else json.dumps(v)
                                      for k, v in raw.items()}, [])
        return load_settings(from_pulumi_config())

    yield read
    pulumi_config.set_all_config(saved, [])


@TREE
@given(raw=configs)
def test_any_tree_validates_or_names_each_problem_and_both_readings_agree(engine, raw):
    from_file = outcome(lambda: load_settings(raw))
    event("valid" if isinstance(from_file, Settings) else f"{min(len(from_file), 3)}+ problems")
    event(f"depth {min(_depth(raw), 5)}")
    assert_both_readings_agree(from_file, outcome(lambda: engine(raw)))


def annotation_at(loc: tuple[str | int, ...]) -> Any:
    """The model's type at a raw config path (Settings -> apps -> backend -> port: Port)."""
    from berth.settings.loader import _step

    annotation: Any = Settings
    for part in loc:
        annotation = _step(annotation, part)
        if annotation is None:
            return Any
    return annotation


@TREE
@given(data=st.data())
def test_a_model_typed_value_at_any_depth_of_a_full_stack(engine, raw_config, data):
    raw = raw_config({"environment": "tree"})
    loc = data.draw(st.sampled_from(known_paths(raw)), label="path")
    value = data.draw(for_type(annotation_at(loc)), label="value")
    raw = inject(raw, loc, value)
    from_file = outcome(lambda: load_settings(raw))
    event("valid" if isinstance(from_file, Settings) else "refused")
    assert_both_readings_agree(from_file, outcome(lambda: engine(raw)))


def assert_both_readings_agree(from_file: Any, from_engine: Any) -> None:
    """The stack file's reading and the engine's give equal Settings, or problems at the same paths."""
    if isinstance(from_file, Settings):
        assert from_engine == from_file
    else:
        assert isinstance(from_engine, list)
        assert sorted(path for path, _ in from_engine) == sorted(path for path, _ in from_file)
