"""One config reading: a stack file read by synth and the engine's config read by the program agree.

For every typed setting of the whole settings tree (each bool, int and float leaf of the baseline's
validated Settings, defaults included), the CLI's string form (`pulumi config set` without
`--type` writes "true" and "8080"; `--path` writes "1.5" as a string) and the typed YAML form give
equal Settings, both from a stack file (synth's path) and from the engine's config under Pulumi's
runtime (the program's path: every top-level value a string, objects as JSON).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pulumi.runtime import config as pulumi_config

from berth.settings import Settings, from_pulumi_config, load_settings
from berth.settings.loader import UNDECRYPTED, read_stack_file
from tests.conftest import changed, format_path


def typed_leaves(node: Any, loc: tuple[str | int, ...] = ()) -> list[tuple[tuple[str | int, ...], object]]:
    """(path, value) of every bool, int and float in a model dump."""
    if isinstance(node, dict):
        return [leaf for key, value in node.items() for leaf in typed_leaves(value, (*loc, key))]
    if isinstance(node, list):
        return [leaf for index, value in enumerate(node) for leaf in typed_leaves(value, (*loc, index))]
    return [(loc, node)] if isinstance(node, (bool, int, float)) else []


def cli_string(value: object) -> str:
    """What `pulumi config set` stores without --type for this value's text."""
    return ("true" if value else "false") if isinstance(value, bool) else repr(value)


BASE = changed({"environment": "unit"})
BASE_SETTINGS = load_settings(BASE)
LEAVES = [(format_path(loc), value) for loc, value in typed_leaves(BASE_SETTINGS.model_dump())]


def test_the_tree_has_typed_leaves_in_every_section():
    sections = {path.split(".")[0].split("[")[0] for path, _ in LEAVES}
    assert {"protect_data", "apps", "jobs", "proxy", "postgres", "redis", "rabbitmq", "minio", "elk", "logging",
            "secrets"} <= sections
    assert len(LEAVES) > 50


@pytest.fixture
def engine_config():
    """Run the program's reading (from_pulumi_config) over config set as the engine sets it."""
    saved = dict(pulumi_config.CONFIG.get())

    def read(raw: dict[str, Any], secure: tuple[str, ...] = ()) -> Settings:
        pulumi_config.set_all_config({f"berth:{k}": v if isinstance(v, str) else json.dumps(v) for k, v in raw.items()},
                                     [f"berth:{k}" for k in secure])
        return load_settings(from_pulumi_config())

    yield read
    pulumi_config.set_all_config(saved, [])


def stack_file(tmp_path: Path, raw: dict[str, Any]) -> Settings:
    """Synth's reading: the config written as a Pulumi.<stack>.yaml."""
    (tmp_path / "Pulumi.yaml").write_text("name: berth\nruntime: python\n")
    path = tmp_path / "Pulumi.unit.yaml"
    path.write_text(yaml.safe_dump({"config": {f"berth:{k}": v for k, v in raw.items()}}))
    return load_settings(read_stack_file(path, tmp_path / "Pulumi.yaml", "unit"))


@pytest.mark.parametrize(("path", "value"), LEAVES, ids=[path for path, _ in LEAVES])
def test_the_cli_string_and_the_typed_value_give_equal_settings_in_both_paths(tmp_path, engine_config, path, value):
    as_text = changed({**{"environment": "unit"}, path: cli_string(value)})
    typed = changed({**{"environment": "unit"}, path: value})
    readings = [load_settings(typed), load_settings(as_text), stack_file(tmp_path, typed),
                stack_file(tmp_path, as_text), engine_config(typed), engine_config(as_text)]
    assert all(reading == readings[0] for reading in readings), path
    node: Any = readings[0]
    for step in path.replace("[", ".[").split("."):
        node = node[int(step[1:-1])] if step.startswith("[") else node[step] if isinstance(node, dict) else getattr(
            node, step)
    assert node == value and type(node) is type(value), path


def test_a_top_level_string_true_is_a_bool_in_both_paths(tmp_path, engine_config):
    for given in ("true", True):
        raw = {"environment": "unit", "protect_data": given}
        assert stack_file(tmp_path, raw).protect_data is True
        assert engine_config(raw).protect_data is True


def test_path_values_inside_a_top_level_object_read_the_same(tmp_path, engine_config):
    # `pulumi config set --path berth:apps.web.port 8080` writes an int; `--path ...env.PORT 8080` too,
    # into a text field; `--path ...cpus 1.5` writes the string "1.5".
    raw = {"environment": "unit", "apps": {"web": {"image": "web:1", "port": 8080, "env": {"PORT": 8080},
                                                    "resources": {"limits": {"cpus": "1.5"}}}}}
    for settings in (stack_file(tmp_path, raw), engine_config(raw), load_settings(raw)):
        web = settings.apps["web"]
        assert (web.port, web.env, web.resources.limits.cpus) == (8080, {"PORT": "8080"}, 1.5)


def test_secure_values_read_the_same_in_both_paths(tmp_path, engine_config):
    # Synth has no key, so a secure value is a placeholder; the engine hands the decrypted text.
    raw = {"environment": "unit", "redis": {"password": {"secure": "v1:AAAAfakeciphertext"}}}
    from_file = stack_file(tmp_path, raw)
    from_engine = engine_config({"environment": "unit", "redis": {"password": UNDECRYPTED}}, secure=("redis",))
    assert from_file == from_engine
    assert from_file.redis is not None and from_file.redis.password is not None
    assert from_file.redis.password.get_secret_value() == UNDECRYPTED
