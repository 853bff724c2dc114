"""Resources accept only values the docker provider reads back unchanged; anything else is one line naming the key."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(("path", "value", "rule"), [
    ("apps.backend.resources.limits.cpus", 0.05,
     '0.05 CPUs is read back by the docker provider as "0.1" (its nanoInt64ToDecimalString rounds it), which '
     "would replace the container on every up; use e.g. 0.1 or 0.049"),
    ("apps.backend.resources.limits.cpus", 0.005, "0.005 is below 0.01, the smallest CPU limit the kernel applies"),
    ("apps.backend.resources.limits.cpus", 1.0000000001, "has more than 9 decimals"),
    ("apps.backend.resources.limits.memory", "5m", "5m is below docker's minimum of 6m"),
    ("apps.backend.resources.reservations.memory", "1000000", "is not a whole number of MiB"),
    ("apps.backend.resources.limits.memory_swap", "1g", "is memory plus swap, so it needs limits.memory"),
    ("apps.backend.resources.reservations.memory_swap", "8g", "swap is a limit; set limits.memory_swap"),
], ids=["cpus-read-back-as-another", "cpus-below-0.01", "cpus-too-precise", "memory-below-6m", "memory-not-mib",
        "swap-below-memory", "swap-reserved"])
def test_resources_the_provider_cannot_keep(assert_config_error, path, value, rule):
    # the baseline reserves 1 CPU and 2g; reserve less, so that only the rule under test can fail
    low = {"apps.backend.resources.reservations": {"cpus": 0.001, "memory": "6m"}}
    assert_config_error(path, rule, {**low, path: value})


@pytest.mark.parametrize("cpus", [0.011, 0.1, 0.25, 1, 1.5, 2, 10, 10.25, 100])
def test_cpu_limits_that_read_back_unchanged_are_accepted(valid, cpus):
    changes = {"apps.backend.resources.limits.cpus": cpus, "apps.backend.resources.reservations.cpus": 0.01}
    assert valid(changes).apps["backend"].resources.limits.cpus == cpus


def test_memory_swap_is_accepted_from_memory_up(valid):
    limits = valid({"apps.backend.resources.limits.memory_swap": "4g"}).apps["backend"].resources.limits
    assert (limits.memory, limits.memory_swap) == (4 * 1024**3, 4 * 1024**3)
