"""host.provision: a valid provisioned baseline, then one bad key at a time, each naming its path."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from berth.errors import ConfigError
from berth.settings import load_settings
from berth.settings.loader import UNDECRYPTED
from berth.settings.provision import target

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJodZH+iDQSvM9Pjz+Q9pBcyNlviIcpLoutp9UryuY9i"
ON = {"host.provision.enabled": True, "host.provision.ssh.host_key": HOST_KEY}


@pytest.fixture(scope="module")
def private_key(tmp_path_factory: pytest.TempPathFactory) -> str:
    path: Path = tmp_path_factory.mktemp("key") / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path.read_text()


def test_off_by_default(valid):
    assert valid().host.provision.enabled is False


def test_every_step_is_on_once_provisioning_is(valid):
    provision = valid(ON).host.provision
    assert all(getattr(provision, step).enabled for step in
               ("docker", "deploy_user", "ssh_hardening", "firewall", "fail2ban", "upgrades", "sysctls"))
    assert (provision.ssh.user, provision.docker.source) == ("root", "distro")
    assert (provision.fail2ban.max_retry, provision.fail2ban.ban_time) == (5, timedelta(hours=1))
    assert provision.ssh.host_key == HOST_KEY


def test_the_target_comes_from_the_host_url():
    assert target("ssh://deploy@203.0.113.7:2222") == target("ssh://deploy@203.0.113.7:2222/")
    where = target("ssh://ops@[2001:db8::1]")
    assert (where.host, where.port, where.deploy_user) == ("2001:db8::1", 22, "ops")


def test_a_real_private_key_is_accepted_and_stays_secret(valid, private_key):
    ssh = valid({**ON, "host.provision.ssh.private_key": private_key}).host.provision.ssh
    assert ssh.private_key is not None and ssh.private_key.get_secret_value() == private_key
    assert "OPENSSH" not in repr(ssh)


def test_an_undecrypted_secure_value_passes_offline(valid):
    assert valid({**ON, "host.provision.ssh.private_key": UNDECRYPTED}).host.provision.ssh.private_key


def test_the_host_key_is_required_outside_dev(assert_config_error):
    assert_config_error("host.provision.ssh.host_key", "is required outside dev",
                        {"host.provision.enabled": True})


def test_dev_may_leave_the_host_key_out(valid):
    assert valid({"environment": "dev", "protect_data": False, "host.provision.enabled": True}).host.provision.enabled


@pytest.mark.parametrize("key", ["ssh-ed25519 AAAA-not-base64", "ssh-rsa", "hello", ""])
def test_an_invalid_host_key(assert_config_error, key):
    assert_config_error("host.provision.ssh.host_key", "is not an OpenSSH public key", {**ON,
                        "host.provision.ssh.host_key": key})


@pytest.mark.parametrize(("value", "rule"), [
    ("-----BEGIN hunter2 KEY-----", "is not PEM text"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\naHVudGVyMg==\n-----END OPENSSH PRIVATE KEY-----\n",
     "is not an unencrypted OpenSSH private key"),
])
def test_an_invalid_private_key_is_named_but_never_shown(assert_config_error, value, rule):
    error = assert_config_error("host.provision.ssh.private_key", rule, {**ON, "host.provision.ssh.private_key": value})
    assert "hunter2" not in str(error) and "aHVudGVyMg" not in str(error)


def test_an_invalid_authorized_key(assert_config_error):
    assert_config_error("host.provision.deploy_user.authorized_keys[1]", "is not an OpenSSH public key",
                        {**ON, "host.provision.deploy_user.authorized_keys": [HOST_KEY, "ssh-ed25519 nope"]})


def test_provisioning_a_unix_socket_host(assert_config_error):
    assert_config_error("host.provision.enabled", "a unix:// host", {**ON, "host.url": "unix:///var/run/docker.sock",
                                                                      "host.ssh_opts": []})


def test_provisioning_a_tcp_host(assert_config_error):
    assert_config_error("host.provision.enabled", "connects as the deploy user over SSH",
                        {**ON, "host.url": "tcp://docker.example.com:2376", "host.ssh_opts": []})


def test_the_deploy_user_is_not_root(assert_config_error):
    assert_config_error("host.url", "name one other than root", {**ON, "host.url": "ssh://root@prod.example.com"})


@pytest.mark.parametrize("proxy_port", ["http_port", "https_port"])
def test_the_ssh_port_may_not_be_a_proxy_port(assert_config_error, proxy_port):
    assert_config_error("host.url", f"is also the proxy's proxy.{proxy_port}",
                        {**ON, "host.url": "ssh://deploy@prod.example.com:2200", f"proxy.{proxy_port}": 2200})


def test_an_extra_port_may_not_be_the_ssh_port(assert_config_error):
    assert_config_error("host.provision.firewall.allow_tcp[1]", "is the SSH port",
                        {**ON, "host.url": "ssh://deploy@prod.example.com:2222",
                         "host.provision.firewall.allow_tcp": [8443, 2222]})


def test_an_extra_port_may_not_be_a_proxy_port(assert_config_error):
    assert_config_error("host.provision.firewall.allow_tcp[0]", "is the proxy's proxy.https_port",
                        {**ON, "host.provision.firewall.allow_tcp": [443]})


def test_extra_ports_are_listed_once(assert_config_error):
    assert_config_error("host.provision.firewall.allow_udp", "listed more than once",
                        {**ON, "host.provision.firewall.allow_udp": [51820, 51820]})


def test_elasticsearch_keeps_its_max_map_count(assert_config_error):
    assert_config_error("host.provision.sysctls.values.vm.max_map_count", "which Elasticsearch needs",
                        {**ON, "host.provision.sysctls": {"values": {"vm.max_map_count": "65530"}}})


@pytest.mark.parametrize(("values", "path"), [
    ({"Kernel.panic": "1"}, "host.provision.sysctls.values.Kernel.panic"),
    ({"net.core.somaxconn": "1; reboot"}, "host.provision.sysctls.values.net.core.somaxconn"),
])
def test_sysctl_names_and_values_are_checked(values, path):
    raw = {"environment": "dev", "host": {"url": "ssh://deploy@h", "provision": {"enabled": True,
                                                                                  "sysctls": {"values": values}}}}
    with pytest.raises(ConfigError) as caught:
        load_settings(raw)
    assert [p for p, _ in caught.value.problems] == [path]


@pytest.mark.parametrize(("changes", "path"), [
    ({"host.provision.upgrades.reboot_time": "25:00"}, "host.provision.upgrades.reboot_time"),
    ({"host.provision.ssh.user": "Root!"}, "host.provision.ssh.user"),
    ({"host.provision.docker.source": "snap"}, "host.provision.docker.source"),
    ({"host.provision.firewal": {}}, "host.provision.firewal"),
    ({"host.provision.ssh.sudo_password": "pw"}, "host.provision.ssh.sudo_password"),
])
def test_one_bad_key_names_its_path(assert_config_error, changes, path):
    assert_config_error(path, "", {**ON, **changes})
