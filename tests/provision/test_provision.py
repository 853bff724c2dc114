"""Provisioning a real Debian system over real SSH: the rendered scripts, run as the component runs them.

The tests run in file order and build on each other: the first provisions the bare system, the
later ones read its state, change a setting, probe the firewall from outside, get banned by
fail2ban, and restart the inner dockerd.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest
from conftest import Lab

from berth.plan.provision import STEPS, Script, scripts
from berth.settings import Settings, deep_merge, load_settings

EXTRA_TCP = 8443
TIMES: dict[str, float] = {}


def settings_for(lab: Lab, **provision: Any) -> Settings:
    """A staging stack with Elasticsearch whose host is the lab's VPS, provisioned as root."""
    raw = {
        "environment": "staging",
        "host": {"url": f"ssh://deploy@{lab.vps.ip}:22", "provision": deep_merge({
            "enabled": True,
            "ssh": {"user": "root", "private_key": lab.vps.key.read_text(), "host_key": lab.vps.host_key},
            "firewall": {"allow_tcp": [EXTRA_TCP]},
            "fail2ban": {"max_retry": 3, "find_time": "10m", "ban_time": "10m"},
        }, provision)},
        "elk": {},
    }
    return load_settings(raw)


def provision(lab: Lab, settings: Settings, only: set[str] | None = None) -> dict[str, str]:
    """Run the (chosen) scripts in order; each step's summary line."""
    summaries = {}
    for script in scripts(settings):
        if only is None or script.step in only:
            out = lab.vps.run_script(script, settings.host.provision.ssh)
            summaries[script.step] = summary_of(script, out)
    return summaries


def summary_of(script: Script, stdout: str) -> str:
    lines = [line for line in stdout.splitlines() if line.startswith(f"berth-provision: {script.step}: ")]
    assert len(lines) == 1, stdout
    return lines[0].split(": ", 2)[2]


@pytest.fixture(scope="module")
def first(lab: Lab) -> dict[str, str]:
    """The first provisioning of the bare system."""
    start = time.monotonic()
    summaries = provision(lab, settings_for(lab))
    TIMES["first"] = time.monotonic() - start
    return summaries


def test_first_run_changes_every_step(first, lab):
    assert list(first) == list(STEPS)
    assert all(summary.startswith("changed: ") for summary in first.values()), first


def test_second_run_changes_nothing_and_says_so(first, lab):
    start = time.monotonic()
    again = provision(lab, settings_for(lab))
    TIMES["second"] = time.monotonic() - start
    print(f"provisioning: first run {TIMES['first']:.1f}s, second run {TIMES['second']:.1f}s")
    assert again == {step: "unchanged" for step in STEPS}


def test_deploy_user_runs_docker_over_ssh_with_the_verified_host_key(first, lab):
    info = lab.vps.ssh("docker info --format '{{json .}}'", user="deploy").stdout
    assert json.loads(info)["ServerVersion"].startswith("20.10")
    groups = lab.vps.ssh("id -nG", user="deploy").stdout.split()
    assert "docker" in groups and "sudo" not in groups


def test_daemon_json_is_in_effect(first, lab):
    info = json.loads(lab.vps.ssh("docker info --format '{{json .}}'", user="deploy").stdout)
    assert (info["LiveRestoreEnabled"], info["LoggingDriver"]) == (True, "json-file")
    daemon = json.loads(lab.vps.exec("cat", "/etc/docker/daemon.json").stdout)
    assert daemon["log-opts"] == {"max-file": "3", "max-size": "10m"}
    # no TCP listener: dockerd holds no listening TCP socket
    listening = lab.vps.exec("ss", "-Hltnp").stdout
    assert "dockerd" not in listening, listening


def test_ufw_shows_exactly_the_expected_rules(first, lab):
    status = lab.vps.exec("ufw", "status", "verbose").stdout
    assert "Status: active" in status
    assert "Default: deny (incoming), allow (outgoing), deny (routed)" in status
    table = re.split(r"^--\s+------\s+----$", status, maxsplit=1, flags=re.MULTILINE)[-1]
    rules = [re.sub(r"\s{2,}", " | ", line.strip()) for line in table.splitlines() if line.strip()]
    expected = [f"{port}/tcp | ALLOW IN | Anywhere" for port in (22, 80, 443, EXTRA_TCP)]
    expected += [f"{port}/tcp (v6) | ALLOW IN | Anywhere (v6)" for port in (22, 80, 443, EXTRA_TCP)]
    assert rules == expected, status


def test_fail2ban_has_the_sshd_jail(first, lab):
    status = lab.vps.exec("fail2ban-client", "status", "sshd").stdout
    assert "Status for the jail: sshd" in status
    jail = lab.vps.exec("fail2ban-client", "get", "sshd", "maxretry").stdout.strip()
    assert jail == "3"


def test_max_map_count_for_elasticsearch_is_set_and_persisted(first, lab):
    assert lab.vps.exec("sysctl", "-n", "vm.max_map_count").stdout.strip() == "262144"
    assert "vm.max_map_count = 262144" in lab.vps.exec("cat", "/etc/sysctl.d/90-berth.conf").stdout


def test_sshd_takes_no_passwords(first, lab):
    effective = lab.vps.exec("sshd", "-T").stdout.splitlines()
    for line in ("passwordauthentication no", "kbdinteractiveauthentication no", "permitemptypasswords no",
                 "permitrootlogin without-password"):
        assert line in effective, line
    # and for real: a password login is not even offered
    probe = lab.vps.ssh("true", check=False)
    assert probe.returncode == 0
    offered = __import__("subprocess").run(
        ["ssh", "-F", "/dev/null", "-v", "-o", "BatchMode=yes", "-o", "PubkeyAuthentication=no",
         "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={lab.vps.known_hosts}",
         f"root@{lab.vps.ip}", "true"], capture_output=True, text=True, timeout=30)
    assert offered.returncode != 0
    assert "Authentications that can continue: publickey\n" in offered.stderr


def test_unattended_upgrades_are_configured(first, lab):
    dump = lab.vps.exec("apt-config", "dump").stdout
    assert 'APT::Periodic::Unattended-Upgrade "1";' in dump
    assert 'Unattended-Upgrade::Automatic-Reboot "false";' in dump
