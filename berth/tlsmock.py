"""Real keys and certificates for offline synth, shaped like pulumi-tls outputs (made with cryptography)."""

from __future__ import annotations

import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

_CURVES: dict[str, ec.EllipticCurve] = {"P224": ec.SECP224R1(), "P256": ec.SECP256R1(), "P384": ec.SECP384R1(),
                                         "P521": ec.SECP521R1()}


def private_key(algorithm: str, curve: str = "P256", rsa_bits: int = 2048) -> dict[str, str]:
    """A new private key as tls.PrivateKey's privateKeyPem/publicKeyPem outputs."""
    key = ec.generate_private_key(_CURVES[curve]) if algorithm == "ECDSA" else rsa.generate_private_key(
        public_exponent=65537, key_size=rsa_bits)
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return {"privateKeyPem": private_pem, "publicKeyPem": public_pem}


def self_signed_cert(inputs: dict[str, Any]) -> str:
    """A self-signed certificate from tls.SelfSignedCert's inputs (wire names), as certPem."""
    pem = inputs["privateKeyPem"]
    pem = pem["value"] if isinstance(pem, dict) else pem  # a secret input arrives wrapped
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError(f"tls.SelfSignedCert: unsupported key type {type(key).__name__}")
    subject = inputs.get("subject") or {}
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, subject.get("commonName", "berth"))]
    if subject.get("organization"):
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, subject["organization"]))
    name = x509.Name(attributes)
    now = datetime.datetime.now(datetime.UTC)
    dns_names = list(inputs.get("dnsNames") or [])
    builder = (x509.CertificateBuilder()
               .subject_name(name).issuer_name(name)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(hours=int(inputs["validityPeriodHours"])))
               .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
    if dns_names:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]),
                                        critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()
