"""The bounded YAML reader: YAML 1.2 core scalars as go-yaml (and so Pulumi) reads them, and hard limits."""

from __future__ import annotations

import math
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from berth.settings import yamlfile
from berth.settings.yamlfile import MAX_BYTES, MAX_DEPTH, MAX_NODES, YamlError, load


@pytest.mark.parametrize(("text", "value"), [
    ("yes", "yes"), ("no", "no"), ("on", "on"), ("off", "off"), ("y", "y"),  # YAML 1.1 booleans are strings
    ("true", True), ("False", False), ("TRUE", True),
    ("010", 10), ("0o10", 8), ("0x1f", 31), ("-12", -12), ("+3", 3), ("1_000", "1_000"),
    ("22:22", "22:22"), ("8080:80", "8080:80"),  # YAML 1.1 sexagesimal ints are strings
    ("1.5", 1.5), ("1e3", 1000.0), (".inf", math.inf), ("-.inf", -math.inf),
    ("~", None), ("null", None), ("", None), ("2024-01-01", "2024-01-01"),  # no timestamps
    ('"8080"', "8080"), ("'true'", "true"),
])
def test_core_schema_scalars(text, value):
    assert load(f"k: {text}\n".encode()) == {"k": value}


def test_nan_reads_as_nan():
    assert math.isnan(load(b"k: .nan\n")["k"])


@pytest.mark.parametrize(("text", "rule"), [
    (b"a: 1\na: 2\n", "key 'a' appears twice in one mapping (line 2)"),
    (b"m: {x: 1, x: 2}\n", "key 'x' appears twice"),
    (b"\xff\xfe", "is not UTF-8 text (byte 0)"),
    (b"k: \x00\n", "unacceptable character"),
    (b"k: !!binary aGk=\n", "could not determine a constructor"),
    (b"k: !!python/name:os.system\n", "could not determine a constructor"),
    (b"? [a]\n: 1\n", "a mapping key must be a scalar"),
    (b"a: &a [*a]\n", f"expands to more than {MAX_NODES} nodes"),
    (b"---\na: 1\n---\nb: 2\n", "expected a single document"),
], ids=["dup", "dup-flow", "utf16", "nul", "binary", "python", "list-key", "recursive", "two-docs"])
def test_refused(text, rule):
    with pytest.raises(YamlError) as caught:
        load(text)
    assert rule in str(caught.value)
    assert "\n" not in str(caught.value)


def test_depth_is_bounded():
    assert load(("a: " + "[" * (MAX_DEPTH - 2) + "]" * (MAX_DEPTH - 2) + "\n").encode())
    with pytest.raises(YamlError, match=f"nested deeper than {MAX_DEPTH} levels"):
        load(("a: " + "[" * 100_000 + "]" * 100_000 + "\n").encode())


def test_size_is_bounded():
    with pytest.raises(YamlError, match="is larger than 1024 KiB"):
        load(b"# x\n" * (MAX_BYTES // 4 + 1))


def billion_laughs(levels: int) -> bytes:
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return ("\n".join(lines) + "\n").encode()


def test_an_alias_bomb_is_refused_before_it_expands():
    tracemalloc.start()
    try:
        with pytest.raises(YamlError, match="expands to more than"):
            load(billion_laughs(10))  # 10^10 nodes once expanded
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 1024 * 1024


def test_aliases_and_merges_within_the_bound_read_as_go_yaml_reads_them():
    assert load(b"base: &b {port: 80, image: a}\napp: {<<: *b, port: 81}\nlist: [*b]\n") == {
        "base": {"port": 80, "image": "a"}, "app": {"port": 81, "image": "a"}, "list": [{"port": 80, "image": "a"}]}
    assert load(billion_laughs(4))["l3"][0][0][0][0] == "lol"  # 10^4 nodes: fine


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_read_or_refuse_in_one_line(data):
    try:
        yamlfile.load(data)
    except YamlError as error:
        assert "\n" not in str(error)


yaml_ish = st.text(alphabet=st.sampled_from(list("ab:-[]{}&*!|>'\"#,? \n\t<%@`~0123456789.")), max_size=200)


@settings(max_examples=500, deadline=None)
@given(yaml_ish)
def test_any_yaml_like_text_reads_or_refuses_in_one_line(text):
    try:
        yamlfile.load(text.encode())
    except YamlError as error:
        assert "\n" not in str(error)
