"""host.ssh_key and host.preflight: how berth reaches the host (berth/preflight.py checks it)."""

from __future__ import annotations

import pytest

SSH = {"url": "ssh://deploy@prod.example.com:22", "ssh_opts": ["-o", "StrictHostKeyChecking=yes"]}


def test_preflight_is_on_unless_switched_off(valid):
    assert valid({"host": SSH}).host.preflight is True
    assert valid({"host": {**SSH, "preflight": False}}).host.preflight is False


def test_ssh_key_becomes_the_providers_identity_after_the_users_options(valid):
    host = valid({"host": {**SSH, "ssh_key": "/home/ci/.ssh/deploy_ed25519"}}).host
    assert host.ssh_args == ["-o", "StrictHostKeyChecking=yes",
                             "-i", "/home/ci/.ssh/deploy_ed25519", "-o", "IdentitiesOnly=yes"]
    assert valid({"host": SSH}).host.ssh_args == ["-o", "StrictHostKeyChecking=yes"]


@pytest.mark.parametrize("url", ["unix:///var/run/docker.sock", "tcp://docker.example.com:2376"])
def test_ssh_key_is_only_for_ssh(assert_config_error, url):
    assert_config_error("host", "ssh_key is only for an ssh:// url", {"host": {"url": url, "ssh_key": "/k"}})


def test_preflight_must_be_a_boolean(assert_config_error):
    assert_config_error("host.preflight", "boolean", {"host": {**SSH, "preflight": "no"}})


@pytest.mark.parametrize("path", ["deploy_ed25519", "./keys/deploy", "~deploy/.ssh/id"])
def test_ssh_key_is_absolute_or_under_home(assert_config_error, path):
    assert_config_error("host", f"ssh_key {path!r} must be an absolute path or start with ~/",
                        {"host": {**SSH, "ssh_key": path}})


def test_ssh_key_under_home_is_accepted(valid):
    assert valid({"host": {**SSH, "ssh_key": "~/.ssh/deploy"}}).host.ssh_key == "~/.ssh/deploy"
