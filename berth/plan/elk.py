"""ELK plan: JVM heap sizing, the Logstash pipeline, container env, and the kibana_system password job.

Pure functions: no pulumi import. Nothing here holds a secret: passwords reach the containers as env
values set by the components, and rendered files only reference them (``${LOGSTASH_ES_PASSWORD}``).
"""

from __future__ import annotations

from urllib.parse import quote

from berth.settings.services import LogstashSettings

ELASTICSEARCH_URL = "http://elasticsearch:9200"
KIBANA_SYSTEM_USER = "kibana_system"
# Where the logstash image reads its pipeline from; the rendered file replaces the image's default one.
LOGSTASH_PIPELINE_PATH = "/usr/share/logstash/pipeline/logstash.conf"
# Env names the pipeline reads its Elasticsearch credentials from.
LOGSTASH_USER_ENV = "LOGSTASH_ES_USER"
LOGSTASH_PASSWORD_ENV = "LOGSTASH_ES_PASSWORD"
MIB = 1024**2
MIN_HEAP_MB = 256
# Above ~32 GiB the JVM loses compressed object pointers; 31 GiB stays safely below.
MAX_HEAP_MB = 31 * 1024


def heap_mb(memory_limit_bytes: int) -> int:
    """Size the JVM heap for a container limit: half of it (the rest is off-heap and page cache), 256m..31g."""
    return max(MIN_HEAP_MB, min(MAX_HEAP_MB, memory_limit_bytes // 2 // MIB))


def java_opts(heap: int) -> str:
    """Pin the heap: -Xms equal to -Xmx, so the JVM never resizes it."""
    return f"-Xms{heap}m -Xmx{heap}m"


def elastic_url(password: str) -> str:
    """The superuser's URL, ``http://elastic:<password>@elasticsearch:9200``, the password percent-encoded."""
    return ELASTICSEARCH_URL.replace("http://", f"http://elastic:{quote(password, safe='')}@")


def logstash_pipeline(settings: LogstashSettings, elasticsearch_url: str = ELASTICSEARCH_URL,
                      gelf: bool = False) -> str:
    """Render the pipeline: JSON lines over TCP, gelf over UDP for container logs, filter, Elasticsearch.

    The filter block is the settings' own, copied when given; gelf is there only when asked.
    """
    _check_string("index", settings.index)
    _check_string("elasticsearch_url", elasticsearch_url)
    blocks = [_input_block(settings.tcp_port, settings.gelf_port if gelf else None)]
    if settings.filter.strip():
        blocks.append("filter {\n" + _indent(settings.filter.strip()) + "\n}")
    blocks.append(_output_block(settings.index, elasticsearch_url))
    return "\n".join(blocks) + "\n"


def _check_string(what: str, value: str) -> None:
    # Logstash processes no escapes in strings by default, so a quote or backslash cannot be written.
    if '"' in value or "\\" in value or "\n" in value:
        raise ValueError(f"{what}: {value!r} cannot contain a double quote, backslash or newline")


def _input_block(port: int, gelf_port: int | None) -> str:
    gelf = f"\n  gelf {{\n    port => {gelf_port}\n  }}" if gelf_port else ""
    return f"input {{\n  tcp {{\n    port => {port}\n    codec => json_lines\n  }}{gelf}\n}}"


def _output_block(index: str, url: str) -> str:
    return (
        "output {\n  elasticsearch {\n"
        f'    hosts => ["{url}"]\n'
        f'    user => "${{{LOGSTASH_USER_ENV}}}"\n'
        f'    password => "${{{LOGSTASH_PASSWORD_ENV}}}"\n'
        f'    index => "{index}"\n'
        "  }\n}"
    )


def _indent(text: str) -> str:
    return "\n".join("  " + line if line.strip() else "" for line in text.splitlines())


def elasticsearch_env(heap: int) -> dict[str, str]:
    """Return Elasticsearch's env without the password (ELASTIC_PASSWORD comes from the component).

    Security is configured explicitly, which skips the image's TLS auto-configuration, so the other
    containers talk plain HTTP on the internal network.
    """
    return {
        "discovery.type": "single-node",
        "xpack.security.enabled": "true",
        "xpack.security.http.ssl.enabled": "false",
        "ES_JAVA_OPTS": java_opts(heap),
    }


def kibana_env(elasticsearch_url: str = ELASTICSEARCH_URL) -> dict[str, str]:
    """Return Kibana's env without the password (ELASTICSEARCH_PASSWORD comes from the component)."""
    return {"ELASTICSEARCH_HOSTS": elasticsearch_url, "ELASTICSEARCH_USERNAME": KIBANA_SYSTEM_USER}


def logstash_env(heap: int) -> dict[str, str]:
    """Return Logstash's env without credentials (LOGSTASH_ES_USER / LOGSTASH_ES_PASSWORD come from the component).

    The image enables legacy monitoring against http://elasticsearch:9200 without credentials, which
    only fills the log with 401s once security is on.
    """
    return {"LS_JAVA_OPTS": java_opts(heap), "XPACK_MONITORING_ENABLED": "false"}


_KIBANA_PASSWORD_JOB = r"""#!/bin/sh
# Sets the kibana_system user's password in Elasticsearch. Setting the same password again is a
# no-op, so the job can run on every deploy. Needs ELASTIC_PASSWORD and KIBANA_PASSWORD.
# Credentials go to curl through a config on stdin and a body file, never through its arguments.
set -eu
: "${ELASTIC_PASSWORD:?ELASTIC_PASSWORD is required}"
: "${KIBANA_PASSWORD:?KIBANA_PASSWORD is required}"
ES_URL="${ES_URL:-@ES_URL@}"
TRIES="${TRIES:-120}"
SLEEP="${SLEEP:-2}"

die() { echo "kibana-password: $*" >&2; exit 1; }

for value in "$ELASTIC_PASSWORD" "$KIBANA_PASSWORD"; do
  case "$value" in *[[:cntrl:]]*) die "passwords cannot contain control characters" ;; esac
done

# Escapes backslash and double quote: the same rule for JSON strings and curl config strings.
escape() { printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g'; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf 'user = "elastic:%s"\n' "$(escape "$ELASTIC_PASSWORD")" >"$work/auth"
printf '{"password":"%s"}' "$(escape "$KIBANA_PASSWORD")" >"$work/body"

# es METHOD PATH [curl args...]: prints the HTTP status (000 when unreachable); the body lands in $work/out.
es() {
  method=$1 path=$2
  shift 2
  curl -s -K "$work/auth" -o "$work/out" -w '%{http_code}' --max-time 10 -X "$method" "$@" "$ES_URL$path" \
    || true
}

try=1
until status=$(es GET '/_cluster/health?wait_for_status=yellow&timeout=1s'); [ "$status" = 200 ]; do
  [ "$status" != 401 ] || die "Elasticsearch rejected the elastic user's password (401)"
  [ "$try" -lt "$TRIES" ] || die "Elasticsearch at $ES_URL not ready after $TRIES tries (last status $status)"
  try=$((try + 1))
  sleep "$SLEEP"
done

status=$(es POST /_security/user/@KIBANA_USER@/_password -H 'Content-Type: application/json' \
  --data-binary "@$work/body")
[ "$status" = 200 ] || die "setting the @KIBANA_USER@ password failed: HTTP $status $(cat "$work/out" 2>/dev/null)"
echo "kibana-password: @KIBANA_USER@ password set"
"""


def kibana_password_job_script(elasticsearch_url: str = ELASTICSEARCH_URL) -> str:
    """Render a POSIX sh script (curl) that waits for Elasticsearch, then sets the kibana_system password.

    Reads ELASTIC_PASSWORD and KIBANA_PASSWORD from the env; ES_URL, TRIES and SLEEP override the
    defaults. Exits non-zero when the elastic password is refused, Elasticsearch never becomes ready,
    or the password change fails.
    """
    return _KIBANA_PASSWORD_JOB.replace("@ES_URL@", elasticsearch_url).replace("@KIBANA_USER@", KIBANA_SYSTEM_USER)
