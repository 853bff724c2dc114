"""Pure container values: docker names, images, env, healthchecks, resources, logging, networks."""

from __future__ import annotations

import shlex
from datetime import timedelta

import pytest

from berth.plan.containers import (
    CPU_SHARES_PER_CPU,
    SERVICE_RESTART,
    app_healthcheck_test,
    docker_name,
    env_list,
    healthcheck,
    http_probe,
    log_args,
    needs_data_network,
    resolve_image,
    resource_args,
    seconds,
    split_image,
    stack_images,
    waits_for,
    workload_env,
)
from berth.settings import Cadence, Resources, load_settings
from berth.settings.apps import AppSettings, JobSettings
from berth.settings.host import LogSettings

DIGEST = "sha256:" + "0123456789abcdef" * 4


def test_named_defaults():
    assert (SERVICE_RESTART, CPU_SHARES_PER_CPU) == ("unless-stopped", 1024)


# -- names -----------------------------------------------------------------------------------------


def test_docker_name_is_system_environment_part(valid):
    settings = valid()
    assert docker_name(settings, "postgres") == "berth-prod-postgres"
    assert docker_name(settings, "volume", "uploads") == "berth-prod-volume-uploads"
    assert docker_name(settings) == "berth-prod"


def test_docker_name_follows_the_blueprint_and_stack():
    settings = load_settings({"environment": "staging"}, blueprint="praxifi")
    assert docker_name(settings, "edge") == "praxifi-staging-edge"


# -- images ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("ref", "split"), [
    ("nginx", ("nginx", "")),
    ("nginx:1.27-alpine", ("nginx", ":1.27-alpine")),
    ("ghcr.io/acme/app:1.2.3", ("ghcr.io/acme/app", ":1.2.3")),
    (f"ghcr.io/acme/app@{DIGEST}", ("ghcr.io/acme/app", f"@{DIGEST}")),
    (f"ghcr.io/acme/app:1.2.3@{DIGEST}", ("ghcr.io/acme/app", f":1.2.3@{DIGEST}")),
    ("registry.example.com:5000/team/app", ("registry.example.com:5000/team/app", "")),
    ("registry.example.com:5000/team/app:v1", ("registry.example.com:5000/team/app", ":v1")),
    ("localhost:5000/app", ("localhost:5000/app", "")),
])
def test_split_image(ref, split):
    assert split_image(ref) == split
    assert "".join(split_image(ref)) == ref


@pytest.mark.parametrize(("ref", "overrides", "resolved"), [
    ("nginx:1.27-alpine", {}, "nginx:1.27-alpine"),
    ("nginx:1.27-alpine", {"nginx:1.27-alpine": "mirror.local/nginx:1.27.1"}, "mirror.local/nginx:1.27.1"),
    ("nginx:1.27-alpine", {"nginx": "registry.example.com:5000/mirror/nginx"},
     "registry.example.com:5000/mirror/nginx:1.27-alpine"),
    ("nginx:1.27-alpine", {"nginx": "mirror/nginx", "nginx:1.27-alpine": "pinned/nginx:1.27.0"}, "pinned/nginx:1.27.0"),
    (f"ghcr.io/acme/app@{DIGEST}", {"ghcr.io/acme/app": "mirror.local:5000/acme/app"},
     f"mirror.local:5000/acme/app@{DIGEST}"),
    (f"ghcr.io/acme/app:1.2.3@{DIGEST}", {"ghcr.io/acme/app": "mirror/app"}, f"mirror/app:1.2.3@{DIGEST}"),
    ("registry.example.com:5000/team/app:v1", {"registry.example.com:5000/team/app": "ghcr.io/team/app"},
     "ghcr.io/team/app:v1"),
    ("registry.example.com:5000/team/app", {"registry.example.com": "elsewhere/app"},
     "registry.example.com:5000/team/app"),
    ("ghcr.io/acme/app:1", {"ghcr.io/acme": "other"}, "ghcr.io/acme/app:1"),
    ("nginx", {"nginx": "mirror/nginx:1.27"}, "mirror/nginx:1.27"),
    # A repository key whose replacement names its own tag replaces the image whole: no "x:1.25:1.27".
    ("nginx:1.27-alpine", {"nginx": "mirror.local/nginx:1.25"}, "mirror.local/nginx:1.25"),
    (f"ghcr.io/acme/app:1@{DIGEST}", {"ghcr.io/acme/app": f"mirror/app@{DIGEST}"}, f"mirror/app@{DIGEST}"),
], ids=["none", "exact", "repository-keeps-tag", "exact-beats-repository", "repository-keeps-digest",
        "repository-keeps-tag-and-digest", "registry-with-port", "host-is-not-a-repository",
        "prefix-is-not-a-repository", "untagged-exact", "repository-to-own-tag", "repository-to-own-digest"])
def test_resolve_image(ref, overrides, resolved):
    assert resolve_image(ref, overrides) == resolved


def test_stack_images_lists_every_enabled_image_before_overrides(valid):
    assert stack_images(valid()) == {
        "postgres:16-alpine", "redis:7-alpine", "rabbitmq:3.13-management-alpine",
        "minio/minio:RELEASE.2024-06-13T22-53-53Z", "minio/mc:RELEASE.2024-06-12T14-34-03Z",
        "docker.elastic.co/elasticsearch/elasticsearch:8.11.3", "docker.elastic.co/logstash/logstash:8.11.3",
        "docker.elastic.co/kibana/kibana:8.11.3", "ghcr.io/acme/backend:1.2.3",
        "ghcr.io/acme/frontend@sha256:" + "a" * 64, "nginx:1.27-alpine",
    }


def test_stack_images_skip_what_is_switched_off(valid):
    settings = valid({"elk.enabled": False, "minio.buckets": [], "rabbitmq.enabled": False,
                      "apps.frontend.enabled": False, "proxy.enabled": False})
    assert stack_images(settings) == {"postgres:16-alpine", "redis:7-alpine", "ghcr.io/acme/backend:1.2.3",
                                      "minio/minio:RELEASE.2024-06-13T22-53-53Z"}


# -- environment -----------------------------------------------------------------------------------


def test_env_list_is_sorted_by_key():
    assert env_list({"b": "2", "A": "1", "a": "3", "_x": "=y="}) == ["A=1", "_x==y=", "a=3", "b=2"]
    assert env_list({}) == []


def test_env_list_ignores_insertion_order():
    assert env_list({"Z": "1", "A": "2"}) == env_list({"A": "2", "Z": "1"})


def test_workload_env_fills_in_domain_and_environment_and_port(valid):
    settings = valid({"apps.backend.env": {"URL": "https://api.{domain}/{environment}", "MODE": "{environment}-{x}"}})
    assert workload_env(settings, settings.apps["backend"]) == {
        "PORT": "8000", "URL": "https://api.example.com/prod", "MODE": "prod-{x}",
    }


def test_env_port_given_as_the_apps_port_is_kept(valid):
    # Settings refuse a PORT other than the app's port (nothing would route to it).
    settings = valid({"apps.backend.env": {"PORT": "8000"}})
    assert workload_env(settings, settings.apps["backend"]) == {"PORT": "8000"}


def test_jobs_get_no_port(valid):
    settings = valid({"jobs.migrate.env": {"TARGET": "{domain}"}})
    assert workload_env(settings, settings.jobs["migrate"]) == {"TARGET": "example.com"}


def test_secrets_stay_out_of_the_plain_env(valid):
    settings = valid()
    env = workload_env(settings, settings.apps["backend"])
    assert set(env) == {"PORT", "BASE_URL"}


# -- healthchecks ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("cadence", "expected"), [
    (Cadence(interval=timedelta(seconds=60), timeout=timedelta(seconds=15), retries=5,
             start_period=timedelta(seconds=90)),
     {"interval": "1m0s", "timeout": "15s", "start_period": "1m30s", "retries": 5}),
    (Cadence(), {"interval": "10s", "timeout": "5s", "start_period": "30s", "retries": 3}),
    (Cadence(interval=timedelta(milliseconds=500), timeout=timedelta(milliseconds=1500),
             start_period=timedelta(hours=1)),
     {"interval": "500ms", "timeout": "1.5s", "start_period": "1h0m0s", "retries": 3}),
    (Cadence(start_period=timedelta(0)),
     {"interval": "10s", "timeout": "5s", "start_period": "0s", "retries": 3}),
    (Cadence(interval=timedelta(seconds=30), start_interval=timedelta(milliseconds=1500)),
     {"interval": "30s", "timeout": "5s", "start_period": "30s", "retries": 3, "start_interval": "1.5s"}),
], ids=["minutes", "defaults", "sub-second-and-hours", "zero-start-period", "start-interval"])
def test_healthcheck_durations_in_go_form(cadence, expected):
    assert healthcheck(["CMD", "true"], cadence) == {"tests": ["CMD", "true"], **expected}


def test_http_probe_tries_curl_then_wget_then_python():
    test = http_probe(8000, "/health", timedelta(seconds=15))
    url = "http://127.0.0.1:8000/health"
    assert test == ["CMD-SHELL",
                    f"curl -fsS -o /dev/null --max-time 15 {url} 2>/dev/null"
                    f" || wget -q -O /dev/null -T 15 {url} 2>/dev/null"
                    f" || python3 -c 'import sys,urllib.request as u; u.urlopen(sys.argv[1], timeout=15)' {url}"]


def test_http_probe_timeout_is_at_least_a_second():
    assert "--max-time 1 " in http_probe(80, "/", timedelta(milliseconds=200))[1]


def test_http_probe_quotes_the_url_for_the_shell():
    command = http_probe(80, "/a'b;rm", timedelta(seconds=5))[1]
    words = shlex.split(command)
    assert words[:7] == ["curl", "-fsS", "-o", "/dev/null", "--max-time", "5", "http://127.0.0.1:80/a'b;rm"]
    assert words.count("http://127.0.0.1:80/a'b;rm") == 3


def app(**fields: object) -> AppSettings:
    return AppSettings.model_validate({"image": "ghcr.io/acme/app:1", "port": 8080, **fields})


@pytest.mark.parametrize(("healthcheck_", "test"), [
    (None, None),
    ({"command": ["pg_isready", "-q"]}, ["CMD", "pg_isready", "-q"]),
    ({"command": "curl -f localhost || exit 1"}, ["CMD-SHELL", "curl -f localhost || exit 1"]),
    ({"http": "/ready", "timeout": "3s"}, http_probe(8080, "/ready", timedelta(seconds=3))),
], ids=["none", "exec", "shell", "http"])
def test_app_healthcheck_test(healthcheck_, test):
    assert app_healthcheck_test(app(healthcheck=healthcheck_)) == test


# -- resources and logging -------------------------------------------------------------------------


def resources(limits: dict[str, object] | None = None, reservations: dict[str, object] | None = None) -> Resources:
    return Resources.model_validate({"limits": limits or {}, "reservations": reservations or {}})


@pytest.mark.parametrize(("given", "args"), [
    (resources({"cpus": 2, "memory": "4g"}, {"cpus": 1, "memory": "2g"}),
     {"cpus": "2", "memory": 4096, "cpu_shares": 1024, "memory_reservation": 2048}),
    (resources({"cpus": 0.5, "memory": "256m"}, {"cpus": 0.1, "memory": "64m"}),
     {"cpus": "0.5", "memory": 256, "cpu_shares": 102, "memory_reservation": 64}),
    (resources({"memory": "1.5g"}), {"memory": 1536}),
    (resources({"memory": 1}), {"memory": 1}),
    (resources(), {}),
], ids=["seed", "fractions", "fractional-gib", "rounds-up", "none"])
def test_resource_args(given, args):
    assert resource_args(given) == args


@pytest.mark.parametrize(("logging", "args"), [
    ({}, {"log_driver": "json-file", "log_opts": {"max-size": "10m", "max-file": "3"}}),
    ({"driver": "local", "max_size": "512k", "max_file": 7},
     {"log_driver": "local", "log_opts": {"max-size": "1m", "max-file": "7"}}),
    ({"driver": "gelf", "address": "udp://127.0.0.1:12201"},
     {"log_driver": "gelf", "log_opts": {"gelf-address": "udp://127.0.0.1:12201", "tag": "berth-prod-redis"}}),
    ({"driver": "syslog", "address": "tcp://10.0.0.5:514"},
     {"log_driver": "syslog", "log_opts": {"syslog-address": "tcp://10.0.0.5:514", "tag": "berth-prod-redis"}}),
], ids=["default-rotation", "local", "gelf", "syslog"])
def test_log_args(logging, args):
    assert log_args(LogSettings.model_validate(logging), tag="berth-prod-redis") == args


def test_seconds_are_whole():
    assert (seconds(timedelta(seconds=90)), seconds(timedelta(milliseconds=1999)), seconds(timedelta(0))) == (90, 1, 0)


# -- networks --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fields", "needs"), [
    ({}, False),
    ({"depends_on": ["frontend"]}, False),
    ({"secrets": {"JWT": "secrets.jwt"}}, False),
    ({"depends_on": ["redis"]}, True),
    ({"depends_on": ["logstash"]}, True),
    ({"secrets": {"DATABASE_URL": "postgres.databases.shop.url"}}, True),
    ({"secrets": {"S3_KEY": "minio.access_key"}}, True),
    ({"secrets": {"ES": "elasticsearch.url"}}, True),
], ids=["nothing", "an-app", "a-generated-secret", "redis", "logstash", "postgres-url", "minio-key", "elastic"])
def test_needs_data_network(fields, needs):
    assert needs_data_network(JobSettings.model_validate({"image": "ghcr.io/acme/job:1", **fields})) is needs


@pytest.mark.parametrize(("fields", "waits"), [
    ({}, []),
    ({"depends_on": ["frontend", "redis"]}, ["frontend", "redis"]),
    ({"secrets": {"JWT": "secrets.jwt"}}, []),
    ({"secrets": {"DB": "postgres.databases.shop.url", "Q": "rabbitmq.users.worker.url"}}, ["postgres", "rabbitmq"]),
    ({"depends_on": ["postgres"], "secrets": {"DB": "postgres.url", "ES": "elasticsearch.password"}},
     ["elasticsearch", "postgres"]),
], ids=["nothing", "declared", "a-generated-secret", "implied-by-secrets", "both-once"])
def test_waits_for_declared_and_implied_services(fields, waits):
    assert waits_for(JobSettings.model_validate({"image": "ghcr.io/acme/job:1", **fields})) == waits


def test_baseline_workloads_on_the_data_network(valid):
    settings = valid()
    assert needs_data_network(settings.apps["backend"]) is True
    assert needs_data_network(settings.apps["frontend"]) is False
    assert needs_data_network(settings.jobs["migrate"]) is True
