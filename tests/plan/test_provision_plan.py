"""The provisioning scripts as text: which steps, what each writes, how it is run, and its hash."""

from __future__ import annotations

import json
import subprocess

import pytest

from berth.plan.provision import (
    STEPS,
    daemon_json,
    docker_ssh_opts,
    firewall_rules,
    remote_command,
    remote_stdin,
    scripts,
    sysctl_values,
)
from berth.settings import deep_merge, load_settings
from berth.settings.provision import SshConnection, target

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJodZH+iDQSvM9Pjz+Q9pBcyNlviIcpLoutp9UryuY9i"


def stack(provision: dict | None = None, **raw):
    base = {"environment": "staging",
            "host": {"url": "ssh://deploy@203.0.113.7:2222",
                     "provision": deep_merge({"enabled": True, "ssh": {"host_key": HOST_KEY}}, provision or {})}}
    return load_settings(deep_merge(base, raw))


def by_step(settings):
    return {script.step: script for script in scripts(settings)}


def test_off_renders_nothing():
    assert scripts(load_settings({"environment": "dev"})) == []


def test_every_step_in_order_and_each_is_valid_sh():
    rendered = scripts(stack(elk={}))
    assert [s.step for s in rendered] == list(STEPS)
    for script in rendered:
        subprocess.run(["sh", "-n"], input=script.text, text=True, check=True)
        assert script.text.startswith("#!/bin/sh\n") and script.text.endswith("finish\n")
        assert f"STEP={script.step}\n" in script.text


def test_no_elasticsearch_and_no_sysctls_means_no_sysctl_step():
    assert "sysctls" not in by_step(stack())
    assert sysctl_values(stack(elk={})) == {"vm.max_map_count": "262144"}
    assert sysctl_values(stack({"sysctls": {"values": {"net.core.somaxconn": "4096"}}}, elk={})) == {
        "net.core.somaxconn": "4096", "vm.max_map_count": "262144"}


def test_steps_switch_off_one_by_one():
    for step in STEPS:
        assert step not in by_step(stack({step: {"enabled": False}}, elk={}))


def test_one_setting_changes_one_script():
    before, after = by_step(stack(elk={})), by_step(stack({"fail2ban": {"ban_time": "2h"}}, elk={}))
    assert [s for s in STEPS if before[s].digest != after[s].digest] == ["fail2ban"]
    assert "bantime = 7200" in after["fail2ban"].text


def test_the_hash_is_in_the_command_and_the_script_on_stdin():
    script = by_step(stack())["docker"]
    root = SshConnection()
    assert remote_command(script, root) == f": berth-provision docker sha256={script.digest}; sh -s"
    assert remote_stdin(script, root) == script.text
    assert len(script.digest) == 16


def test_a_sudoer_runs_through_sudo_and_the_password_only_goes_on_stdin():
    script = by_step(stack())["docker"]
    assert remote_command(script, SshConnection(user="ops")).endswith("; sudo -n sh -s")
    with_password = SshConnection(user="ops", sudo_password="s3cret-pw")
    command = remote_command(script, with_password)
    assert "s3cret-pw" not in command and "sudo -S -k" in command
    assert remote_stdin(script, with_password) == "s3cret-pw\n" + script.text


def test_the_sudo_password_runner_feeds_sudo_and_runs_the_script(tmp_path):
    # a stand-in sudo on PATH that checks the password line and runs the rest: the runner's plumbing
    fake = tmp_path / "sudo"
    fake.write_text('#!/bin/sh\nIFS= read -r pw; [ "$pw" = s3cret-pw ] || exit 9\n'
                    'while [ "${1#-}" != "$1" ] || [ "$1" = "" ]; do shift; done\nexec "$@"\n')
    fake.chmod(0o755)
    script = by_step(stack({"upgrades": {"enabled": True}}))["upgrades"]
    ssh = SshConnection(user="ops", sudo_password="s3cret-pw")
    body = "#!/bin/sh\necho ran-as-script\n"
    result = subprocess.run(["sh", "-c", remote_command(script, ssh)], input=remote_stdin(script, ssh)
                            .replace(script.text, body), text=True, capture_output=True,
                            env={"PATH": f"{tmp_path}:/usr/bin:/bin"})
    assert (result.returncode, result.stdout) == (0, "ran-as-script\n"), result.stderr


def test_daemon_json():
    assert json.loads(daemon_json()) == {"live-restore": True, "log-driver": "json-file",
                                         "log-opts": {"max-file": "3", "max-size": "10m"}}
    assert "tcp://" not in daemon_json() and "hosts" not in daemon_json()


def test_firewall_rules_are_ssh_web_and_extras():
    rules = firewall_rules(stack({"firewall": {"allow_tcp": [8443], "allow_udp": [51820]}}))
    assert rules.ufw_rules == ["ufw allow 2222/tcp", "ufw allow 80/tcp", "ufw allow 443/tcp", "ufw allow 8443/tcp",
                               "ufw allow 51820/udp"]
    proxied = firewall_rules(stack(proxy={"http_port": 8080, "https_port": 8444}))
    assert proxied.ufw_rules == ["ufw allow 2222/tcp", "ufw allow 8080/tcp", "ufw allow 8444/tcp"]


def test_docker_user_lets_in_only_the_allowed_ports():
    text = by_step(stack({"firewall": {"allow_tcp": [8443], "allow_udp": [51820]}}))["firewall"].text
    block = text.split("# BEGIN berth docker-user", 1)[1].split("# END berth docker-user", 1)[0]
    returns = [line for line in block.splitlines() if "--ctorigdstport" in line]
    assert returns == [f"-A DOCKER-USER -p {proto} -m conntrack --ctorigdstport {port} -j RETURN"
                       for proto, port in (("tcp", 80), ("tcp", 443), ("tcp", 8443), ("udp", 51820))]
    assert block.rstrip().splitlines()[-2:] == ["-A DOCKER-USER -m conntrack --ctstate NEW,INVALID -j DROP",
                                                "COMMIT"]
    assert "ufw allow 2222/tcp" not in block  # the SSH port is the host's own, never a container's


def test_ssh_hardening_keeps_root_keys_only_when_root_provisions():
    as_root = by_step(stack())["ssh_hardening"].text
    as_ops = by_step(stack({"ssh": {"user": "ops"}}))["ssh_hardening"].text
    assert "PermitRootLogin prohibit-password" in as_root and "PermitRootLogin no" in as_ops
    assert "PasswordAuthentication no" in as_root and 'sport = :2222' in as_root


def test_deploy_user_keys_are_quoted_or_copied():
    copied = by_step(stack())["deploy_user"].text
    assert "${SUDO_USER:-root}" in copied and "user=deploy\n" in copied
    given = by_step(stack({"deploy_user": {"authorized_keys": [HOST_KEY + " laptop"]}}))["deploy_user"].text
    assert f"keys='{HOST_KEY}\n'" in given  # the comment dropped, the key single-quoted


def test_fail2ban_jail_and_unattended_upgrades():
    steps = by_step(stack({"fail2ban": {"max_retry": 4}, "upgrades": {"reboot": True, "reboot_time": "03:15"}}))
    jail = steps["fail2ban"].text
    assert "port = 2222\n" in jail and "maxretry = 4\n" in jail and "mode = aggressive\n" in jail
    assert "backend = systemd" in jail and "logpath = /var/log/auth.log" in jail  # by what PID 1 is
    assert "No jail for the proxy:" in jail
    upgrades = steps["upgrades"].text
    assert 'Unattended-Upgrade::Automatic-Reboot "true";' in upgrades
    assert 'Unattended-Upgrade::Automatic-Reboot-Time "03:15";' in upgrades


def test_docker_from_dockers_apt_repository():
    text = by_step(stack({"docker": {"source": "docker-apt"}}))["docker"].text
    assert "https://download.docker.com/linux/$ID" in text and "install_packages docker-ce docker-ce-cli" in text
    assert "docker.io" not in text


@pytest.mark.parametrize(("url", "known"), [("ssh://deploy@h.example:22", "h.example"),
                                            ("ssh://deploy@h.example:2222", "[h.example]:2222")])
def test_the_docker_provider_trusts_only_the_configured_host_key(url, known):
    opts = docker_ssh_opts(target(url), HOST_KEY)
    assert opts == ["-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=/dev/null",
                    "-o", "GlobalKnownHostsFile=/dev/null", "-o", f"KnownHostsCommand=/bin/echo {known} {HOST_KEY}"]
