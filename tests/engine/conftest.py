"""Engine tier: every blueprint's synthesized desired state, applied to a real Docker engine and probed.

A session fixture makes sure dockerd runs (it is started when `docker info` fails) and that the local
images exist (tests/engine/images/build.py); either failing FAILS the tier, nothing is skipped. Each
test class deploys one blueprint once (class scope), shares it across its tests and always tears it
down; leftovers of an earlier run (label berth.engine.stack, names `<name>-engine-*`) are removed first.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest
from engine_host import METRICS, ready_engine

HERE = Path(__file__).resolve().parent

# Tests of a deployment run in this order (stable within a class); anything unlisted runs after them.
ORDER = (
    "test_every_container_is_healthy",
    "test_jobs_ran_to_exit_0",
    "test_read_back_matches_synth",
    "test_the_class_covers_its_blueprint",
    "test_excluded_services_are_listed",
    "test_routes_reach_their_apps",
    "test_http_redirects_to_https",
    "test_tls_versions",
    "test_security_headers",
    "test_sse_is_not_buffered",
    "test_burst_over_rate_limit_is_refused",
    "test_apps_reach_their_dependencies",
    "test_role_refused_on_other_databases",
    "test_only_the_proxy_publishes_ports",
    "test_networks_isolate_the_stack",
    "test_data_network_has_no_way_out",
    "test_kill_9_restarts_every_service",
    "test_postgres_outage_fails_health_then_recovers",
    "test_data_survives_image_bump",
    "test_zero_downtime_replace",
    "test_dockerd_restart_brings_everything_back",
    "test_prod_like_teardown_keeps_data_volumes",
    "test_comes_back_on_retained_volumes_with_new_passwords",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order each engine class's tests by ORDER (destructive probes last), keeping the classes' order."""
    engine = [item for item in items if Path(str(item.fspath)).parent == HERE]
    if not engine:
        return
    first_seen: dict[object, int] = {}
    for position, item in enumerate(engine):
        first_seen.setdefault(item.parent, position)
    rank = {name: i for i, name in enumerate(ORDER)}

    def key(item: pytest.Item) -> tuple[int, int, int]:
        return first_seen[item.parent], rank.get(item.originalname, len(ORDER)), engine.index(item)

    ordered = iter(sorted(engine, key=key))
    items[:] = [next(ordered) if Path(str(item.fspath)).parent == HERE else item for item in items]


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001 - pytest's hook signature
    if METRICS:
        terminalreporter.section("engine tier measurements")
        for name, values in METRICS.items():
            terminalreporter.write_line(f"{name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))


# -- session fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def engine() -> Iterator[docker.DockerClient]:
    """A client of the local engine, started if needed, with the berth-engine/* images built."""
    engine_client = ready_engine("engine")
    yield engine_client
    engine_client.close()


@pytest.fixture(scope="session", autouse=True)
def session_clock() -> Iterator[None]:
    begin = time.monotonic()
    yield
    METRICS.setdefault("session", {})["engine_tier_seconds"] = round(time.monotonic() - begin, 1)
