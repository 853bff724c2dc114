"""The data services: PostgreSQL, Redis, RabbitMQ, MinIO and Elasticsearch + Logstash + Kibana."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from berth.settings.base import (
    BerthModel,
    ByteSize,
    Cadence,
    Duration,
    ImageRef,
    Resources,
    Secret,
    VolumeName,
    matching,
)

Identifier = Annotated[str, AfterValidator(matching(r"[a-z_][a-z0-9_]{0,62}", "a lower-case SQL identifier"))]


def _not_reserved_role(name: str) -> str:
    if name.startswith("pg_"):
        raise ValueError(f"{name!r} starts with pg_, which PostgreSQL reserves for its own roles")
    return name


RoleName = Annotated[Identifier, AfterValidator(_not_reserved_role)]
BucketName = Annotated[str, AfterValidator(matching(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", "an S3 bucket name"))]
AmqpName = Annotated[str, AfterValidator(matching(r"[A-Za-z0-9_.:/-]{1,255}", "a RabbitMQ name"))]


def _regex(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{pattern!r} is not a regular expression ({exc})") from None
    return pattern


Permission = Annotated[str, AfterValidator(_regex)]


class DataService(BerthModel):
    """What every data service has: an image, a data volume, resources and a healthcheck cadence."""

    enabled: bool = True
    image: ImageRef
    volume: VolumeName
    resources: Resources = Resources()
    healthcheck: Cadence = Cadence()
    # Time between SIGTERM and SIGKILL: enough to flush and shut down cleanly.
    stop_grace: Duration = timedelta(seconds=60)


class PostgresDatabase(BerthModel):
    """One application database with its own owner role."""

    owner: RoleName | None = None  # defaults to the database name
    password: Secret | None = None   # generated when not given


class PostgresSettings(DataService):
    """PostgreSQL: the superuser, the default database, and isolated application databases."""

    image: ImageRef = "postgres:16-alpine"
    volume: VolumeName = "postgres_data"
    user: RoleName = "postgres"
    database: Identifier = "app"
    password: Secret | None = None
    databases: dict[Identifier, PostgresDatabase] = {}

    @model_validator(mode="after")
    def _distinct_roles(self) -> PostgresSettings:
        seen: set[str] = set()
        for name, db in self.databases.items():
            owner = db.owner or name
            if db.owner is None and name.startswith("pg_"):
                raise ValueError(f"databases.{name}.owner: the default owner {name!r} starts with pg_, which "
                                 "PostgreSQL reserves for its own roles; name another owner")
            if owner == self.user:
                raise ValueError(f"databases.{name}.owner: {owner!r} is the superuser; give each database its own role")
            if owner in seen:
                raise ValueError(f"databases.{name}.owner: {owner!r} owns more than one database; roles are isolated")
            seen.add(owner)
        return self


class RedisSettings(DataService):
    """Redis with authentication and persistence."""

    image: ImageRef = "redis:7-alpine"
    volume: VolumeName = "redis_data"
    password: Secret | None = None  # generated when not given; Redis always requires it
    persistence: Literal["aof", "rdb", "none"] = "aof"
    maxmemory: ByteSize | None = None
    stop_grace: Duration = timedelta(seconds=30)


class RabbitQueue(BerthModel):
    """A queue declared at boot."""

    name: AmqpName
    vhost: AmqpName = "/"
    durable: bool = True


class RabbitUser(BerthModel):
    """An application user with configure/write/read permissions on its vhosts."""

    password: Secret | None = None
    vhosts: Annotated[list[AmqpName], Field(min_length=1)] = ["/"]  # the first is in the user's URL
    configure: Permission = ".*"
    write: Permission = ".*"
    read: Permission = ".*"
    tags: list[str] = []


class RabbitMQSettings(DataService):
    """RabbitMQ: admin user, vhosts, users and queues loaded from a definitions file."""

    image: ImageRef = "rabbitmq:3.13-management-alpine"
    volume: VolumeName = "rabbitmq_data"
    admin_user: AmqpName = "admin"
    admin_password: Secret | None = None
    vhosts: Annotated[list[AmqpName], Field(min_length=1)] = ["/"]
    users: dict[AmqpName, RabbitUser] = {}
    queues: list[RabbitQueue] = []
    healthcheck: Cadence = Cadence(start_period=timedelta(seconds=60))
    stop_grace: Duration = timedelta(seconds=120)

    @model_validator(mode="after")
    def _known_vhosts(self) -> RabbitMQSettings:
        for user_name, user in self.users.items():
            if user_name == self.admin_user:
                raise ValueError(f"users: {user_name!r} is the admin user")
            for vhost in user.vhosts:
                if vhost not in self.vhosts:
                    raise ValueError(f"users.{user_name}.vhosts: {vhost!r} is not in vhosts {list(self.vhosts)}")
        for i, queue in enumerate(self.queues):
            if queue.vhost not in self.vhosts:
                raise ValueError(f"queues[{i}].vhost: {queue.vhost!r} (queue {queue.name}) is not in vhosts "
                                 f"{list(self.vhosts)}")
        return self


class MinioSettings(DataService):
    """MinIO: S3 API on 9000 for apps, console on 9001, buckets created by a one-shot job."""

    image: ImageRef = "minio/minio:RELEASE.2024-06-13T22-53-53Z"
    client_image: ImageRef = "minio/mc:RELEASE.2024-06-12T14-34-03Z"
    volume: VolumeName = "minio_data"
    # MinIO's access key: 3 or more characters; kept to URL-safe ones, as it goes into MC_HOST_*.
    root_user: Annotated[str, AfterValidator(matching(r"[A-Za-z0-9_.-]{3,128}",
                                                      "3-128 letters, digits, '_', '.' or '-'"))] = "berth-admin"
    buckets: list[BucketName] = []
    stop_grace: Duration = timedelta(seconds=30)


class ElasticsearchSettings(DataService):
    """Elasticsearch, single node, security on."""

    image: ImageRef = "docker.elastic.co/elasticsearch/elasticsearch:8.11.3"
    volume: VolumeName = "elasticsearch_data"
    resources: Resources = Resources.model_validate({"limits": {"memory": 2 * 1024**3}})
    healthcheck: Cadence = Cadence(interval=timedelta(seconds=10), start_period=timedelta(seconds=120), retries=10)
    stop_grace: Duration = timedelta(seconds=120)

    @model_validator(mode="after")
    def _memory_limit(self) -> ElasticsearchSettings:
        if self.resources.limits.memory is None or self.resources.limits.memory < 512 * 1024**2:
            raise ValueError("resources.limits.memory must be set and >= 512m: the JVM heap is half of it")
        return self


class LogstashSettings(BerthModel):
    """Logstash with a pipeline rendered from settings."""

    image: ImageRef = "docker.elastic.co/logstash/logstash:8.11.3"
    tcp_port: int = Field(default=5000, ge=1024, le=65535)
    # Where containers' gelf logs arrive when logging.driver is gelf: published on the host's 127.0.0.1 only.
    gelf_port: int = Field(default=12201, ge=1024, le=65535)
    # Logstash strings process no escapes, so a quote or backslash cannot be written in one.
    index: Annotated[str, AfterValidator(matching(r"[^\"\\\n]+", "an index name without quotes or backslashes"))] = (
        "logs-%{+YYYY.MM.dd}")
    # Extra filter{} body, copied verbatim into the pipeline.
    filter: str = ""
    resources: Resources = Resources.model_validate({"limits": {"memory": 1024**3}})
    healthcheck: Cadence = Cadence(start_period=timedelta(seconds=120), retries=10)


class KibanaSettings(BerthModel):
    """Kibana, internal unless the proxy routes to it."""

    image: ImageRef = "docker.elastic.co/kibana/kibana:8.11.3"
    resources: Resources = Resources()
    healthcheck: Cadence = Cadence(start_period=timedelta(seconds=120), retries=10)


class ElkSettings(BerthModel):
    """Elasticsearch + Logstash + Kibana as one unit."""

    enabled: bool = True
    elastic_password: Secret | None = None
    elasticsearch: ElasticsearchSettings = ElasticsearchSettings()
    logstash: LogstashSettings = LogstashSettings()
    kibana: KibanaSettings = KibanaSettings()
