"""start_order: jobs and apps are declared dependencies first, deterministically."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from berth.plan.order import start_order
from berth.settings import load_settings


def stack(apps: dict[str, list[str]], jobs: dict[str, list[str]] | None = None, **extra: object):
    return load_settings({
        "environment": "dev",
        "redis": {},
        "apps": {name: {"image": f"ghcr.io/acme/{name}:1", "port": 8000, "depends_on": deps}
                 for name, deps in apps.items()},
        "jobs": {name: {"image": f"ghcr.io/acme/{name}:1", "depends_on": deps} for name, deps in (jobs or {}).items()},
        **extra,
    })


def test_baseline_order(valid):
    assert start_order(valid()) == [("jobs", "migrate"), ("apps", "backend"), ("apps", "frontend")]


def test_ties_keep_jobs_then_apps_by_name():
    assert start_order(stack({"zeta": [], "alpha": []}, {"seed": [], "migrate": []})) == [
        ("jobs", "migrate"), ("jobs", "seed"), ("apps", "alpha"), ("apps", "zeta"),
    ]


def test_dependencies_come_first_across_kinds():
    settings = stack(
        {"api": ["migrate", "redis"], "web": ["seed", "api"], "admin": []},
        {"migrate": ["redis"], "seed": ["api"]},
    )
    assert start_order(settings) == [
        ("jobs", "migrate"), ("apps", "api"), ("jobs", "seed"), ("apps", "admin"), ("apps", "web"),
    ]


def test_data_services_are_not_in_the_order():
    assert start_order(stack({"api": ["redis"]})) == [("apps", "api")]


def test_disabled_workloads_are_left_out():
    settings = load_settings({
        "environment": "dev",
        "apps": {"api": {"image": "a:1", "port": 80}, "off": {"image": "b:1", "port": 80, "enabled": False}},
        "jobs": {"gone": {"image": "c:1", "enabled": False, "depends_on": ["off"]}},
    })
    assert start_order(settings) == [("apps", "api")]


def test_no_workloads():
    assert start_order(load_settings({"environment": "dev"})) == []


@st.composite
def dags(draw):
    """Apps and jobs where each depends only on workloads drawn before it, so there is no cycle."""
    count = draw(st.integers(min_value=1, max_value=8))
    names = [f"w{index}" for index in range(count)]
    kinds = draw(st.lists(st.sampled_from(["apps", "jobs"]), min_size=count, max_size=count))
    deps = [draw(st.lists(st.sampled_from(names[:index]), unique=True)) if index else [] for index in range(count)]
    # Shuffle the names so that the dependency order is not the alphabetical one.
    labels = draw(st.permutations(names))
    rename = dict(zip(names, labels, strict=True))
    apps = {rename[n]: [rename[d] for d in deps[i]] for i, n in enumerate(names) if kinds[i] == "apps"}
    jobs = {rename[n]: [rename[d] for d in deps[i]] for i, n in enumerate(names) if kinds[i] == "jobs"}
    return apps, jobs


@settings(max_examples=200, deadline=None)
@given(dags())
def test_every_dependency_is_placed_before_its_dependents(graph):
    apps, jobs = graph
    order = start_order(stack(apps, jobs))
    assert sorted(order) == sorted([("apps", n) for n in apps] + [("jobs", n) for n in jobs])
    position = {name: index for index, (_, name) in enumerate(order)}
    for name, deps in {**apps, **jobs}.items():
        assert all(position[dep] < position[name] for dep in deps), (order, name, deps)
