"""Bounded YAML: stack files, the project file and blueprints read as Pulumi reads them, safely.

Pulumi reads its YAML with go-yaml (YAML 1.2 core schema): ``yes``/``on`` are strings, ``010`` is
ten, ``22:22`` is a string, duplicate keys are an error. PyYAML's defaults are YAML 1.1, which
reads all of those differently, so this loader resolves scalars by the 1.2 core schema instead.

It is also bounded, so no file can exhaust time or memory: the bytes must be UTF-8 and at most
``MAX_BYTES``; nesting is at most ``MAX_DEPTH`` deep; aliases may expand the document to at most
``MAX_NODES`` nodes in all (an alias bomb of a few hundred bytes otherwise expands to billions).
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_BYTES = 1024 * 1024
MAX_DEPTH = 48
MAX_NODES = 100_000


class YamlError(ValueError):
    """The text is not YAML this loader accepts; the message is one line."""


class _Loader(yaml.SafeLoader):
    yaml_implicit_resolvers: dict[Any, Any] = {}

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self._depth += 1
        if self._depth > MAX_DEPTH:
            mark = self.peek_event().start_mark
            raise YamlError(f"nested deeper than {MAX_DEPTH} levels (line {mark.line + 1})")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:  # noqa: N803 - PyYAML's own name
        # Bounded while scanning: a flow collection 100,000 deep is refused at its 49th bracket, before
        # the scanner and parser do quadratic work on the rest.
        super().fetch_flow_collection_start(TokenClass)
        if self.flow_level > MAX_DEPTH:
            raise YamlError(f"nested deeper than {MAX_DEPTH} levels (line {self.line + 1})")

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        if not isinstance(node, MappingNode):
            return super().construct_mapping(node, deep)
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # go-yaml merges <<: *anchor too; explicit keys override merged ones
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:
                raise YamlError(f"a mapping key must be a scalar (line {key_node.start_mark.line + 1})") from None
            if duplicate:
                raise YamlError(f"key {key!r} appears twice in one mapping (line {key_node.start_mark.line + 1})")
            seen.add(key)
        return super().construct_mapping(node, deep)


def _int(loader: _Loader, node: ScalarNode) -> int:
    text = loader.construct_scalar(node)
    sign = -1 if text.startswith("-") else 1
    digits = text.lstrip("+-")
    if digits.startswith("0o"):
        return sign * int(digits[2:], 8)
    if digits.startswith("0x"):
        return sign * int(digits[2:], 16)
    return sign * int(digits, 10)


def _float(loader: _Loader, node: ScalarNode) -> float:
    text = loader.construct_scalar(node).lower()
    if text.endswith(".inf"):
        return float("-inf") if text.startswith("-") else float("inf")
    return float("nan") if text == ".nan" else float(text)


# The YAML 1.2 core schema (https://yaml.org/spec/1.2.2/#1032-tag-resolution), which go-yaml follows.
_CORE = [
    ("tag:yaml.org,2002:null", r"~|null|Null|NULL|", list("~nN") + [""]),
    ("tag:yaml.org,2002:bool", r"true|True|TRUE|false|False|FALSE", list("tTfF")),
    ("tag:yaml.org,2002:int", r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+", list("-+0123456789")),
    ("tag:yaml.org,2002:float",
     r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?|[-+]?\.(inf|Inf|INF)|\.nan|\.NaN|\.NAN",
     list("-+.0123456789")),
    ("tag:yaml.org,2002:merge", r"<<", ["<"]),
]
for _tag, _pattern, _first in _CORE:
    _Loader.add_implicit_resolver(_tag, re.compile(rf"^(?:{_pattern})$"), _first)
_Loader.add_constructor("tag:yaml.org,2002:int", _int)
_Loader.add_constructor("tag:yaml.org,2002:float", _float)
for _tag in ("timestamp", "binary", "set", "omap", "pairs"):
    _Loader.yaml_constructors.pop(f"tag:yaml.org,2002:{_tag}", None)


def _expanded_size(node: Node, sizes: dict[int, int]) -> int:
    """Nodes in the document once every alias is expanded; shared nodes are counted per use."""
    if id(node) in sizes:
        return sizes[id(node)]
    sizes[id(node)] = MAX_NODES + 1  # until known: an alias inside its own anchor never ends
    if isinstance(node, SequenceNode):
        size = 1 + sum(_expanded_size(child, sizes) for child in node.value)
    elif isinstance(node, MappingNode):
        size = 1 + sum(_expanded_size(k, sizes) + _expanded_size(v, sizes) for k, v in node.value)
    else:
        size = 1
    sizes[id(node)] = min(size, MAX_NODES + 1)
    return sizes[id(node)]


def load(data: bytes) -> Any:
    """Parse one YAML document; YamlError (one line) for anything this loader refuses."""
    if len(data) > MAX_BYTES:
        raise YamlError(f"is larger than {MAX_BYTES // 1024} KiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise YamlError(f"is not UTF-8 text (byte {error.start})") from None
    try:
        loader = _Loader(text)
    except yaml.YAMLError as error:
        raise YamlError(" ".join(str(error).split())) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}) > MAX_NODES:
            raise YamlError(f"expands to more than {MAX_NODES} nodes (aliases)")
        return loader.construct_document(node)
    except yaml.YAMLError as error:
        raise YamlError(" ".join(str(error).split())) from None
    except (RecursionError, ValueError, OverflowError) as error:
        if isinstance(error, YamlError):
            raise
        raise YamlError(f"cannot be read: {' '.join(str(error).split())[:200]}") from None
    finally:
        loader.dispose()
