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

from pydantic import BaseModel, ValidationError

from berth.errors import NAMESPACE, ConfigError, Problems
from berth.settings import yamlfile
from berth.settings.guardrails import INSECURE_RULES, insecure_choices
from berth.settings.reading import UNDECRYPTED, Reader, path_text
from berth.settings.root import Settings

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BLUEPRINTS = PROJECT_ROOT / "blueprints"
_SECRETISH = re.compile(r"password|secret|key|cert|\bca\b|token", re.IGNORECASE)
_PATH_PREFIX = re.compile(r"^([A-Za-z0-9_.\[\]-]+): (.*)$", re.DOTALL)
_STACK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", re.ASCII)
# Namespaces a stack file may hold besides berth's own: Pulumi's. Provider config (docker:host, ...)
# would be ignored, since berth uses explicit providers only, so it is refused like a typo'd key.
_FOREIGN_OK = ("pulumi",)


class RawConfig(dict[str, Any]):
    """Raw ``berth:*`` values (namespace stripped) and where they came from.

    ``secure`` holds the top-level keys whose value is (or holds) a secret value: `secure:` in the
    stack file, or a key the engine marks secret. ``stack`` is the stack's name.
    """

    def __init__(self, values: dict[str, Any], secure: frozenset[str] = frozenset(), stack: str | None = None) -> None:
        super().__init__(values)
        self.secure = secure
        self.stack = stack


def load_settings(raw: dict[str, Any], blueprint: str | None = None, stack: str | None = None) -> Settings:
    """Validate raw stack config (namespace stripped), merged over its blueprint; ConfigError lists every problem.

    When ``raw`` is a RawConfig (read from a stack file or the engine), secrets given in plain text
    are known, and ``stack`` defaults to its stack: the prod and staging guardrails check both.
    """
    if not isinstance(raw, dict):
        raise ConfigError.one("", f"the config must be a mapping of keys to values, not a {type(raw).__name__}")
    reader = Reader()
    values = reader.read(Settings, raw)
    given_secrets = list(reader.given_secrets)
    name = blueprint or values.get("blueprint")
    merged = deep_merge(reader.read(Settings, read_blueprint(name)), values) if name else dict(values)
    if name:
        merged["blueprint"] = name
    problems = list(reader.problems)
    settings: Settings | None = None
    try:
        settings = Settings.model_validate(merged)
    except ValidationError as error:
        problems += _problems(error)
    except RecursionError:
        problems.append(("", "the config is nested too deeply to validate"))
    if settings is None or problems:
        raise ConfigError(_distinct(problems))
    from berth.plan.containers import image_name_collisions  # plan names resources; it imports settings

    collisions = image_name_collisions(settings)
    if collisions:
        raise ConfigError(collisions)
    if isinstance(raw, RawConfig):
        plain = [path for path in given_secrets if path.split(".", 1)[0].split("[", 1)[0] not in raw.secure]
        stack = stack or raw.stack
    else:
        plain = None
    refused = [(path, rule) for path, rule, opt_out in insecure_choices(settings, stack, plain)
               if opt_out not in settings.allow_insecure]
    if refused:
        raise ConfigError(refused)
    return settings


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


def from_pulumi_config() -> RawConfig:
    """Every ``berth:*`` value the Pulumi engine handed this program, namespace stripped, as the engine gave it.

    Values stay the engine's strings: load_settings reads them against the model, as it reads a
    stack file (berth/settings/reading.py), so both give the same Settings.
    """
    import pulumi
    from pulumi.runtime import config as pulumi_config

    keys = set(pulumi_config.CONFIG.get()) | set(pulumi_config.get_config_env())
    values = _namespaced({key: pulumi_config.get_config(key) for key in sorted(keys)}, "pulumi config")
    secure = frozenset(key.split(":", 1)[1] for key in keys
                       if key.startswith(f"{NAMESPACE}:") and pulumi_config.is_config_secret(key))
    return RawConfig(values, secure, pulumi.get_stack())


def from_stack_files(stack: str, root: Path = PROJECT_ROOT) -> RawConfig:
    """Project defaults from Pulumi.yaml under Pulumi.<stack>.yaml, as `pulumi config` would see them."""
    stack_file = root / f"Pulumi.{stack}.yaml"
    if not isinstance(stack, str) or not _STACK_NAME.fullmatch(stack) or not stack_file.is_file():
        known = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in root.glob("Pulumi.*.yaml"))
        raise ConfigError.one("stack", f"{stack!r} is not one of {known}")
    return read_stack_file(stack_file, root / "Pulumi.yaml", stack)


def read_stack_file(stack_file: Path, project_file: Path, stack: str | None = None) -> RawConfig:
    """One stack file over the project's defaults: berth's values, namespace stripped, secure ones as a placeholder."""
    project = _config_section(_read_yaml(project_file, "project"), project_file.name, "project")
    values = {key: _project_default(value) for key, value in project.items()}
    values.update(_config_section(_read_yaml(stack_file, "stack"), stack_file.name, "stack"))
    config = _namespaced(values, stack_file.name)
    secure = frozenset(key for key, value in config.items() if _holds_secure(value))
    return RawConfig({key: _reveal_placeholder(value) for key, value in config.items()}, secure, stack)


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``: mappings merge key by key, anything else is replaced."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def insecure_warnings(settings: Settings) -> list[str]:
    """One line per insecure choice the stack allows itself, with its reason: printed on every preview."""
    return [f"{NAMESPACE}:allow_insecure.{rule}: {INSECURE_RULES[rule]} is allowed in {settings.environment}: "
            f"{reason}" for rule, reason in sorted(settings.allow_insecure.items())]


# -- helpers -----------------------------------------------------------------------------------


def _read_yaml(path: Path, what: str) -> dict[str, Any]:
    try:
        data = yamlfile.load(path.read_bytes()) or {}
    except yamlfile.YamlError as error:
        raise ConfigError.one(what, f"{path.name} is not valid YAML: {error}") from None
    except OSError as error:
        raise ConfigError.one(what, f"{path.name} cannot be read: {error.strerror}") from None
    if not isinstance(data, dict):
        raise ConfigError.one(what, f"{path.name} must hold a mapping")
    return data


def _config_section(document: dict[str, Any], file: str, what: str) -> dict[str, Any]:
    config = document.get("config") or {}
    if not isinstance(config, dict):
        raise ConfigError.one(what, f"{file}: config must be a mapping of keys to values")
    return config


def _namespaced(values: dict[Any, Any], source: str) -> dict[str, Any]:
    """``berth:<key>`` values by key; any other namespace but Pulumi's is an error, as is a key without one."""
    problems: list[tuple[str, str]] = []
    config: dict[str, Any] = {}
    for key, value in values.items():
        namespace, sep, name = key.partition(":") if isinstance(key, str) else ("", "", "")
        if namespace == NAMESPACE and sep and name and ":" not in name:
            config[name] = value
        elif namespace in _FOREIGN_OK and sep and name:
            continue
        else:
            shown = repr(key).replace("\n", " ")[:80]
            tail = name or namespace if isinstance(key, str) else ""
            hint = (f" (did you mean '{NAMESPACE}:{tail}'?)" if tail and ":" not in tail and tail != NAMESPACE
                    else "")
            problems.append(("", f"{source}: config key {shown} is not berth's ({NAMESPACE}:<key>) or Pulumi's "
                                 f"(pulumi:<key>){hint}"))
    if problems:
        raise ConfigError(problems)
    return config


def _project_default(value: Any) -> Any:
    if isinstance(value, dict) and ("default" in value or "value" in value):
        return value.get("value", value.get("default"))
    return value


def _holds_secure(value: Any) -> bool:
    if isinstance(value, dict):
        return set(value) == {"secure"} or any(_holds_secure(v) for v in value.values())
    return isinstance(value, list) and any(_holds_secure(v) for v in value)


def _reveal_placeholder(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"secure"}:
            return UNDECRYPTED
        return {k: _reveal_placeholder(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_reveal_placeholder(v) for v in value]
    return value


def _distinct(problems: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The first rule for each path, in order."""
    seen: dict[str, str] = {}
    for path, rule in problems:
        seen.setdefault(path, rule)
    return list(seen.items())


def _problems(error: ValidationError) -> list[tuple[str, str]]:
    problems: dict[str, str] = {}
    for item in error.errors():
        loc = _without_type_tags(item["loc"])
        found = (item.get("ctx") or {}).get("error")
        rules = found.problems if isinstance(found, Problems) else [("", _rule(item, loc))]
        for sub, rule in rules:
            path = path_text(loc)
            if sub:
                path = f"{path}.{sub}" if path else sub
            elif loc and item["type"] == "value_error" and (match := _PATH_PREFIX.match(rule)):
                path, rule = f"{path}.{match.group(1)}", match.group(2)
            elif not loc and (match := _PATH_PREFIX.match(rule)):
                path, rule = match.group(1), match.group(2)
            problems.setdefault(path, rule)
    return list(problems.items())


def _without_type_tags(loc: Sequence[object]) -> list[object]:
    """The config path of an error: the union member tags pydantic puts in ``loc`` left out.

    A tag only follows a union field (``list[str] | str``), so the walk follows the models' types and
    drops a tag only there; a key the user wrote (``env: {"list[str]": ...}``) is never taken for one.
    """
    path: list[object] = []
    annotation: Any = Settings
    for part in loc:
        if part == "[key]" or (_is_union(annotation) and _is_type_tag(part)):
            continue  # "[key]": pydantic's mark of an error in a mapping's key, named by the path already
        path.append(part)
        annotation = _step(annotation, part) if annotation is not None else None
    return path


def _is_union(annotation: Any) -> bool:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = annotation.__origin__
    if not (isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union):
        return False
    return len([arg for arg in typing.get_args(annotation) if arg is not type(None)]) > 1


def _is_type_tag(part: object) -> bool:
    # Unions put the member type in the location, e.g. "list[str]" or "function-after[...]".
    return isinstance(part, str) and ("[" in part or part in ("str", "int", "float", "bool", "none"))


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
