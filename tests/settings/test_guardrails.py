"""Prod and staging guardrails: refused without an opt-out, allowed with a reason, and then always warned about."""

from __future__ import annotations

import pytest

from berth.errors import ConfigError
from berth.settings import insecure_warnings, load_settings
from berth.settings.guardrails import INSECURE_RULES
from berth.settings.loader import RawConfig
from berth.synth import synth

# (rule, changes that trip it in prod)
TRIPS = [
    ("tcp_without_tls", {"host": {"url": "tcp://docker.example.com:2375"}}),
    ("ssh_without_host_key_check", {"host.ssh_opts": ["-o", "StrictHostKeyChecking=no"]}),
    ("tls_off", {"proxy.tls": {"mode": "none"}, "proxy.http_redirect": False}),
    ("hsts_off", {"proxy.tls.hsts_max_age": "0s"}),
    ("unprotected_data", {"protect_data": False}),
    ("secret_in_env", {"apps.backend.env.API_TOKEN": "t0ken"}),
]


def test_every_rule_has_a_trip_and_a_description():
    assert {rule for rule, _ in TRIPS} | {"plaintext_secret", "stack_environment_mismatch"} == set(INSECURE_RULES)


@pytest.mark.parametrize(("rule", "changes"), TRIPS, ids=[rule for rule, _ in TRIPS])
def test_prod_refuses_then_allows_with_a_reason_and_warns(raw_config, rule, changes):
    with pytest.raises(ConfigError) as caught:
        load_settings(raw_config(changes))
    assert len(caught.value.problems) == 1
    assert f"allow_insecure.{rule}" in str(caught.value)
    settings = load_settings(raw_config({**changes, f"allow_insecure.{rule}": "isolated lab network"}))
    assert insecure_warnings(settings) == [
        f"berth:allow_insecure.{rule}: {INSECURE_RULES[rule]} is allowed in prod: isolated lab network"]


@pytest.mark.parametrize(("rule", "changes"), TRIPS, ids=[rule for rule, _ in TRIPS])
def test_dev_does_not_guard(raw_config, rule, changes):
    assert load_settings(raw_config({**changes, "environment": "dev"})).environment == "dev"


def test_staging_guards_too_but_not_protect_data(raw_config):
    assert load_settings(raw_config({"environment": "staging", "protect_data": False})).protect_data is False
    with pytest.raises(ConfigError, match="allow_insecure.tls_off"):
        load_settings(raw_config({"environment": "staging", "proxy.tls": {"mode": "none"},
                                  "proxy.http_redirect": False}))


def test_every_insecure_choice_is_reported_at_once(raw_config):
    with pytest.raises(ConfigError) as caught:
        load_settings(raw_config(dict(change for _, changes in TRIPS[1:] for change in changes.items())))
    assert [path for path, _ in caught.value.problems] == [
        "host.ssh_opts", "proxy.tls.mode", "protect_data", "apps.backend.env.API_TOKEN"]


def test_plain_secrets_are_known_only_from_a_stack_source(raw_config):
    raw = raw_config({"redis.password": "a-plain-password"})
    assert load_settings(raw).redis is not None  # a bare dict does not say where it came from
    with pytest.raises(ConfigError) as caught:
        load_settings(RawConfig(raw, secure=frozenset({"host"}), stack="prod"))
    assert [path for path, _ in caught.value.problems] == ["registries[0].password", "secrets.api-key.value",
                                                          "redis.password"]
    secure = frozenset({"registries", "redis", "secrets"})
    assert load_settings(RawConfig(raw, secure=secure, stack="prod")).redis is not None


def test_a_stack_that_names_another_environment(raw_config):
    raw = RawConfig(raw_config(), secure=frozenset({"registries"}), stack="staging")
    with pytest.raises(ConfigError) as caught:
        load_settings(raw)
    assert caught.value.problems[0][0] == "environment"
    assert "allow_insecure.stack_environment_mismatch" in str(caught.value)


def test_secret_in_env_ignores_plain_values_and_secret_refs(raw_config):
    settings = load_settings(raw_config({"apps.backend.env.UPSTREAM": "https://api.example.com/v1",
                                         "apps.backend.secrets.API_TOKEN": "secrets.jwt"}))
    assert settings.apps["backend"].env["UPSTREAM"] == "https://api.example.com/v1"


def test_synth_prints_each_opt_out_to_stderr(capsys):
    result = synth("prod", raw_overrides={
        "proxy": {"tls": {"hsts_max_age": "0s"}},
        "allow_insecure": {"hsts_off": "behind a TLS-terminating load balancer that sets HSTS"}})
    assert result["stack"] == "prod"
    assert capsys.readouterr().err.splitlines() == [
        "warning: berth:allow_insecure.hsts_off: the proxy without HSTS (proxy.tls.hsts_max_age: 0) is allowed in "
        "prod: behind a TLS-terminating load balancer that sets HSTS"]


def test_synth_refuses_what_prod_refuses():
    with pytest.raises(ConfigError, match="allow_insecure.hsts_off"):
        synth("prod", raw_overrides={"proxy": {"tls": {"hsts_max_age": "0s"}}})


def test_the_program_warns_through_pulumi_log_on_every_run(monkeypatch):
    # __main__.py, as `pulumi preview` and `pulumi up` run it (synth runs the same file under mocks).
    import pulumi

    warned: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda message, *args, **kwargs: warned.append(message))
    synth("prod", raw_overrides={"protect_data": False,
                                 "allow_insecure": {"unprotected_data": "a throwaway prod rehearsal stack"}})
    assert warned == ["berth:allow_insecure.unprotected_data: data volumes that `pulumi destroy` may delete "
                      "(protect_data: false) is allowed in prod: a throwaway prod rehearsal stack"]
