"""Offline synth of every blueprint under every stack, run once per session and shared by the tests.

Each run also records the secret values the mocks generated (random passwords, private keys), so
tests can prove that none of them leaks into the masked synth output.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import berth.synth
from berth import tlsmock
from berth.settings import Settings, deep_merge, from_stack_files, load_settings

ROOT = Path(__file__).resolve().parents[2]
BLUEPRINTS = sorted(path.stem for path in (ROOT / "blueprints").glob("*.yaml"))
STACKS = ("dev", "staging", "prod")
MATRIX = [(stack, blueprint) for blueprint in BLUEPRINTS for stack in STACKS]


@dataclass
class Synth:
    """One synth run: its result, the settings behind it, and every secret value the mocks made."""

    stack: str
    blueprint: str
    settings: Settings
    result: dict[str, Any]
    generated: list[str] = field(default_factory=list)

    @property
    def resources(self) -> list[dict[str, Any]]:
        return self.result["resources"]

    def of_type(self, suffix: str) -> list[dict[str, Any]]:
        """Records whose type ends with e.g. "container:Container" or "Volume"."""
        return [record for record in self.resources if record["type"].endswith(suffix)]

    @property
    def containers(self) -> list[dict[str, Any]]:
        return self.of_type("/container:Container")

    def named(self, name: str) -> dict[str, Any]:
        matches = [record for record in self.resources if record["name"] == name]
        assert len(matches) == 1, name
        return matches[0]

    def children(self, parent: str) -> list[dict[str, Any]]:
        return [record for record in self.resources if record["parent"] == parent]

    def docker_name(self, *parts: str) -> str:
        return "-".join((self.settings.name, self.settings.environment, *parts))


@contextlib.contextmanager
def recording_secrets(into: list[str]) -> Iterator[None]:
    """Record every password and private key the synth mocks hand out while inside the block."""
    password, private_key = berth.synth._password, tlsmock.private_key

    def recorded_password(length: int, special: bool) -> str:
        value = password(length, special)
        into.append(value)
        return value

    def recorded_private_key(*args: Any, **kwargs: Any) -> dict[str, str]:
        pems = private_key(*args, **kwargs)
        into.append(pems["privateKeyPem"])
        # The base64 body on one line too, in case a consumer re-wraps the PEM. (Single lines are not
        # recorded: the last one mostly encodes the public key, which the certificate rightly shows.)
        into.append("".join(line for line in pems["privateKeyPem"].splitlines() if not line.startswith("-----")))
        return pems

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(berth.synth, "_password", recorded_password)
        patch.setattr(tlsmock, "private_key", recorded_private_key)
        yield


def run_synth(stack: str, blueprint: str, reveal: bool = False, overrides: dict[str, Any] | None = None) -> Synth:
    """Synth one stack with a blueprint (and stack-config overrides), recording generated secrets."""
    raw = deep_merge(from_stack_files(stack), overrides or {})
    settings = load_settings(raw, blueprint=blueprint)
    generated: list[str] = []
    with recording_secrets(generated):
        result = berth.synth.synth(stack, blueprint, reveal=reveal, raw_overrides=overrides)
    return Synth(stack, blueprint, settings, result, generated)


_CACHE: dict[tuple[str, str], Synth] = {}


def cached_synth(stack: str, blueprint: str) -> Synth:
    """The masked synth of (stack, blueprint), computed once per session."""
    if (stack, blueprint) not in _CACHE:
        _CACHE[stack, blueprint] = run_synth(stack, blueprint)
    return _CACHE[stack, blueprint]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests that take `synthesized` run once per stack x blueprint, with ids like "prod-praxifi"."""
    if "synthesized" in metafunc.fixturenames:
        metafunc.parametrize("synthesized", MATRIX, ids=[f"{s}-{b}" for s, b in MATRIX], indirect=True)


@pytest.fixture
def synthesized(request: pytest.FixtureRequest) -> Synth:
    """The cached synth of this test's (stack, blueprint)."""
    stack, blueprint = request.param
    return cached_synth(stack, blueprint)


@pytest.fixture(scope="session")
def synth_of() -> Callable[[str, str], Synth]:
    """The cached masked synth of any (stack, blueprint)."""
    return cached_synth


@pytest.fixture(scope="session")
def synth_with() -> Callable[..., Synth]:
    """An uncached synth with stack-config overrides or revealed secrets, for the tests that need one."""
    return run_synth
