"""The loader: stack files and Pulumi config -> raw dict, merged over a blueprint, validated once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pulumi.runtime import config as pulumi_config

from berth.errors import ConfigError
from berth.settings import deep_merge, from_pulumi_config, from_stack_files, load_settings, loader
from berth.settings.loader import UNDECRYPTED

SSH_OPTS = ["-o", "StrictHostKeyChecking=yes", "-o", "ServerAliveInterval=30"]
PROJECT = """\
name: berth
runtime: python
config:
  berth:protect_data:
    type: boolean
    default: false
  berth:domain:
    type: string
    default: localhost
"""

# -- deep_merge ------------------------------------------------------------------------------------


def test_deep_merge_merges_mappings_key_by_key():
    base = {"apps": {"web": {"image": "web:1", "port": 80, "env": {"A": "1"}}}, "domain": "a.example"}
    over = {"apps": {"web": {"port": 8080, "env": {"B": "2"}}, "api": {"port": 9000}}}
    assert deep_merge(base, over) == {
        "apps": {
            "web": {"image": "web:1", "port": 8080, "env": {"A": "1", "B": "2"}},
            "api": {"port": 9000},
        },
        "domain": "a.example",
    }


@pytest.mark.parametrize(("base", "over", "merged"), [
    ({"ports": [1, 2, 3]}, {"ports": [4]}, {"ports": [4]}),
    ({"x": {"a": 1}}, {"x": 5}, {"x": 5}),
    ({"x": 5}, {"x": {"a": 1}}, {"x": {"a": 1}}),
    ({"x": {"a": 1}}, {"x": None}, {"x": None}),
    ({"x": {"a": 1}}, {"x": {}}, {"x": {"a": 1}}),
    ({}, {"x": 1}, {"x": 1}),
    ({"x": 1}, {}, {"x": 1}),
], ids=["lists-replace", "scalar-over-map", "map-over-scalar", "null-over-map", "empty-map", "new-key", "no-change"])
def test_deep_merge_replaces_everything_else(base, over, merged):
    assert deep_merge(base, over) == merged


def test_deep_merge_leaves_its_inputs_alone():
    base = {"apps": {"web": {"port": 80}}}
    over = {"apps": {"web": {"port": 8080}}}
    deep_merge(base, over)
    assert base == {"apps": {"web": {"port": 80}}}
    assert over == {"apps": {"web": {"port": 8080}}}


# -- blueprints ------------------------------------------------------------------------------------


def test_stack_config_wins_over_the_blueprint():
    settings = load_settings({"environment": "dev", "apps": {"backend": {"port": 9000, "replicas": 3}},
                              "redis": {"persistence": "aof"}}, blueprint="praxifi")
    backend = settings.apps["backend"]
    assert (backend.port, backend.replicas) == (9000, 3)
    assert backend.image == "ghcr.io/praxifi/aiml-engine:latest"  # from the blueprint
    assert backend.secrets == {"REDIS_URL": "redis.url"}
    assert settings.redis is not None and settings.redis.persistence == "aof"
    assert settings.name == "praxifi"
    assert settings.blueprint == "praxifi"


def test_blueprint_named_in_the_raw_config():
    settings = load_settings({"environment": "dev", "blueprint": "webprometrics"})
    assert (settings.blueprint, settings.name, sorted(settings.apps)) == ("webprometrics", "webprometrics", ["backend"])


def test_blueprint_argument_wins_over_the_raw_config():
    settings = load_settings({"environment": "dev", "blueprint": "webprometrics"}, blueprint="praxifi")
    assert settings.blueprint == "praxifi" and sorted(settings.apps) == ["backend", "frontend"]


def test_no_blueprint_means_the_raw_config_alone():
    settings = load_settings({"environment": "dev"})
    assert (settings.blueprint, settings.name, settings.apps, settings.proxy) == (None, "berth", {}, None)


def test_a_stack_can_switch_an_app_on():
    settings = load_settings({"environment": "prod", "protect_data": True, "apps": {"llm": {"enabled": True}}},
                             blueprint="databaseai")
    assert sorted(settings.enabled_apps) == ["backend", "frontend", "llm"]


def test_unknown_blueprint():
    with pytest.raises(ConfigError) as caught:
        load_settings({"environment": "dev"}, blueprint="nope")
    assert str(caught.value) == ("berth:blueprint: 'nope' is not one of ['ai-present-finder', 'databaseai', 'demo', "
                                 "'praxifi', 'sentineliq', 'webprometrics']")


@pytest.mark.parametrize("name", ["../praxifi", "Praxifi", "42"])
def test_blueprint_name_must_be_a_plain_name(name):
    with pytest.raises(ConfigError) as caught:
        load_settings({"environment": "dev", "blueprint": name})
    assert str(caught.value) == f"berth:blueprint: {name!r} is not a blueprint name"


@pytest.mark.parametrize(("text", "rule"), [
    ("blueprint: praxifi\n", "bad.yaml may not name another blueprint"),
    ("- a\n- b\n", "bad.yaml must hold a mapping"),
    ("apps: {backend: [\n", "bad.yaml is not valid YAML: "),
], ids=["nested", "not-a-mapping", "not-yaml"])
def test_broken_blueprint_files(tmp_path, monkeypatch, text, rule):
    (tmp_path / "bad.yaml").write_text(text)
    monkeypatch.setattr(loader, "BLUEPRINTS", tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_settings({"environment": "dev"}, blueprint="bad")
    assert str(caught.value).startswith(f"berth:blueprint: {rule}")
    assert "\n" not in str(caught.value)


def test_blueprint_errors_name_the_merged_path():
    with pytest.raises(ConfigError) as caught:
        load_settings({"environment": "dev", "apps": {"backend": {"port": 0}}}, blueprint="praxifi")
    assert str(caught.value) == "berth:apps.backend.port: 0 is not in 1..65535"


# -- stack files -----------------------------------------------------------------------------------


# staging and prod provision their host (the host key is the stack files' example)
PROVISION = {"enabled": True, "ssh": {"user": "root", "host_key": "ssh-ed25519 "
                                      "AAAAC3NzaC1lZDI1NTE5AAAAIJodZH+iDQSvM9Pjz+Q9pBcyNlviIcpLoutp9UryuY9i"}}


@pytest.mark.parametrize(("stack", "expected"), [
    ("dev", {
        "protect_data": False, "domain": "localhost", "environment": "dev", "blueprint": "demo",
        "host": {"url": "unix:///var/run/docker.sock"},
        "proxy": {"bind": "127.0.0.1", "http_port": 8080, "https_port": 8443},
    }),
    ("staging", {
        "protect_data": False, "domain": "staging.example.com", "environment": "staging", "blueprint": "praxifi",
        "host": {"url": "ssh://deploy@staging.example.com:22", "ssh_opts": SSH_OPTS, "provision": PROVISION},
        "proxy": {"tls": {"mode": "letsencrypt", "acme": {"email": "ops@example.com"}}},
    }),
    ("prod", {
        "protect_data": True, "domain": "example.com", "environment": "prod", "blueprint": "praxifi",
        "host": {"url": "ssh://deploy@prod.example.com:22", "ssh_opts": SSH_OPTS, "provision": PROVISION},
        "proxy": {"tls": {"mode": "letsencrypt", "acme": {"email": "ops@example.com"}}},
    }),
])
def test_from_stack_files(stack, expected):
    assert from_stack_files(stack) == expected


def test_dev_proxy_settings_merge_into_the_blueprint_proxy():
    settings = load_settings(from_stack_files("dev"))
    proxy = settings.proxy
    assert proxy is not None
    assert (proxy.bind, proxy.http_port, proxy.https_port) == ("127.0.0.1", 8080, 8443)
    assert [site.server_names for site in proxy.sites] == [["{domain}"]]  # the demo blueprint's one site


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_every_stack_file_validates(stack):
    settings = load_settings(from_stack_files(stack))
    blueprint = "demo" if stack == "dev" else "praxifi"
    assert (settings.environment, settings.blueprint, settings.protect_data) == (stack, blueprint, stack == "prod")


def test_unknown_stack(tmp_path):
    root = write_project(tmp_path, "config: {}\n", stack="dev")
    (root / "Pulumi.prod.yaml").write_text("config: {}\n")
    with pytest.raises(ConfigError) as caught:
        from_stack_files("qa", root)
    assert str(caught.value) == "berth:stack: 'qa' is not one of ['dev', 'prod']"


def write_project(root: Path, stack_yaml: str, stack: str = "test") -> Path:
    (root / "Pulumi.yaml").write_text(PROJECT)
    (root / f"Pulumi.{stack}.yaml").write_text(stack_yaml)
    return root


def test_project_defaults_sit_under_the_stack_file(tmp_path):
    root = write_project(tmp_path, "config:\n  berth:environment: test\n  berth:domain: test.example.com\n"
                                   "  pulumi:disable-default-providers: [docker]\n")
    assert from_stack_files("test", root) == {"protect_data": False, "domain": "test.example.com",
                                              "environment": "test"}


def test_secure_values_become_a_placeholder(tmp_path):
    root = write_project(tmp_path, """\
config:
  berth:environment: test
  berth:redis:
    password:
      secure: AAABAGnDyq0fakeciphertext
  berth:registries:
    - address: ghcr.io
      username: bot
      password:
        secure: AAABAOtherfakeciphertext
  berth:token:
    secure: AAABAThirdfake
""")
    raw = from_stack_files("test", root)
    assert raw["redis"] == {"password": UNDECRYPTED}
    assert raw["registries"] == [{"address": "ghcr.io", "username": "bot", "password": UNDECRYPTED}]
    assert raw["token"] == UNDECRYPTED
    assert "AAAB" not in json.dumps(raw)


def test_a_secure_placeholder_validates_as_a_secret(tmp_path):
    root = write_project(tmp_path, "config:\n  berth:environment: test\n  berth:redis:\n    password:\n"
                                   "      secure: AAABAfake\n")
    settings = load_settings(from_stack_files("test", root))
    assert settings.redis is not None and settings.redis.password is not None
    assert settings.redis.password.get_secret_value() == UNDECRYPTED


@pytest.mark.parametrize(("text", "rule"), [
    ("config: [\n", "Pulumi.test.yaml is not valid YAML: "),
    ("just text\n", "Pulumi.test.yaml must hold a mapping"),
], ids=["not-yaml", "not-a-mapping"])
def test_broken_stack_file(tmp_path, text, rule):
    root = write_project(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        from_stack_files("test", root)
    assert str(caught.value).startswith(f"berth:stack: {rule}")


# -- Pulumi config ---------------------------------------------------------------------------------


@pytest.fixture
def pulumi_config_values():
    """Set the engine's config for one test, then put back what was there."""
    saved = dict(pulumi_config.CONFIG.get())

    def set_values(values: dict[str, str]) -> None:
        pulumi_config.set_all_config(values)

    yield set_values
    pulumi_config.set_all_config(saved)


def test_from_pulumi_config_keeps_the_engines_strings_and_marks_secret_keys(pulumi_config_values):
    apps = {"backend": {"image": "ghcr.io/acme/backend:1", "port": 8000, "env": {"A": "1"}}}
    pulumi_config_values({
        "berth:environment": "dev",
        "berth:apps": json.dumps(apps),
        "berth:protect_data": "true",
        "berth:redis": json.dumps({"password": "p4ssw0rd-given"}),
        "pulumi:disable-default-providers": '["docker"]',
    })
    pulumi_config._SECRET_KEYS.set({"berth:redis"})
    try:
        raw = from_pulumi_config()
    finally:
        pulumi_config._SECRET_KEYS.set(set())
    assert raw == {"apps": json.dumps(apps), "environment": "dev", "protect_data": "true",
                   "redis": json.dumps({"password": "p4ssw0rd-given"})}
    assert raw.secure == {"redis"}
    settings = load_settings(raw)
    assert settings.protect_data is True and settings.apps["backend"].port == 8000


def test_from_pulumi_config_refuses_keys_of_other_namespaces(pulumi_config_values):
    pulumi_config_values({"berth:environment": "dev", "bert:protect_data": "true"})
    with pytest.raises(ConfigError) as caught:
        from_pulumi_config()
    assert str(caught.value) == ("berth: pulumi config: config key 'bert:protect_data' is not berth's (berth:<key>) "
                                 "or Pulumi's (pulumi:<key>) (did you mean 'berth:protect_data'?)")


def test_from_pulumi_config_feeds_load_settings(pulumi_config_values):
    pulumi_config_values({"berth:environment": "dev", "berth:blueprint": "praxifi",
                          "berth:apps": json.dumps({"backend": {"replicas": 2}}), "berth:protect_data": "false"})
    settings = load_settings(from_pulumi_config())
    assert (settings.environment, settings.apps["backend"].replicas, settings.protect_data) == ("dev", 2, False)


def test_from_pulumi_config_errors_name_the_key(pulumi_config_values):
    pulumi_config_values({"berth:environment": "dev", "berth:apps": json.dumps({"web": {"image": "w:1", "port": 0}})})
    with pytest.raises(ConfigError) as caught:
        load_settings(from_pulumi_config())
    assert str(caught.value) == "berth:apps.web.port: 0 is not in 1..65535"
