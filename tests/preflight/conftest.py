"""Preflight tier: a real sshd and a real TLS dockerd on loopback (preflight_servers.py), once per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from preflight_servers import Sshd, TlsEngine, running_sshd, running_tls_engine


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    with running_sshd(tmp_path_factory.mktemp("preflight-sshd")) as server:
        yield server


@pytest.fixture(scope="session")
def tls_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsEngine]:
    with running_tls_engine(tmp_path_factory.mktemp("preflight-dockerd")) as engine:
        yield engine
