"""proxy.tls modes letsencrypt and provided: each bad input is one ConfigError naming its key.

`provided` is checked against real chains made here with cryptography (a CA and a leaf): a wrong
key, an uncovered name, an expired or not yet valid certificate, and one close to its end (a warning).
"""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from berth.errors import ConfigError
from berth.settings import load_settings
from berth.settings.tls import LETSENCRYPT, LETSENCRYPT_STAGING, acme_server, check_tls

ACME = {"mode": "letsencrypt", "acme": {"email": "ops@example.com"}}
NAMES = ["example.com", "www.example.com", "api.example.com"]
NOW = datetime.datetime.now(datetime.UTC)


def letsencrypt(**acme: object) -> dict[str, object]:
    return {"proxy.tls": {"mode": "letsencrypt", "acme": {"email": "ops@example.com", **acme}}}


# -- letsencrypt ----------------------------------------------------------------------------------


def test_letsencrypt_defaults(valid):
    settings = valid({"proxy.tls": ACME})
    acme = settings.proxy.tls.acme
    assert (acme.email, acme.server, acme.key_type, acme.eab) == ("ops@example.com", None, "ecdsa", None)
    assert acme.image == "certbot/certbot:v4.0.0"
    assert acme_server(settings) == LETSENCRYPT


def test_the_staging_environment_orders_from_lets_encrypt_staging(valid):
    assert acme_server(valid({"environment": "staging", "proxy.tls": ACME})) == LETSENCRYPT_STAGING
    given = valid({"environment": "staging", **letsencrypt(server="https://ca.example.net/acme/directory")})
    assert acme_server(given) == "https://ca.example.net/acme/directory"


def test_letsencrypt_accepts_rsa_eab_and_a_private_ca(valid):
    settings = valid(letsencrypt(key_type="rsa", server="https://acme.zerossl.com/v2/DV90",
                                 eab={"key_id": "kid-1", "hmac_key": "c2VjcmV0LWhtYWMta2V5"}))
    assert settings.proxy.tls.acme.eab.hmac_key.get_secret_value() == "c2VjcmV0LWhtYWMta2V5"
    private = valid({"proxy.tls": {"mode": "letsencrypt", "acme": {
        "server": "https://step-ca.internal:9000/acme/acme/directory", "ca_bundle": _pem(_ca()[1])}}})
    assert private.proxy.tls.acme.email is None  # a private CA asks for no contact


@pytest.mark.parametrize(("name", "why"), [
    ("*.{domain}", "a wildcard needs the DNS-01 challenge"),
    ("_", "the catch-all name is no domain"),
    ("localhost", "localhost is not reachable from a CA"),
    ("10.0.0.7", "an IP address is no domain name"),
    ("intranet", "a name without a dot is not a public domain name"),
])
def test_letsencrypt_refuses_names_http01_cannot_validate(assert_config_error, name, why):
    error = assert_config_error("proxy.sites[1].server_names[0]", why,
                                {**letsencrypt(), "proxy.sites[1].server_names": [name]})
    assert "cannot be validated by HTTP-01 (tls.mode letsencrypt)" in str(error)


def test_letsencrypt_refuses_the_localhost_domain_without_sites(assert_config_error):
    assert_config_error("domain", "localhost is not reachable from a CA",
                        {**letsencrypt(), "domain": "localhost", "proxy.sites": []})


@pytest.mark.parametrize("server", [None, LETSENCRYPT, LETSENCRYPT_STAGING, "https://api.buypass.com/acme/directory"])
def test_letsencrypt_needs_an_email_where_the_ca_does(assert_config_error, server):
    acme = {} if server is None else {"server": server}
    assert_config_error("proxy.tls.acme.email", "is required by",
                        {"proxy.tls": {"mode": "letsencrypt", "acme": acme}})


def test_a_ca_that_binds_accounts_needs_eab(assert_config_error):
    assert_config_error("proxy.tls.acme.eab", "needs an external account binding",
                        letsencrypt(server="https://acme.zerossl.com/v2/DV90"))


@pytest.mark.parametrize("server", ["http://acme.example.com/directory", "acme.example.com/directory",
                                    "ftp://acme.example.com", "https://"])
def test_the_server_must_be_an_https_url(assert_config_error, server):
    assert_config_error("proxy.tls.acme.server", "is not an https URL", letsencrypt(server=server))


@pytest.mark.parametrize(("changes", "path", "rule"), [
    ({"proxy.tls": {"mode": "letsencrypt"}}, "proxy.tls.acme", "tls.mode letsencrypt needs acme"),
    ({"proxy.tls": {"mode": "self-signed", "acme": {"email": "a@example.com"}}}, "proxy.tls.acme",
     "is only for tls.mode letsencrypt, not self-signed"),
    (letsencrypt(email="not-an-address"), "proxy.tls.acme.email", "is not an email address"),
    (letsencrypt(key_type="dsa"), "proxy.tls.acme.key_type", "should be 'ecdsa' or 'rsa'"),
    (letsencrypt(eab={"key_id": "kid"}), "proxy.tls.acme.eab.hmac_key", "is required"),
    (letsencrypt(ca_bundle="not a certificate"), "proxy.tls.acme.ca_bundle", "is not a PEM certificate"),
    ({**letsencrypt(), "proxy.http_port": 8080}, "proxy.http_port", "validates HTTP-01 on port 80 only"),
    ({**letsencrypt(), "proxy.bind": "127.0.0.1"}, "proxy.bind", "is loopback"),
    ({**letsencrypt(), "proxy.sites[2]": {"server_names": [f"n{i}.{{domain}}" for i in range(99)],
                                          "routes": [{"path": "/", "app": "backend"}]}},
     "proxy.sites", "one certificate takes at most 100"),
], ids=["no-acme", "acme-without-letsencrypt", "email", "key-type", "eab-no-hmac", "ca-bundle", "port-8080", "loopback",
        "101-names"])
def test_letsencrypt_bad_input(assert_config_error, changes, path, rule):
    assert_config_error(path, rule, changes)


def test_a_test_ca_may_validate_on_another_port(valid):
    settings = valid({**letsencrypt(server="https://127.0.0.1:14000/dir"), "proxy.http_port": 18080})
    assert settings.proxy.http_port == 18080


# -- provided -------------------------------------------------------------------------------------


def _ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(NOW - datetime.timedelta(days=1))
            .not_valid_after(NOW + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def chain(names=NAMES, *, start=NOW - datetime.timedelta(days=1), end=NOW + datetime.timedelta(days=90),
          key=None) -> tuple[str, str]:
    """A leaf for `names` signed by a fresh CA, as (leaf + CA PEM, leaf key PEM)."""
    ca_key, ca = _ca()
    key = key or ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return _pem(leaf) + _pem(ca), _key_pem(key)


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _key_pem(key) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def provided(certificate: str, key: str) -> dict[str, object]:
    return {"proxy.tls": {"mode": "provided", "certificate": certificate, "key": key}}


def test_provided_accepts_a_matching_chain_that_covers_every_name(valid):
    certificate, key = chain()
    settings = valid(provided(certificate, key))
    assert settings.proxy.tls.certificate.get_secret_value() == certificate
    assert check_tls(settings) == []


def test_a_wildcard_certificate_covers_one_label(valid, assert_config_error):
    certificate, key = chain(["example.com", "*.example.com"])
    assert valid(provided(certificate, key)).proxy.tls.mode == "provided"
    deeper = {**provided(certificate, key), "proxy.sites[1].server_names": ["a.api.{domain}"]}
    assert_config_error("proxy.tls.certificate", "does not cover a.api.example.com", deeper)


def test_provided_rsa_key(valid):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    certificate, key_pem = chain(key=key)
    assert valid(provided(certificate, key_pem)).proxy.tls.mode == "provided"


def test_provided_wrong_key(assert_config_error):
    certificate, _ = chain()
    _, other_key = chain()
    error = assert_config_error("proxy.tls.key", "does not belong to the certificate", provided(certificate, other_key))
    assert "PRIVATE KEY" not in str(error)


def test_provided_uncovered_name(assert_config_error):
    certificate, key = chain(["example.com", "www.example.com"])
    assert_config_error("proxy.tls.certificate", "does not cover api.example.com (it names example.com, "
                        "www.example.com)", provided(certificate, key))


def test_provided_expired(assert_config_error):
    certificate, key = chain(start=NOW - datetime.timedelta(days=100), end=NOW - datetime.timedelta(days=10))
    assert_config_error("proxy.tls.certificate", "expired on", provided(certificate, key))


def test_provided_not_yet_valid(assert_config_error):
    certificate, key = chain(start=NOW + datetime.timedelta(days=2), end=NOW + datetime.timedelta(days=92))
    assert_config_error("proxy.tls.certificate", "is not valid before", provided(certificate, key))


def test_provided_close_to_its_end_is_a_warning_not_an_error(valid):
    certificate, key = chain(end=NOW + datetime.timedelta(days=5))
    settings = valid(provided(certificate, key))
    [warning] = check_tls(settings)
    assert warning.startswith("proxy.tls.certificate: expires on") and "within 14 days" in warning


@pytest.mark.parametrize(("field", "value", "rule"), [
    ("certificate", "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
     "is not a PEM certificate chain"),
    ("key", "-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n",
     "is not an unencrypted PEM private key"),
])
def test_provided_unparsable_pem(assert_config_error, field, value, rule):
    certificate, key = chain()
    given = {"certificate": certificate, "key": key, field: value}
    error = assert_config_error(f"proxy.tls.{field}", rule, provided(given["certificate"], given["key"]))
    assert "not base64" not in str(error)


@pytest.mark.parametrize(("changes", "path", "rule"), [
    ({"proxy.tls": {"mode": "provided", "key": "k"}}, "proxy.tls.certificate", "tls.mode provided needs"),
    ({"proxy.tls": {"mode": "provided", "certificate": "c"}}, "proxy.tls.key", "tls.mode provided needs"),
    ({"proxy.tls": {"mode": "self-signed", "key": "k"}}, "proxy.tls.key", "is only for tls.mode provided"),
])
def test_provided_needs_both_and_only_there(assert_config_error, changes, path, rule):
    certificate, key = chain()  # real PEM text: what is missing or misplaced is the only problem
    pems = {"c": certificate, "k": key}
    assert_config_error(path, rule, {"proxy.tls": {k: pems.get(v, v) for k, v in changes["proxy.tls"].items()}})


def test_check_tls_raises_nothing_for_self_signed(valid):
    assert check_tls(valid()) == []
    with pytest.raises(ConfigError):
        load_settings({"environment": "prod", "proxy": {"tls": {"mode": "provided", "certificate": "x", "key": "y"}}})
