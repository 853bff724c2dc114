"""Elk: Elasticsearch, a job that makes its users' passwords true, Logstash and Kibana, under one parent.

The host needs `vm.max_map_count >= 262144` for Elasticsearch (a kernel setting no container may
change); see README "Host requirements".
"""

from __future__ import annotations

import pulumi
import pulumi_docker as docker

from berth.plan import elk as plan
from berth.plan.containers import docker_name, http_probe
from components.common import (
    ContainerSpec,
    Placement,
    ServiceArgs,
    container,
    data_volume,
    password,
    setup_job,
    upload,
)

# As the file-realm user: `elastic` may still hold another password until the credentials job ran.
ES_HEALTH = ["CMD-SHELL", f"curl -fsS -o /dev/null -u \"{plan.ADMIN_USER}:$ELASTIC_PASSWORD\" "
             "'http://127.0.0.1:9200/_cluster/health?wait_for_status=yellow&timeout=5s'"]
# Elasticsearch refuses to start with fewer open files than this.
NOFILE = 65535


class Elk(pulumi.ComponentResource):
    """Health-gated: Elasticsearch healthy -> credentials job -> Logstash, Kibana and the apps.

    Elasticsearch keeps its users' passwords in its data volume: its start script writes a file-realm
    superuser with the current elastic password, and the credentials job, authenticated as that
    user, sets `elastic` and `kibana_system`. So a stack whose state was lost comes back on the
    retained volume, and rotation works.
    """

    def __init__(self, name: str, args: ServiceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("berth:data:Elk", name, None, opts)
        settings = args.settings
        elk = settings.elk
        assert elk is not None
        es, ls, kb = elk.elasticsearch, elk.logstash, elk.kibana
        self.volume = data_volume(f"{name}-data", settings, es.volume, self)
        self.elastic_password = password(f"{name}-elastic-password", self, elk.elastic_password)
        kibana_password = password(f"{name}-kibana-system-password", self)
        self.url: pulumi.Output[str] = pulumi.Output.secret(self.elastic_password.apply(plan.elastic_url))
        assert es.resources.limits.memory is not None
        # Containers' logs come to this Logstash when the stack logs by gelf without an address of its own.
        gelf = settings.logging.driver == "gelf" and not settings.logging.address
        self.elasticsearch = container(f"{name}-elasticsearch", args, ContainerSpec(
            image=es.image,
            placement=Placement(networks=[args.data_network], aliases=["elasticsearch"]),
            env=plan.elasticsearch_env(plan.heap_mb(es.resources.limits.memory)),
            secret_env={"ELASTIC_PASSWORD": self.elastic_password},
            health=(ES_HEALTH, es.healthcheck),
            resources=es.resources,
            command=["eswrapper"],
            volumes={"/usr/share/elasticsearch/data": self.volume.name},
            uploads=[upload(plan.START_SCRIPT_PATH, plan.START_SCRIPT, secret=False)],
            fixed_name=docker_name(settings, "elasticsearch"),
            grace=es.stop_grace,
            local_logs=True,
            extra={"ulimits": [docker.ContainerUlimitArgs(name="nofile", soft=NOFILE, hard=NOFILE)],
                   "entrypoints": ["/bin/sh", plan.START_SCRIPT_PATH]},
        ), parent=self)
        self.credentials_job, self.gate = setup_job(
            f"{name}-credentials", args, self, self.elasticsearch, ["/bin/sh"],
            image=es.image, command=["-c", plan.credentials_job_script()], local_logs=True,
            secret_env={"ELASTIC_PASSWORD": self.elastic_password, "KIBANA_PASSWORD": kibana_password})
        self.logstash = container(f"{name}-logstash", args, ContainerSpec(
            image=ls.image,
            placement=Placement(networks=[args.data_network], aliases=["logstash"]),
            env={**plan.logstash_env(plan.heap_mb(ls.resources.limits.memory or 1024**3)),
                 plan.LOGSTASH_USER_ENV: "elastic"},
            secret_env={plan.LOGSTASH_PASSWORD_ENV: self.elastic_password},
            health=(http_probe(9600, "/", ls.healthcheck.timeout), ls.healthcheck),
            resources=ls.resources,
            uploads=[upload(plan.LOGSTASH_PIPELINE_PATH, plan.logstash_pipeline(ls, gelf=gelf), secret=False)],
            fixed_name=docker_name(settings, "logstash"),
            local_logs=True,
            extra={"labels": [docker.ContainerLabelArgs(label="berth.after.elk-credentials", value=self.gate)],
                   # The docker daemon sends gelf from the host: loopback only, never a public address.
                   **({"ports": [docker.ContainerPortArgs(internal=ls.gelf_port, external=ls.gelf_port,
                                                          ip="127.0.0.1", protocol="udp")]} if gelf else {})},
        ), parent=self, depends_on=[self.elasticsearch])
        networks = [args.data_network] + ([args.edge_network] if _kibana_routed(settings) else [])
        self.kibana = container(f"{name}-kibana", args, ContainerSpec(
            image=kb.image,
            placement=Placement(networks=networks, aliases=["kibana"]),
            env=plan.kibana_env(),
            secret_env={"ELASTICSEARCH_PASSWORD": kibana_password},
            health=(http_probe(5601, "/api/status", kb.healthcheck.timeout), kb.healthcheck),
            resources=kb.resources,
            fixed_name=docker_name(settings, "kibana"),
            local_logs=True,
            extra={"labels": [docker.ContainerLabelArgs(label="berth.after.elk-credentials", value=self.gate)]},
        ), parent=self, depends_on=[self.credentials_job])
        self.refs = {"elasticsearch.password": self.elastic_password, "elasticsearch.url": self.url}
        self.register_outputs({"volume": self.volume.name})


def _kibana_routed(settings: object) -> bool:
    proxy = settings.proxy  # type: ignore[attr-defined]
    return bool(proxy and proxy.enabled and any(r.app == "kibana" for s in proxy.sites for r in s.routes))
