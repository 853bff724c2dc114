"""Provisioning a real Debian system over real SSH: the rendered scripts, run as the component runs them.

The tests run in file order and build on each other: the first provisions the bare system, the
later ones read its state, change a setting, probe the firewall from outside, get banned by
fail2ban, and restart the inner dockerd.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from typing import Any

import pytest
from provision_lab import Lab, container_ip, docker

from berth.plan.provision import (
    SSHD_DROP_IN,
    STEPS,
    Script,
    docker_ssh_opts,
    remote_command,
    remote_stdin,
    scripts,
)
from berth.settings import Settings, deep_merge, load_settings
from berth.settings.provision import SshConnection, target

EXTRA_TCP = 8443
SSH = SshConnection(user="root")
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
    # and for real: a password login is not even offered. Asked from the internet container, since
    # the failed login counts for fail2ban, and a ban of the test runner's own address would cut it off.
    offered = docker("exec", lab.internet, "ssh", "-F", "/dev/null", "-v", "-o", "BatchMode=yes",
                     "-o", "PubkeyAuthentication=no", "-o", "StrictHostKeyChecking=no",
                     "-o", "UserKnownHostsFile=/dev/null", f"root@{lab.vps.ip}", "true", check=False)
    assert offered.returncode == 255
    assert "Authentications that can continue: publickey\n" in offered.stderr


def test_unattended_upgrades_are_configured(first, lab):
    dump = lab.vps.exec("apt-config", "dump").stdout
    assert 'APT::Periodic::Unattended-Upgrade "1";' in dump
    assert 'Unattended-Upgrade::Automatic-Reboot "false";' in dump


def test_one_changed_setting_reruns_only_its_script(first, lab):
    before = {s.step: remote_command(s, SSH) for s in scripts(settings_for(lab))}
    changed = settings_for(lab, fail2ban={"max_retry": 4})
    after = {s.step: remote_command(s, SSH) for s in scripts(changed)}
    # pulumi-command runs a Command again when its `create` differs: only fail2ban's does
    assert [step for step in STEPS if before[step] != after[step]] == ["fail2ban"]
    rerun = provision(lab, changed, only={"fail2ban"})
    assert rerun["fail2ban"] == "changed: wrote /etc/fail2ban/jail.d/berth.local; reloaded fail2ban"
    assert lab.vps.exec("fail2ban-client", "get", "sshd", "maxretry").stdout.strip() == "4"
    # and back, so the later tests see the settings of the first run
    assert provision(lab, settings_for(lab), only={"fail2ban"})["fail2ban"].startswith("changed: wrote")
    assert provision(lab, settings_for(lab)) == {step: "unchanged" for step in STEPS}


def test_a_rule_added_by_hand_is_removed(first, lab):
    lab.vps.exec("ufw", "allow", "9000/tcp")
    assert provision(lab, settings_for(lab), only={"firewall"}) == {"firewall": "changed: removed ufw allow 9000/tcp"}
    assert "9000" not in lab.vps.exec("ufw", "status").stdout


# -- the firewall from outside ---------------------------------------------------------------------


TINY = "berth-prov-tiny"


@pytest.fixture(scope="module")
def listeners(first, lab):
    """Inside the VPS: containers publishing 80, 443 and 0.0.0.0:9999, and a host process on 8081."""
    # a one-file image from the system's busybox: the inner engine has no registry either
    lab.vps.ssh(f"set -e; d=$(mktemp -d); mkdir $d/bin $d/www; cp /bin/busybox $d/bin/; echo ok >$d/www/index.html; "
                f"tar -C $d -c . | docker import -c 'ENTRYPOINT [\"/bin/busybox\"]' - {TINY} >/dev/null",
                user="deploy")
    for name, port in (("web80", 80), ("web443", 443), ("published9999", 9999)):
        lab.vps.ssh(f"docker run -d --name {name} -p 0.0.0.0:{port}:8000 {TINY} httpd -f -p 8000 -h /www",
                    user="deploy")
    lab.vps.exec("sh", "-c", "busybox httpd -p 8081 -h /tmp")
    listening = lab.vps.exec("ss", "-Hltn").stdout
    for port in (80, 443, 8081, 9999):
        assert f":{port} " in listening, listening
    return lab


def test_ssh_web_ports_and_the_extra_port_are_reachable_from_outside(listeners):
    assert {port: listeners.reachable(port) for port in (22, 80, 443)} == {22: True, 80: True, 443: True}


def test_a_host_listener_on_another_port_is_not(listeners):
    assert not listeners.reachable(8081)
    # while it does answer on the system itself
    assert listeners.vps.exec("sh", "-c", "timeout 3 bash -c '</dev/tcp/127.0.0.1/8081'").returncode == 0


def test_a_container_publishing_9999_is_not(listeners):
    assert not listeners.reachable(9999)
    # Docker did publish it: from the system itself it answers
    assert listeners.vps.ssh("busybox wget -qO- http://127.0.0.1:9999/", user="deploy").stdout == "ok\n"


def test_the_extra_allowed_port_reaches_a_container_publishing_it(listeners):
    listeners.vps.ssh(f"docker run -d --name web{EXTRA_TCP} -p {EXTRA_TCP}:8000 {TINY} httpd -f -p 8000 -h /www",
                      user="deploy")
    deadline = time.monotonic() + 10
    while not listeners.reachable(EXTRA_TCP) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert listeners.reachable(EXTRA_TCP)


def test_containers_still_reach_out(listeners):
    """DOCKER-USER drops only what comes in: a container's own connections out still work."""
    docker("exec", listeners.internet, "sh", "-c", "mkdir -p /srv && echo out >/srv/index.html && "
                                                   "busybox httpd -p 8000 -h /srv")
    outside = f"http://{container_ip(listeners.internet)}:8000/"
    fetched = listeners.vps.ssh(f"docker run --rm {TINY} wget -qO- {outside}", user="deploy").stdout
    assert fetched == "out\n"


# -- live-restore and fail2ban, for real -----------------------------------------------------------


def test_a_running_container_survives_a_dockerd_restart(listeners):
    vps = listeners.vps
    started = vps.ssh("docker inspect -f '{{.State.Pid}} {{.State.StartedAt}}' web80", user="deploy").stdout
    vps.exec("service", "docker", "restart")
    deadline = time.monotonic() + 30
    while vps.ssh("docker info >/dev/null", user="deploy", check=False).returncode != 0:
        assert time.monotonic() < deadline, "dockerd did not come back"
        time.sleep(0.5)
    after = vps.ssh("docker inspect -f '{{.State.Pid}} {{.State.StartedAt}}' web80", user="deploy").stdout
    assert after == started  # the same process, never restarted
    assert listeners.reachable(80)


def test_repeated_failed_logins_get_the_client_banned(listeners):
    lab = listeners
    client_ip = container_ip(lab.internet)
    assert lab.reachable(22)
    attempts = 0
    deadline = time.monotonic() + 60
    while client_ip not in banned(lab) and time.monotonic() < deadline:
        if attempts < 6:  # maxretry is 3; a few more in case one was still in flight
            lab_ssh_as_stranger(lab)
            attempts += 1
        else:
            time.sleep(0.5)
    assert client_ip in banned(lab)
    # banned once the failures reached maxretry (one attempt may log more than one failure)
    total_failed = re.search(r"Total failed:\s+(\d+)", lab.vps.exec("fail2ban-client", "status", "sshd").stdout)
    assert total_failed is not None and int(total_failed.group(1)) >= 3
    assert not lab.reachable(22)
    assert lab.vps.ssh("true").returncode == 0  # the test runner's own address is not banned
    lab.vps.exec("fail2ban-client", "set", "sshd", "unbanip", client_ip)
    assert lab.reachable(22)


def lab_ssh_as_stranger(lab: Lab) -> None:
    """One failed public-key login from the internet container, with a key the VPS does not know."""
    docker("exec", lab.internet, "sh", "-c",
           "test -f /tmp/k || ssh-keygen -q -t ed25519 -N '' -f /tmp/k; "
           # a connection caught by the ban mid-way would hang on rejected packets: cut it
           f"timeout 10 ssh -F /dev/null -i /tmp/k -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no "
           f"-o UserKnownHostsFile=/dev/null -o ConnectTimeout=5 root@{lab.vps.ip} true", check=False)


def banned(lab: Lab) -> str:
    return lab.vps.exec("fail2ban-client", "get", "sshd", "banip").stdout


def test_the_docker_providers_ssh_options_verify_the_host_key(first, lab):
    """The options the docker provider hands ssh, used by the real OpenSSH client: only the configured key."""
    where = target(f"ssh://deploy@{lab.vps.ip}:22")

    def docker_over_ssh(host_key: str) -> subprocess.CompletedProcess:
        return subprocess.run(["ssh", "-F", "/dev/null", "-i", str(lab.vps.key), "-o", "IdentitiesOnly=yes",
                               "-o", "BatchMode=yes", *docker_ssh_opts(where, host_key), f"deploy@{lab.vps.ip}",
                               "docker", "version", "--format", "{{.Server.APIVersion}}"],
                              capture_output=True, text=True, timeout=30)

    good = docker_over_ssh(lab.vps.host_key)
    assert (good.returncode, good.stdout.strip()) == (0, "1.41"), good.stderr
    other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJodZH+iDQSvM9Pjz+Q9pBcyNlviIcpLoutp9UryuY9i"
    bad = docker_over_ssh(other)
    assert bad.returncode == 255 and "Host key verification failed" in bad.stderr


def test_a_sudoer_with_a_password_provisions_too(first, lab):
    """Last: provisioning as a sudoer turns root's SSH login off."""
    vps = lab.vps
    vps.exec("sh", "-c", "useradd -m -s /bin/sh -G sudo ops && echo 'ops:sudo-pw-4711' | chpasswd && "
                         "install -d -m 700 -o ops -g ops ~ops/.ssh && "
                         "install -m 600 -o ops -g ops /root/.ssh/authorized_keys ~ops/.ssh/authorized_keys")
    as_ops = settings_for(lab, ssh={"user": "ops", "sudo_password": "sudo-pw-4711"})
    ssh = as_ops.host.provision.ssh
    summaries = {}
    for script in scripts(as_ops):
        out = vps.ssh(remote_command(script, ssh), user="ops", stdin=remote_stdin(script, ssh)).stdout
        summaries[script.step] = summary_of(script, out)
    # root may no longer log in at all; nothing else differs from what root provisioned
    assert summaries == {**{step: "unchanged" for step in STEPS},
                         "ssh_hardening": f"changed: wrote {SSHD_DROP_IN}; reloaded ssh"}
    # (not probed with a login: a refused login from this runner counts toward a fail2ban ban)
    assert "permitrootlogin no" in vps.exec("sshd", "-T").stdout.splitlines()
    assert vps.ssh("docker info >/dev/null && echo ok", user="deploy").stdout == "ok\n"
