"""The proxy's certificate sources beyond self-signed: an ACME account (letsencrypt) or a provided chain.

``AcmeSettings`` is ``proxy.tls.acme``. ``check_tls`` holds the rules that need the server names with
``{domain}`` filled in, so the root settings run it once the whole stack is known: HTTP-01 can only
validate some names, and a provided certificate must parse, match its key, cover every name and be
valid now. Every failure names its config key.
"""

from __future__ import annotations

import datetime
import ipaddress
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import AfterValidator, model_validator

from berth.settings.base import BerthModel, Cadence, ImageRef, ResourceAmounts, Resources, Secret, matching
from berth.settings.reading import MultiLine

if TYPE_CHECKING:
    from berth.settings.root import Settings

LETSENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
LETSENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"
# What some public CAs ask of an account; any other directory URL (a private CA, a test server) asks nothing.
# berth asks an email of Let's Encrypt accounts so that its policy and incident notices reach someone.
NEEDS_EMAIL = {LETSENCRYPT: "Let's Encrypt", LETSENCRYPT_STAGING: "Let's Encrypt",
               "https://acme.zerossl.com/v2/DV90": "ZeroSSL", "https://api.buypass.com/acme/directory": "Buypass"}
NEEDS_EAB = {"https://acme.zerossl.com/v2/DV90": "ZeroSSL",
             "https://dv.acme-v02.api.pki.goog/directory": "Google Trust Services"}
# CAs that validate HTTP-01 on port 80 and nowhere else (RFC 8555 section 8.3).
PUBLIC_CAS = {*NEEDS_EMAIL, *NEEDS_EAB}
# One certificate for every name: Let's Encrypt takes at most 100 names on one certificate.
MAX_NAMES = 100
# A provided certificate this close to its end is accepted with a warning.
EXPIRY_WARNING = datetime.timedelta(days=14)
CERTBOT_IMAGE = "certbot/certbot:v4.0.0"

Email = Annotated[str, AfterValidator(matching(r"[^@\s]+@[^@\s]+\.[^@\s]+", "an email address like ops@example.com"))]
HttpsUrl = Annotated[str, AfterValidator(matching(r"https://[A-Za-z0-9.-]+(:\d{1,5})?(/\S*)?",
                                                  "an https URL such as " + LETSENCRYPT))]
KeyId = Annotated[str, AfterValidator(matching(r"[A-Za-z0-9_-]+", "a key id of A-Z, a-z, 0-9, '_' and '-'"))]


class ExternalAccountBinding(BerthModel):
    """EAB for a CA that ties ACME accounts to an account of its own (key id and base64url HMAC key)."""

    key_id: KeyId
    hmac_key: Secret


class AcmeSettings(BerthModel):
    """The ACME account certbot orders the proxy's certificate with (HTTP-01, webroot)."""

    email: Email | None = None
    # None: Let's Encrypt production, or Let's Encrypt staging in the "staging" environment.
    server: HttpsUrl | None = None
    key_type: Literal["ecdsa", "rsa"] = "ecdsa"
    eab: ExternalAccountBinding | None = None
    # PEM of the CA that signs the ACME server's own HTTPS certificate, for a private CA or a test
    # server; the image's trust store otherwise.
    ca_bundle: Annotated[str, MultiLine()] | None = None
    image: ImageRef = CERTBOT_IMAGE
    # certbot is a Python process that wakes twice a day: 256m is a generous ceiling.
    resources: Resources = Resources(limits=ResourceAmounts(memory=256 * 1024**2))
    # Unhealthy at the first failed check once the first order had start_period to finish: an order
    # or renewal that failed, no certificate yet, or one that expires within 14 days.
    healthcheck: Cadence = Cadence(interval=datetime.timedelta(seconds=10), retries=1,
                                   start_period=datetime.timedelta(seconds=120))

    @model_validator(mode="after")
    def _ca_requirements(self) -> AcmeSettings:
        server = self.server or LETSENCRYPT
        if self.email is None and server in NEEDS_EMAIL:
            raise ValueError(f"email: is required by {NEEDS_EMAIL[server]} ({server})")
        if self.eab is None and server in NEEDS_EAB:
            raise ValueError(f"eab: {NEEDS_EAB[server]} ({server}) needs an external account binding "
                             "(key_id and hmac_key)")
        if self.ca_bundle is not None and "-----BEGIN CERTIFICATE-----" not in self.ca_bundle:
            raise ValueError("ca_bundle: is not a PEM certificate")
        return self


def acme_server(settings: Settings) -> str:
    """The ACME directory the stack orders from: the given one, else Let's Encrypt (staging for staging)."""
    acme = settings.proxy.tls.acme if settings.proxy is not None else None
    if acme is not None and acme.server is not None:
        return acme.server
    return LETSENCRYPT_STAGING if settings.environment == "staging" else LETSENCRYPT


def named_hosts(settings: Settings) -> list[tuple[str, str]]:
    """(config path, name with {domain} filled in) of every server name of the proxy."""
    proxy = settings.proxy
    assert proxy is not None
    return [(f"proxy.sites[{i}].server_names[{j}]", name.replace("{domain}", settings.domain))
            for i, site in enumerate(proxy.sites) for j, name in enumerate(site.server_names)]


def check_tls(settings: Settings) -> list[str]:
    """Raise ValueError("<path>: <rule>") for a TLS source that cannot serve the proxy's names.

    Returns the warnings (a provided certificate close to its end), for the proxy to log.
    """
    proxy = settings.proxy
    if proxy is None or not proxy.enabled:
        return []
    if proxy.tls.mode == "letsencrypt":
        _check_acme(settings)
    if proxy.tls.mode == "provided":
        return _check_provided(settings)
    return []


def _check_acme(settings: Settings) -> None:
    assert settings.proxy is not None
    hosts = named_hosts(settings) or [("domain", settings.domain)]
    for path, host in hosts:
        if (why := _not_http01(host)) is not None:
            raise ValueError(f"{path}: {host!r} cannot be validated by HTTP-01 (tls.mode letsencrypt): {why}")
    if len(hosts) > MAX_NAMES:
        raise ValueError(f"proxy.sites: {len(hosts)} server names; one certificate takes at most {MAX_NAMES}")
    server = acme_server(settings)
    if server in PUBLIC_CAS and settings.proxy.http_port != 80:
        raise ValueError(f"proxy.http_port: {server} validates HTTP-01 on port 80 only, "
                         f"not on {settings.proxy.http_port}")
    if server in PUBLIC_CAS and settings.proxy.bind.startswith("127."):
        raise ValueError(f"proxy.bind: {settings.proxy.bind} is loopback; {server} could never fetch a challenge")


def _not_http01(host: str) -> str | None:
    if host.startswith("*."):
        return "a wildcard needs the DNS-01 challenge"
    if host == "_":
        return "the catch-all name is no domain"
    try:
        ipaddress.ip_address(host)
        return "an IP address is no domain name"
    except ValueError:
        pass
    if host == "localhost" or host.endswith(".localhost"):
        return "localhost is not reachable from a CA"
    if "." not in host:
        return "a name without a dot is not a public domain name"
    return None


def _check_provided(settings: Settings) -> list[str]:
    from cryptography import x509  # only stacks with a provided certificate pay for the import
    from cryptography.hazmat.primitives import serialization

    tls = settings.proxy.tls  # type: ignore[union-attr]
    assert tls.certificate is not None and tls.key is not None
    try:
        chain = x509.load_pem_x509_certificates(tls.certificate.get_secret_value().encode())
    except ValueError:
        raise ValueError("proxy.tls.certificate: is not a PEM certificate chain") from None
    try:
        key = serialization.load_pem_private_key(tls.key.get_secret_value().encode(), password=None)
    except (ValueError, TypeError):
        raise ValueError("proxy.tls.key: is not an unencrypted PEM private key") from None
    leaf = chain[0]
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if (key.public_key().public_bytes(serialization.Encoding.DER, spki)
            != leaf.public_key().public_bytes(serialization.Encoding.DER, spki)):
        raise ValueError("proxy.tls.key: does not belong to the certificate (the first one in the chain)")
    try:
        covered = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName)
    except x509.ExtensionNotFound:
        covered = []
    missing = [host for _, host in named_hosts(settings) or [("domain", settings.domain)]
               if host != "_" and not any(_covers(name.lower(), host) for name in covered)]
    if missing:
        raise ValueError(f"proxy.tls.certificate: does not cover {', '.join(missing)} (it names "
                         f"{', '.join(covered) or 'no DNS name'})")
    now = datetime.datetime.now(datetime.UTC)
    if leaf.not_valid_after_utc <= now:
        raise ValueError(f"proxy.tls.certificate: expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    if leaf.not_valid_before_utc > now:
        raise ValueError(f"proxy.tls.certificate: is not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
    if leaf.not_valid_after_utc - now < EXPIRY_WARNING:
        return [f"proxy.tls.certificate: expires on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC, within "
                f"{EXPIRY_WARNING.days} days: give a renewed one"]
    return []


def _covers(san: str, host: str) -> bool:
    """A SAN covers a host exactly, or as a wildcard of one label (RFC 6125); "*.x" covers the name "*.x"."""
    if san == host:
        return True
    return san.startswith("*.") and not host.startswith("*.") and host.split(".", 1)[-1] == san[2:] \
        and "." in host
