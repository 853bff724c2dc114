"""No value reaches a rendered file except through that file's escaping or a grammar that cannot break it.

A property over every string of a full proxy stack (every text value and every key, at any depth):
hostile text there (newlines, CR, NUL, quotes, braces, semicolons, '#', '$', other scripts) gives a
ConfigError, or a config whose structure is exactly that of the same text with every special
character made a plain letter (so a value may change what berth renders, e.g. a path that needs a
rewrite, but its characters never add, end or split a directive). The structure is checked by the
real programs: Debian's nginx must accept the rendered nginx.conf (`nginx -t`), and nginx's own
parser (crossplane, by NGINX Inc.) must find the same directives, in the same nesting. The Redis
password is checked in a real redis-server: it starts on the rendered redis.conf, the password
authenticates, and no directive but the expected ones is set.
"""

from __future__ import annotations

import copy
import os
import re
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import crossplane
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from servers import tool

from berth.errors import ConfigError
from berth.plan.nginx import render_nginx_conf
from berth.plan.redis import redis_conf
from berth.settings import load_settings

BASE: dict[str, Any] = {
    "environment": "dev",
    "domain": "example.test",
    "apps": {
        "web": {"image": "x/web:1", "port": 3000, "env": {"GREETING": "hello"}},
        "api": {"image": "x/api:1", "port": 8000, "extra_ports": [8001]},
    },
    "redis": {"password": "redis-password-1"},
    "proxy": {
        "rate_limits": {"api": {"rate": "5r/s", "burst": 4}},
        "content_security_policy": "default-src 'self'; img-src 'self' data:",
        "sites": [
            {"server_names": ["{domain}", "www.{domain}"], "routes": [
                {"path": "/", "app": "web", "static_cache": "1d"},
                {"path": "/api/", "app": "api", "strip_prefix": True, "rate_limit": "api"},
                {"path": "/admin/", "app": "api", "port": 8001},
            ]},
            {"server_names": ["api.{domain}"], "routes": [{"path": "/", "app": "api", "websocket": True}]},
        ],
    },
}
HOSTILE = st.text(alphabet=st.sampled_from(
    list("az09-_./:@ ") + ["\n", "\r", "\x00", "\t", '"', "'", "\\", "$", "{", "}", ";", "#", "٣", "é", "\u2028",
                           "%", "*", "~", "(", ")", "^", "&", "|", "<", ">", "`", "=", ","]), min_size=1, max_size=16)
PRINTABLE = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e), min_size=1, max_size=16)
# What nginx reads specially, without the control characters every field refuses anyway.
NGINX_SPECIAL = st.text(alphabet=st.sampled_from(list("az09/._-") + list(";'(){}#*=,!&+~@:%$\" \\^|")),
                        min_size=1, max_size=12)
NGINX_TIMES = settings(max_examples=600, deadline=None,
                       suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])




def string_places(node: Any, loc: tuple[Any, ...] = ()) -> list[tuple[str, tuple[Any, ...]]]:
    """("value", path) for every text leaf and ("key", path) for every mapping key."""
    places: list[tuple[str, tuple[Any, ...]]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            places.append(("key", (*loc, key)))
            places += string_places(value, (*loc, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            places += string_places(value, (*loc, index))
    elif isinstance(node, str):
        places.append(("value", loc))
    return places


PLACES = string_places(BASE)
# What nginx.conf is made of comes up three times as often as the rest (images, env, redis).
WEIGHTED = PLACES + [place for place in PLACES if place[1][0] in ("proxy", "domain") or len(place[1]) == 2] * 2


def injected(kind: str, loc: tuple[Any, ...], text: str) -> dict[str, Any]:
    raw = copy.deepcopy(BASE)
    node: Any = raw
    for step in loc[:-1]:
        node = node[step]
    if kind == "value":
        node[loc[-1]] = text
    else:
        node[text] = node.pop(loc[-1])
    return raw


def structure(conf: Path) -> list[Any]:
    """Directive names, nested as nginx reads them (arguments left out: those are the values)."""
    parsed = crossplane.parse(str(conf), single=True, comments=False, check_ctx=False, check_args=False)
    assert parsed["status"] == "ok", parsed["errors"]

    def shape(block: list[dict[str, Any]]) -> list[Any]:
        return [(d["directive"], shape(d["block"])) if "block" in d else d["directive"] for d in block]

    return shape(parsed["config"][0]["parsed"])



def checked_conf(raw: dict[str, Any], tls_dir: Path, work: Path) -> list[Any]:
    """Render, run `nginx -t` on it, and return its directive structure."""
    conf = work / "nginx.conf"
    conf.write_text(render_nginx_conf(load_settings(raw), tls_dir=str(tls_dir), pid=str(work / "nginx.pid"),
                                      temp_dir=str(work)))
    result = subprocess.run([tool("nginx"), "-t", "-p", str(work), "-c", str(conf)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return structure(conf)


@pytest.fixture(scope="module")
def baseline(tls_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    return checked_conf(BASE, tls_dir, tmp_path_factory.mktemp("baseline"))


def test_the_baseline_reaches_every_part_of_the_proxy(baseline):
    flat = str(baseline)
    for directive in ("server_name", "location", "add_header", "limit_req_zone", "limit_req", "rewrite", "proxy_pass"):
        assert f"'{directive}'" in flat
    assert len(PLACES) > 40


def original(kind: str, loc: tuple[Any, ...]) -> str:
    node: Any = BASE
    for step in loc:
        node = node[step]
    return str(loc[-1]) if kind == "key" else node


@NGINX_TIMES
@given(place=st.sampled_from(WEIGHTED), data=st.data())
def test_hostile_text_anywhere_is_refused_or_leaves_nginx_conf_as_it_was(baseline, tls_dir, tmp_path, place, data):
    kind, loc = place
    given_text = original(kind, loc)
    # Whole hostile strings, printable ASCII, and the baseline's own value with hostile text spliced in.
    spliced = st.tuples(st.integers(0, len(given_text)), st.one_of(HOSTILE, NGINX_SPECIAL)).map(
        lambda cut: given_text[:cut[0]] + cut[1] + given_text[cut[0]:])
    text = data.draw(st.one_of(HOSTILE, PRINTABLE, NGINX_SPECIAL, spliced, spliced), label="text")
    raw = injected(kind, loc, text)
    try:
        load_settings(raw)
    except ConfigError as error:
        assert all(line.startswith("berth:") for line in str(error).split("\n"))
        event("refused")
        return
    event("accepted")
    work = tmp_path / f"w{time.monotonic_ns()}"
    work.mkdir()
    got = checked_conf(raw, tls_dir, work)
    if text == "_" and "server_names" in loc:
        # nginx's catch-all name, which berth renders on purpose as its own kind of site (no redirect
        # server of its own: test_underscore_site_is_the_default_server_and_replaces_the_catch_all in
        # tests/plan/test_nginx.py): a meaning, not an injection. nginx -t passed.
        event("catch-all server name")
        return
    plain = re.sub(r"[^A-Za-z0-9/.]", "x", text)
    try:
        load_settings(injected(kind, loc, plain))
    except ConfigError:
        expected = baseline  # the plain twin collides with another key or route: compare with the baseline
    else:
        twin = tmp_path / f"t{time.monotonic_ns()}"
        twin.mkdir()
        expected = checked_conf(injected(kind, loc, plain), tls_dir, twin)
    assert got == expected, (place, text)


# -- redis.conf in a real redis-server ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


PASSWORDS = st.text(alphabet=st.sampled_from(list("aZ09 ") + ['"', "'", "\\", "$", "{", "}", ";", "#", "\n", "\r",
                                                              "\x00", "é", "*", "%", "\t", "`"]), min_size=1,
                    max_size=24)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(password=PASSWORDS)
def test_a_redis_password_is_refused_or_authenticates_and_adds_no_directive(tmp_path, password):
    try:
        redis = load_settings({**BASE, "redis": {"password": password}}).redis
    except ConfigError as error:
        assert str(error).startswith("berth:redis.password: ")
        event("refused")
        return
    event("accepted")
    assert redis is not None
    port = free_port()
    work = tmp_path / f"r{port}"
    work.mkdir()
    conf = redis_conf(redis, password).replace("bind * -::*", "bind 127.0.0.1").replace(
        "port 6379", f"port {port}").replace("dir /data", f"dir {work}")
    (work / "redis.conf").write_text(conf)
    server = subprocess.Popen([tool("redis-server"), str(work / "redis.conf")], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
    try:
        cli = [tool("redis-cli"), "-h", "127.0.0.1", "-p", str(port), "--no-auth-warning"]
        env = {**os.environ, "REDISCLI_AUTH": password}
        for _ in range(100):
            answer = subprocess.run([*cli, "ping"], capture_output=True, text=True, env=env, timeout=10)
            if answer.stdout.strip() == "PONG" or server.poll() is not None:
                break
            time.sleep(0.05)
        assert server.poll() is None, server.stdout.read().decode() if server.stdout else ""
        assert answer.stdout.strip() == "PONG", answer.stdout + answer.stderr
        got = subprocess.run([*cli, "config", "get", "requirepass"], capture_output=True, text=True, env=env,
                             timeout=10).stdout.split("\n")
        assert got[:2] == ["requirepass", password]
        replica = subprocess.run([*cli, "config", "get", "replicaof"], capture_output=True, text=True, env=env,
                                 timeout=10).stdout.split("\n")
        assert replica[:2] == ["replicaof", ""]
        wrong = subprocess.run([*cli, "ping"], capture_output=True, text=True, timeout=10,
                               env={**os.environ, "REDISCLI_AUTH": password + "x"})
        assert "PONG" not in wrong.stdout
    finally:
        server.terminate()
        server.wait(timeout=30)
