"""Two settings never map to one Pulumi resource name: generated stacks with near-colliding names.

App names, image references, RabbitMQ users (and the admin), Postgres databases and declared
secrets are drawn from pools built to collide once punctuation is folded (``web:2.0`` and
``web-2:0``, a user ``admin`` beside an admin ``root``). Each stack is either refused by settings,
naming a key, or synthesized through the real program, and then every resource name is unique:
a duplicate URN would fail only under the real engine, never under the mocks. (About 1 s a stack.)
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from berth.errors import ConfigError
from berth.synth import synth

IMAGES = ["web:2.0", "web-2:0", "web:2-0", "web2:0", "a/b:1", "a-b:1", "a/b-1:x", "a:b-1-x", "web-2-0:latest",
          f"web@sha256:{'a' * 64}", f"web-2@sha256:{'a' * 64}"]
APP_NAMES = ["web", "web-2", "web-0", "a", "a-0", "a-1", "b", "job", "api"]
USERS = ["admin", "root", "a", "a-b", "a.b", "a_b", "worker"]
DATABASES = ["a", "a_b", "b", "shop"]
SECRETS = ["a", "a-b", "a_b", "jwt"]


@st.composite
def stacks(draw: st.DrawFn) -> dict[str, Any]:
    apps = {name: {"image": draw(st.sampled_from(IMAGES)), "port": 8000 + i,
                   "replicas": draw(st.integers(1, 3))}
            for i, name in enumerate(draw(st.lists(st.sampled_from(APP_NAMES), min_size=1, max_size=4, unique=True)))}
    jobs = {name: {"image": draw(st.sampled_from(IMAGES))}
            for name in draw(st.lists(st.sampled_from(APP_NAMES), max_size=2, unique=True))}
    users = draw(st.lists(st.sampled_from(USERS), max_size=3, unique=True))
    return {
        "blueprint": None,  # an unset key: the stack's own config alone
        "apps": apps,
        "jobs": jobs,
        "rabbitmq": {"admin_user": draw(st.sampled_from(["admin", "root"])), "users": {u: {} for u in users}},
        "postgres": {"databases": {d: {} for d in draw(st.lists(st.sampled_from(DATABASES), max_size=3,
                                                                 unique=True))}},
        "secrets": {s: {} for s in draw(st.lists(st.sampled_from(SECRETS), max_size=3, unique=True))},
    }


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(overrides=stacks())
def test_generated_stacks_are_refused_or_have_unique_resource_names(overrides):
    try:
        result = synth("dev", raw_overrides=overrides)
    except ConfigError as error:
        assert all(line.startswith("berth:") for line in str(error).split("\n"))
        event("refused")
        return
    event("synthesized")
    # A URN is the parent's type chain, the type and the name: unique (type, name) pairs are unique URNs.
    # (An app "web-0" beside the first container of app "web" shares a name, not a type.)
    names = [(record["type"], record["name"]) for record in result["resources"]]
    assert len(names) == len(set(names)), sorted(n for n in set(names) if names.count(n) > 1)
