"""Render tier: files berth generates, checked by the real programs from Debian packages.

The throwaway servers live in ``servers.py`` (importable as ``servers``: pytest puts this directory on
``sys.path`` because it holds a conftest and no ``__init__.py``). A missing program fails; nothing skips.
"""

import subprocess
from pathlib import Path

import pytest
from servers import tool

from berth.plan.nginx import TLS_CERT, TLS_KEY


@pytest.fixture(scope="session")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A self-signed certificate and key, as the proxy finds them in its tls_dir."""
    directory = tmp_path_factory.mktemp("tls")
    subprocess.run([tool("openssl"), "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", "/CN=berth-render-test", "-keyout", str(directory / TLS_KEY),
                    "-out", str(directory / TLS_CERT)], check=True, capture_output=True)
    return directory
