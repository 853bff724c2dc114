"""Settings rules: a valid baseline, then one bad key at a time, each failing with its path and rule."""

from __future__ import annotations

from datetime import timedelta

import pytest

from berth.errors import ConfigError
from berth.settings import load_settings

GiB = 1024**3
MiB = 1024**2
def pem(kind: str, body: str = "bWF0ZXJpYWw=") -> str:
    return f"-----BEGIN {kind}-----\n{body}\n-----END {kind}-----\n"


CA, CERT, KEY = pem("CERTIFICATE"), pem("CERTIFICATE", "Y2VydA=="), pem("EC PRIVATE KEY")
TLS = {"ca": CA, "cert": CERT, "key": KEY}


def test_the_baseline_is_valid_and_typed(valid):
    settings = valid()
    assert settings.environment == "prod" and settings.protect_data is True
    backend = settings.apps["backend"]
    assert (backend.resources.limits.cpus, backend.resources.limits.memory) == (2.0, 4 * GiB)
    assert (backend.resources.reservations.cpus, backend.resources.reservations.memory) == (1.0, 2 * GiB)
    assert backend.healthcheck is not None and backend.healthcheck.interval == timedelta(seconds=30)
    assert backend.grace == timedelta(seconds=30)
    assert settings.redis is not None and settings.redis.maxmemory == 256 * MiB
    assert settings.logging.max_size == 20 * MiB
    assert settings.registries[0].password.get_secret_value() == "registry-password-123"
    assert str(settings.registries[0].password) == "**********"


def test_settings_are_frozen(valid):
    settings = valid()
    with pytest.raises(ValueError, match="frozen"):
        settings.apps["backend"].port = 1  # type: ignore[misc]


# -- the Docker host ------------------------------------------------------------------------------


@pytest.mark.parametrize("host", [
    {"url": "unix:///var/run/docker.sock"},
    {"url": "ssh://deploy@prod.example.com:22", "ssh_opts": ["-o", "StrictHostKeyChecking=yes"]},
    {"url": "ssh://deploy@prod.example.com"},
    {"url": "tcp://docker.example.com:2376", **TLS},
    {"url": "tcp://docker.example.com:2376", "ca": CA},
], ids=["unix", "ssh-opts", "ssh", "tcp-mutual-tls", "tcp-ca-only"])
def test_host_accepts(valid, host):
    settings = valid({"host": host})
    assert settings.host.url == host["url"]
    assert settings.host.is_local is host["url"].startswith("unix://")


@pytest.mark.parametrize(("url", "rule"), [
    ("http://docker.example.com", "url 'http://docker.example.com' must start with unix://, ssh:// or tcp://"),
    ("docker.example.com", "url 'docker.example.com' must start with unix://, ssh:// or tcp://"),
    ("ssh://prod.example.com", "url 'ssh://prod.example.com' must name the user: ssh://user@host[:port]"),
    ("unix://var/run/docker.sock", "must name an absolute socket path"),
    ("unix://", "must name an absolute socket path"),
    ("ssh://deploy@", "names no host"),
    ("ssh://deploy@-oProxyCommand=touch%20x", "starts with '-', which ssh and docker would read as an option"),
    ("ssh://-oProxyCommand=x@host", "is not a user name"),
    ("ssh://deploy@prod.example.com:99999", "port '99999' is not in 1..65535"),
    ("ssh://deploy@prod example.com", "is not a host name"),
    ("tcp://", "names no host"),
    ("tcp://docker.example.com", "names no port"),
    ("tcp://999.0.0.1:2376", "is not a host name"),
    ("tcp://١٢٧.0.0.1:2376", "is not a host name"),
    ("ssh://deploy@prod.example.com:٢٢", "is not in 1..65535"),
    ("ssh://deploy@" + "a" * 64 + ".example.com", "is not a host name"),
    ("ssh://deploy@host/run/docker sock", "is not an absolute socket path on the host"),
    ("ssh://deploy@host?x=1", "may not have a query or fragment"),
    ("tcp://docker.example.com:2376/run", "may not have a path"),
], ids=lambda v: v[:40])
def test_host_url_grammar(assert_config_error, url, rule):
    assert_config_error("host.url", rule, {"host": {"url": url}})


@pytest.mark.parametrize("url", ["ssh://deploy@[2001:db8::1]:22", "tcp://10.0.0.1:2376", "ssh://deploy@h",
                                 "unix:///run/d.sock", "ssh://deploy@h:2222/run/user/1000/docker.sock"])
def test_host_urls_accepted(valid, url):
    tls = {"ca": CA} if url.startswith("tcp") else {}
    assert valid({"host": {"url": url, **tls}}).host.url == url


@pytest.mark.parametrize(("host", "rule"), [
    ({"url": "unix:///var/run/docker.sock", "ssh_opts": ["-v"]}, "ssh_opts is only for an ssh:// url"),
    ({"url": "tcp://docker.example.com:2376", "ssh_opts": ["-v"]}, "ssh_opts is only for an ssh:// url"),
    ({"url": "ssh://deploy@prod.example.com", **TLS}, "ca, cert, key is only for a tcp:// url"),
    ({"url": "tcp://docker.example.com:2376", "cert": CERT, "key": KEY},
     "cert and key need ca too, or the server's certificate goes unverified"),
    ({"url": "tcp://docker.example.com:2376", "ca": CA, "cert": CERT}, "cert and key must be given together"),
    ({"url": "tcp://docker.example.com:2376", "ca": CA, "key": KEY}, "cert and key must be given together"),
], ids=["unix-ssh-opts", "tcp-ssh-opts", "ssh-tls", "no-ca", "no-key",
        "no-cert"])
def test_host_rejects(assert_config_error, host, rule):
    error = assert_config_error("host", rule, {"host": host})
    assert error.problems == [("host", rule)]


# -- single fields: ports, durations, sizes, names ------------------------------------------------


@pytest.mark.parametrize(("path", "value", "rule"), [
    ("apps.backend.port", 70000, "70000 is not in 1..65535"),
    ("apps.backend.port", 0, "0 is not in 1..65535"),
    ("apps.backend.port", "80.5", '"80.5" should be a valid integer'),
    ("apps.backend.port", True, "true should be a valid integer"),
    ("apps.backend.extra_ports[0]", 65536, "65536 is not in 1..65535"),
    ("proxy.http_port", 0, "0 is not in 1..65535"),
    ("proxy.sites[0].routes[0].port", 65536, "65536 is not in 1..65535"),
    ("apps.frontend.replicas", 33, "33 is not in 1..32"),
    ("apps.backend.healthcheck.retries", 0, "0 is not in 1..100"),
    ("secrets.jwt.length", 8, "8 is not in 16..256"),
], ids=lambda v: str(v))
def test_numbers_out_of_range(assert_config_error, path, value, rule):
    error = assert_config_error(path, rule, {path: value})
    assert str(error) == f"berth:{path}: {rule}"


@pytest.mark.parametrize(("path", "value", "rule"), [
    ("apps.backend.healthcheck.timeout", "banana", "'banana' is not a duration like 30s, 1m30s or 500ms"),
    ("apps.backend.healthcheck.timeout", "5 s", "'5 s' is not a duration like 30s, 1m30s or 500ms"),
    ("apps.backend.healthcheck.timeout", 1.5, "1.5 is not a duration like 30s, 1m30s or 500ms"),
    ("apps.backend.healthcheck.timeout", -5, "-5 is negative; durations are >= 0"),
    ("apps.backend.grace", "29s", "29s is shorter than 30s"),
    ("proxy.sites[0].routes[0].read_timeout", "forever", "'forever' is not a duration like 30s, 1m30s or 500ms"),
    ("redis.stop_grace", [30], "[30] is not a duration like 30s, 1m30s or 500ms"),
], ids=lambda v: str(v))
def test_durations(assert_config_error, path, value, rule):
    assert_config_error(path, rule, {path: value})


@pytest.mark.parametrize(("value", "expected"), [
    (90, timedelta(seconds=90)),
    ("1m30s", timedelta(seconds=90)),
    ("500ms", timedelta(milliseconds=500)),
    ("2m", timedelta(minutes=2)),
    ("1.5s", timedelta(milliseconds=1500)),
])
def test_durations_accepted(valid, value, expected):
    healthcheck = valid({"apps.backend.healthcheck.timeout": value}).apps["backend"].healthcheck
    assert healthcheck is not None and healthcheck.timeout == expected


@pytest.mark.parametrize(("path", "value", "rule"), [
    ("apps.backend.resources.limits.memory", "4x", "'4x' is not a size like 512m, 4g or 2GiB"),
    ("apps.backend.resources.limits.memory", -1, "-1 is not a size like 512m, 4g or 2GiB"),
    ("redis.maxmemory", "1.5q", "'1.5q' is not a size like 512m, 4g or 2GiB"),
    ("logging.max_size", "lots", "'lots' is not a size like 512m, 4g or 2GiB"),
    ("apps.backend.resources.limits.cpus", 0, "0 should be greater than 0"),
    ("apps.backend.resources.limits.cpus", "two", '"two" should be a valid number'),
], ids=lambda v: str(v))
def test_sizes_and_cpus(assert_config_error, path, value, rule):
    assert_config_error(path, rule, {path: value})


@pytest.mark.parametrize(("value", "expected"), [
    (512, 512), ("512m", 512 * MiB), ("4g", 4 * GiB), ("2GiB", 2 * GiB), ("1.5g", int(1.5 * GiB)), ("64k", 64 * 1024),
])
def test_sizes_accepted(valid, value, expected):
    assert valid({"redis.maxmemory": value}).redis.maxmemory == expected


@pytest.mark.parametrize(("changes", "rule"), [
    ({"apps.backend.resources.reservations.memory": "5g"},
     f"reservations.memory ({5 * GiB}) is above limits.memory ({4 * GiB})"),
    ({"apps.backend.resources.reservations.cpus": 3}, "reservations.cpus (3.0) is above limits.cpus (2.0)"),
], ids=["memory", "cpus"])
def test_reservation_above_limit(assert_config_error, changes, rule):
    assert_config_error("apps.backend.resources", rule, changes)


def test_reservation_equal_to_limit_is_fine(valid):
    resources = valid({"apps.backend.resources.reservations": {"cpus": 2, "memory": "4g"}}).apps["backend"].resources
    limits, reservations = resources.limits, resources.reservations
    assert (reservations.cpus, reservations.memory) == (limits.cpus, limits.memory)


@pytest.mark.parametrize("healthcheck", [
    {"http": "/health", "command": ["true"]},
    {"interval": "10s"},
], ids=["both", "neither"])
def test_healthcheck_has_exactly_one_probe(assert_config_error, healthcheck):
    assert_config_error("apps.backend.healthcheck", "give exactly one of command or http",
                        {"apps.backend.healthcheck": healthcheck})


@pytest.mark.parametrize(("value", "rule"), [
    ("40s", "start_interval (40s) is not between 1ms and interval (30s)"),
    ("0s", "start_interval (0s) is not between 1ms and interval (30s)"),
], ids=["longer-than-interval", "zero"])
def test_start_interval_rule(assert_config_error, value, rule):
    assert_config_error("apps.backend.healthcheck", rule, {"apps.backend.healthcheck.start_interval": value})


def test_start_interval_is_opt_in(valid):
    assert valid().apps["backend"].healthcheck.start_interval is None
    check = valid({"apps.backend.healthcheck.start_interval": "1s"}).apps["backend"].healthcheck
    assert check is not None and check.start_interval == timedelta(seconds=1)


def test_healthcheck_command_may_be_a_shell_string(valid):
    check = valid({"apps.frontend.healthcheck": {"command": "wget -q -O- http://127.0.0.1:3000/"}}).apps["frontend"]
    assert check.healthcheck is not None and check.healthcheck.command == "wget -q -O- http://127.0.0.1:3000/"


def test_healthcheck_http_must_be_a_path(assert_config_error):
    assert_config_error("apps.backend.healthcheck.http", "'health' is not an HTTP path starting with /",
                        {"apps.backend.healthcheck.http": "health"})


@pytest.mark.parametrize(("path", "value", "rule"), [
    ("environment", "Prod", "'Prod' is not a name of a-z, 0-9 and '-' starting with a letter"),
    ("environment", None, "is required"),
    ("domain", "Example.COM", "'Example.COM' is not a domain name like example.com"),
    ("apps.backend.user", "root user", "'root user' is not user[:group]"),
    ("apps.backend.volumes.uploads", "app/uploads", "'app/uploads' is not an absolute path of letters, digits"),
    ("apps.backend.working_dir", "/app dir", "'/app dir' is not an absolute path of letters, digits"),
], ids=lambda v: str(v))
def test_names_and_paths(assert_config_error, path, value, rule):
    assert_config_error(path, rule, {path: value})


def test_missing_required_key(raw_config):
    raw = raw_config()
    del raw["environment"]
    with pytest.raises(ConfigError) as caught:
        load_settings(raw)
    assert str(caught.value) == "berth:environment: is required"


# -- unknown keys --------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "hint"), [
    ("postgress", "did you mean 'postgres'?"),
    ("proxy.site", "did you mean 'sites'?"),
    ("apps.backend.porrt", "did you mean 'port'?"),
    ("apps.backend.healthcheck.intervall", "did you mean 'interval'?"),
    ("redis.passwd", "did you mean 'password'?"),
    ("proxy.sites[1].routes[0].rate_limits", "did you mean 'rate_limit'?"),
], ids=lambda v: str(v))
def test_unknown_keys_suggest_the_closest(assert_config_error, path, hint):
    error = assert_config_error(path, f"unknown key ({hint})", {path: 1})
    assert "; expected one of: " in str(error)


def test_unknown_key_lists_the_allowed_keys_exactly(assert_config_error):
    assert_config_error(
        "apps.backend.healthcheck.zzz",
        "unknown key; expected one of: command, http, interval, retries, start_interval, start_period, timeout",
        {"apps.backend.healthcheck.zzz": 1},
    )


# -- cross-references ------------------------------------------------------------------------------


def test_secret_reference_must_resolve(assert_config_error):
    error = assert_config_error("apps.backend.secrets.DATABASE_URL", "'postgres.databases.nope.url' is not one of [",
                                {"apps.backend.secrets.DATABASE_URL": "postgres.databases.nope.url"})
    assert "'postgres.databases.shop.url'" in str(error)


def test_secret_reference_to_a_disabled_service(raw_config):
    # Every problem is reported: the secret and the dependency on the switched-off service.
    with pytest.raises(ConfigError) as caught:
        load_settings(raw_config({"redis.enabled": False}))
    assert [(path, rule.split(" is not one of ")[0]) for path, rule in caught.value.problems] == [
        ("apps.backend.secrets.REDIS_URL", "'redis.url'"), ("apps.backend.depends_on", "'redis'")]


def test_secret_refs_cover_every_service(valid):
    refs = valid().secret_refs()
    assert {"secrets.jwt", "secrets.api-key", "postgres.url", "postgres.password", "postgres.databases.shop.url",
            "postgres.databases.shop.password", "postgres.databases.analytics.url",
            "postgres.databases.analytics.password", "redis.url", "redis.password", "rabbitmq.url",
            "rabbitmq.admin_password", "rabbitmq.users.worker.url", "rabbitmq.users.worker.password",
            "minio.access_key", "minio.secret_key", "elasticsearch.password", "elasticsearch.url"} == refs


@pytest.mark.parametrize(("path", "value", "rule"), [
    ("apps.backend.depends_on", ["nope"], "'nope' is not one of ['elasticsearch', 'frontend', 'kibana', 'logstash', "
                                          "'migrate', 'minio', 'postgres', 'rabbitmq', 'redis']"),
    ("apps.backend.depends_on", ["backend"], "'backend' is not one of"),
    ("jobs.migrate.depends_on", ["redis", "ghost"], "'ghost' is not one of"),
], ids=["unknown", "itself", "job"])
def test_depends_on_must_name_something_known(assert_config_error, path, value, rule):
    assert_config_error(path, rule, {path: value})


def test_depends_on_a_disabled_app(assert_config_error):
    assert_config_error("apps.frontend.depends_on", "'backend' is not one of",
                        {"apps.backend.enabled": False, "proxy.sites": []})


@pytest.mark.parametrize(("changes", "path", "cycle"), [
    ({"apps.backend.depends_on": ["frontend"]}, "apps.backend.depends_on", "backend -> frontend -> backend"),
    ({"jobs.migrate.depends_on": ["frontend"]}, "apps.backend.depends_on",
     "backend -> migrate -> frontend -> backend"),
], ids=["two-apps", "through-a-job"])
def test_depends_on_cycles(assert_config_error, changes, path, cycle):
    assert_config_error(path, f"{cycle} is a cycle", changes)


def test_route_to_an_unknown_app(assert_config_error):
    assert_config_error("proxy.sites[0].routes[0].app", "'ghost' (route /) is not one of ['backend', 'frontend', "
                        "'kibana', 'minio-console']", {"proxy.sites[0].routes[0].app": "ghost"})


def test_route_to_a_disabled_app(assert_config_error):
    assert_config_error("proxy.sites[0].routes[0].app", "'frontend' (route /) is not one of",
                        {"apps.frontend.enabled": False})


@pytest.mark.parametrize("console", ["kibana", "minio-console"])
def test_route_to_a_console_of_an_enabled_service(valid, console):
    assert valid({"proxy.sites[0].routes[0].app": console}).proxy.sites[0].routes[0].app == console


def test_route_to_the_console_of_a_disabled_service(assert_config_error):
    assert_config_error("proxy.sites[0].routes[0].app", "'minio-console' (route /) is not one of ['backend', "
                        "'frontend', 'kibana']",
                        {"minio.enabled": False, "proxy.sites[0].routes[0].app": "minio-console"})


def test_rate_limit_must_be_declared(assert_config_error):
    assert_config_error("proxy.sites[1].routes[0].rate_limit", "'burst' is not one of",
                        {"proxy.sites[1].routes[0].rate_limit": "burst"})


@pytest.mark.parametrize(("rate", "ok"), [("10r/s", True), ("30r/m", True), ("0r/s", False), ("10/s", False)])
def test_rate_format(valid, assert_config_error, rate, ok):
    if ok:
        assert valid({"proxy.rate_limits.api.rate": rate}).proxy.rate_limits["api"].rate == rate
    else:
        assert_config_error("proxy.rate_limits.api.rate", f"'{rate}' is not a rate like 10r/s or 30r/m",
                            {"proxy.rate_limits.api.rate": rate})


def test_http_redirect_needs_tls(assert_config_error, valid):
    assert_config_error("proxy", "http_redirect needs tls.mode other than none", {"proxy.tls": {"mode": "none"}})
    assert valid({"proxy.tls": {"mode": "none"}, "proxy.http_redirect": False, "environment": "dev"}
                 ).proxy.tls.mode == "none"


def test_server_name_in_two_sites(assert_config_error):
    assert_config_error("proxy.sites", "server name 'www.{domain}' is in more than one site",
                        {"proxy.sites[1].server_names": ["api.{domain}", "www.{domain}"]})


def test_a_path_routed_twice_in_one_site(assert_config_error):
    assert_config_error("proxy.sites[0].routes", "path / is routed twice",
                        {"proxy.sites[0].routes[1]": {"path": "/", "app": "backend"}})


@pytest.mark.parametrize(("owner", "rule"), [
    ("shop_owner", "'shop_owner' owns more than one database; roles are isolated"),
    ("postgres", "'postgres' is the superuser; give each database its own role"),
], ids=["reused", "superuser"])
def test_postgres_owners_are_isolated(assert_config_error, owner, rule):
    assert_config_error("postgres.databases.analytics.owner", rule, {"postgres.databases.analytics.owner": owner})


def test_postgres_database_owner_defaults_to_its_name_which_may_clash(assert_config_error):
    assert_config_error("postgres.databases.shop_owner.owner", "'shop_owner' owns more than one database",
                        {"postgres.databases.shop_owner": {}})


def test_rabbitmq_user_vhost_must_exist(assert_config_error):
    assert_config_error("rabbitmq.users.worker.vhosts", "'billing' is not in vhosts ['/', 'events']",
                        {"rabbitmq.users.worker.vhosts": ["billing"]})


def test_rabbitmq_queue_vhost_must_exist(assert_config_error):
    assert_config_error("rabbitmq.queues[0].vhost", "'billing' (queue jobs) is not in vhosts",
                        {"rabbitmq.queues[0].vhost": "billing"})


def test_rabbitmq_user_may_not_be_the_admin(assert_config_error):
    assert_config_error("rabbitmq.users", "'admin' is the admin user", {"rabbitmq.users.admin": {}})


@pytest.mark.parametrize(("path", "rule"), [
    ("apps.postgres", "'postgres' is taken by berth's own data service"),
    ("apps.kibana", "'kibana' is taken by berth's own data service"),
    ("apps.proxy", "'proxy' is taken by berth's own component"),
    ("jobs.network", "'network' is taken by berth's own component"),
    ("jobs.backend", "'backend' is also an app"),
], ids=lambda v: str(v))
def test_reserved_names(assert_config_error, path, rule):
    assert_config_error(path, rule, {path: {"image": "ghcr.io/acme/x:1", **({"port": 80} if "apps" in path else {})}})


def test_workload_may_not_mount_a_data_service_volume(assert_config_error):
    assert_config_error("apps.backend.volumes", "'postgres_data' is a data service's volume",
                        {"apps.backend.volumes": {"postgres_data": "/data"}})


@pytest.mark.parametrize(("changes", "rule"), [
    ({"apps.backend.env.JWT_SECRET": "x"}, "JWT_SECRET is in both env and secrets"),
    ({"apps.backend.tmpfs": {"/app/uploads": "size=1m"}}, "/app/uploads is mounted twice"),
    ({"apps.backend.extra_ports": [9000, 8000]}, "ports [8000, 9000, 8000] repeat a port"),
], ids=["env-and-secret", "mounted-twice", "ports-repeat"])
def test_workload_consistency(assert_config_error, changes, rule):
    assert_config_error("apps.backend", rule, changes)


@pytest.mark.parametrize(("logging", "rule"), [
    ({"driver": "syslog"}, "driver syslog needs an address, e.g. udp://127.0.0.1:514"),
    ({"driver": "json-file", "address": "udp://127.0.0.1:12201"}, "address is only for gelf or syslog, not json-file"),
], ids=["syslog-without-address", "json-file-with-address"])
def test_logging(assert_config_error, logging, rule):
    assert_config_error("logging", rule, {"logging": logging})


def test_gelf_without_an_address_needs_the_stacks_own_logstash(assert_config_error, valid):
    assert valid({"logging": {"driver": "gelf"}}).logging.address is None  # goes to the stack's Logstash
    assert_config_error("logging.address", "driver gelf needs an address, or elk in the stack to send to",
                        {"logging": {"driver": "gelf"}, "elk.enabled": False})


def test_elasticsearch_needs_a_memory_limit(assert_config_error):
    assert_config_error("elk.elasticsearch", "resources.limits.memory must be set and >= 512m",
                        {"elk.elasticsearch.resources": {"limits": {"memory": "256m"}}})


# -- image references ------------------------------------------------------------------------------

IMAGE_RULE = "is not an image reference like repo/name:tag or repo/name@sha256:<64 hex>"


@pytest.mark.parametrize("ref", [
    "nginx",
    "nginx:1.27-alpine",
    "ghcr.io/acme/backend:1.2.3",
    "registry.example.com:5000/team/app:v1",
    "localhost:5000/app",
    f"ghcr.io/acme/backend@sha256:{'0123456789abcdef' * 4}",
    f"ghcr.io/acme/backend:1.2.3@sha256:{'b' * 64}",
    "minio/minio:RELEASE.2024-06-13T22-53-53Z",
])
def test_image_refs_accepted(valid, ref):
    assert valid({"apps.backend.image": ref}).apps["backend"].image == ref


@pytest.mark.parametrize("ref", [
    "",
    "UPPER/case",
    "ghcr.io/acme/backend:",
    "ghcr.io/acme/backend@sha256:abc",
    f"ghcr.io/acme/backend@sha256:{'B' * 64}",
    f"ghcr.io/acme/backend@sha256:{'b' * 63}",
    "https://ghcr.io/acme/backend",
    "acme backend",
    "backend:-bad",
    "backend:" + "x" * 129,
    "backend:a:b",
])
def test_image_refs_rejected(assert_config_error, ref):
    assert_config_error("apps.backend.image", f"{ref!r} {IMAGE_RULE}", {"apps.backend.image": ref})


def test_image_override_keys_are_image_refs(assert_config_error):
    assert_config_error("images.Not An Image", f"'Not An Image' {IMAGE_RULE}", {"images.Not An Image": "nginx"})


# -- secrets never show up in errors ---------------------------------------------------------------


@pytest.mark.parametrize(("path", "value"), [
    ("redis.password", ["hunter2-in-a-list"]),
    ("postgres.password", 3.14159265),
    ("postgres.databases.shop.password", {"v": "pg-secret-in-a-dict"}),
    ("rabbitmq.users.worker.password", [918273645]),
    ("secrets.api-key.value", 1234567.5),
    ("secrets.api-key", "plain-api-key-string"),
    ("registries[0].password", {"v": 77777777}),
    ("elk.elastic_password", [5550123]),
], ids=lambda v: str(v))
def test_secret_values_are_never_echoed(raw_config, path, value):
    with pytest.raises(ConfigError) as caught:
        load_settings(raw_config({path: value}))
    text = str(caught.value)
    assert text.startswith(f"berth:{path}: the given value ")
    shown = value["v"] if isinstance(value, dict) else value[0] if isinstance(value, list) else value
    assert str(shown) not in text


def test_an_integer_secret_reads_as_its_digits(valid):
    # `pulumi config set --path berth:redis.password 48213957701` stores a YAML integer (pulumi/pulumi#18285).
    redis = valid({"redis.password": 48213957701}).redis
    assert redis is not None and redis.password is not None
    assert redis.password.get_secret_value() == "48213957701"


def test_host_tls_material_is_never_echoed(raw_config):
    with pytest.raises(ConfigError) as caught:
        load_settings(raw_config({"host": {"url": "tcp://h:2376", "ca": CA, "cert": CERT, "key": [99999]}}))
    assert str(caught.value) == "berth:host.key: the given value should be a valid string"


def test_plain_values_are_echoed_for_context(assert_config_error):
    assert_config_error("apps.backend.command", '"migrate" should be a valid list', {"apps.backend.command": "migrate"})


def test_several_problems_are_one_line_each(raw_config):
    with pytest.raises(ConfigError) as caught:
        load_settings(raw_config({"apps.backend.port": 0, "proxy.http_port": 70000, "domain": "Bad Domain"}))
    lines = str(caught.value).split("\n")
    assert lines == [
        "berth:domain: 'Bad Domain' is not a domain name like example.com",
        "berth:apps.backend.port: 0 is not in 1..65535",
        "berth:proxy.http_port: 70000 is not in 1..65535",
    ]


@pytest.mark.parametrize(("changes", "line"), [
    ({"apps.backend.bad\nkey": 1}, "berth:apps.backend.bad\\nkey: the key holds a control character"),
    ({"apps.backend.env": {"A\nB": "x"}}, "berth:apps.backend.env.A\\nB: the key holds a control character"),
], ids=["unknown-key", "env-name"])
def test_a_key_with_a_line_break_stays_on_one_line(raw_config, changes, line):
    with pytest.raises(ConfigError) as caught:
        load_settings(raw_config(changes))
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith(line)


@pytest.mark.parametrize("path", ["redis.password", "postgres.password", "rabbitmq.admin_password",
                                  "secrets.jwt.value"])
@pytest.mark.parametrize("blank", ["", "   "])
def test_blank_secrets_are_refused(assert_config_error, path, blank):
    # An empty requirepass would switch Redis authentication off.
    assert_config_error(path, "a secret may not be empty or blank", {path: blank})


# -- rules found in review: each would have passed validation and broken the deploy -------------


@pytest.mark.parametrize(("path", "changes", "rule"), [
    ("redis.volume", {"redis.volume": "postgres_data"},
     "'postgres_data' is already postgres.volume; each data service needs its own volume"),
    ("postgres.user", {"postgres.user": "pg_admin"}, "'pg_admin' starts with pg_, which PostgreSQL reserves"),
    ("postgres.databases.shop.owner", {"postgres.databases.shop.owner": "pg_monitor"},
     "'pg_monitor' starts with pg_, which PostgreSQL reserves"),
    ("postgres.databases.pg_stats.owner", {"postgres.databases.pg_stats": {}},
     "the default owner 'pg_stats' is a role name PostgreSQL reserves"),
    ("rabbitmq.vhosts", {"rabbitmq.vhosts": [], "rabbitmq.users": {}, "rabbitmq.queues": []},
     "List should have at least 1 item"),
    ("rabbitmq.users.worker.vhosts", {"rabbitmq.users.worker.vhosts": []}, "List should have at least 1 item"),
    ("rabbitmq.users.worker.write", {"rabbitmq.users.worker.write": "(["}, "'([' is not a regular expression"),
    ("minio.root_user", {"minio.root_user": "a@b"}, "is not 3-128 letters, digits"),
    ("minio.root_user", {"minio.root_user": "ab"}, "is not 3-128 letters, digits"),
    ("proxy.sites[0].server_names[0]", {"proxy.sites[0].server_names": ["*"]}, "is not a host name"),
    ("proxy.sites[0].server_names[0]", {"proxy.sites[0].server_names": ["*foo"]}, "is not a host name"),
    ("proxy.https_port", {"proxy.https_port": 80}, "80 is also http_port"),
    ("proxy.sites", {"proxy.sites[1].server_names": ["example.com"]},
     "server names '{domain}' and 'example.com' are both 'example.com'"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_rules_that_would_otherwise_fail_at_deploy(assert_config_error, path, changes, rule):
    assert_config_error(path, rule, changes)


def test_wildcard_server_names_nginx_accepts(valid):
    proxy = valid({"proxy.sites[1].server_names": ["*.api.{domain}"]}).proxy
    assert proxy is not None and proxy.sites[1].server_names == ["*.api.{domain}"]


def test_a_slow_healthcheck_names_both_fields_of_the_wait_timeout_rule():
    """Found by the whole-tree property: an interval of 296s with the default wait_timeout of 300s."""
    with pytest.raises(ConfigError) as caught:
        load_settings({"environment": "dev", "apps": {"web": {
            "image": "web:1", "port": 8000, "healthcheck": {"http": "/", "interval": "296s", "timeout": "10s"}}}})
    assert str(caught.value) == ("berth:apps.web.wait_timeout: 300s is shorter than the first healthcheck can take "
                                 "(306s: healthcheck.interval plus healthcheck.timeout)")
