"""Raw config -> Settings: read Pulumi config or the stack files, merge the blueprint, validate.

The only module that reads configuration. Every failure becomes one ConfigError whose lines name
the config path and the rule.
"""

from __future__ import annotations

import difflib
import json
import re
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from berth.errors import NAMESPACE, ConfigError
from berth.settings.root import Settings

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BLUEPRINTS = PROJECT_ROOT / "blueprints"
# Stands in for a `secure:` value in offline synth, which has no key to decrypt it.
UNDECRYPTED = "undecrypted-secure-value"
_SECRETISH = re.compile(r"password|secret|key|cert|\bca\b|token", re.IGNORECASE)
_PATH_PREFIX = re.compile(r"^([A-Za-z0-9_.\[\]-]+): (.*)$", re.DOTALL)


def load_settings(raw: dict[str, Any], blueprint: str | None = None) -> Settings:
    """Validate raw stack config (namespace stripped), merged over its blueprint."""
    name = blueprint or raw.get("blueprint")
    merged = deep_merge(read_blueprint(name), raw) if name else dict(raw)
    if name:
        merged["blueprint"] = name
    try:
        return Settings.model_validate(merged)
    except ValidationError as error:
        raise ConfigError(_problems(error)) from None


def read_blueprint(name: object) -> dict[str, Any]:
    """The settings in blueprints/<name>.yaml."""
    if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9-]*", name):
        raise ConfigError.one("blueprint", f"{name!r} is not a blueprint name")
    path = BLUEPRINTS / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in BLUEPRINTS.glob("*.yaml"))
        raise ConfigError.one("blueprint", f"{name!r} is not one of {known}")
    data = _read_yaml(path, "blueprint")
    if "blueprint" in data:
        raise ConfigError.one("blueprint", f"{path.name} may not name another blueprint")
    return data


def from_pulumi_config() -> dict[str, Any]:
    """Every ``berth:*`` value the Pulumi engine handed this program, namespace stripped."""
    from pulumi.runtime import config as pulumi_config

    keys = set(pulumi_config.CONFIG.get()) | set(pulumi_config.get_config_env())
    prefix = f"{NAMESPACE}:"
    return {key[len(prefix):]: _decode(pulumi_config.get_config(key))
            for key in sorted(keys) if key.startswith(prefix)}


def from_stack_files(stack: str, root: Path = PROJECT_ROOT) -> dict[str, Any]:
    """Project defaults from Pulumi.yaml under Pulumi.<stack>.yaml, as `pulumi config` would see them."""
    stack_file = root / f"Pulumi.{stack}.yaml"
    if not stack_file.is_file():
        known = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in root.glob("Pulumi.*.yaml"))
        raise ConfigError.one("stack", f"{stack!r} is not one of {known}")
    project = _read_yaml(root / "Pulumi.yaml", "project").get("config") or {}
    values = {key: _project_default(value) for key, value in project.items()}
    values.update(_read_yaml(stack_file, "stack").get("config") or {})
    prefix = f"{NAMESPACE}:"
    return {key[len(prefix):]: _reveal_placeholder(value) for key, value in values.items() if key.startswith(prefix)}


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``: mappings merge key by key, anything else is replaced."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# -- helpers -----------------------------------------------------------------------------------


def _read_yaml(path: Path, what: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError.one(what, f"{path.name} is not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError.one(what, f"{path.name} must hold a mapping")
    return data


def _project_default(value: Any) -> Any:
    if isinstance(value, dict) and ("default" in value or "value" in value):
        return value.get("value", value.get("default"))
    return value


def _reveal_placeholder(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"secure"}:
            return UNDECRYPTED
        return {k: _reveal_placeholder(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_reveal_placeholder(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in ("{", "[") or value in ("true", "false"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
        return int(value)
    return value


def _problems(error: ValidationError) -> list[tuple[str, str]]:
    problems: dict[str, str] = {}
    for item in error.errors():
        loc = [part for part in item["loc"] if not _is_type_tag(part)]
        path = _path(loc)
        rule = _rule(item, loc)
        if loc and item["type"] == "value_error" and (match := _PATH_PREFIX.match(rule)):
            path, rule = f"{path}.{match.group(1)}", match.group(2)
        elif not loc and (match := _PATH_PREFIX.match(rule)):
            path, rule = match.group(1), match.group(2)
        problems.setdefault(path, rule)
    return list(problems.items())


def _is_type_tag(part: object) -> bool:
    # Unions put the member type in the location, e.g. "list[str]" or "function-after[...]".
    return isinstance(part, str) and ("[" in part or part in ("str", "int", "float", "bool", "none"))


def _path(loc: Sequence[object]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else ("." if path else "") + repr(str(part))[1:-1]
    return path


def _rule(item: Any, loc: Sequence[object]) -> str:
    kind, msg = item["type"], item["msg"]
    if kind == "value_error":
        return msg.removeprefix("Value error, ")
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown key{hint}; expected one of: {', '.join(allowed)}"
    shown = "the given value" if any(_SECRETISH.search(str(p)) for p in loc) else _show(item.get("input"))
    return f"{shown} {msg[len('Input '):] if msg.startswith('Input ') else msg}"


def _show(value: object) -> str:
    text = json.dumps(value) if isinstance(value, (str, int, float, bool, type(None))) else type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."


def _allowed_keys(loc: Sequence[object]) -> list[str]:
    annotation: Any = Settings
    for part in loc:
        annotation = _step(annotation, part)
        if annotation is None:
            return []
    model = _model_in(annotation)
    return sorted(model.model_fields) if model else []


def _step(annotation: Any, part: object) -> Any:
    model = _model_in(annotation)
    if model is not None and isinstance(part, str) and part in model.model_fields:
        return model.model_fields[part].annotation
    for arg in typing.get_args(annotation):
        origin = typing.get_origin(arg) or arg
        if origin in (dict, tuple, list):
            return typing.get_args(arg)[-1 if origin is dict else 0]
    origin = typing.get_origin(annotation)
    if origin in (dict, tuple, list):
        return typing.get_args(annotation)[-1 if origin is dict else 0]
    return None


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        for arg in typing.get_args(annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
    return None
