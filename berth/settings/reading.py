"""The one reading of raw config values, shared by `pulumi up` and by offline synth.

Pulumi hands the program every top-level value as a string (objects as JSON), and `pulumi config
set --path` stores ``true``/``false`` as booleans and integers as numbers, everything else as a
string (pulumi/pulumi#18285). A stack file read directly holds typed YAML. This module reads a
value against the settings model's own field types, so all of these give the same Settings:

- a string for a bool field: exactly ``"true"`` or ``"false"``;
- a string for an int field: a decimal integer (``"8080"``); for a float field: a decimal number;
- a string for an object or list field: JSON, as the engine passes it;
- a bool or int for a text field (what ``--path`` writes for ``PORT=8080``): its text;
- ``null`` (or the engine's text for it, ``"null"``, in a field that is not text): no value, and at
  the top level an unset key;
- a top-level number or boolean: the text the engine would hand over for it, read as above.

It also refuses what no field may hold, with the path: control characters in any text (a newline in
a password would start a new directive in redis.conf; a NUL truncates it in C), keys that are not
text, non-finite numbers, and nesting deeper than any settings model goes.
"""

from __future__ import annotations

import json
import math
import re
import types
import typing
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, SecretStr

MAX_DEPTH = 48
# Stands in for a `secure:` value in offline synth, which has no key to decrypt it.
UNDECRYPTED = "undecrypted-secure-value"
# C0 and C1 controls, DEL, and Unicode's line and paragraph separators: they break lines (or files)
# in every format berth renders. Multi-line fields (see MultiLine) may hold newlines and tabs.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_MULTILINE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")
_INT = re.compile(r"-?[0-9]{1,30}")
_FLOAT = re.compile(r"-?[0-9]{1,30}(\.[0-9]{1,30})?")

Problems = list[tuple[str, str]]


class MultiLine:
    """Marks a text field that may hold newlines and tabs (``Annotated[str, MultiLine()]``)."""


def path_text(loc: Sequence[object]) -> str:
    """("proxy", "sites", 1, "app") -> "proxy.sites[1].app"; a key's line breaks stay escaped."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else ("." if path else "") + repr(str(part))[1:-1]
    return path


class Reader:
    """Reads one raw config tree against a model; collects problems and the paths of given secrets."""

    def __init__(self) -> None:
        self.problems: Problems = []
        self.given_secrets: list[str] = []

    def read(self, annotation: Any, value: Any, loc: tuple[object, ...] = ()) -> Any:
        """``value`` as the field typed ``annotation`` reads it; problems are collected, not raised."""
        if len(loc) > MAX_DEPTH:
            self._problem(loc, f"is nested deeper than {MAX_DEPTH} levels")
            return None
        members, multiline = _members(annotation)
        kinds = {_kind(member) for member in members}
        if isinstance(value, str):
            return self._read_text(members, kinds, multiline, value, loc)
        if len(loc) == 1 and isinstance(value, (bool, int, float)):
            # The engine hands every top-level value to the program as text: a top-level number or
            # boolean in a stack file is read as the text the engine would hand over.
            return self._read_text(members, kinds, multiline, json.dumps(value), loc)
        if isinstance(value, bool):
            return ("true" if value else "false") if _text_only(kinds) else value
        if isinstance(value, int):
            if "secret" in kinds:
                self.given_secrets.append(path_text(loc))
            return str(value) if _text_only(kinds) else value
        if isinstance(value, float):
            if not math.isfinite(value):
                self._problem(loc, f"{value} is not a finite number")
            return value
        if isinstance(value, dict):
            return self._read_mapping(members, value, loc)
        if isinstance(value, list):
            item = next((typing.get_args(m)[0] for m in members if typing.get_origin(m) is list), Any)
            return [self.read(item, entry, (*loc, index)) for index, entry in enumerate(value)]
        if value is not None:
            self._problem(loc, f"a {type(value).__name__} is not a config value")
        return value

    def _read_text(self, members: list[Any], kinds: set[str], multiline: bool, value: str,
                   loc: tuple[object, ...]) -> Any:
        control = (_CONTROL_MULTILINE if multiline else _CONTROL).search(value)
        if control:
            shown = "the value" if "secret" in kinds else "the text"
            self._problem(loc, f"{shown} holds the control character {control.group()!r}, which may not be written "
                               "in a config value")
        if "secret" in kinds:
            self.given_secrets.append(path_text(loc))
        if _text_only(kinds) or "text" in kinds or "secret" in kinds:
            return value
        if value == "null":  # the engine's text for a null the stack file holds
            return None
        if "bool" in kinds and value in ("true", "false"):
            return value == "true"
        if "int" in kinds and _INT.fullmatch(value):
            return int(value)
        if "float" in kinds and _FLOAT.fullmatch(value):
            return float(value)
        if kinds & {"list", "mapping"} and value.lstrip()[:1] in ("[", "{"):
            try:
                decoded = json.loads(value)
            except (ValueError, RecursionError):
                self._problem(loc, "is not valid JSON")
                return value
            return self.read(members[0] if len(members) == 1 else typing.Union[tuple(members)],  # noqa: UP007
                             decoded, loc)
        return value

    def _read_mapping(self, members: list[Any], value: dict[Any, Any], loc: tuple[object, ...]) -> dict[Any, Any]:
        model = next((m for m in members if isinstance(m, type) and issubclass(m, BaseModel)), None)
        mapping = next((m for m in members if typing.get_origin(m) is dict), None)
        out: dict[Any, Any] = {}
        for key, entry in value.items():
            if not isinstance(key, str):
                self._problem((*loc, str(key)), f"the key {key!r} is not text; write it in quotes")
                continue
            if _CONTROL.search(key):
                self._problem((*loc, key), "the key holds a control character")
                continue
            if model is not None:
                field = model.model_fields.get(key)
                target: Any = Any if field is None else _field_annotation(field)
            else:
                target = typing.get_args(mapping)[1] if mapping is not None else Any
            if not loc and entry == "null":
                continue  # the engine's text for a top-level null
            read = self.read(target, entry, (*loc, key))
            if read is not None or loc:
                out[key] = read  # a top-level null is an unset key, as the engine passes no value for it
        return out

    def _problem(self, loc: tuple[object, ...], rule: str) -> None:
        self.problems.append((path_text(loc), rule))


def _field_annotation(field: Any) -> Any:
    """A pydantic field's type with its metadata (MultiLine) kept."""
    if field.metadata:
        return typing.Annotated[(field.annotation, *field.metadata)]
    return field.annotation


def _members(annotation: Any) -> tuple[list[Any], bool]:
    """The alternatives of a (possibly Annotated, Optional or union) type, and whether it is MultiLine."""
    multiline = False
    while typing.get_origin(annotation) is typing.Annotated:
        multiline = multiline or any(isinstance(meta, MultiLine) for meta in annotation.__metadata__)
        annotation = annotation.__origin__
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        members: list[Any] = []
        for arg in typing.get_args(annotation):
            inner, inner_multiline = _members(arg)
            members += inner
            multiline = multiline or inner_multiline
        return members, multiline
    return [annotation], multiline


def _kind(member: Any) -> str:
    origin = typing.get_origin(member)
    if origin is Literal:
        return "text" if all(isinstance(v, str) for v in typing.get_args(member)) else "literal"
    if origin is list:
        return "list"
    if origin is dict or (isinstance(member, type) and issubclass(member, BaseModel)):
        return "mapping"
    kinds = {bool: "bool", int: "int", float: "float", str: "text", SecretStr: "secret", timedelta: "duration",
             type(None): "none"}
    return kinds.get(member, "any")


def _text_only(kinds: set[str]) -> bool:
    """True when text is the only thing the field holds (besides null)."""
    return bool(kinds & {"text", "secret"}) and not kinds & {"bool", "int", "float", "duration", "list", "mapping",
                                                              "any", "literal"}
