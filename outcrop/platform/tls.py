"""HTTPS for `outcrop serve`: a configured certificate, or a self-signed one made on first use.

Bearer API keys need it: boto3 refuses to send `Authorization: Bearer` over plain HTTP. A
self-signed certificate (for localhost and 127.0.0.1, plus the listening host) is written to
`<data dir>/tls/`; clients trust it with `verify=<data dir>/tls/cert.pem` or `AWS_CA_BUNDLE`.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

CERT_FILE, KEY_FILE = "cert.pem", "key.pem"


def self_signed(folder: Path, host: str) -> tuple[Path, Path]:
    """(certificate, private key) in `folder`, made once (RSA 2048, ten years) and reused after."""
    cert_path, key_path = folder / CERT_FILE, folder / KEY_FILE
    if cert_path.is_file() and key_path.is_file():
        return cert_path, key_path
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    try:
        names.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        names.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Outcrop local server")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName(list(dict.fromkeys(names))), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                   serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path
