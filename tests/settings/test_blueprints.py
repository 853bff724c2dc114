"""The five seed systems as blueprints: each validates under every stack, with the seed's numbers."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from berth.settings import Settings, load_settings

BLUEPRINTS = Path(__file__).resolve().parents[2] / "blueprints"
NAMES = sorted(path.stem for path in BLUEPRINTS.glob("*.yaml"))
ENVIRONMENTS = ("dev", "staging", "prod")
GiB = 1024**3
MiB = 1024**2


def stack(env: str) -> dict[str, object]:
    return {"environment": env, "domain": "example.com", "protect_data": env == "prod"}


def load(name: str, env: str = "prod", **over: object) -> Settings:
    return load_settings({**stack(env), **over}, blueprint=name)


def route(settings: Settings, server_name: str, path: str):
    assert settings.proxy is not None
    for site in settings.proxy.sites:
        if server_name in site.server_names:
            return next(r for r in site.routes if r.path == path)
    raise AssertionError(f"no site for {server_name}")


SEEDS = ["ai-present-finder", "databaseai", "praxifi", "sentineliq", "webprometrics"]


def test_all_five_seeds_have_a_blueprint_beside_the_demo():
    assert NAMES == sorted([*SEEDS, "demo"])


def test_the_demo_uses_public_images_and_the_demo_app():
    settings = load("demo", "dev")
    assert settings.postgres is not None and settings.redis is not None and settings.proxy is not None
    assert (settings.postgres.image, settings.redis.image, settings.proxy.image) == (
        "postgres:16-alpine", "redis:7-alpine", "nginx:1.27-alpine")
    assert {name: app.image for name, app in settings.apps.items()} == {"web": "berth/demo:1"}
    assert settings.apps["web"].secrets == {"DATABASE_URL": "postgres.databases.demo.url", "REDIS_URL": "redis.url"}


@pytest.mark.parametrize("env", ENVIRONMENTS)
@pytest.mark.parametrize("name", NAMES)
def test_blueprint_validates_in_every_stack(name: str, env: str):
    settings = load(name, env)
    assert settings.blueprint == name
    assert settings.environment == env
    assert settings.domain == "example.com"
    assert settings.protect_data is (env == "prod")


@pytest.mark.parametrize("name", NAMES)
def test_blueprint_leaves_stack_keys_to_the_stack(name: str):
    data = yaml.safe_load((BLUEPRINTS / f"{name}.yaml").read_text())
    assert data["name"] == name
    assert not {"environment", "host", "protect_data", "domain", "blueprint"} & set(data)


@pytest.mark.parametrize("name", NAMES)
def test_blueprint_server_names_follow_the_domain(name: str):
    settings = load(name)
    assert settings.proxy is not None
    for site in settings.proxy.sites:
        assert all("{domain}" in server_name for server_name in site.server_names)


@pytest.mark.parametrize("name", NAMES)
def test_blueprint_publishes_only_through_the_tls_proxy(name: str):
    settings = load(name)
    assert settings.proxy is not None and settings.proxy.enabled
    assert settings.proxy.tls.mode != "none"
    assert settings.proxy.http_redirect is True


@pytest.mark.parametrize("env", ENVIRONMENTS)
@pytest.mark.parametrize("name", NAMES)
def test_staging_and_prod_use_lets_encrypt_and_dev_stays_self_signed(name: str, env: str):
    from berth.settings import from_stack_files
    from berth.settings.tls import LETSENCRYPT, LETSENCRYPT_STAGING, acme_server

    settings = load_settings({**from_stack_files(env), "blueprint": name})
    assert settings.proxy is not None
    if env == "dev":
        assert settings.proxy.tls.mode == "self-signed"
        return
    assert settings.proxy.tls.mode == "letsencrypt"
    assert settings.proxy.tls.acme is not None and settings.proxy.tls.acme.email
    assert acme_server(settings) == (LETSENCRYPT_STAGING if env == "staging" else LETSENCRYPT)


# -- praxifi (seed 000) --------------------------------------------------------------------------


def test_praxifi_frontend_runs_two_instances_on_3000():
    frontend = load("praxifi").apps["frontend"]
    assert (frontend.port, frontend.replicas) == (3000, 2)


def test_praxifi_backend_resources_and_healthcheck():
    backend = load("praxifi").apps["backend"]
    assert backend.port == 8000
    assert (backend.resources.limits.cpus, backend.resources.limits.memory) == (2.0, 4 * GiB)
    assert (backend.resources.reservations.cpus, backend.resources.reservations.memory) == (1.0, 2 * GiB)
    check = backend.healthcheck
    assert check is not None
    assert (check.interval, check.timeout, check.retries, check.start_period) == (
        timedelta(seconds=60), timedelta(seconds=15), 5, timedelta(seconds=60))


def test_praxifi_backend_volumes_and_redis():
    settings = load("praxifi")
    backend = settings.apps["backend"]
    assert set(backend.volumes) == {"uploads_data", "outputs_data", "logs_data"}
    assert backend.secrets == {"REDIS_URL": "redis.url"}
    assert backend.depends_on == ["redis"]
    redis = settings.redis
    assert redis is not None
    assert redis.volume == "redis_data" and redis.persistence != "none"
    assert (redis.healthcheck.interval, redis.healthcheck.timeout, redis.healthcheck.retries) == (
        timedelta(seconds=10), timedelta(seconds=5), 3)


def test_praxifi_proxy_hosts_rate_limits_and_sse():
    settings = load("praxifi")
    proxy = settings.proxy
    assert proxy is not None
    assert (proxy.rate_limits["api"].rate, proxy.rate_limits["api"].burst) == ("10r/s", 20)
    assert (proxy.rate_limits["uploads"].rate, proxy.rate_limits["uploads"].burst) == ("2r/s", 5)
    assert route(settings, "{domain}", "/").app == "frontend"
    assert route(settings, "www.{domain}", "/").app == "frontend"
    api = route(settings, "api.{domain}", "/")
    assert (api.app, api.rate_limit) == ("backend", "api")
    upload = route(settings, "api.{domain}", "/api/full_report")
    assert (upload.app, upload.rate_limit, upload.client_max_body_size) == ("backend", "uploads", 50 * MiB)
    progress = route(settings, "api.{domain}", "/api/progress/")
    assert (progress.app, progress.sse) == ("backend", True)


# -- databaseai (seed 001) -----------------------------------------------------------------------


def test_databaseai_llm_is_optional():
    settings = load("databaseai")
    assert settings.apps["llm"].enabled is False
    assert "llm" not in settings.enabled_apps
    assert "llm" in load("databaseai", apps={"llm": {"enabled": True}}).enabled_apps


@pytest.mark.parametrize("app", ["backend", "frontend"])
def test_databaseai_apps_are_non_root_and_read_only(app: str):
    workload = load("databaseai").apps[app]
    assert workload.user == "1000:1000"
    assert workload.read_only is True
    assert "/tmp" in workload.tmpfs
    assert workload.resources.limits.cpus is not None and workload.resources.limits.memory is not None


def test_databaseai_backend_and_routes():
    settings = load("databaseai")
    backend = settings.apps["backend"]
    assert backend.port == 8088
    assert backend.healthcheck is not None and backend.healthcheck.http == "/api/v1/health"
    assert backend.secrets["DATABASE_URL"] == "postgres.databases.databaseai.url"
    assert route(settings, "{domain}", "/").app == "frontend"
    assert route(settings, "{domain}", "/api/").app == "backend"
    assert settings.postgres is not None and settings.postgres.volume == "postgres_data"


# -- sentineliq (seed 002) -----------------------------------------------------------------------


def test_sentineliq_runs_eight_containers_from_the_seed_images():
    settings = load("sentineliq")
    assert settings.postgres is not None and settings.postgres.image == "postgres:16-alpine"
    assert settings.redis is not None and settings.redis.image == "redis:7-alpine"
    assert settings.minio is not None and settings.minio.buckets
    assert settings.elk is not None
    assert settings.elk.elasticsearch.image.endswith("elasticsearch:8.11.0")
    assert settings.elk.logstash.image.endswith("logstash:8.11.0")
    assert settings.elk.kibana.image.endswith("kibana:8.11.0")
    server, client = settings.apps["server"], settings.apps["client"]
    assert (server.image, server.port) == ("ghcr.io/killsearch/saas-server:main", 3001)
    assert (client.image, client.port) == ("ghcr.io/killsearch/saas-client:main", 3000)
    services = {"postgres", "redis", "minio", "elasticsearch", "logstash", "kibana"}
    assert len({name for name in services if settings.service(name)} | set(settings.enabled_apps)) == 8


def test_sentineliq_migrates_before_the_server_starts():
    settings = load("sentineliq")
    migrate = settings.jobs["migrate"]
    assert migrate.image == settings.apps["server"].image
    assert migrate.command == ["npx", "prisma", "migrate", "deploy"]
    assert migrate.secrets == {"DATABASE_URL": "postgres.databases.sentineliq.url"}
    assert migrate.depends_on == ["postgres"]
    server = settings.apps["server"]
    assert {"postgres", "redis", "elasticsearch", "logstash", "migrate"} <= set(server.depends_on)
    assert settings.apps["client"].depends_on == ["server"]


def test_sentineliq_four_data_volumes_and_internal_consoles():
    settings = load("sentineliq")
    assert settings.postgres and settings.redis and settings.minio and settings.elk
    volumes = {settings.postgres.volume, settings.redis.volume, settings.minio.volume,
               settings.elk.elasticsearch.volume}
    assert volumes == {"postgres-data", "redis-data", "minio-data", "elasticsearch-data"}
    assert all(not app.volumes for app in settings.apps.values())
    assert settings.proxy is not None
    routed = {r.app for site in settings.proxy.sites for r in site.routes}
    assert routed == {"client", "server"}
    assert route(settings, "app.{domain}", "/").app == "client"
    assert route(settings, "api.{domain}", "/").app == "server"


# -- ai-present-finder (seed 003) ----------------------------------------------------------------


def test_ai_present_finder_app_serves_every_process_port_unpublished():
    app = load("ai-present-finder").apps["app"]
    assert app.port == 3000
    assert [app.port, *app.extra_ports] == [3000, 3010, 3020, 3030, 3040, 3050, 8011, 8012, 8013, 8014]
    assert app.healthcheck is not None and app.healthcheck.http == "/health"


def test_ai_present_finder_has_five_isolated_databases():
    settings = load("ai-present-finder")
    assert settings.postgres is not None
    owners = {name: db.owner for name, db in settings.postgres.databases.items()}
    assert owners == {
        "reranking_service": "reranking_user",
        "fetch_service": "fetch_user",
        "stalking_service": "stalking_user",
        "chat_service": "chat_user",
        "gift_ideas_service": "gift_ideas_user",
    }
    urls = {ref for ref in settings.apps["app"].secrets.values() if ref.startswith("postgres.")}
    assert urls == {f"postgres.databases.{name}.url" for name in owners}


def test_ai_present_finder_rabbitmq_and_routes():
    settings = load("ai-present-finder")
    mq = settings.rabbitmq
    assert mq is not None and mq.admin_user == "admin"
    assert "StalkingAnalyzeRequestedEvent" in {q.name for q in mq.queues}
    assert all(not q.durable for q in mq.queues)
    frontend = settings.apps["frontend"]
    assert frontend.port == 80 and frontend.healthcheck is not None and frontend.healthcheck.http == "/health"
    api = route(settings, "api.{domain}", "/")
    assert (api.app, api.sse) == ("app", True)


# -- webprometrics (seed 004) --------------------------------------------------------------------


def test_webprometrics_proxy_hardening():
    settings = load("webprometrics")
    proxy = settings.proxy
    assert proxy is not None
    assert proxy.http_redirect and proxy.security_headers and proxy.gzip
    assert proxy.tls.hsts_max_age == timedelta(days=365)
    assert proxy.content_security_policy is not None and "default-src 'self'" in proxy.content_security_policy
    assert route(settings, "{domain}", "/assets/").static_cache == timedelta(days=30)
    assert route(settings, "{domain}", "/api/").rate_limit == "api"
    assert (proxy.rate_limits["api"].rate, proxy.rate_limits["api"].burst) == ("7r/m", 100)
    assert (proxy.rate_limits["auth"].rate, proxy.rate_limits["auth"].burst) == ("1r/m", 5)


def test_webprometrics_backend_keeps_its_json_database_on_a_volume():
    backend = load("webprometrics").apps["backend"]
    assert backend.port == 8080
    assert backend.volumes == {"db_data": "/app/data"}
    assert backend.env["DB_PATH"] == "/app/data/db.json"
    assert backend.restart in ("unless-stopped", "always")
