"""The real `quiver serve` in a subprocess, for end-to-end tests (shared with bench/)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from functools import partial
from pathlib import Path
from typing import Any
from unittest import mock

import httpx

from bench.server import Server as QuiverServer
from bench.server import free_port

__all__ = ["QuiverServer", "TlsServer", "free_port", "make_pki"]


class TlsServer(QuiverServer):
    """A server on HTTPS (service.enable_tls), polled with the test's trust store."""

    def __init__(self, *args: Any, context: ssl.SSLContext, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.context = context

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> TlsServer:
        # Server.start polls /readyz through httpx.get: hand it our trust store (and client cert)
        with mock.patch.object(httpx, "get", partial(httpx.get, verify=self.context)):
            super().start(timeout)
        return self


def make_pki(d: Path) -> dict[str, str]:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, as PEM."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    paths: dict[str, str] = {}

    def write(name: str, data: bytes) -> None:
        paths[name] = str(d / f"{name}.pem")
        Path(paths[name]).write_bytes(data)

    def issue(cn: str, key: Any, issuer: Any, issuer_key: Any, ca: bool,
              usage: Any = None) -> Any:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        b = (x509.CertificateBuilder().subject_name(subject)
             .issuer_name(issuer.subject if issuer else subject)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - dt.timedelta(minutes=5))
             .not_valid_after(now + dt.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
             .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                            critical=False)
             .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                 issuer_key.public_key()), critical=False))
        if ca:
            b = b.add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        else:
            b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            if usage == ExtendedKeyUsageOID.SERVER_AUTH:
                b = b.add_extension(x509.SubjectAlternativeName([
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    def pem_key(key: Any) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM,
                                 serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = issue("quiver test CA", ca_key, None, ca_key, True)
    write("ca", ca.public_bytes(serialization.Encoding.PEM))
    for name, usage in (("server", ExtendedKeyUsageOID.SERVER_AUTH),
                        ("client", ExtendedKeyUsageOID.CLIENT_AUTH)):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = issue(f"quiver test {name}", key, ca, ca_key, False, usage)
        write(name, cert.public_bytes(serialization.Encoding.PEM))
        write(f"{name}-key", pem_key(key))
    return paths
