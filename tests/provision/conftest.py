"""The provisioning tier's session fixture: the lab (provision_lab.py), started once and always removed."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator

import pytest
from provision_lab import IMAGE, VM_LIKE, Lab, Vps, build_image, container_ip, docker, host_key_of, wait_for_ssh


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """Start the VPS and the internet container; remove both (and their volumes) at the end."""
    if docker("info", check=False).returncode != 0:
        pytest.fail("the provisioning tier needs a Docker engine (run .ci/engine.sh)")
    build_image()
    prefix = f"berth-prov-{secrets.token_hex(3)}"
    tmp = tmp_path_factory.mktemp("provision")
    key = tmp / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "berth-provision-test", "-f", str(key)],
                   check=True)
    network, vps_name, internet = f"{prefix}-net", f"{prefix}-vps", f"{prefix}-internet"
    docker("network", "create", "--label", "berth.provision.test=1", network)
    try:
        docker("run", "-d", "--name", vps_name, "--hostname", "vps", "--network", network, *VM_LIKE,
               "-v", "/var/lib/docker", "-e", f"AUTHORIZED_KEY={key.with_suffix('.pub').read_text().strip()}",
               "--label", "berth.provision.test=1", IMAGE)
        docker("run", "-d", "--name", internet, "--network", network, "--label", "berth.provision.test=1",
               "--entrypoint", "sleep", IMAGE, "infinity")
        ip = container_ip(vps_name)
        host_key = host_key_of(vps_name)
        known_hosts = tmp / "known_hosts"
        known_hosts.write_text(f"{ip} {host_key}\n")
        vps = Vps(vps_name, ip, key, known_hosts, host_key)
        wait_for_ssh(vps)
        yield Lab(prefix, network, vps, internet)
    finally:
        for container in (vps_name, internet):
            docker("rm", "-f", "-v", container, check=False)
        docker("network", "rm", network, check=False)

