import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

import pytest
from httpstub import serving
from hypothesis import given
from hypothesis import strategies as st

from berth.plan.elk import (
    START_SCRIPT,
    credentials_job_script,
    elastic_url,
    elasticsearch_env,
    heap_mb,
    kibana_env,
    logstash_env,
    logstash_pipeline,
)
from berth.settings.services import ElasticsearchSettings, LogstashSettings

MIB, GIB = 1024**2, 1024**3

# ---------------------------------------------------------------- heap


@pytest.mark.parametrize(("limit", "heap"), [
    (2 * GIB, 1024),
    (GIB, 512),
    (512 * MIB, 256),
    (300 * MIB, 256),   # floor
    (0, 256),
    (62 * GIB, 31 * 1024),
    (128 * GIB, 31 * 1024),  # compressed oops cap
    (3 * GIB + 1, 1536),
])
def test_heap_mb(limit, heap):
    assert heap_mb(limit) == heap


@given(st.integers(min_value=0, max_value=1024 * GIB))
def test_heap_is_half_the_limit_within_bounds(limit):
    heap = heap_mb(limit)
    assert 256 <= heap <= 31 * 1024
    if 512 * MIB <= limit <= 62 * GIB:
        assert heap == limit // 2 // MIB
    assert heap_mb(limit + GIB) >= heap


def test_default_elasticsearch_limit_gives_a_1g_heap():
    limit = ElasticsearchSettings().resources.limits.memory
    assert elasticsearch_env(heap_mb(limit))["ES_JAVA_OPTS"] == "-Xms1024m -Xmx1024m"


# ---------------------------------------------------------------- pipeline and env


def test_default_pipeline_exact():
    assert logstash_pipeline(LogstashSettings()) == (
        "input {\n"
        "  tcp {\n"
        "    port => 5000\n"
        "    codec => json_lines\n"
        "  }\n"
        "}\n"
        "output {\n"
        "  elasticsearch {\n"
        '    hosts => ["http://elasticsearch:9200"]\n'
        '    user => "${LOGSTASH_ES_USER}"\n'
        '    password => "${LOGSTASH_ES_PASSWORD}"\n'
        '    index => "logs-%{+YYYY.MM.dd}"\n'
        "  }\n"
        "}\n"
    )


def test_pipeline_with_filter_and_custom_port_and_index():
    chosen = LogstashSettings.model_validate({
        "tcp_port": 5044, "index": "app-%{+YYYY}",
        "filter": '\nmutate {\n  add_field => { "env" => "prod" }\n}\n\n'})
    text = logstash_pipeline(chosen, elasticsearch_url="http://es:9200")
    assert "    port => 5044\n" in text
    assert ('}\nfilter {\n  mutate {\n    add_field => { "env" => "prod" }\n  }\n}\noutput {\n') in text
    assert '    hosts => ["http://es:9200"]\n' in text
    assert '    index => "app-%{+YYYY}"\n' in text


@pytest.mark.parametrize("index", ['logs-"x"', "logs\\x", "a\nb"])
def test_pipeline_rejects_unwritable_index(index):
    with pytest.raises(ValueError, match="index"):
        logstash_pipeline(LogstashSettings.model_validate({"index": index}))


def test_env_helpers_exact_and_secret_free():
    assert elasticsearch_env(512) == {"discovery.type": "single-node", "xpack.security.enabled": "true",
                                      "xpack.security.http.ssl.enabled": "false",
                                      "ES_JAVA_OPTS": "-Xms512m -Xmx512m"}
    assert kibana_env() == {"ELASTICSEARCH_HOSTS": "http://elasticsearch:9200",
                            "ELASTICSEARCH_USERNAME": "kibana_system"}
    assert logstash_env(256) == {"LS_JAVA_OPTS": "-Xms256m -Xmx256m", "XPACK_MONITORING_ENABLED": "false"}


# ---------------------------------------------------------------- credentials job

SCRIPT = credentials_job_script()


@pytest.mark.parametrize("shell", ["bash", "dash"])
def test_script_syntax(shell, tmp_path):
    path = shutil.which(shell)
    assert path, f"{shell} is required"
    script = tmp_path / "job.sh"
    script.write_text(SCRIPT)
    result = subprocess.run([path, "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_script_defaults_to_the_internal_elasticsearch_url():
    assert 'ES_URL="${ES_URL:-http://elasticsearch:9200}"' in SCRIPT
    assert '"/_security/user/$user/_password"' in SCRIPT and "for user in elastic kibana_system; do" in SCRIPT
    assert "@" + "ES_URL@" not in SCRIPT and "@KIBANA_USER@" not in SCRIPT and "@ADMIN_USER@" not in SCRIPT


@dataclass
class FakeElasticsearch:
    """Mimics the endpoints the job uses, with berth's file-realm user; records every request."""

    elastic_password: str  # what the file-realm user berth-admin holds
    not_ready: int = 0             # answer 503 to this many health checks first
    password_status: int = 200
    requests: list[dict] = field(default_factory=list)

    def respond(self, method: str, path: str, headers: dict, body: bytes) -> tuple[int, dict]:
        self.requests.append({"method": method, "path": path, "headers": headers, "body": body})
        expected = "Basic " + base64.b64encode(f"berth-admin:{self.elastic_password}".encode()).decode()
        if headers.get("Authorization") != expected:
            return 401, {"error": "unable to authenticate user [berth-admin]"}
        if method == "GET" and path.startswith("/_cluster/health"):
            if self.not_ready > 0:
                self.not_ready -= 1
                return 503, {"error": "master_not_discovered_exception"}
            return 200, {"status": "green"}
        if method == "POST" and path in ("/_security/user/elastic/_password",
                                         "/_security/user/kibana_system/_password"):
            if headers.get("Content-Type") != "application/json":
                return 406, {"error": "Content-Type header is not supported"}
            return self.password_status, {}
        return 404, {}


@contextlib.contextmanager
def serve(fake: FakeElasticsearch):
    class Handler(BaseHTTPRequestHandler):
        def _handle(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, payload = fake.respond(self.command, self.path, dict(self.headers), body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _handle

        def log_message(self, *args):
            pass

    with serving(Handler) as port:
        yield f"http://127.0.0.1:{port}"


def run_job(tmp_path, url, elastic, kibana, tries=5):
    script = tmp_path / "job.sh"
    script.write_text(SCRIPT)
    env = {"PATH": os.environ["PATH"], "ES_URL": url, "ELASTIC_PASSWORD": elastic, "KIBANA_PASSWORD": kibana,
           "TRIES": str(tries), "SLEEP": "0"}
    # dash: no bashisms may slip in (Alpine and distroless-ish images have a POSIX sh only).
    return subprocess.run(["dash", str(script)], env=env, capture_output=True, text=True, timeout=60)


NASTY = 'p"a\\ss $word `x` \' %s ü'


def test_job_waits_then_sets_the_password_with_basic_auth_and_json(tmp_path):
    fake = FakeElasticsearch(elastic_password=NASTY + "E", not_ready=2)
    with serve(fake) as url:
        result = run_job(tmp_path, url, NASTY + "E", NASTY + "K")
    assert result.returncode == 0, result.stderr
    assert [r["method"] for r in fake.requests] == ["GET", "GET", "GET", "POST", "POST"]
    posts = fake.requests[-2:]
    assert [p["path"] for p in posts] == ["/_security/user/elastic/_password",
                                          "/_security/user/kibana_system/_password"]
    assert all(p["headers"]["Content-Type"] == "application/json" for p in posts)
    assert [json.loads(p["body"]) for p in posts] == [{"password": NASTY + "E"}, {"password": NASTY + "K"}]
    assert "elastic password set" in result.stdout and "kibana_system password set" in result.stdout


def test_job_is_idempotent(tmp_path):
    fake = FakeElasticsearch(elastic_password="e")
    with serve(fake) as url:
        first, second = (run_job(tmp_path, url, "e", "k") for _ in range(2))
    assert (first.returncode, second.returncode) == (0, 0)
    assert [json.loads(r["body"]) for r in fake.requests if r["method"] == "POST"] == [{"password": "e"},
                                                                                       {"password": "k"}] * 2


def test_job_fails_fast_on_401(tmp_path):
    fake = FakeElasticsearch(elastic_password="right")
    with serve(fake) as url:
        result = run_job(tmp_path, url, "wrong", "k", tries=50)
    assert result.returncode != 0
    assert "401" in result.stderr
    assert len(fake.requests) == 1
    assert not any(r["method"] == "POST" for r in fake.requests)


def test_job_fails_when_the_password_change_fails(tmp_path):
    fake = FakeElasticsearch(elastic_password="e", password_status=500)
    with serve(fake) as url:
        result = run_job(tmp_path, url, "e", "k")
    assert result.returncode != 0
    assert "HTTP 500" in result.stderr


def test_job_gives_up_when_elasticsearch_never_answers(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        result = run_job(tmp_path, f"http://127.0.0.1:{port}", "e", "k", tries=3)
    assert result.returncode != 0
    assert "not ready after 3 tries (last status 000)" in result.stderr


@pytest.mark.parametrize("missing", ["ELASTIC_PASSWORD", "KIBANA_PASSWORD"])
def test_job_requires_both_passwords(tmp_path, missing):
    script = tmp_path / "job.sh"
    script.write_text(SCRIPT)
    env = {"PATH": os.environ["PATH"], "ELASTIC_PASSWORD": "e", "KIBANA_PASSWORD": "k"}
    del env[missing]
    result = subprocess.run(["dash", str(script)], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert missing in result.stderr


def test_job_rejects_control_characters(tmp_path):
    result = run_job(tmp_path, "http://127.0.0.1:9", "e", "line\nbreak")
    assert result.returncode != 0
    assert "control characters" in result.stderr


@pytest.mark.parametrize("shell", ["bash", "dash"])
def test_start_script_syntax(shell, tmp_path):
    script = tmp_path / "start.sh"
    script.write_text(START_SCRIPT)
    result = subprocess.run([shutil.which(shell) or shell, "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_start_script_writes_the_file_realm_user_then_hands_over(tmp_path):
    """Run with elasticsearch-users and the image's entrypoint replaced by recorders, at the image's paths."""
    root = tmp_path / "root"
    tool = root / "usr/share/elasticsearch/bin/elasticsearch-users"
    entry = root / "usr/local/bin/docker-entrypoint.sh"
    for path, text in ((tool, 'echo "users $*" >>"$LOG"\n'), (entry, 'echo "entrypoint $*" >>"$LOG"\n')):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n" + text)
        path.chmod(0o755)
    script = START_SCRIPT.replace("/usr/share/", f"{root}/usr/share/").replace("/usr/local/", f"{root}/usr/local/")
    script = script.replace("/bin/tini", f"{root}/bin/tini")  # no tini here: the script runs the entrypoint
    (tmp_path / "start.sh").write_text(script)
    log = tmp_path / "log"
    result = subprocess.run(["dash", str(tmp_path / "start.sh"), "eswrapper"], capture_output=True, text=True,
                            env={"PATH": os.environ["PATH"], "LOG": str(log), "ELASTIC_PASSWORD": "pw 'x'"})
    assert result.returncode == 0, result.stderr
    assert log.read_text().splitlines() == ["users userdel berth-admin",
                                            "users useradd berth-admin -p pw 'x' -r superuser", "entrypoint eswrapper"]
    missing = subprocess.run(["dash", str(tmp_path / "start.sh")], capture_output=True, text=True,
                             env={"PATH": os.environ["PATH"], "LOG": str(log)})
    assert missing.returncode != 0 and "ELASTIC_PASSWORD is required" in missing.stderr


def test_pipeline_with_gelf_input_for_container_logs():
    text = logstash_pipeline(LogstashSettings.model_validate({"gelf_port": 12202}), gelf=True)
    assert text.startswith("input {\n  tcp {\n    port => 5000\n    codec => json_lines\n  }\n"
                           "  gelf {\n    port => 12202\n  }\n}\noutput {\n")
    assert "gelf" not in logstash_pipeline(LogstashSettings())


def test_elastic_url_percent_encodes_the_password():
    url = elastic_url("p@ss/w#rd:1")
    assert url == "http://elastic:p%40ss%2Fw%23rd%3A1@elasticsearch:9200"
    parts = urllib.parse.urlsplit(url)
    assert (parts.username, parts.hostname, urllib.parse.unquote(parts.password or "")) == (
        "elastic", "elasticsearch", "p@ss/w#rd:1")
