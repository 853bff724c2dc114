"""NginxProxy: the only container that publishes host ports; TLS, routes, rate limits and headers."""

from __future__ import annotations

import pulumi
import pulumi_docker as docker
import pulumi_tls as tls

from berth.plan.acme import SHARED_DIR, TEMPORARY_PEM, WATCHER_PATH, watcher_env, watcher_script
from berth.plan.containers import docker_name, http_probe
from berth.plan.nginx import TLS_CERT, TLS_KEY, render_nginx_conf, server_names
from berth.settings.tls import check_tls
from components.acme import Certbot
from components.common import ContainerSpec, Placement, ServiceArgs, container, upload

CONF_PATH = "/etc/nginx/nginx.conf"
TLS_DIR = "/etc/nginx/tls"
HEALTH_PORT = 8081
# A self-signed certificate is renewed by `pulumi up` within this many hours of expiry.
CERT_VALIDITY_HOURS = 365 * 24
CERT_EARLY_RENEWAL_HOURS = 30 * 24


class NginxProxy(pulumi.ComponentResource):
    """nginx from a rendered config; its certificate self-signed (pulumi-tls), provided, or from certbot.

    It has a fixed name and publishes 80/443, so it is replaced delete-before-replace: a changed
    config costs a restart of a few seconds, while app replacements behind it cost nothing.
    """

    def __init__(self, name: str, args: ServiceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("berth:proxy:NginxProxy", name, None, opts)
        settings = args.settings
        proxy = settings.proxy
        assert proxy is not None
        uploads = [upload(CONF_PATH, render_nginx_conf(settings, tls_dir=TLS_DIR,
                                                        health_listen=f"127.0.0.1:{HEALTH_PORT}"), secret=False)]
        ports = [docker.ContainerPortArgs(internal=80, external=proxy.http_port, ip=proxy.bind, protocol="tcp")]
        if proxy.tls.mode != "none":
            ports.append(docker.ContainerPortArgs(internal=443, external=proxy.https_port, ip=proxy.bind,
                                                  protocol="tcp"))
        for warning in check_tls(settings):
            pulumi.log.warn(warning, resource=self)
        extra: dict[str, object] = {"ports": ports, "stop_signal": "SIGQUIT"}  # SIGQUIT: nginx finishes requests
        env: dict[str, str] = {}
        self.certbot: Certbot | None = None
        if proxy.tls.mode == "self-signed":
            cert, key = self._self_signed(name, server_names(settings))
            uploads += [upload(f"{TLS_DIR}/{TLS_CERT}", cert, secret=False),
                        upload(f"{TLS_DIR}/{TLS_KEY}", key, secret=True)]
        elif proxy.tls.mode == "provided":
            assert proxy.tls.certificate is not None and proxy.tls.key is not None
            uploads += [upload(f"{TLS_DIR}/{TLS_CERT}", proxy.tls.certificate.get_secret_value(), secret=True),
                        upload(f"{TLS_DIR}/{TLS_KEY}", proxy.tls.key.get_secret_value(), secret=True)]
        elif proxy.tls.mode == "letsencrypt":
            # nginx starts on a temporary self-signed certificate; nginx-tls.sh swaps in certbot's.
            self.certbot = Certbot(f"{name}-certbot", args, pulumi.ResourceOptions(parent=self))
            cert, key = self._self_signed(name, server_names(settings))
            uploads += [upload(f"{TLS_DIR}/{TEMPORARY_PEM}", pulumi.Output.concat(key, cert), secret=True),
                        upload(WATCHER_PATH, watcher_script(), secret=False)]
            env = watcher_env(TLS_DIR)
            extra |= {"entrypoints": ["/bin/sh", WATCHER_PATH], "command": ["nginx", "-g", "daemon off;"],
                      "volumes": [docker.ContainerVolumeArgs(volume_name=self.certbot.shared.name,
                                                             container_path=SHARED_DIR, read_only=True)]}
        self.container = container(f"{name}-container", args, ContainerSpec(
            image=proxy.image,
            placement=Placement(networks=[args.edge_network], aliases=["proxy"]),
            env=env,
            health=(http_probe(HEALTH_PORT, "/healthz", proxy.healthcheck.timeout), proxy.healthcheck),
            uploads=uploads,
            resources=proxy.resources,
            fixed_name=docker_name(settings, "proxy"),
            extra=extra,
        ), parent=self, depends_on=[args.after[app] for app in sorted(settings.enabled_apps)])
        self.register_outputs({"container": self.container.name})

    def _self_signed(self, name: str, names: list[str]) -> tuple[pulumi.Output[str], pulumi.Output[str]]:
        child = pulumi.ResourceOptions(parent=self)
        key = tls.PrivateKey(f"{name}-tls-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
        cert = tls.SelfSignedCert(
            f"{name}-tls-cert",
            private_key_pem=key.private_key_pem,
            subject=tls.SelfSignedCertSubjectArgs(common_name=names[0], organization="berth self-signed"),
            dns_names=names,
            validity_period_hours=CERT_VALIDITY_HOURS,
            early_renewal_hours=CERT_EARLY_RENEWAL_HOURS,
            allowed_uses=["key_encipherment", "digital_signature", "server_auth"],
            opts=child,
        )
        return cert.cert_pem, key.private_key_pem
