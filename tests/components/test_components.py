"""The desired state of every blueprint under every stack, from Pulumi's mock runtime.

Each test runs once per stack x blueprint (ids like "prod-praxifi") on a cached synth; see conftest.py.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pulumi
import pytest

from berth.plan.containers import needs_data_network, waits_for
from berth.settings import load_settings
from berth.synth import SECRET, SynthMocks

PROVIDER = "host-docker"
CONTAINER = "docker:index/container:Container"
VOLUME = "docker:index/volume:Volume"
NETWORK = "docker:index/network:Network"
GO_DURATION = re.compile(r"0s|[1-9]\d{0,2}ms|(?:[1-9]\d*h\d{1,2}m|[1-9]\d?m)?\d{1,2}(?:\.\d{1,3})?s")
# A generated password: 32 or more letters and digits, with upper, lower and digits, standing alone.
PASSWORD_LIKE = re.compile(r"(?<![A-Za-z0-9+/])(?=[A-Za-z0-9]*[A-Z])(?=[A-Za-z0-9]*[a-z])(?=[A-Za-z0-9]*\d)"
                           r"[A-Za-z0-9]{32,}(?![A-Za-z0-9+/])")
# Data services whose long-running container is named <system>-<environment>-<service>.
SERVICE_COMPONENT = {"postgres": "postgres", "redis": "redis", "rabbitmq": "rabbitmq", "minio": "minio",
                     "elasticsearch": "elk", "logstash": "elk", "kibana": "elk"}


def is_one_shot(record: dict[str, Any]) -> bool:
    return record["inputs"].get("attach") is True


def app_containers(synth) -> dict[str, list[dict[str, Any]]]:
    return {name: [r for r in synth.children(name) if r["type"] == CONTAINER] for name in synth.settings.enabled_apps}


def service_containers(synth) -> list[dict[str, Any]]:
    """The long-running containers of data services (fixed names, not the proxy, apps or jobs)."""
    workloads = {*synth.settings.enabled_apps, *synth.settings.enabled_jobs, "proxy", "proxy-certbot", "backup"}
    return [r for r in synth.containers if r["parent"] not in workloads and not is_one_shot(r)]


def networks(record: dict[str, Any]) -> list[str]:
    return [network["name"] for network in record["inputs"]["networksAdvanced"]]


def occurs(value: str, text: str) -> bool:
    """Whether `value` is in `text`, a json.dumps() of a synth result (so newlines are escaped)."""
    return json.dumps(value)[1:-1] in text


def walk_strings(value: Any):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from walk_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk_strings(item)


# -- provider, types and key inputs ----------------------------------------------------------------


def test_one_explicit_docker_provider_for_every_docker_resource(synthesized):
    providers = synthesized.of_type("pulumi:providers:docker")
    assert [(p["name"], p["parent"]) for p in providers] == [(PROVIDER, "host")]
    assert providers[0]["inputs"]["host"] == synthesized.settings.host.url
    docker = [r for r in synthesized.resources if r["type"].startswith("docker:")]
    assert docker and {r["provider"] for r in docker} == {PROVIDER}


def test_host_provider_matches_the_stack(synthesized):
    inputs = synthesized.named(PROVIDER)["inputs"]
    if synthesized.stack == "dev":
        assert inputs == {"host": "unix:///var/run/docker.sock"}
    else:
        # Pulumi hands provider inputs over JSON-encoded.
        # A provisioned host: only its configured key is trusted (and first, as ssh keeps first values).
        host_key = synthesized.settings.host.provision.ssh.host_key
        assert (inputs["host"], json.loads(inputs["sshOpts"])) == (
            f"ssh://deploy@{synthesized.stack}.example.com:22",
            ["-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=/dev/null",
             "-o", "GlobalKnownHostsFile=/dev/null",
             "-o", f"KnownHostsCommand=/bin/echo {synthesized.stack}.example.com {host_key}",
             "-o", "StrictHostKeyChecking=yes", "-o", "ServerAliveInterval=30"])
        assert sorted(inputs) == ["host", "sshOpts"]


def test_components_follow_the_type_token_shape(synthesized):
    components = [r for r in synthesized.resources if r["type"].startswith("berth:")]
    assert {r["type"] for r in components} >= {"berth:stack:Stack", "berth:host:DockerHost", "berth:network:Networks",
                                               "berth:images:Images", "berth:volumes:Volumes"}
    assert all(re.fullmatch(r"berth:[a-z]+:[A-Z][A-Za-z]+", r["type"]) for r in components)
    stack = synthesized.named(f"{synthesized.settings.name}-{synthesized.stack}")
    assert stack["type"] == "berth:stack:Stack"


def test_every_container_runs_a_pulled_image(synthesized):
    pulled = {r["inputs"]["name"] for r in synthesized.of_type("remoteImage:RemoteImage")}
    assert all(r["inputs"]["keepLocally"] is True for r in synthesized.of_type("remoteImage:RemoteImage"))
    built = {r["inputs"]["imageName"] for r in synthesized.of_type("image:Image")}
    used = {r["inputs"]["image"] for r in synthesized.containers}
    assert used - built == pulled  # and the backup image is built on the host (FROM the stack's Postgres image)


def test_containers_rotate_logs_and_restart(synthesized):
    for record in synthesized.containers:
        inputs = record["inputs"]
        assert (inputs["logDriver"], inputs["logOpts"]) == ("json-file", {"max-size": "10m", "max-file": "3"})
        expected = "no" if is_one_shot(record) else "unless-stopped"
        if record["parent"] in synthesized.settings.enabled_apps:
            expected = synthesized.settings.apps[record["parent"]].restart
        assert inputs["restart"] == expected, record["name"]


def test_healthchecks_on_data_services_apps_and_proxy(synthesized):
    checked = service_containers(synthesized) + [synthesized.named("proxy-container")]
    for name, containers in app_containers(synthesized).items():
        assert synthesized.settings.apps[name].healthcheck is not None
        checked += containers
    assert len(checked) >= 2
    for record in checked:
        check = record["inputs"]["healthcheck"]
        assert check["tests"][0] in ("CMD", "CMD-SHELL") and len(check["tests"]) >= 2, record["name"]
        assert all(GO_DURATION.fullmatch(check[key]) for key in ("interval", "timeout", "startPeriod")), check
        assert check["retries"] >= 1
        assert record["inputs"]["wait"] is True and record["inputs"]["waitTimeout"] >= 10


def test_one_shot_containers_do_not_wait_for_health(synthesized):
    settings = synthesized.settings
    expected = {f"{job}-job" for job in settings.enabled_jobs}
    if settings.service("postgres") and settings.postgres is not None and settings.postgres.databases:
        expected.add("postgres-databases")
    if settings.service("minio") and settings.minio is not None and settings.minio.buckets:
        expected.add("minio-buckets")
    if settings.service("elasticsearch"):
        expected.add("elk-credentials")
    one_shots = [record for record in synthesized.containers if is_one_shot(record)]
    assert {record["name"] for record in one_shots} == expected
    for record in one_shots:
        assert record["inputs"]["wait"] is False and "healthcheck" not in record["inputs"]
        assert (record["inputs"]["mustRun"], record["inputs"]["logs"]) == (False, True)
        # its captured output goes into the state: kept secret there
        assert record["options"]["additional_secret_outputs"] == ["containerLogs"]
    for record in synthesized.containers:
        if not is_one_shot(record):
            assert record["options"]["additional_secret_outputs"] == [], record["name"]


# Each data service's setup job and the container it sets up.
SETUP_JOBS = {"postgres-databases": "postgres-container", "minio-buckets": "minio-container",
              "elk-credentials": "elk-elasticsearch"}


def test_setup_jobs_wait_for_their_server_by_an_explicit_dependency(synthesized):
    jobs = [r for r in synthesized.containers if r["name"] in SETUP_JOBS]
    assert {r["name"] for r in jobs} == {r["name"] for r in synthesized.containers
                                         if is_one_shot(r) and r["parent"] not in synthesized.settings.enabled_jobs}
    for record in jobs:
        assert SETUP_JOBS[record["name"]] in record["options"]["depends_on"]
        assert "labels" not in record["inputs"]
        assert networks(record) == [synthesized.docker_name("data")]
        assert record["inputs"]["restart"] == "no"


def test_nothing_takes_an_input_from_a_delete_before_replace_container(synthesized):
    """Pulumi deletes, ahead of a delete-before-replace, every resource that takes one of its outputs
    and must be replaced with it: a data service's image bump must not take the apps down with it."""
    replaced_first = {r["name"] for r in synthesized.containers if r["options"]["delete_before_replace"]}
    assert replaced_first
    for record in synthesized.resources:
        options = record["options"]
        from_outputs = set(options["dependencies"]) - set(options["depends_on"])
        assert not from_outputs & replaced_first, (record["name"], from_outputs & replaced_first)


def test_postgres_databases_job_runs_the_sql_with_psql_as_the_superuser(synthesized):
    pg = synthesized.settings.postgres
    if pg is None or not pg.databases or not synthesized.settings.service("postgres"):
        assert all(r["name"] != "postgres-databases" for r in synthesized.containers)
        return
    job = synthesized.named("postgres-databases")["inputs"]
    assert job["entrypoints"] == ["psql"]
    assert job["command"] == ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", "/tmp/berth-databases.sql"]
    assert job["image"] == synthesized.named("postgres-container")["inputs"]["image"]
    assert job["envs"] == SECRET  # PGPASSWORD
    # No init scripts: the server's only upload is the start script (no /docker-entrypoint-initdb.d).
    uploads = synthesized.named("postgres-container")["inputs"]["uploads"]
    assert [upload["file"] for upload in uploads] == ["/usr/local/bin/berth-postgres-start"]


def test_postgres_makes_the_superuser_password_true_at_every_start(synthesized):
    if not synthesized.settings.service("postgres"):
        return
    from berth.plan.postgres import START_SCRIPT, START_SCRIPT_PATH
    server = synthesized.named("postgres-container")["inputs"]
    assert server["entrypoints"] == ["/bin/sh", START_SCRIPT_PATH]
    assert server["command"] == ["postgres"]
    assert server["uploads"] == [{"file": START_SCRIPT_PATH, "content": START_SCRIPT}]
    assert "user" not in server  # the image's entrypoint steps down from root, for the server and the reset


def test_dependents_of_a_setup_job_start_only_after_it_exited_0(synthesized):
    settings = synthesized.settings
    gated = {"postgres": settings.service("postgres") and bool(settings.postgres and settings.postgres.databases),
             "minio": settings.service("minio") and bool(settings.minio and settings.minio.buckets)}
    checked = set()
    for name in (*settings.enabled_apps, *settings.enabled_jobs):
        workload = settings.apps.get(name) or settings.jobs[name]
        labels = [label for r in synthesized.children(name) if r["type"] == CONTAINER
                  for label in r["inputs"].get("labels", [])]
        for dep in waits_for(workload):  # declared, or implied by a secret it takes
            if gated.get(dep):
                assert {"label": f"berth.after.{dep}", "value": "exit-0"} in labels, (name, dep)
                checked.add((name, dep))
    if settings.blueprint == "sentineliq" and synthesized.stack == "dev":
        assert checked == {("server", "postgres"), ("server", "minio"), ("migrate", "postgres")}


def test_app_healthchecks_probe_the_app_port(synthesized):
    for name, containers in app_containers(synthesized).items():
        app = synthesized.settings.apps[name]
        assert app.healthcheck is not None and app.healthcheck.http is not None
        for record in containers:
            assert f"http://127.0.0.1:{app.port}{app.healthcheck.http}" in record["inputs"]["healthcheck"]["tests"][1]


def test_one_edge_and_one_internal_data_network(synthesized):
    found = sorted((r["name"], r["inputs"]["name"], r["inputs"].get("internal", False))
                   for r in synthesized.of_type(NETWORK))
    assert found == [("network-data", synthesized.docker_name("data"), True),
                     ("network-edge", synthesized.docker_name("edge"), False)]


def test_data_services_only_on_the_data_network(synthesized):
    services = service_containers(synthesized)
    assert bool(services) is any(synthesized.settings.service(name) for name in SERVICE_COMPONENT)
    data = synthesized.docker_name("data")
    for record in services:
        assert networks(record) == [data], record["name"]
    for record in synthesized.containers:
        if is_one_shot(record) and record["parent"] not in synthesized.settings.enabled_jobs:
            assert networks(record) == [data], record["name"]


def test_apps_and_jobs_join_the_data_network_only_when_they_need_it(synthesized):
    edge, data = synthesized.docker_name("edge"), synthesized.docker_name("data")
    settings = synthesized.settings
    for record in synthesized.containers:
        workload = settings.enabled_apps.get(record["parent"]) or settings.enabled_jobs.get(record["parent"])
        if workload is not None:
            assert networks(record) == ([edge, data] if needs_data_network(workload) else [edge]), record["name"]
    assert networks(synthesized.named("proxy-container")) == [edge]


# -- exposure ------------------------------------------------------------------------------------


def test_only_the_proxy_publishes_ports(synthesized):
    publishing = [r["name"] for r in synthesized.containers if "ports" in r["inputs"]]
    assert publishing == ["proxy-container"]


def test_proxy_ports_carry_address_and_protocol(synthesized):
    proxy = synthesized.settings.proxy
    assert proxy is not None
    bind, http, https = ("127.0.0.1", 8080, 8443) if synthesized.stack == "dev" else ("0.0.0.0", 80, 443)
    assert (proxy.bind, proxy.http_port, proxy.https_port) == (bind, http, https)
    ports = synthesized.named("proxy-container")["inputs"]["ports"]
    assert sorted(ports, key=lambda p: p["internal"]) == [
        {"internal": 80, "external": http, "ip": bind, "protocol": "tcp"},
        {"internal": 443, "external": https, "ip": bind, "protocol": "tcp"},
    ]


# -- secrets ---------------------------------------------------------------------------------------


def test_no_generated_secret_appears_in_the_masked_synth(synthesized):
    passwords = synthesized.of_type("randomPassword:RandomPassword")
    assert len(synthesized.generated) >= len(passwords) >= 1
    text = json.dumps(synthesized.result)
    assert [value for value in synthesized.generated if occurs(value, text)] == []


def test_nothing_password_like_outside_certificates(synthesized):
    strings = [s for s in walk_strings(synthesized.result) if "-----BEGIN CERTIFICATE-----" not in s]
    assert [s for s in strings if PASSWORD_LIKE.search(s)] == []


def test_generated_passwords_are_long_and_plain(synthesized):
    for record in synthesized.of_type("randomPassword:RandomPassword"):
        assert record["inputs"]["special"] is False and record["inputs"]["length"] >= 32, record["name"]
        assert record["provider"] is None  # pulumi-random's own provider, not the docker host


def test_envs_with_secrets_are_secret(synthesized):
    settings = synthesized.settings
    for record in synthesized.containers:
        workload = settings.enabled_apps.get(record["parent"]) or settings.enabled_jobs.get(record["parent"])
        if workload is not None:
            if workload.secrets:
                assert record["inputs"]["envs"] == SECRET, record["name"]
            else:
                assert isinstance(record["inputs"]["envs"], list) and record["inputs"]["envs"] == sorted(
                    record["inputs"]["envs"], key=lambda line: line.split("=", 1)[0])
    for service in ("postgres", "redis"):
        if settings.service(service):
            assert synthesized.named(f"{service}-container")["inputs"]["envs"] == SECRET


def test_secret_files_are_uploaded_as_secrets(synthesized):
    uploads = {(r["name"], u["file"]): u["content"]
               for r in synthesized.containers for u in r["inputs"].get("uploads", [])}
    if synthesized.settings.proxy.tls.mode == "letsencrypt":  # key + certificate, until certbot's is there
        assert uploads[("proxy-container", "/etc/nginx/tls/temporary.pem")] == SECRET
    else:
        assert uploads[("proxy-container", "/etc/nginx/tls/key.pem")] == SECRET
        assert uploads[("proxy-container", "/etc/nginx/tls/cert.pem")].startswith("-----BEGIN CERTIFICATE-----")
    assert uploads[("proxy-container", "/etc/nginx/nginx.conf")] != SECRET
    settings = synthesized.settings
    if settings.redis is not None:
        assert uploads[("redis-container", "/usr/local/etc/redis/berth.conf")] == SECRET
    if settings.postgres is not None and settings.postgres.databases:
        assert uploads[("postgres-databases", "/tmp/berth-databases.sql")] == SECRET
    if settings.rabbitmq is not None:
        assert uploads[("rabbitmq-container", "/etc/rabbitmq/definitions.json")] == SECRET


def test_tls_key_feeds_the_certificate_as_a_secret(synthesized):
    cert = synthesized.named("proxy-tls-cert")["inputs"]
    assert cert["privateKeyPem"] == SECRET
    assert cert["subject"] == {"commonName": cert["dnsNames"][0], "organization": "berth self-signed"}
    domain = synthesized.settings.domain
    assert all(name == domain or name.endswith(f".{domain}") for name in cert["dnsNames"])


def test_connections_output_is_secret(synthesized):
    outputs = synthesized.result["outputs"]
    assert outputs["connections"] == SECRET
    assert outputs["environment"] == synthesized.stack
    assert outputs["networks"] == {"edge": synthesized.docker_name("edge"), "data": synthesized.docker_name("data")}


# -- data outlives containers ----------------------------------------------------------------------


def test_volumes_are_retained_and_protected_in_prod(synthesized):
    volumes = synthesized.of_type("volume:Volume")
    assert volumes
    for record in volumes:
        options = record["options"]
        assert (options["retain_on_delete"], options["protect"]) == (True, synthesized.stack == "prod"), record["name"]
        assert record["inputs"]["name"].startswith(synthesized.docker_name())


def test_only_volumes_are_protected_or_retained(synthesized):
    others = [r["name"] for r in synthesized.resources
              if r["type"] != VOLUME and (r["options"]["protect"] or r["options"]["retain_on_delete"])]
    assert others == []


def test_every_volume_is_mounted_by_a_container_of_its_owner(synthesized):
    mounts = {(r["parent"], m["volumeName"]) for r in synthesized.containers for m in r["inputs"].get("volumes", [])}
    for volume in synthesized.of_type("volume:Volume"):
        owners = {parent for parent, name in mounts if name == volume["inputs"]["name"]}
        if volume["parent"] == "volumes":  # shared by apps and jobs (and read by the backup container)
            owners.discard("backup")
            assert owners and owners <= {*synthesized.settings.enabled_apps, *synthesized.settings.enabled_jobs}
        elif volume["name"] == "proxy-certbot-shared":  # certbot's webroot and certificate, read by nginx
            assert owners == {"proxy-certbot", "proxy"}
        else:
            assert owners == {volume["parent"]}, volume["name"]


# -- replacement -----------------------------------------------------------------------------------


def test_apps_are_replaced_create_before_delete_unless_stop_first(synthesized):
    for name, containers in app_containers(synthesized).items():
        app = synthesized.settings.apps[name]
        assert sorted(r["name"] for r in containers) == [f"{name}-{i}" for i in range(app.replicas)]
        for record in containers:
            inputs = record["inputs"]
            assert record["options"]["delete_before_replace"] is (app.update_order == "stop-first")
            assert "name" not in inputs  # autonamed, so old and new can run side by side
            assert inputs["wait"] is True and inputs["waitTimeout"] == app.wait_timeout
            assert inputs["destroyGraceSeconds"] == int(app.grace.total_seconds()) >= 30
            assert [(n["name"], n["aliases"]) for n in inputs["networksAdvanced"]][0] == (
                synthesized.docker_name("edge"), [name])


def test_fixed_names_replace_delete_first(synthesized):
    fixed = service_containers(synthesized) + [synthesized.named("proxy-container")]
    fixed += [r for r in synthesized.containers if r["name"] == "backup-container"]
    for record in fixed:
        assert record["options"]["delete_before_replace"] is True, record["name"]
        alias = record["inputs"]["networksAdvanced"][0]["aliases"][0]
        assert record["inputs"]["name"] == synthesized.docker_name(alias)
    if synthesized.settings.proxy.tls.mode == "letsencrypt":  # one certbot on the account at a time
        certbot = synthesized.named("proxy-certbot-container")
        assert certbot["options"]["delete_before_replace"] is True
        assert certbot["inputs"]["name"] == synthesized.docker_name("certbot")
        fixed.append(certbot)
    stop_first = {f"{name}-{i}" for name, app in synthesized.settings.enabled_apps.items()
                  if app.update_order == "stop-first" for i in range(app.replicas)}
    for record in synthesized.containers:
        if record not in fixed:
            assert "name" not in record["inputs"]
            assert record["options"]["delete_before_replace"] is (record["name"] in stop_first)


def test_resource_names_are_unique(synthesized):
    names = [r["name"] for r in synthesized.resources]
    assert sorted(n for n in set(names) if names.count(n) > 1) == []


def test_docker_names_are_unique(synthesized):
    names = [r["inputs"]["name"] for r in synthesized.resources
             if r["type"] in (CONTAINER, VOLUME, NETWORK) and "name" in r["inputs"]]
    assert len(names) == len(set(names)) >= 3


# -- order -----------------------------------------------------------------------------------------


def closure(synth, names: list[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += synth.named(name)["options"]["dependencies"]
    return seen


def test_workloads_wait_for_what_they_depend_on(synthesized):
    settings = synthesized.settings
    checked = 0
    for record in synthesized.containers:
        workload = settings.enabled_apps.get(record["parent"]) or settings.enabled_jobs.get(record["parent"])
        if workload is None:
            continue
        direct = record["options"]["dependencies"]
        before = closure(synthesized, direct)
        for dep in workload.depends_on:
            if dep in SERVICE_COMPONENT:
                assert any(synthesized.named(d)["parent"] == SERVICE_COMPONENT[dep] for d in direct), (record, dep)
                service = [r["name"] for r in service_containers(synthesized) if r["inputs"]["name"] ==
                           synthesized.docker_name(dep)]
                assert len(service) == 1 and service[0] in before, (record["name"], dep)
            elif dep in settings.enabled_jobs:
                assert f"{dep}-job" in direct, (record["name"], dep)
            else:
                replicas = settings.apps[dep].replicas
                assert {f"{dep}-{i}" for i in range(replicas)} <= set(direct), (record["name"], dep)
            checked += 1
    assert checked == sum(len(w.depends_on) * getattr(w, "replicas", 1)
                          for w in (*settings.enabled_apps.values(), *settings.enabled_jobs.values()))


def test_the_proxy_waits_for_every_app(synthesized):
    depends_on = set(synthesized.named("proxy-container")["options"]["depends_on"])
    apps = {r["name"] for containers in app_containers(synthesized).values() for r in containers}
    assert apps and apps <= depends_on


def test_data_services_wait_for_nothing_but_their_own_parts(synthesized):
    for record in service_containers(synthesized):
        parents = {synthesized.named(d)["parent"] for d in closure(synthesized, record["options"]["dependencies"])}
        assert parents <= {record["parent"], "network", "images"}, record["name"]


# -- a routed console joins the edge network ------------------------------------------------------

CONSOLE_SITES = {"proxy": {"sites": [
    {"server_names": ["app.{domain}"], "routes": [{"path": "/", "app": "client"}]},
    {"server_names": ["kibana.{domain}"], "routes": [{"path": "/", "app": "kibana"}]},
    {"server_names": ["s3.{domain}"], "routes": [{"path": "/", "app": "minio-console"}]},
]}}


def test_routed_consoles_join_the_edge_network(synth_with):
    synth = synth_with("staging", "sentineliq", overrides=CONSOLE_SITES)
    edge, data = synth.docker_name("edge"), synth.docker_name("data")
    placed = {r["name"]: networks(r) for r in service_containers(synth)}
    assert placed == {
        "postgres-container": [data], "redis-container": [data], "minio-container": [data, edge],
        "elk-elasticsearch": [data], "elk-logstash": [data], "elk-kibana": [data, edge],
    }
    assert [r["name"] for r in synth.containers if "ports" in r["inputs"]] == ["proxy-container"]


def test_gelf_logging_goes_to_the_stacks_logstash_on_loopback(synth_with):
    synth = synth_with("dev", "sentineliq", overrides={"logging": {"driver": "gelf"}})
    elk = {"elk-elasticsearch", "elk-credentials", "elk-logstash", "elk-kibana"}
    for record in synth.containers:
        driver, opts = record["inputs"]["logDriver"], record["inputs"]["logOpts"]
        if record["name"] in elk:  # Logstash must not log to itself, nor wait for itself to start
            assert (driver, opts) == ("json-file", {"max-size": "10m", "max-file": "3"}), record["name"]
        else:
            assert driver == "gelf", record["name"]
            assert opts["gelf-address"] == "udp://127.0.0.1:12201", record["name"]
    assert synth.named("elk-logstash")["inputs"]["ports"] == [
        {"internal": 12201, "external": 12201, "ip": "127.0.0.1", "protocol": "udp"}]
    pipeline = [u for u in synth.named("elk-logstash")["inputs"]["uploads"] if u["file"].endswith("logstash.conf")]
    assert "gelf {\n    port => 12201\n  }" in pipeline[0]["content"]


# -- switching an app on per stack -----------------------------------------------------------------


@pytest.fixture(scope="module")
def databaseai_llm(synth_with):
    return synth_with("prod", "databaseai", overrides={"apps": {"llm": {"enabled": True}}})


def test_databaseai_llm_is_absent_by_default(synth_of):
    default = synth_of("prod", "databaseai")
    assert "llm" not in default.settings.enabled_apps
    assert not [r for r in default.resources if "llm" in r["name"] or "vllm" in json.dumps(r["inputs"])]


def test_databaseai_llm_is_present_when_the_stack_switches_it_on(databaseai_llm):
    synth = databaseai_llm
    assert synth.named("llm")["type"] == "berth:app:AppService"
    container = synth.named("llm-0")
    inputs = container["inputs"]
    assert inputs["image"] == "vllm/vllm-openai:latest"
    assert inputs["waitTimeout"] == 1800
    assert inputs["healthcheck"]["startPeriod"] == "10m0s" and inputs["healthcheck"]["retries"] == 5
    assert inputs["volumes"] == [
        {"volumeName": "databaseai-prod-llm_models", "containerPath": "/root/.cache/huggingface"}]
    volume = synth.named("volume-llm_models")
    assert (volume["options"]["protect"], volume["options"]["retain_on_delete"]) == (True, True)
    assert synth.result["outputs"]["volumes"] == {"llm_models": "databaseai-prod-llm_models"}
    assert "llm-0" in synth.named("proxy-container")["options"]["depends_on"]


# -- given secrets, TLS material and the reveal switch -------------------------------------------

GIVEN = {
    "registry": "given-registry-password-5150",
    "redis": "given-redis-password-8086",
    "jwt": "given-jwt-value-1234567890",
    "database": "given-database-password-2718",
    "ca": "-----BEGIN CERTIFICATE-----\ngiven-ca-material\n-----END CERTIFICATE-----\n",
    "cert": "-----BEGIN CERTIFICATE-----\ngiven-cert-material\n-----END CERTIFICATE-----\n",
    "key": "-----BEGIN PRIVATE KEY-----\ngiven-key-material\n-----END PRIVATE KEY-----\n",
}
MARKERS = ("given-ca-material", "given-cert-material", "given-key-material")
OVERRIDES = {
    "host": {"url": "tcp://docker.example.com:2376", "ssh_opts": [], "ca": GIVEN["ca"], "cert": GIVEN["cert"],
             "key": GIVEN["key"], "provision": {"enabled": False}},  # a tcp:// engine is not provisioned
    "registries": [{"address": "ghcr.io", "username": "bot", "password": GIVEN["registry"]}],
    "redis": {"password": GIVEN["redis"]},
    "secrets": {"jwt-secret": {"value": GIVEN["jwt"]}},
    "postgres": {"databases": {"sentineliq": {"password": GIVEN["database"]}}},
    # Staging refuses secrets written in plain text unless the stack says why (berth/settings/guardrails.py).
    "allow_insecure": {"plaintext_secret": "test fixture: given secrets in plain text"},
}


@pytest.fixture(scope="module")
def given_secrets(synth_with):
    return synth_with("staging", "sentineliq", overrides=OVERRIDES)


@pytest.fixture(scope="module")
def revealed(synth_with):
    return synth_with("staging", "sentineliq", reveal=True, overrides=OVERRIDES)


def test_given_secrets_never_appear_masked(given_secrets):
    text = json.dumps(given_secrets.result)
    assert [name for name, value in GIVEN.items() if occurs(value, text)] == []
    assert [marker for marker in MARKERS if marker in text] == []
    assert [value for value in given_secrets.generated if occurs(value, text)] == []


def test_provider_tls_material_and_registry_password_are_secret(given_secrets):
    provider = given_secrets.named(PROVIDER)["inputs"]
    assert provider["host"] == "tcp://docker.example.com:2376"
    assert (provider["caMaterial"], provider["certMaterial"], provider["keyMaterial"]) == (SECRET, SECRET, SECRET)
    assert provider["registryAuth"] == SECRET  # the whole list, since one of its values is secret
    assert "sshOpts" not in provider


def test_given_passwords_replace_generated_ones(given_secrets):
    passwords = {r["name"] for r in given_secrets.of_type("randomPassword:RandomPassword")}
    assert {"redis-password", "postgres-sentineliq-password", "secret-jwt-secret"}.isdisjoint(passwords)
    assert {"postgres-password", "minio-root-password", "elk-elastic-password"} <= passwords


def test_reveal_shows_what_the_masked_synth_hides(revealed):
    text = json.dumps(revealed.result)
    assert [name for name, value in GIVEN.items() if not occurs(value, text)] == []
    passwords = [value for value in revealed.generated if value.isalnum()]
    keys = [value for value in revealed.generated if value.startswith("-----BEGIN PRIVATE KEY-----")]
    # postgres, minio root, elastic, kibana_system and the restic repository's are generated; the rest were given.
    assert (len(passwords), len(keys)) == (5, 1)
    assert all(occurs(value, text) for value in passwords + keys)
    provider = revealed.named(PROVIDER)["inputs"]
    assert (provider["caMaterial"], provider["keyMaterial"]) == (GIVEN["ca"], GIVEN["key"])
    assert json.loads(provider["registryAuth"]) == [
        {"address": "ghcr.io", "username": "bot", "password": GIVEN["registry"]}]
    connections = revealed.result["outputs"]["connections"]
    assert connections["redis.url"] == f"redis://:{GIVEN['redis']}@redis:6379/0"
    assert connections["postgres.databases.sentineliq.url"] == (
        f"postgresql://sentineliq:{GIVEN['database']}@postgres:5432/sentineliq")


# -- the decorator path: the Stack component built in-process under mocks --------------------------


@pytest.fixture
def pulumi_mocks():
    """Pulumi's mock runtime with berth's synth mocks (real random passwords), for one test."""
    pulumi.runtime.set_mocks(SynthMocks(), project="berth", stack="unit", preview=False)


@pulumi.runtime.test
def test_stack_component_outputs(pulumi_mocks):
    from components.stack import Stack

    settings = load_settings({"environment": "unit", "domain": "example.com"}, blueprint="sentineliq")
    stack = Stack("sentineliq-unit", settings)

    async def check() -> None:
        assert await stack.postgres.url.is_secret()
        assert await stack.postgres.password.is_secret()
        assert await stack.redis.url.is_secret()
        assert await stack.postgres.container.envs.is_secret()
        assert all([await url.is_secret() for url in stack.connections.values()])
        assert sorted(stack.connections) == ["elasticsearch.url", "postgres.databases.sentineliq.url", "postgres.url",
                                             "redis.url"]
        password = await stack.postgres.password.future()
        assert isinstance(password, str) and re.fullmatch(r"[A-Za-z0-9]{32}", password)
        assert await stack.postgres.url.future() == f"postgresql://postgres:{password}@postgres:5432/app"
        assert not await stack.networks.data.name.is_secret()
        assert await stack.networks.data.name.future() == "sentineliq-unit-data"
        assert await stack.networks.data.internal.future() is True
        assert sorted(stack.apps) == ["client", "server"] and sorted(stack.jobs) == ["migrate"]
        assert stack.urls == ["https://app.example.com", "https://api.example.com"]

    return check()


@pulumi.runtime.test
def test_every_reference_settings_allow_has_a_value(pulumi_mocks, valid):
    # Settings validate references by name; the components provide the values. Both must agree.
    from components.stack import Stack

    settings = valid()
    stack = Stack("unit", settings)
    assert set(stack.secrets) == settings.secret_refs()
    assert len(settings.secret_refs()) > 15  # every kind of data service is in the baseline

    async def check() -> None:
        for ref, value in stack.secrets.items():
            assert await value.is_secret(), ref

    return check()


class FailingJobMocks(SynthMocks):
    """Every container exits 3, as a failed migration would."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        resource_id, state = super().new_resource(args)
        if args.typ == "docker:index/container:Container":
            state["exitCode"] = 3
        return resource_id, state


@pytest.fixture
def failing_job_mocks():
    pulumi.runtime.set_mocks(FailingJobMocks(), project="berth", stack="unit", preview=False)


def test_a_failed_job_fails_the_update_and_says_how_to_run_it_again(failing_job_mocks):
    import pulumi_docker as docker

    from components.common import ONE_SHOT, JobFailed, exit_gate

    @pulumi.runtime.test
    def program() -> None:
        job = docker.Container("migrate-job", image="migrations:1", **ONE_SHOT)
        exit_gate(job, "migrate")  # not awaited by anything: the update fails all the same

    with pytest.raises(JobFailed) as failed:
        program()
    urn = "urn:pulumi:unit::berth::pulumi:pulumi:Stack$docker:index/container:Container::migrate-job"
    assert str(failed.value).startswith("job migrate exited with 3; see its logs")
    assert f"`pulumi up --replace '{urn}'`" in str(failed.value)
    # The SDK prints a RunError as its message alone: one line, no traceback.
    assert isinstance(failed.value, pulumi.RunError) and "\n" not in str(failed.value)


def test_an_app_taking_a_database_url_waits_for_it_without_depends_on(synth_with):
    synth = synth_with("dev", "databaseai", overrides={"apps": {"backend": {"depends_on": []}}})
    assert synth.settings.apps["backend"].depends_on == []
    backend = synth.named("backend-0")
    assert {"postgres-container", "postgres-databases"} <= set(backend["options"]["dependencies"])
    assert {"label": "berth.after.postgres", "value": "exit-0"} in backend["inputs"]["labels"]


def test_the_json_file_database_has_one_writer_during_a_deploy(synth_of):
    """WebProMetrics' backend writes db.json on its volume: it is stopped before its replacement starts."""
    synth = synth_of("prod", "webprometrics")
    assert synth.settings.apps["backend"].update_order == "stop-first"
    assert synth.named("backend-0")["options"]["delete_before_replace"] is True
    others = [r for name, rs in app_containers(synth_of("prod", "praxifi")).items() for r in rs]
    assert others and all(r["options"]["delete_before_replace"] is False for r in others)


def _replace_on(record: dict[str, Any]) -> str | None:
    return next((label["value"] for label in record["inputs"].get("labels", [])
                 if label["label"] == "berth.replace-on"), None)


def test_healthcheck_and_tmpfs_changes_replace_the_container(synthesized):
    """The provider would update them in place, which docker ignores (kreuzwerker#988): a label forces a new one."""
    for record in synthesized.containers:
        inputs = record["inputs"]
        assert (_replace_on(record) is not None) is bool(inputs.get("healthcheck") or inputs.get("tmpfs")), \
            record["name"]


def test_the_replace_on_label_follows_the_healthcheck_and_tmpfs(synth_of, synth_with):
    base = synth_of("dev", "databaseai")
    slower = synth_with("dev", "databaseai", overrides={"apps": {"backend": {"healthcheck": {"start_period": "90s"}}}})
    roomier = synth_with("dev", "databaseai", overrides={"apps": {"backend": {"tmpfs": {"/tmp": "size=512m,exec"}}}})
    values = {_replace_on(s.named("backend-0")) for s in (base, slower, roomier)}
    assert len(values) == 3 and None not in values
    assert _replace_on(slower.named("frontend-0")) == _replace_on(base.named("frontend-0"))
