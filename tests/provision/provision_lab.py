"""The provisioning tier's lab: a bare Debian 12 "VPS" in a container, reached over real SSH, and an "internet".

The target runs tests/engine/images/provision-target (openssh-server, tini, no systemd), with
/var/lib/docker on a volume so the Docker engine the scripts install works inside it. Its host key
is read out of band (``docker exec``, as from a provider's console) into a known_hosts file, and
every SSH call uses StrictHostKeyChecking=yes with that file only. Every container, network and
volume is named ``berth-prov-<run>-*`` and removed at the end; nothing else on the engine is touched.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from berth.plan.provision import Script, remote_command, remote_stdin
from berth.settings.provision import SshConnection

ENGINE = Path(__file__).resolve().parents[1] / "engine"
IMAGE = "berth-engine/provision-target:latest"
# What --privileged would give, minus CAP_SYS_RESOURCE, which this sandbox cannot grant (docker's
# --privileged asks for it and fails here): every other capability, no seccomp/AppArmor filter,
# writable /proc/sys, and all devices. UFW's netfilter rules and an inner dockerd need no more.
VM_LIKE = ("--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE", "--security-opt", "seccomp=unconfined",
           "--security-opt", "apparmor=unconfined", "--security-opt", "systempaths=unconfined",
           "--device-cgroup-rule", "a *:* rwm")


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])} ... exited {result.returncode}: {result.stderr.strip()}")
    return result


def build_image() -> None:
    """The VPS image, built through the engine tier's builder (cached by content)."""
    sys.path.insert(0, str(ENGINE))
    from engine_host import load_build_module

    build = load_build_module()
    try:
        build.ensure_images(("provision-target",))
    except build.BuildError as error:
        pytest.fail(f"the provisioning tier's image could not be built: {error}")


def container_ip(name: str) -> str:
    """A container's address on its (one) network."""
    return docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name).stdout.strip()


@dataclass
class Vps:
    """The provisioned system: its address, the test's SSH identity and the verified known_hosts."""

    name: str
    ip: str
    key: Path
    known_hosts: Path
    host_key: str

    def ssh_args(self, user: str = "root", identity: Path | None = None) -> list[str]:
        return ["ssh", "-F", "/dev/null", "-i", str(identity or self.key), "-o", "IdentitiesOnly=yes",
                "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "ConnectTimeout=10", f"{user}@{self.ip}"]

    def ssh(self, command: str, user: str = "root", stdin: str = "", check: bool = True,
            timeout: float = 300) -> subprocess.CompletedProcess:
        """Run command on the VPS over SSH, as pulumi-command's remote.Command does (command + stdin)."""
        result = subprocess.run([*self.ssh_args(user), command], input=stdin, capture_output=True, text=True,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"ssh {user}@{self.ip} {command!r} exited {result.returncode}:\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def run_script(self, script: Script, ssh: SshConnection) -> str:
        """One provisioning step, exactly as the component has pulumi-command run it; its stdout."""
        return self.ssh(remote_command(script, ssh), stdin=remote_stdin(script, ssh)).stdout

    def exec(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        """Out of band, as root inside the system (for reading state, never for provisioning)."""
        return docker("exec", self.name, *command, check=check)


@dataclass
class Lab:
    """The VPS and the container that plays the internet, on one network of their own."""

    prefix: str
    network: str
    vps: Vps
    internet: str

    def reachable(self, port: int, timeout: float = 3) -> bool:
        """Whether a TCP connection from the internet container to the VPS's port completes."""
        probe = f"timeout {timeout} bash -c '</dev/tcp/{self.vps.ip}/{port}'"
        return docker("exec", self.internet, "sh", "-c", probe, check=False).returncode == 0


def host_key_of(container: str) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        result = docker("exec", container, "cat", "/etc/ssh/ssh_host_ed25519_key.pub", check=False)
        if result.returncode == 0 and result.stdout.startswith("ssh-ed25519 "):
            return " ".join(result.stdout.split()[:2])
        time.sleep(0.3)
    pytest.fail(f"{container} made no ed25519 host key: {docker('logs', container, check=False).stderr}")


def wait_for_ssh(vps: Vps) -> None:
    deadline = time.monotonic() + 30
    while True:
        result = vps.ssh("true", check=False, timeout=15)
        if result.returncode == 0:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"no SSH to {vps.ip}: {result.stderr}")
        time.sleep(0.5)
