"""The engine tier's view of each blueprint: the engine stack plus what the stand-in app needs.

`engine_synth(blueprint)` = `berth.synth.synth("engine", blueprint, reveal=True, raw_overrides=...)`
with, per blueprint:

- ENV: env the stand-in needs to play the app (its health path, all ports of a multi-port app);
- EXCLUDED: what cannot run here (no MinIO or Elasticsearch/Logstash/Kibana server is obtainable),
  switched off and printed, never dropped silently. Raw overrides are deep-merged and cannot delete
  a key the blueprint sets, so the blueprint's references to the excluded services (secrets, env,
  depends_on) are removed from the blueprint as it is read (DROPS), and listed by `excluded()`;
- DEPENDS_ON: the dependency lists that remain once the excluded services are gone.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator
from typing import Any

import berth.settings.loader as loader
from berth.settings import deep_merge, load_settings
from berth.synth import synth

STACK = "engine"
BLUEPRINTS = ("ai-present-finder", "databaseai", "demo", "praxifi", "sentineliq", "webprometrics")
HTTP_PORT, HTTPS_PORT = 18080, 18443

APF_PORTS = "3000,3010,3020,3030,3040,3050,8011,8012,8013,8014"
ENV: dict[str, dict[str, dict[str, str]]] = {
    # the app container runs ten services (PM2): the stand-in listens on all ten ports
    "ai-present-finder": {"app": {"STANDIN_PORTS": APF_PORTS}},
    # the backend's healthcheck is GET /api/v1/health, which must check its database
    "databaseai": {"backend": {"HEALTH_PATH": "/api/v1/health"}},
}

# What the engine tier switches off, with the image each would have run.
EXCLUDED_SERVICES = ("minio", "elasticsearch", "logstash", "kibana", "minio bucket job",
                     "elasticsearch credentials job")
DROPS: dict[str, list[tuple[str, ...]]] = {
    "sentineliq": [
        ("apps", "server", "secrets", "S3_ACCESS_KEY"),
        ("apps", "server", "secrets", "S3_SECRET_KEY"),
        ("apps", "server", "env", "S3_ENDPOINT"),
        ("apps", "server", "env", "S3_BUCKET"),
        ("apps", "server", "env", "LOGSTASH_HOST"),
    ],
}
DEPENDS_ON: dict[str, dict[str, list[str]]] = {
    "sentineliq": {"server": ["migrate", "postgres", "redis"]},
}


def blueprint_settings(blueprint: str):
    """The blueprint under the engine stack, as written (nothing excluded): for deciding what to exclude."""
    return load_settings({**loader.from_stack_files(STACK), "blueprint": blueprint})


def excluded(blueprint: str) -> list[tuple[str, str]]:
    """(what, image) the engine tier cannot run for this blueprint, in EXCLUDED_SERVICES order."""
    settings = blueprint_settings(blueprint)
    found: list[tuple[str, str]] = []
    minio = settings.service("minio")
    if minio is not None:
        found.append(("minio", minio.image))
    elk = settings.elk if settings.elk is not None and settings.elk.enabled else None
    if elk is not None:
        found += [("elasticsearch", elk.elasticsearch.image), ("logstash", elk.logstash.image),
                  ("kibana", elk.kibana.image)]
    if minio is not None and minio.buckets:
        found.append(("minio bucket job", minio.client_image))
    if elk is not None:
        found.append(("elasticsearch credentials job", elk.elasticsearch.image))
    order = {name: i for i, name in enumerate(EXCLUDED_SERVICES)}
    return sorted(found, key=lambda item: order[item[0]])


# What other tiers prove and this one leaves out: backups (tests/backup builds their image).
OTHER_TIERS: dict[str, Any] = {"backups": {"enabled": False}}


def run_overrides() -> dict[str, Any]:
    """Where this run puts its deployments, so that runs on one shared engine never meet.

    BERTH_ENGINE_ENV names the environment (docker objects become ``<name>-<env>-*``, and leftovers
    are cleaned by that prefix only); BERTH_ENGINE_PORTS="http,https" moves the proxy's host ports.
    Unset, the run is Pulumi.engine.yaml's: environment ``engine`` on 18080/18443.
    """
    raw: dict[str, Any] = {}
    if os.environ.get("BERTH_ENGINE_ENV"):
        raw["environment"] = os.environ["BERTH_ENGINE_ENV"]
    if os.environ.get("BERTH_ENGINE_PORTS"):
        http, https = (int(port) for port in os.environ["BERTH_ENGINE_PORTS"].split(","))
        raw["proxy"] = {"http_port": http, "https_port": https}
    return raw


def overrides(blueprint: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Raw overrides (deep-merged over Pulumi.engine.yaml) for this blueprint."""
    raw: dict[str, Any] = {**run_overrides(), **OTHER_TIERS}
    apps: dict[str, Any] = {}
    for app, env in ENV.get(blueprint, {}).items():
        apps.setdefault(app, {})["env"] = dict(env)
    for app, deps in DEPENDS_ON.get(blueprint, {}).items():
        apps.setdefault(app, {})["depends_on"] = list(deps)
    if apps:
        raw["apps"] = apps
    names = {name for name, _ in excluded(blueprint)}
    if "minio" in names:
        raw["minio"] = {"enabled": False}
    if names & {"elasticsearch", "logstash", "kibana"}:
        raw["elk"] = {"enabled": False}
    return deep_merge(raw, extra or {})


@contextlib.contextmanager
def _blueprint_without(blueprint: str, drops: list[tuple[str, ...]] | None = None) -> Iterator[None]:
    """Read blueprints/<blueprint>.yaml without the keys in DROPS (they name excluded services), or these."""
    drops = DROPS.get(blueprint, []) if drops is None else drops
    if not drops:
        yield
        return
    original = loader.read_blueprint

    def read(name: object) -> dict[str, Any]:
        data = copy.deepcopy(original(name))
        if name == blueprint:
            for path in drops:
                node = data
                for key in path[:-1]:
                    node = node[key]
                if path[-1] not in node:
                    raise KeyError(f"blueprints/{blueprint}.yaml has no {'.'.join(path)} to drop any more: "
                                   "update DROPS in tests/engine/engine_config.py")
                del node[path[-1]]
        return data

    loader.read_blueprint = read
    try:
        yield
    finally:
        loader.read_blueprint = original


def print_excluded(blueprint: str) -> list[str]:
    """Print and return the explicit list of what the engine tier leaves out of this blueprint."""
    names = [name for name, _ in excluded(blueprint)]
    if names:
        dropped = ", ".join(".".join(p) for p in DROPS.get(blueprint, []))
        print(f"engine tier excludes (no server available here) from {blueprint}: {', '.join(names)}"
              + (f"; references removed: {dropped}" if dropped else ""), flush=True)
    return names


def engine_synth(blueprint: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The revealed desired state of `blueprint` under the engine stack, as the engine tier applies it."""
    with _blueprint_without(blueprint):
        return synth(STACK, blueprint, reveal=True, raw_overrides=overrides(blueprint, extra))


def engine_settings(blueprint: str, extra: dict[str, Any] | None = None):
    """The settings engine_synth() deploys."""
    with _blueprint_without(blueprint):
        return load_settings({**deep_merge(loader.from_stack_files(STACK), overrides(blueprint, extra)),
                              "blueprint": blueprint})
