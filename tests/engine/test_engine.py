"""Engine tier: each blueprint's synthesized desired state runs on a real Docker engine and is probed.

One class per blueprint. Its deployment (`dep`) is applied once from `berth synth` output by the
applier (tests/engine/applier.py), shared by the class's tests (ordered by conftest.ORDER:
read-only probes first, faults and replacements last) and always torn down.
Feature checks (SSE, rate limits, Postgres, jobs) are mixins; `test_the_class_covers_its_blueprint`
fails if a blueprint has a feature its class does not check, so nothing is left out silently.
"""

from __future__ import annotations

import copy
import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
import pytest
import readback
from applier import CONTAINER, INSTRUMENT_LABEL, NETWORK, Applier, cleanup
from engine_config import (
    BLUEPRINTS,
    EXCLUDED_SERVICES,
    OTHER_TIERS,
    STACK,
    engine_settings,
    engine_synth,
    excluded,
    print_excluded,
)
from engine_host import METRICS, build_lock, restart_dockerd
from probes import Deployment, Load, probe_id, request

from berth.plan.nginx import PERMISSIONS_POLICY
from berth.plan.postgres import database_url, databases_sql
from berth.settings.services import PostgresDatabase
from berth.synth import synth

pytestmark = pytest.mark.engine

REFUSED = (429, 503)  # what nginx's limit_req answers (503 unless limit_req_status says otherwise)
OUTSIDE_HOST = "deb.debian.org"
HEALTHY_AGAIN_TIMEOUT = 240


@pytest.fixture(scope="class")
def dep(request: pytest.FixtureRequest, engine: docker.DockerClient) -> Iterator[Deployment]:
    """The class's blueprint, applied from its synth output; always torn down, volumes included."""
    blueprint = request.cls.BLUEPRINT
    extra = getattr(request.cls, "OVERRIDES", None)
    print_excluded(blueprint)
    result = engine_synth(blueprint, extra)
    applier = Applier(engine, result)
    cleanup(engine, applier.stack, applier.stack + "-")
    deployment: Deployment | None = None
    try:
        report = applier.apply()
        deployment = Deployment(blueprint, engine_settings(blueprint, extra), result, applier, engine, report)
        METRICS[blueprint] = {"seconds_to_all_healthy": round(report["seconds"], 1),
                              "containers": report["containers"]}
        print(f"engine tier: {blueprint}: {report['containers']} containers healthy (jobs exited 0) "
              f"{report['seconds']:.1f}s after apply began", flush=True)
        yield deployment
    finally:
        # A test may have re-applied the stack (ComesBackChecks): tear down what runs now.
        (deployment.applier if deployment is not None else applier).teardown(keep_retained=False)
        cleanup(engine, applier.stack, applier.stack + "-")


def test_every_blueprint_has_an_engine_class() -> None:
    classes = [c for c in globals().values() if isinstance(c, type) and issubclass(c, Deployed) and c is not Deployed]
    on_disk = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "blueprints").glob("*.yaml"))
    assert sorted(c.BLUEPRINT for c in classes) == on_disk == sorted(BLUEPRINTS)


# -- probe scripts run in throwaway containers ---------------------------------------------------

CONNECT_SCRIPT = """
import json, socket, sys
from concurrent.futures import ThreadPoolExecutor
targets = json.loads(sys.argv[1])
def attempt(target):
    ip, port = target
    try:
        socket.create_connection((ip, port), timeout=1.5).close()
        return [ip, port, "connected"]
    except OSError as error:
        return [ip, port, type(error).__name__]
with ThreadPoolExecutor(64) as pool:
    print(json.dumps(list(pool.map(attempt, targets))))
"""

OUTSIDE_SCRIPT = """
import json, socket, sys
name, ip = sys.argv[1], sys.argv[2]
result = {}
try:
    result["dns"] = socket.gethostbyname(name)
except OSError as error:
    result["dns_error"] = str(error)
try:
    socket.create_connection((ip, 80), timeout=4).close()
    result["tcp"] = "connected"
except OSError as error:
    result["tcp_error"] = type(error).__name__ + ": " + str(error)
print(json.dumps(result))
"""

READ_FILE_SCRIPT = """
import json, sys
print(json.dumps({"content": open(sys.argv[1]).read()}))
"""


class Deployed:
    """What every blueprint must show on a real engine."""

    BLUEPRINT = ""
    OVERRIDES: dict | None = None

    # 1. health --------------------------------------------------------------------------------

    def test_every_container_is_healthy(self, dep: Deployment) -> None:
        lines = []
        for resource, cid in dep.applier.service_containers().items():
            state = dep.api.inspect_container(cid)["State"]
            created = dep.applier.created(resource)
            assert state["Running"], f"{resource} is {state['Status']}"
            assert (state.get("Health") or {}).get("Status") == "healthy", f"{resource}: {state.get('Health')}"
            lines.append(f"{resource} {created.t_ready - created.t_started:.1f}s "
                         f"(ready {created.t_ready - dep.applier.t_apply_begin:.1f}s into apply)")
        print(f"{dep.blueprint}: healthy after: " + "; ".join(lines))
        print(f"{dep.blueprint}: all healthy {dep.apply_report['seconds']:.1f}s after apply began")

    def test_read_back_matches_synth(self, dep: Deployment) -> None:
        """Every container, network and volume read back as the provider's Read would: no field differs.

        A difference is what `pulumi preview --expect-no-changes` would show right after `pulumi up`
        (a replacement for a ForceNew field such as cpus, an update for memory_swap).
        """
        problems, counts = readback.check(dep.applier, INSTRUMENT_LABEL)
        METRICS[dep.blueprint]["read_back_fields"] = sum(counts.values())
        print(f"{dep.blueprint}: read back " + ", ".join(f"{n} fields of {k.rsplit(':', 1)[-1]}s"
                                                       for k, n in sorted(counts.items())))
        assert counts.get(CONTAINER) and counts.get(NETWORK)
        assert not problems, "perpetual diffs:\n  " + "\n  ".join(problems)

    def test_the_class_covers_its_blueprint(self, dep: Deployment) -> None:
        proxy = dep.settings.proxy
        assert proxy is not None and proxy.enabled
        routes = [route for site in proxy.sites for route in site.routes]
        wanted = {
            SseChecks: any(route.sse for route in routes),
            RateLimitChecks: any(route.rate_limit for route in routes),
            PostgresChecks: dep.settings.service("postgres") is not None,
            JobChecks: bool(dep.settings.enabled_jobs),
        }
        for mixin, needed in wanted.items():
            assert isinstance(self, mixin) == needed, f"{type(self).__name__}: {mixin.__name__} needed={needed}"

    # 2. the proxy -----------------------------------------------------------------------------

    def test_routes_reach_their_apps(self, dep: Deployment) -> None:
        proxy = dep.settings.proxy
        assert proxy is not None
        checked = []
        for index, name in dep.server_names():
            for route in proxy.sites[index].routes:
                want_port = route.port or dep.settings.enabled_apps[route.app].port
                probe = probe_id()
                path = route.path + (probe if route.path.endswith("/") else f"/{probe}")
                if route.sse:
                    # the stand-in streams on these paths; the container that logged the probe answered
                    answer = dep.https(name, path + "/events", timeout=30)
                    assert answer.status == 200 and answer.headers["content-type"].startswith("text/event-stream")
                    apps = {r: cid for r, cid in dep.applier.service_containers().items()
                            if dep.app_of(r) in dep.settings.enabled_apps}  # not the proxy's access log
                    logged = {r: line for r, cid in apps.items()
                              for line in dep.api.logs(cid, tail=500).decode(errors="replace").splitlines()
                              if probe in line}
                    assert {dep.app_of(r) for r in logged} == {route.app}, f"{name}{path}: logged by {logged}"
                    assert all(f" :{want_port} " in line for line in logged.values()), logged
                else:
                    answer = dep.https(name, path + "?q=1")
                    assert answer.status == 200, f"{name}{path}: {answer.status} {answer.body[:200]!r}"
                    echo = answer.json()
                    assert dep.app_of_hostname(echo["host"]) == route.app, f"{name}{path}: {echo}"
                    assert echo["port"] == want_port, f"{name}{path}: {echo}"
                    expected_path = path
                    if route.strip_prefix and route.path != "/":
                        expected_path = "/" + path[len(route.path.rstrip("/")):].lstrip("/")
                    assert (echo["path"], echo["query"]) == (expected_path, "q=1")
                    assert echo["headers"].get("Host") == name
                    assert echo["headers"].get("X-Forwarded-Proto") == "https"
                checked.append(f"https://{name}{route.path} -> {route.app}:{want_port}")
        # a Host no site claims is closed without an answer (no default site leaks)
        if not any("_" in site.server_names for site in proxy.sites):
            with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
                dep.https(dep.server_names()[0][1], "/", headers={"Host": "unknown.invalid"})
        print(f"{dep.blueprint}: routes: " + "; ".join(checked))

    def test_http_redirects_to_https(self, dep: Deployment) -> None:
        proxy = dep.settings.proxy
        assert proxy is not None and proxy.http_redirect
        port = "" if dep.https_port == 443 else f":{dep.https_port}"
        for _, name in dep.server_names():
            answer = dep.http(name, "/some/page?x=1")
            assert answer.status == 301, (name, answer.status)
            assert answer.headers["location"] == f"https://{name}{port}/some/page?x=1"
            # ACME HTTP-01 challenges stay on plain HTTP (served from the webroot, not redirected)
            assert dep.http(name, "/.well-known/acme-challenge/missing").status == 404

    @pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
    def test_tls_versions(self, dep: Deployment) -> None:
        name = dep.server_names()[0][1]
        seen = {}
        for version in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
            context = dep.tls_context(minimum=version, maximum=version, legacy=True)
            with pytest.raises(ssl.SSLError) as refused:
                with socket.create_connection((dep.bind, dep.https_port), timeout=10) as sock:
                    context.wrap_socket(sock, server_hostname=name)
            # the server's protocol_version alert, not this client refusing to offer the version
            assert "PROTOCOL_VERSION" in str(refused.value) or "UNSUPPORTED_PROTOCOL" in str(refused.value), \
                f"{version.name}: {refused.value}"
            assert "NO_PROTOCOLS_AVAILABLE" not in str(refused.value)
            seen[version.name] = f"refused ({refused.value.reason})"
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            context = dep.tls_context(minimum=version, maximum=version)
            with socket.create_connection((dep.bind, dep.https_port), timeout=10) as sock:
                with context.wrap_socket(sock, server_hostname=name) as tls:
                    assert tls.version() == version.name.replace("_", ".")
                    seen[version.name] = f"accepted ({tls.cipher()[0]})"
        print(f"{dep.blueprint}: TLS on {name}: {seen}")

    def test_security_headers(self, dep: Deployment) -> None:
        proxy = dep.settings.proxy
        assert proxy is not None
        hsts = f"max-age={round(proxy.tls.hsts_max_age.total_seconds())}" + (
            "; includeSubDomains" if proxy.tls.hsts_include_subdomains else "")
        expected = {"strict-transport-security": hsts}
        if proxy.security_headers:
            expected |= {"x-content-type-options": "nosniff", "x-frame-options": "SAMEORIGIN",
                         "referrer-policy": "strict-origin-when-cross-origin",
                         "permissions-policy": PERMISSIONS_POLICY}
        if proxy.content_security_policy:
            expected["content-security-policy"] = proxy.content_security_policy
        for _, name in dep.server_names():
            for path in ("/", f"/{probe_id()}"):
                answer = dep.https(name, path)
                got = {key: answer.headers.get(key) for key in expected}
                assert got == expected, f"{name}{path}"
                assert "x-powered-by" not in answer.headers

    # 3. dependencies --------------------------------------------------------------------------

    def test_apps_reach_their_dependencies(self, dep: Deployment) -> None:
        url = re.compile(r"^(postgres(ql)?|redis|amqp)://")
        for resource in dep.applier.service_containers():
            env = dep.env(resource)
            if "PORT" not in env or dep.applier.record(resource)["inputs"]["image"].split(":")[0] != \
                    "berth-engine/standin":
                continue
            deps = dep.app_get(resource, "/deps").json()
            assert all(item["ok"] for item in deps.values()), f"{resource}: {deps}"
            assert sorted(deps) == sorted(k for k, v in env.items() if url.match(v)), resource
            app = dep.settings.enabled_apps[dep.app_of(resource)]
            services = {ref.split(".")[0] for ref in app.secrets.values()} & {"postgres", "redis", "rabbitmq"}
            assert bool(deps) == bool(services), f"{resource}: secrets name {services}, stand-in found {list(deps)}"
            print(f"{dep.blueprint}: {resource}: " + "; ".join(f"{k}: {v['detail']}" for k, v in deps.items()))

    # 4. exposure ------------------------------------------------------------------------------

    def test_only_the_proxy_publishes_ports(self, dep: Deployment) -> None:
        proxy_ips = set(dep.ips(dep.proxy).values())
        stack_ips: dict[str, str] = {}
        for resource, cid in dep.applier.containers().items():
            info = dep.api.inspect_container(cid)
            bindings = info["HostConfig"].get("PortBindings") or {}
            published = {port: hosts for port, hosts in (info["NetworkSettings"].get("Ports") or {}).items() if hosts}
            if resource == dep.proxy:
                want = {"80/tcp": [{"HostIp": dep.bind, "HostPort": str(dep.http_port)}],
                        "443/tcp": [{"HostIp": dep.bind, "HostPort": str(dep.https_port)}]}
                assert bindings == want
                assert published == want
            else:
                assert not bindings and not published, f"{resource} publishes {bindings or published}"
                stack_ips.update({ip: resource for ip in dep.ips(resource).values()})
        # the two ways dockerd publishes on the host: DNAT rules and docker-proxy listeners
        rules = subprocess.run(["iptables", "-w", "-t", "nat", "-S", "DOCKER"], capture_output=True, text=True,
                               check=True).stdout
        targets = {m.group(1) for m in re.finditer(r"--to-destination (\d+\.\d+\.\d+\.\d+):\d+", rules)}
        assert targets & proxy_ips, "no DNAT rule for the proxy"
        assert not targets & set(stack_ips), f"DNAT to {[stack_ips[t] for t in targets & set(stack_ips)]}"
        processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
        proxied = set(re.findall(r"docker-proxy .*-container-ip (\S+)", processes))
        assert not proxied & set(stack_ips), f"docker-proxy for {[stack_ips[i] for i in proxied & set(stack_ips)]}"
        print(f"{dep.blueprint}: only {dep.proxy} publishes, on {dep.bind}:{dep.http_port},{dep.https_port}; "
              f"{len(stack_ips)} other addresses have no DNAT rule or docker-proxy")

    def test_networks_isolate_the_stack(self, dep: Deployment) -> None:
        """From another network on this host nothing of the stack answers; from the edge, no data address."""
        targets: list[tuple[str, int, str, str]] = []  # ip, port, network, resource
        for resource in dep.applier.service_containers():
            info = dep.inspect(resource)
            ports = {int(p.split("/")[0]) for p in (info["Config"].get("ExposedPorts") or {})}
            env = dep.env(resource)
            ports |= {int(p) for p in (env.get("STANDIN_PORTS") or env.get("PORT") or "").split(",") if p}
            for network, ip in dep.ips(resource).items():
                targets += [(ip, port, network.rsplit("-", 1)[-1], resource) for port in sorted(ports)]
        pairs = json.dumps([[ip, port] for ip, port, _, _ in targets])
        outside = {(ip, port): how for ip, port, how in dep.run_probe("bridge", CONNECT_SCRIPT, args=[pairs])}
        reached = [t for t in targets if outside[(t[0], t[1])] == "connected"]
        assert not reached, f"reachable from the default bridge network: {reached}"
        edge = {(ip, port): how for ip, port, how in dep.run_probe(dep.network("edge"), CONNECT_SCRIPT, args=[pairs])}
        data_reached = [t for t in targets if t[2] == "data" and edge[(t[0], t[1])] == "connected"]
        assert not data_reached, f"data-network addresses reachable from the edge network: {data_reached}"
        # control: the same probe does connect where it should (the app ports and the proxy on the edge)
        should = [t for t in targets if t[2] == "edge" and (t[3] == dep.proxy and t[1] in (80, 443) or
                                                             t[1] == int(dep.env(t[3]).get("PORT", 0)))]
        assert should and all(edge[(t[0], t[1])] == "connected" for t in should), \
            [(t, edge[(t[0], t[1])]) for t in should]
        print(f"{dep.blueprint}: {len(targets)} address:port pairs unreachable from the default bridge; "
              f"{sum(t[2] == 'data' for t in targets)} data-network pairs unreachable from the edge; "
              f"{len(should)} edge pairs reachable from the edge (control)")

    def test_data_network_has_no_way_out(self, dep: Deployment) -> None:
        try:
            address = socket.gethostbyname(OUTSIDE_HOST)
        except OSError as error:
            pytest.fail(f"the host cannot resolve {OUTSIDE_HOST} ({error}): nothing to prove the negative against")
        services = [alias for alias in ("postgres", "redis", "rabbitmq") if dep.has_alias(alias)]
        with ThreadPoolExecutor(2 + len(services)) as pool:  # each waits out DNS timeouts: in parallel
            inside = pool.submit(dep.run_probe, dep.network("data"), OUTSIDE_SCRIPT, args=[OUTSIDE_HOST, address])
            control = pool.submit(dep.run_probe, dep.network("edge"), OUTSIDE_SCRIPT, args=[OUTSIDE_HOST, address])
            lookups = {alias: pool.submit(dep.exec, dep.resource_with_alias(alias), ["getent", "hosts", OUTSIDE_HOST])
                       for alias in services}
        assert "dns" not in inside.result() and "tcp" not in inside.result(), \
            f"the data network reaches out: {inside.result()}"
        assert control.result().get("tcp") == "connected" and "dns" in control.result(), \
            f"control failed: the edge network cannot reach {OUTSIDE_HOST} either ({control.result()}), so the " \
            "data network's refusal proves nothing"
        for alias, lookup in lookups.items():
            code, output = lookup.result()
            assert code != 0, f"{alias} resolves {OUTSIDE_HOST}: {output}"
        print(f"{dep.blueprint}: data network: {inside.result()}; edge network (control): {control.result()}; "
              f"getent hosts {OUTSIDE_HOST} fails in {', '.join(services) or '-'}")

    # 5. faults --------------------------------------------------------------------------------

    def test_kill_9_restarts_every_service(self, dep: Deployment) -> None:
        """SIGKILL of each container's main process (a crash): its restart policy brings it back healthy.

        `docker kill` would not do: dockerd treats it as a deliberate stop and does not restart.
        """
        services = dep.applier.service_containers()
        before = {}
        for resource, cid in services.items():
            state = dep.api.inspect_container(cid)["State"]
            before[resource] = (state["Pid"], dep.api.inspect_container(cid)["RestartCount"])
        begin = time.monotonic()
        for pid, _ in before.values():
            os.kill(pid, signal.SIGKILL)

        def back(resource: str) -> float:
            count = before[resource][1]

            def done(info: dict) -> bool:
                return info["RestartCount"] > count and (info["State"].get("Health") or {}).get("Status") == "healthy"

            dep.applier.wait_for(services[resource], done, HEALTHY_AGAIN_TIMEOUT, f"{resource} after kill -9")
            return time.monotonic() - begin

        with ThreadPoolExecutor(len(services)) as pool:
            times = dict(zip(services, pool.map(back, services), strict=True))
        print(f"{dep.blueprint}: kill -9 -> restarted and healthy after: "
              + ", ".join(f"{r} {t:.1f}s" for r, t in times.items()))
        METRICS[dep.blueprint]["kill9_all_healthy_again_s"] = round(max(times.values()), 1)
        assert dep.https(dep.server_names()[0][1], "/").status == 200

    # 6. data ----------------------------------------------------------------------------------

    def test_data_survives_image_bump(self, dep: Deployment) -> None:
        """Postgres rows, Redis keys and app volume files outlive a replacement with a new image tag."""
        marker = probe_id()
        replaced = []
        if dep.has_alias("postgres"):
            resource = dep.resource_with_alias("postgres")
            code, out = dep.psql(f"CREATE TABLE IF NOT EXISTS engine_probe(v text); "
                                 f"INSERT INTO engine_probe VALUES ('{marker}')")
            assert code == 0, out
            rep = dep.applier.replace(resource, new_image="berth-engine/postgres:v2")
            assert rep.delete_before_replace, "a fixed-name data service must be delete-before-replace"
            code, out = dep.psql(f"SELECT count(*) FROM engine_probe WHERE v = '{marker}'")
            assert (code, out.strip()) == (0, "1"), out
            replaced.append(resource)
        if dep.has_alias("redis"):
            resource = dep.resource_with_alias("redis")
            assert dep.redis_cli("SET", f"engine:{marker}", marker)[1].strip() == "OK"
            rep = dep.applier.replace(resource, new_image="berth-engine/redis:v2")
            assert rep.delete_before_replace
            assert dep.redis_cli("GET", f"engine:{marker}")[1].strip() == marker
            replaced.append(resource)
        for app_name, app in dep.settings.enabled_apps.items():
            if not app.volumes:
                continue
            for resource in dep.app_resources(app_name):
                answer = dep.app_post(resource, f"/data/{marker}", marker.encode())
                assert answer.status == 200, answer.body
                rep = dep.applier.replace(resource, new_image="berth-engine/standin:v2")
                # start-first apps are replaced create-before-delete; a stop-first one (a single
                # writer of its files, as WebProMetrics' db.json backend) is stopped first
                assert rep.delete_before_replace is (app.update_order == "stop-first"), app.update_order
                if rep.delete_before_replace:
                    assert rep.t_old_removed <= rep.t_new_started, "the old writer ran alongside the new one"
                assert dep.inspect(resource)["Config"]["Image"] == "berth-engine/standin:v2"
                got = dep.app_get(resource, f"/data/{marker}")
                assert (got.status, got.body) == (200, marker.encode())
                replaced.append(resource)
        assert replaced, f"{dep.blueprint} has no data to keep?"
        for resource, cid in dep.applier.service_containers().items():
            health = dep.api.inspect_container(cid)["State"].get("Health") or {}
            assert health.get("Status") == "healthy", resource
        print(f"{dep.blueprint}: data kept across image bumps of {', '.join(replaced)}")


class SseChecks:
    def test_sse_is_not_buffered(self, dep: Deployment) -> None:
        proxy = dep.settings.proxy
        assert proxy is not None
        for index, name in dep.server_names():
            for route in proxy.sites[index].routes:
                if not route.sse:
                    continue
                path = route.path + ("events" if route.path.endswith("/") else "/events")
                connection = dep.https_connection(name, timeout=30)
                begin = time.monotonic()
                connection.request("GET", path, headers={"Host": name, "Accept": "text/event-stream"})
                answer = connection.getresponse()
                assert answer.status == 200 and answer.getheader("Content-Type").startswith("text/event-stream")
                assert answer.getheader("Content-Encoding") is None
                arrivals = []
                while chunk := answer.read1(65536):
                    arrivals += [time.monotonic() - begin] * chunk.count(b"data:")
                connection.close()
                assert len(arrivals) == 5, arrivals
                # the stand-in sends one event every 0.5 s: each must arrive as it is sent
                assert arrivals[0] < 1.0 and arrivals[-1] - arrivals[0] > 1.5, f"{name}{path}: {arrivals}"
                print(f"{dep.blueprint}: SSE https://{name}{path}: events at "
                      + ", ".join(f"{t:.2f}s" for t in arrivals))


class RateLimitChecks:
    def test_burst_over_rate_limit_is_refused(self, dep: Deployment) -> None:
        proxy = dep.settings.proxy
        assert proxy is not None
        limited = [(proxy.rate_limits[route.rate_limit].burst, index, route)
                   for index, site in enumerate(proxy.sites) for route in site.routes if route.rate_limit]
        burst, index, route = min(limited, key=lambda item: item[0])
        name = proxy.sites[index].server_names[0].replace("{domain}", dep.settings.domain)
        connection = dep.https_connection(name)
        statuses = []
        try:
            for _ in range(burst + 15):
                path = route.path + (probe_id() if route.path.endswith("/") else "")
                statuses.append(request(connection, name, path).status)
        finally:
            connection.close()
        refused = [s for s in statuses if s in REFUSED]
        assert statuses.count(200) >= 1 and refused, statuses
        assert set(statuses) <= {200, *REFUSED}, statuses
        print(f"{dep.blueprint}: {len(statuses)} quick requests to https://{name}{route.path} "
              f"(rate {proxy.rate_limits[route.rate_limit].rate}, burst {burst}): {statuses.count(200)} x 200, "
              f"{len(refused)} x {sorted(set(refused))}")


class PostgresChecks:
    def test_postgres_outage_fails_health_then_recovers(self, dep: Deployment) -> None:
        postgres = dep.resource_with_alias("postgres")
        watched = []
        for app_name, app in dep.settings.enabled_apps.items():
            uses_pg = any(ref.startswith("postgres.") for ref in app.secrets.values())
            if uses_pg and app.healthcheck is not None and app.healthcheck.http in (
                    "/health", app.env.get("HEALTH_PATH")):
                watched += dep.app_resources(app_name)
        assert watched, "no app whose healthcheck covers Postgres"
        for resource in watched:
            assert dep.healthcheck_now(resource)[0] == 0, resource
        grace = int(dep.applier.record(postgres)["inputs"].get("destroyGraceSeconds") or 10)
        begin = time.monotonic()
        dep.api.stop(dep.cid(postgres), timeout=grace)
        try:
            for resource in watched:
                deadline = time.monotonic() + 20
                while (result := dep.healthcheck_now(resource))[0] == 0:
                    assert time.monotonic() < deadline, f"{resource} still healthy with Postgres stopped"
                    time.sleep(0.5)
        finally:
            dep.api.start(dep.cid(postgres))
        dep.applier.wait_healthy(dep.cid(postgres), HEALTHY_AGAIN_TIMEOUT, postgres)
        for resource in watched:
            deadline = time.monotonic() + 30
            while dep.healthcheck_now(resource)[0] != 0:
                assert time.monotonic() < deadline, f"{resource} did not recover after Postgres came back"
                time.sleep(0.5)
        last_line = (result[1].strip().splitlines() or ["non-zero exit"])[-1][:100]
        print(f"{dep.blueprint}: with Postgres stopped the healthcheck of {', '.join(watched)} failed "
              f"({last_line}); all recovered "
              f"{time.monotonic() - begin:.1f}s after the stop")


class ComesBackChecks:
    """A stack whose state is lost comes back on its retained volumes, with new passwords, by itself.

    The data services hold credentials in their volumes (the Postgres superuser, RabbitMQ's users):
    a fresh synth generates new passwords for all of them, as `pulumi up` does after a destroy or a
    lost state, and every service must take the new ones at its start (DESIGN principle 10).
    """

    def test_comes_back_on_retained_volumes_with_new_passwords(self, dep: Deployment) -> None:
        pg = dep.settings.postgres
        assert pg is not None and pg.databases
        marker = probe_id()
        for database in sorted(pg.databases):
            code, out = dep.psql(f"CREATE TABLE IF NOT EXISTS berth_kept (v text); INSERT INTO berth_kept "
                                 f"VALUES ('{marker}')", database)
            assert code == 0, out
        old_superuser = dep.env(dep.resource_with_alias("postgres"))["POSTGRES_PASSWORD"]
        old_rabbit = _rabbit_passwords(dep)
        dep.applier.teardown(keep_retained=True)  # as `pulumi destroy` of a protected stack, or a lost state

        result = engine_synth(dep.blueprint, getattr(self, "OVERRIDES", None))  # fresh passwords, as pulumi up
        dep.applier = Applier(dep.client, result)
        dep.result = result
        report = dep.applier.apply()  # the databases job authenticates with the new superuser password
        postgres = dep.resource_with_alias("postgres")
        new_superuser = dep.env(postgres)["POSTGRES_PASSWORD"]
        assert new_superuser != old_superuser
        for resource, cid in dep.applier.service_containers().items():
            state = dep.api.inspect_container(cid)["State"]
            assert (state.get("Health") or {}).get("Status") == "healthy", f"{resource}: {state.get('Health')}"
        # Over the network (scram, not the container's loopback trust), with the new password only.
        for password, expected in ((new_superuser, 0), (old_superuser, 2)):
            code, out = dep.exec(postgres, ["env", f"PGPASSWORD={password}", "psql", "-tA", "-h", "postgres",
                                            "-U", pg.user, "-d", pg.database, "-c", "SELECT 1"])
            assert code == expected, out
        for database in sorted(pg.databases):
            code, out = dep.psql("SELECT v FROM berth_kept", database)
            assert code == 0 and marker in out.split(), (database, out)
        new_rabbit = _rabbit_passwords(dep)
        for user, password in new_rabbit.items():  # every RabbitMQ user, admin included, takes its new password
            assert password != old_rabbit[user]
            rabbitmq = dep.resource_with_alias("rabbitmq")
            for attempt, expected in ((password, 0), (old_rabbit[user], 1)):
                code, out = dep.exec(rabbitmq, ["rabbitmqctl", "-q", "authenticate_user", user, attempt])
                assert (code == 0) == (expected == 0), (user, code, out)
        print(f"{dep.blueprint}: came back on its retained volumes with new passwords in "
              f"{report['seconds']:.1f}s: {report['containers']} containers healthy, the databases job passed, "
              f"rows kept in {len(pg.databases)} databases, the old superuser password refused; "
              f"{len(new_rabbit)} RabbitMQ users take only their new passwords")


def _rabbit_passwords(dep: Deployment) -> dict[str, str]:
    """user -> password of every RabbitMQ user, admin included, from the stack's `connections` output."""
    urls = [urllib.parse.urlsplit(url) for ref, url in dep.result["outputs"]["connections"].items()
            if ref.startswith("rabbitmq.")]
    return {urllib.parse.unquote(u.username or ""): urllib.parse.unquote(u.password or "") for u in urls}


class JobChecks:
    def test_jobs_ran_to_exit_0(self, dep: Deployment) -> None:
        for name in dep.settings.enabled_jobs:
            resource = next(r["name"] for r in dep.applier.container_records()
                            if r["parent"] == name and r["inputs"].get("attach"))
            created = dep.applier.created(resource)
            assert created.exit_code == 0
            assert dep.inspect(resource)["State"]["ExitCode"] == 0
            env = dep.env(resource)
            for value in env.values():
                if value.startswith("postgresql://"):
                    database = urllib.parse.unquote(urllib.parse.urlsplit(value).path.lstrip("/"))
                    code, out = dep.psql("SELECT count(*) FROM berth_standin_migrations", database)
                    assert code == 0 and int(out.strip()) >= 1, out
            print(f"{dep.blueprint}: job {name} exited 0; its migration row is in Postgres")


# -- the five blueprints -----------------------------------------------------------------------


class TestAiPresentFinder(Deployed, SseChecks, PostgresChecks, ComesBackChecks):
    BLUEPRINT = "ai-present-finder"

    def test_role_refused_on_other_databases(self, dep: Deployment) -> None:
        """Each service's role reaches its own database and is refused on every other one."""
        app = dep.app_resources("app")[0]
        urls = {k: v for k, v in dep.env(app).items() if v.startswith("postgresql://")}
        databases = {urllib.parse.urlsplit(v).path.lstrip("/") for v in urls.values()}
        assert dep.settings.postgres is not None
        others = databases | {dep.settings.postgres.database, "postgres", "template1"}
        refused = 0
        for variable, url in sorted(urls.items()):
            parts = urllib.parse.urlsplit(url)
            own = parts.path.lstrip("/")
            for database in sorted(others):
                probe = urllib.parse.urlunsplit(parts._replace(path=f"/{database}"))
                answer = dep.app_get(app, "/pgcheck?url=" + urllib.parse.quote(probe, safe="")).json()
                if database == own:
                    assert answer["ok"], f"{variable} on its own database: {answer}"
                else:
                    assert not answer["ok"] and "permission denied" in answer["detail"], \
                        f"{variable} on {database}: {answer}"
                    refused += 1
        print(f"{dep.blueprint}: {len(urls)} roles reach their own database; {refused} other-database "
              "connections refused")

    def test_a_database_added_later_is_provisioned_on_the_live_cluster(self, dep: Deployment) -> None:
        """The databases job, run again with one more database, creates it and keeps everything else.

        As `pulumi up` would after `postgres.databases` grew: the job's SQL changes (the existing
        roles keep their passwords from state, the new one gets its own), so the job is replaced.
        """
        pg = dep.settings.postgres
        assert pg is not None
        app = dep.app_resources("app")[0]
        urls = [urllib.parse.urlsplit(v) for v in dep.env(app).values() if v.startswith("postgresql://")]
        passwords = {url.path.lstrip("/"): urllib.parse.unquote(url.password or "") for url in urls}
        assert set(passwords) == set(pg.databases)
        grown = pg.model_copy(update={"databases": {**pg.databases, "added_service": PostgresDatabase()}})
        inputs = copy.deepcopy(dep.applier.record("postgres-databases")["inputs"])
        (upload,) = inputs["uploads"]
        upload["content"] = databases_sql(grown, {**passwords, "added_service": "added-service-pw"})
        dep.applier.replace("postgres-databases", new_inputs=inputs)
        assert dep.applier.created("postgres-databases").exit_code == 0
        added = database_url("added_service", "added-service-pw", "postgres", 5432, "added_service")
        answer = dep.app_get(app, "/pgcheck?url=" + urllib.parse.quote(added, safe="")).json()
        assert answer["ok"], answer
        other = database_url("added_service", "added-service-pw", "postgres", 5432, sorted(passwords)[0])
        answer = dep.app_get(app, "/pgcheck?url=" + urllib.parse.quote(other, safe="")).json()
        assert not answer["ok"] and "permission denied" in answer["detail"], answer
        assert all(item["ok"] for item in dep.app_get(app, "/deps").json().values())
        print(f"{dep.blueprint}: databases job re-run with one more database: it reaches its own database, is "
              f"refused on {sorted(passwords)[0]}, and the {len(passwords)} existing roles still connect")

    def test_dockerd_restart_brings_everything_back(self, dep: Deployment) -> None:
        """Once per session (slow): dockerd stops gracefully and starts again; every container comes back."""
        services = dep.applier.service_containers()
        with build_lock():
            seconds_down = restart_dockerd()
            begin = time.monotonic()

            def back(resource: str) -> float:
                dep.applier.wait_healthy(services[resource], HEALTHY_AGAIN_TIMEOUT, f"{resource} after dockerd restart")
                return time.monotonic() - begin

            with ThreadPoolExecutor(len(services)) as pool:
                times = dict(zip(services, pool.map(back, services), strict=True))
        for _, name in dep.server_names():
            assert dep.https(name, "/").status == 200
        app = dep.app_resources("app")[0]
        assert all(item["ok"] for item in dep.app_get(app, "/deps").json().values())
        print(f"{dep.blueprint}: dockerd stopped and started in {seconds_down:.1f}s; healthy again after: "
              + ", ".join(f"{r} {t:.1f}s" for r, t in times.items()))
        METRICS[dep.blueprint]["dockerd_restart_all_healthy_s"] = round(max(times.values()), 1)


class TestDemo(Deployed, PostgresChecks, ComesBackChecks):
    """The demo blueprint as every blueprint is checked, with the stand-in playing its app."""

    BLUEPRINT = "demo"


class TestDemoApp:
    """The demo blueprint with its real app (demo/app): the page a newcomer opens after deploy-dev.sh."""

    BLUEPRINT = "demo"
    OVERRIDES = {"images": {"berth/demo:1": "berth-engine/demo:latest"}}

    def test_the_page_shows_postgres_and_redis_reached_and_counts_visits(self, dep: Deployment) -> None:
        (_, name), = dep.server_names()
        pages = [dep.https(name, "/") for _ in range(2)]
        assert [page.status for page in pages] == [200, 200]
        bodies = [page.body.decode() for page in pages]
        visits = [int(re.search(r"; (\d+) visits recorded", body).group(1)) for body in bodies]
        views = [int(re.search(r"; (\d+) page views counted", body).group(1)) for body in bodies]
        assert "connected to PostgreSQL 15" in bodies[0] and "as demo on database demo" in bodies[0]
        assert "connected to Redis " in bodies[0]
        assert visits[1] == visits[0] + 1 and views[1] == views[0] + 1
        health = dep.https(name, "/health")
        report = json.loads(health.body)
        assert health.status == 200 and report["postgres"]["ok"] is True and report["redis"]["ok"] is True
        print(f"demo: the page shows PostgreSQL and Redis reached; visits {visits}, views {views}")

    def test_a_stopped_cache_shows_on_the_page_and_in_health(self, dep: Deployment) -> None:
        (_, name), = dep.server_names()
        redis = dep.resource_with_alias("redis")
        dep.api.stop(dep.cid(redis), timeout=10)
        try:
            page = dep.https(name, "/")
            assert page.status == 200 and "Redis</b>: not reachable" in page.body.decode()
            assert dep.https(name, "/health").status == 503
        finally:
            dep.api.start(dep.cid(redis))
        dep.applier.wait_healthy(dep.cid(redis), HEALTHY_AGAIN_TIMEOUT, redis)


class TestDatabaseai(Deployed, PostgresChecks):
    BLUEPRINT = "databaseai"

    def test_zero_downtime_replace(self, dep: Deployment) -> None:
        """Steady load through the proxy while the backend is replaced: no GET may fail.

        Eight keep-alive GET connections plus one for POSTs. The stand-in listens with a backlog of
        511, as real servers do: with socketserver's default of 5, a SYN dropped while all traffic
        moved to the new container was a 250 ms connect timeout and a 504 in the proxy.
        """
        resource = "backend-0"
        record = dep.applier.record(resource)
        assert record["options"]["delete_before_replace"] is False and "name" not in record["inputs"]
        host = dep.server_names()[0][1]
        rate, duration = 230.0, 60.0
        load = Load(dep, host, "/api/zero-downtime", get_rate=rate, post_rate=5, threads=8)
        load.start()
        try:
            time.sleep(3)
            rep = dep.applier.replace(resource, new_image="berth-engine/standin:v2")
            time.sleep(max(0.0, load.t_begin + duration - time.monotonic()))
        finally:
            load.stop()
        elapsed = load.t_end - load.t_begin
        failed = [s for s in load.gets if not s.ok]
        failed_posts = [s for s in load.posts if not s.ok]
        old = [s.t for s in load.gets if s.ok and s.host == rep.old_hostname]
        new = [s.t for s in load.gets if s.ok and s.host == rep.new_hostname]
        assert old and new, "traffic never reached one of the two containers"
        window = [s for s in load.gets if rep.t_old_stop_begin <= s.t <= rep.t_old_removed + 5]
        latencies = sorted(s.latency for s in load.gets)
        numbers = {
            "gets": len(load.gets), "get_rate_per_s": round(len(load.gets) / elapsed, 1),
            "failed_gets": len(failed), "posts": len(load.posts), "failed_posts": len(failed_posts),
            "new_healthy_at_s": round(rep.t_new_healthy - load.t_begin, 2),
            "first_answer_from_new_s_before_healthy": round(rep.t_new_healthy - min(new), 2),
            "last_answer_from_old_s_after_healthy": round(max(old) - rep.t_new_healthy, 2),
            "old_removed_s_after_healthy": round(rep.t_old_removed - rep.t_new_healthy, 2),
            "grace_s": rep.grace_seconds,
            "latency_p50_ms": round(latencies[len(latencies) // 2] * 1000, 1),
            "latency_p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 1),
            "latency_max_ms": round(latencies[-1] * 1000, 1),
            "gets_over_250ms_after_old_stop": sum(s.latency > 0.25 for s in window),
        }
        METRICS["zero_downtime"] = {"blueprint": dep.blueprint, "resource": resource, **numbers}
        print(f"{dep.blueprint}: zero-downtime replace of {resource} under load: {numbers}")
        if failed or failed_posts:
            shown = (failed + failed_posts)[:20]
            print("failures (s after load began, status, error):",
                  [(round(s.t - load.t_begin, 2), s.status, s.error) for s in shown])
            print(f"old stop began {rep.t_old_stop_begin - load.t_begin:.2f}s, old removed "
                  f"{rep.t_old_removed - load.t_begin:.2f}s after load began; proxy errors:")
            errors = dep.api.logs(dep.cid(dep.proxy), stdout=False, stderr=True, tail=40).decode(errors="replace")
            print("\n".join(line for line in errors.splitlines() if "upstream" in line)[-4000:])
        assert len(load.gets) / elapsed >= 200, numbers
        assert not failed, numbers
        assert max(old) <= rep.t_old_removed, "the old container answered after it was removed"


class TestPraxifi(Deployed, SseChecks, RateLimitChecks):
    BLUEPRINT = "praxifi"


class TestSentineliq(Deployed, RateLimitChecks, PostgresChecks, JobChecks, ComesBackChecks):
    BLUEPRINT = "sentineliq"

    def test_excluded_services_are_listed(self, dep: Deployment, capsys: pytest.CaptureFixture[str]) -> None:
        """MinIO and ELK cannot run here: the list printed is exactly what the deployment lacks."""
        names = print_excluded(dep.blueprint)
        printed = capsys.readouterr().out
        with capsys.disabled():
            print(printed, end="")
        assert names == list(EXCLUDED_SERVICES)
        assert "engine tier excludes (no server available here) from sentineliq: " + ", ".join(names) in printed
        # the blueprint as written, nothing excluded but what other tiers prove (backups: tests/backup)
        full = synth(STACK, dep.blueprint, raw_overrides=OTHER_TIERS)
        full_containers = {r["name"]: r["inputs"]["image"] for r in full["resources"]
                           if r["type"].endswith("Container")}
        deployed = {r["name"] for r in dep.applier.container_records()}
        missing = {name: image for name, image in full_containers.items() if name not in deployed}
        assert sorted(missing.values()) == sorted(image for _, image in excluded(dep.blueprint)), missing
        assert deployed <= set(full_containers)
        for record in dep.applier.container_records():
            text = json.dumps(record["inputs"].get("envs", []))
            assert not re.search(r"minio|logstash|elasticsearch|kibana", text), record["name"]
        print(f"{dep.blueprint}: not deployed: {sorted(missing)}")


class TestWebprometrics(Deployed, RateLimitChecks):
    BLUEPRINT = "webprometrics"
    # prod-like: data volumes protected as in Pulumi.prod.yaml
    OVERRIDES = {"protect_data": True}

    def test_prod_like_teardown_keeps_data_volumes(self, dep: Deployment) -> None:
        volumes = [r for r in dep.applier.records if r["type"].endswith("volume:Volume")]
        assert volumes and all(r["options"]["retain_on_delete"] and r["options"]["protect"] for r in volumes)
        marker = probe_id()
        backend = dep.app_resources("backend")[0]
        assert dep.app_post(backend, f"/data/{marker}", marker.encode()).status == 200
        mount = dep.settings.apps["backend"].volumes
        report = dep.applier.teardown(keep_retained=True)
        names = sorted(r["inputs"]["name"] for r in volumes)
        assert report["kept"] == names
        left = dep.api.containers(all=True, filters={"label": f"berth.engine.stack={dep.applier.stack}"})
        assert not left, [c["Names"] for c in left]
        assert not [n for n in dep.api.networks() if n["Name"].startswith(dep.applier.stack + "-")]
        on_engine = {v["Name"] for v in dep.api.volumes().get("Volumes") or []}
        assert set(names) <= on_engine
        volume_name = next(r["inputs"]["name"] for r in volumes if r["inputs"]["name"].endswith("-db_data"))
        content = dep.run_probe("none", READ_FILE_SCRIPT, volumes={volume_name: "/kept"},
                                args=[f"/kept/{marker}"])["content"]
        assert content == marker, "the kept volume lost the app's file"
        for name in names:
            dep.api.remove_volume(name)
        assert not set(names) & {v["Name"] for v in dep.api.volumes().get("Volumes") or []}
        print(f"{dep.blueprint}: teardown with protect_data kept {names} (the app's file intact, {mount}); "
              "then removed them explicitly")

