"""The proxy's TLS resources per mode, under Pulumi's mocks: certbot, its volumes, nginx's watcher, secrets."""

from __future__ import annotations

import json

from berth import tlsmock
from berth.synth import SECRET

EAB_HMAC = "c2VjcmV0LWhtYWMta2V5LWZvci10ZXN0cw"
NAMES = "example.com,www.example.com,api.example.com"


def env(record: dict) -> dict[str, str]:
    return dict(item.split("=", 1) for item in record["inputs"]["envs"])


def test_letsencrypt_runs_certbot_beside_the_proxy(synth_of):
    synth = synth_of("prod", "praxifi")
    certbot = synth.named("proxy-certbot-container")
    assert certbot["parent"] == "proxy-certbot"
    assert certbot["inputs"]["image"] == "certbot/certbot:v4.0.0"
    assert certbot["inputs"]["entrypoints"] == ["python3", "/usr/local/lib/berth/acme.py"]
    assert certbot["inputs"]["command"] == ["run"]
    assert env(certbot) == {
        "BERTH_ACME_DOMAINS": NAMES, "BERTH_ACME_SERVER": "https://acme-v02.api.letsencrypt.org/directory",
        "BERTH_ACME_KEY_TYPE": "ecdsa", "BERTH_ACME_CERT_NAME": "proxy", "BERTH_ACME_SHARED": "/var/lib/berth-acme",
        "BERTH_ACME_PROXY": "proxy", "BERTH_ACME_EMAIL": "ops@example.com"}
    assert certbot["inputs"]["healthcheck"]["tests"] == ["CMD", "python3", "/usr/local/lib/berth/acme.py", "health"]
    assert certbot["inputs"]["wait"] is True  # `pulumi up` ends once the first certificate is there
    assert [n["name"] for n in certbot["inputs"]["networksAdvanced"]] == [synth.docker_name("edge")]
    assert "ports" not in certbot["inputs"]
    assert {m["containerPath"]: m["volumeName"] for m in certbot["inputs"]["volumes"]} == {
        "/etc/letsencrypt": synth.docker_name("letsencrypt"), "/var/lib/berth-acme": synth.docker_name("acme")}


def test_the_account_and_certificates_are_kept_like_data(synth_of):
    synth = synth_of("prod", "praxifi")
    for name, volume in (("proxy-certbot-state", "letsencrypt"), ("proxy-certbot-shared", "acme")):
        record = synth.named(name)
        assert record["inputs"]["name"] == synth.docker_name(volume)
        assert (record["options"]["retain_on_delete"], record["options"]["protect"]) == (True, True)


def test_nginx_watches_the_certificate_read_only(synth_of):
    proxy = synth_of("prod", "praxifi").named("proxy-container")
    assert proxy["inputs"]["entrypoints"] == ["/bin/sh", "/usr/local/lib/berth/nginx-tls.sh"]
    assert proxy["inputs"]["command"] == ["nginx", "-g", "daemon off;"]
    assert proxy["inputs"]["volumes"] == [{"volumeName": "praxifi-prod-acme", "containerPath": "/var/lib/berth-acme",
                                           "readOnly": True}]
    assert env(proxy) == {"BERTH_TLS_SOURCE": "/var/lib/berth-acme/live/tls.pem",
                          "BERTH_TLS_ACTIVE": "/etc/nginx/tls/tls.pem",
                          "BERTH_TLS_TEMPORARY": "/etc/nginx/tls/temporary.pem", "BERTH_TLS_POLL": "1"}
    assert sorted(p["internal"] for p in proxy["inputs"]["ports"]) == [80, 443]
    uploads = {u["file"]: u["content"] for u in proxy["inputs"]["uploads"]}
    assert uploads["/etc/nginx/tls/temporary.pem"] == SECRET
    assert uploads["/usr/local/lib/berth/nginx-tls.sh"].startswith("#!/bin/sh")


def test_staging_orders_from_lets_encrypt_staging(synth_of):
    certbot = synth_of("staging", "praxifi").named("proxy-certbot-container")
    assert env(certbot)["BERTH_ACME_SERVER"] == "https://acme-staging-v02.api.letsencrypt.org/directory"
    assert env(certbot)["BERTH_ACME_DOMAINS"] == NAMES.replace("example.com", "staging.example.com")


def test_no_container_gets_the_docker_socket(synth_of):
    for stack in ("dev", "staging", "prod"):
        for record in synth_of(stack, "praxifi").containers:
            text = json.dumps(record["inputs"].get("volumes", [])) + json.dumps(record["inputs"].get("mounts", []))
            assert "docker.sock" not in text, record["name"]


# Raw synth overrides cannot be `secure:` values: the prod guardrail is opted out of, with the reason.
PLAIN_IN_TEST = {"plaintext_secret": "a test's raw overrides cannot be secure: values"}


def test_eab_hmac_key_stays_secret(synth_with):
    overrides = {"proxy": {"tls": {"acme": {"server": "https://acme.zerossl.com/v2/DV90",
                                            "eab": {"key_id": "kid-7", "hmac_key": EAB_HMAC}}}},
                 "allow_insecure": PLAIN_IN_TEST}
    masked = synth_with("prod", "praxifi", overrides=overrides)
    certbot = masked.named("proxy-certbot-container")
    assert certbot["inputs"]["envs"] == SECRET
    assert EAB_HMAC not in json.dumps(masked.result)
    revealed = synth_with("prod", "praxifi", reveal=True, overrides=overrides).named("proxy-certbot-container")
    assert {"BERTH_ACME_EAB_KID": "kid-7", "BERTH_ACME_EAB_HMAC_KEY": EAB_HMAC}.items() <= env(revealed).items()


def test_a_private_ca_bundle_is_trusted_by_certbot(synth_with):
    ca = tlsmock.self_signed_cert({"privateKeyPem": tlsmock.private_key("ECDSA")["privateKeyPem"],
                                   "subject": {"commonName": "private CA"}, "validityPeriodHours": 24})
    overrides = {"proxy": {"tls": {"acme": {"server": "https://ca.internal:9000/acme/directory", "ca_bundle": ca}}}}
    certbot = synth_with("prod", "praxifi", overrides=overrides).named("proxy-certbot-container")
    assert env(certbot)["REQUESTS_CA_BUNDLE"] == "/usr/local/lib/berth/acme-ca.pem"
    assert {"file": "/usr/local/lib/berth/acme-ca.pem", "content": ca} in certbot["inputs"]["uploads"]


def test_provided_uploads_the_chain_and_key_as_secrets(synth_with):
    key = tlsmock.private_key("ECDSA")["privateKeyPem"]
    cert = tlsmock.self_signed_cert({"privateKeyPem": key, "subject": {"commonName": "example.com"},
                                     "dnsNames": NAMES.split(","), "validityPeriodHours": 24 * 90})
    synth = synth_with("prod", "praxifi", overrides={"proxy": {"tls": {"mode": "provided", "acme": None,
                                                                       "certificate": cert, "key": key}},
                                                     "allow_insecure": PLAIN_IN_TEST})
    proxy = synth.named("proxy-container")
    uploads = {u["file"]: u["content"] for u in proxy["inputs"]["uploads"]}
    assert uploads["/etc/nginx/tls/cert.pem"] == uploads["/etc/nginx/tls/key.pem"] == SECRET
    assert not [r for r in synth.resources if "certbot" in r["name"] or r["type"].startswith("tls:")]
    text = json.dumps(synth.result)
    assert key.splitlines()[1] not in text and cert.splitlines()[1] not in text


def test_a_provided_certificate_close_to_its_end_is_warned_about(synth_with, caplog):
    key = tlsmock.private_key("ECDSA")["privateKeyPem"]
    cert = tlsmock.self_signed_cert({"privateKeyPem": key, "subject": {"commonName": "example.com"},
                                     "dnsNames": NAMES.split(","), "validityPeriodHours": 24 * 5})
    synth_with("prod", "praxifi", overrides={"proxy": {"tls": {"mode": "provided", "acme": None,
                                                               "certificate": cert, "key": key}},
                                             "allow_insecure": PLAIN_IN_TEST})
    [warning] = [r for r in caplog.records if r.levelname == "WARNING" and "proxy.tls.certificate" in r.getMessage()]
    assert "expires on" in warning.getMessage() and "within 14 days: give a renewed one" in warning.getMessage()
