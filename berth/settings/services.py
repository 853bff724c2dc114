"""The data services: PostgreSQL, Redis, RabbitMQ, MinIO and Elasticsearch + Logstash + Kibana."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from berth.errors import Problems
from berth.settings import grammar
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
from berth.settings.reading import MultiLine

Identifier = Annotated[str, AfterValidator(matching(r"[a-z_][a-z0-9_]{0,62}", "a lower-case SQL identifier"))]


# Role names PostgreSQL refuses (CREATE ROLE public/none/current_user/... is an error).
_RESERVED_ROLES = ("public", "none", "current_user", "session_user", "current_role", "user", "all")
# Databases every cluster already has: CREATE DATABASE template1 fails, and dropping one breaks the cluster.
RESERVED_DATABASES = ("postgres", "template0", "template1")


def _not_reserved_role(name: str) -> str:
    if name.startswith("pg_"):
        raise ValueError(f"{name!r} starts with pg_, which PostgreSQL reserves for its own roles")
    if name in _RESERVED_ROLES:
        raise ValueError(f"{name!r} is a name PostgreSQL reserves; it cannot be a role")
    return name


def _not_template(name: str) -> str:
    if name in RESERVED_DATABASES[1:]:
        raise ValueError(f"{name!r} is a PostgreSQL template database; data does not belong there")
    return name


def _not_reserved_database(name: str) -> str:
    if name in RESERVED_DATABASES:
        raise ValueError(f"{name!r} is one of PostgreSQL's own databases {list(RESERVED_DATABASES)}")
    return name


def _bucket(name: str) -> str:
    # https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html (MinIO follows them).
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", name, re.ASCII):
        raise ValueError(f"{name!r} is not an S3 bucket name (3-63 of a-z, 0-9, '.', '-', starting and ending "
                         "with a letter or digit)")
    if ".." in name or ".-" in name or "-." in name:
        raise ValueError(f"{name!r} has '..', '.-' or '-.', which S3 bucket names may not")
    if grammar.ipv4(name) or re.fullmatch(r"[0-9]+(\.[0-9]+){3}", name):
        raise ValueError(f"{name!r} is formatted like an IP address, which S3 bucket names may not be")
    if name.startswith(("xn--", "sthree-")) or name.endswith(("-s3alias", "--ol-s3", ".mrap", "--x-s3")):
        raise ValueError(f"{name!r} has a prefix or suffix S3 reserves (xn--, sthree-, -s3alias, --ol-s3)")
    return name


RoleName = Annotated[Identifier, AfterValidator(_not_reserved_role)]
# An application database berth creates; the superuser's own database may be postgres (not a template).
DatabaseName = Annotated[Identifier, AfterValidator(_not_reserved_database)]
DefaultDatabase = Annotated[Identifier, AfterValidator(_not_template)]
BucketName = Annotated[str, AfterValidator(_bucket)]
AmqpName = Annotated[str, AfterValidator(matching(r"[A-Za-z0-9_.:/-]{1,255}", "a RabbitMQ name"))]
# A RabbitMQ user: also part of a Pulumi resource name (<component>-<user>-password), so no '/' or ':'.
AmqpUser = Annotated[str, AfterValidator(matching(r"[A-Za-z0-9_.-]{1,128}",
                                                  "a RabbitMQ user name of letters, digits, '_', '.' and '-'"))]
# The admin's password resource is <component>-admin-password: a user called admin would take its name.
ADMIN_PASSWORD_NAME = "admin"
RabbitTag = Annotated[str, AfterValidator(matching(r"[a-z_]{1,64}", "a RabbitMQ user tag like monitoring"))]
# A data service gets at least this long between SIGTERM and SIGKILL to flush and shut down cleanly.
MIN_STOP_GRACE = timedelta(seconds=10)


def _flush_time(value: timedelta) -> timedelta:
    if value < MIN_STOP_GRACE:
        raise ValueError(f"{value.total_seconds():g}s is shorter than {MIN_STOP_GRACE.total_seconds():g}s: a data "
                         "service killed before it flushes can lose or corrupt its data")
    return value


StopGrace = Annotated[Duration, AfterValidator(_flush_time)]


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
    stop_grace: StopGrace = timedelta(seconds=60)


class PostgresDatabase(BerthModel):
    """One application database with its own owner role."""

    owner: RoleName | None = None  # defaults to the database name
    password: Secret | None = None   # generated when not given


class PostgresSettings(DataService):
    """PostgreSQL: the superuser, the default database, and isolated application databases."""

    image: ImageRef = "postgres:16-alpine"
    volume: VolumeName = "postgres_data"
    user: RoleName = "postgres"
    database: DefaultDatabase = "app"
    password: Secret | None = None
    databases: dict[DatabaseName, PostgresDatabase] = {}

    @model_validator(mode="after")
    def _distinct_roles(self) -> PostgresSettings:
        seen: set[str] = set()
        found: list[tuple[str, str]] = []
        for name, db in self.databases.items():
            owner = db.owner or name
            where = f"databases.{name}.owner"
            if db.owner is None and (name.startswith("pg_") or name in _RESERVED_ROLES):
                found.append((where, f"the default owner {name!r} is a role name PostgreSQL reserves; name "
                                     "another owner"))
            elif owner == self.user:
                found.append((where, f"{owner!r} is the superuser; give each database its own role"))
            elif owner in seen:
                found.append((where, f"{owner!r} owns more than one database; roles are isolated"))
            seen.add(owner)
        Problems.check(found)
        return self


class RedisSettings(DataService):
    """Redis with authentication and persistence."""

    image: ImageRef = "redis:7-alpine"
    volume: VolumeName = "redis_data"
    password: Secret | None = None  # generated when not given; Redis always requires it
    persistence: Literal["aof", "rdb", "none"] = "aof"
    maxmemory: ByteSize | None = None
    stop_grace: StopGrace = timedelta(seconds=30)


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
    tags: list[RabbitTag] = []


class RabbitMQSettings(DataService):
    """RabbitMQ: admin user, vhosts, users and queues loaded from a definitions file."""

    image: ImageRef = "rabbitmq:3.13-management-alpine"
    volume: VolumeName = "rabbitmq_data"
    admin_user: AmqpUser = "admin"
    admin_password: Secret | None = None
    vhosts: Annotated[list[AmqpName], Field(min_length=1)] = ["/"]
    users: dict[AmqpUser, RabbitUser] = {}
    queues: list[RabbitQueue] = []
    healthcheck: Cadence = Cadence(start_period=timedelta(seconds=60))
    stop_grace: StopGrace = timedelta(seconds=120)

    @model_validator(mode="after")
    def _known_vhosts(self) -> RabbitMQSettings:
        found: list[tuple[str, str]] = []
        for user_name, user in self.users.items():
            if user_name == self.admin_user:
                found.append(("users", f"{user_name!r} is the admin user"))
            elif user_name == ADMIN_PASSWORD_NAME:
                found.append(("users", f"{user_name!r} is reserved: the admin's ({self.admin_user}) password "
                                       "resource takes that name"))
            for vhost in user.vhosts:
                if vhost not in self.vhosts:
                    found.append((f"users.{user_name}.vhosts", f"{vhost!r} is not in vhosts {list(self.vhosts)}"))
        for i, queue in enumerate(self.queues):
            if queue.vhost not in self.vhosts:
                found.append((f"queues[{i}].vhost", f"{queue.vhost!r} (queue {queue.name}) is not in vhosts "
                                                    f"{list(self.vhosts)}"))
        queues = [(q.vhost, q.name) for q in self.queues]
        for i, key in enumerate(queues):
            if key in queues[:i]:
                found.append((f"queues[{i}].name", f"queue {key[1]!r} is declared twice in vhost {key[0]!r}"))
        Problems.check(found)
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
    stop_grace: StopGrace = timedelta(seconds=30)


class ElasticsearchSettings(DataService):
    """Elasticsearch, single node, security on."""

    image: ImageRef = "docker.elastic.co/elasticsearch/elasticsearch:8.11.3"
    volume: VolumeName = "elasticsearch_data"
    resources: Resources = Resources.model_validate({"limits": {"memory": 2 * 1024**3}})
    healthcheck: Cadence = Cadence(interval=timedelta(seconds=10), start_period=timedelta(seconds=120), retries=10)
    stop_grace: StopGrace = timedelta(seconds=120)

    @model_validator(mode="after")
    def _memory_limit(self) -> ElasticsearchSettings:
        if self.resources.limits.memory is None or self.resources.limits.memory < 512 * 1024**2:
            raise ValueError("resources.limits.memory must be set and >= 512m: the JVM heap is half of it")
        return self


# Elasticsearch index names: lower case, none of \\ / * ? " < > | , # : or space, not starting with
# - _ + or . (https://www.elastic.co/guide/en/elasticsearch/reference/8.11/indices-create-index.html).
# Logstash fills in %{+date} and %{[field]} references when it writes; those may hold upper case.
_INDEX_PART = r"(?:[a-z0-9._-]|%\{\+[A-Za-z.-]{1,32}\}|%\{\[[a-z0-9_@]{1,64}\](?:\[[a-z0-9_@]{1,64}\])*\})"


def _index_name(name: str) -> str:
    if not re.fullmatch(rf"{_INDEX_PART}{{1,255}}", name, re.ASCII) or name[0] in "-_+." or name in (".", ".."):
        raise ValueError(f"{name!r} is not an Elasticsearch index name: lower-case a-z, 0-9, '.', '_', '-' and "
                         "%{+date} or %{[field]} references, not starting with - _ + or .")
    return name


def _balanced(text: str) -> str:
    """Logstash config: braces and brackets balance outside strings and comments, and strings end.

    The filter is copied into ``filter { ... }``: an extra ``}`` would end that block and let the
    rest of the text add inputs or outputs of its own.
    """
    closing = {"{": "}", "[": "]"}
    stack: list[str] = []
    quote = ""
    i = 0
    while i < len(text):
        char = text[i]
        if quote:
            if char == "\\":
                i += 1
            elif char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char == "#":
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
            continue
        elif char in closing:
            stack.append(closing[char])
        elif char in "}]":
            if not stack or stack.pop() != char:
                raise ValueError(f"an unbalanced {char!r} at character {i + 1}: the filter must be one balanced "
                                 "block body")
        i += 1
    if quote:
        raise ValueError(f"a string opened with {quote} does not end")
    if stack:
        raise ValueError(f"{len(stack)} bracket(s) are not closed (expected {stack[-1]!r})")
    return text


def _heap_fits(resources: Resources) -> Resources:
    # berth pins the JVM heap at half the limit, and at least 256m (berth/plan/elk.py heap_mb): under
    # 512m the heap would be more than half, and the container is killed for memory it needs off-heap.
    memory = resources.limits.memory
    if memory is not None and memory < 512 * 1024**2:
        raise ValueError(f"limits.memory {memory} is below 512m; the JVM heap berth sets is 256m or half the limit")
    return resources


class LogstashSettings(BerthModel):
    """Logstash with a pipeline rendered from settings."""

    image: ImageRef = "docker.elastic.co/logstash/logstash:8.11.3"
    tcp_port: int = Field(default=5000, ge=1024, le=65535)
    # Where containers' gelf logs arrive when logging.driver is gelf: published on the host's 127.0.0.1 only.
    gelf_port: int = Field(default=12201, ge=1024, le=65535)
    # Logstash strings process no escapes, so a quote or backslash cannot be written in one.
    index: Annotated[str, AfterValidator(_index_name)] = "logs-%{+YYYY.MM.dd}"
    # Extra filter{} body, copied verbatim into the pipeline: it must be one balanced block body.
    filter: Annotated[str, MultiLine(), AfterValidator(_balanced), Field(max_length=65536)] = ""
    resources: Annotated[Resources, AfterValidator(_heap_fits)] = Resources.model_validate(
        {"limits": {"memory": 1024**3}})
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
