"""Test certificates made at run time: a CA, a server certificate for localhost/127.0.0.1 and
client certificates. Uses the `cryptography` package when installed, else the `openssl` command."""
from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import subprocess
from dataclasses import dataclass


@dataclass
class Certs:
    dir: str
    ca: str
    ca_key: str
    server_cert: str
    server_key: str

    def client(self, cn: str, san_dns: list | None = None, ca_signed: bool = True) -> tuple[str, str]:
        """(certificate, key) paths of a client certificate with subject CN=cn."""
        return make_client(self, cn, san_dns or [], ca_signed)


def _have_cryptography() -> bool:
    try:
        import cryptography  # noqa: F401
        return True
    except ImportError:
        return False


def make_certs(directory: str) -> Certs:
    os.makedirs(directory, exist_ok=True)
    if _have_cryptography():
        return _make_with_cryptography(directory)
    if shutil.which("openssl"):
        return _make_with_openssl(directory)
    import pytest
    pytest.skip("neither the cryptography package nor the openssl command is available")


# ---------------------------------------------------------------------------------------- cryptography
def _key():
    from cryptography.hazmat.primitives.asymmetric import ec
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key, path):
    from cryptography.hazmat.primitives import serialization
    with open(path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))


def _write_cert(cert, path):
    from cryptography.hazmat.primitives import serialization
    with open(path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))


def _name(cn, org="Usagi tests"):
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _build(subject, issuer, pub, signer, ca=False, sans=None, client=False):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(pub)
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(days=1))
         .not_valid_after(now + datetime.timedelta(days=30))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
    else:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH if client
                                                   else ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return b.sign(signer, hashes.SHA256())


def _make_with_cryptography(d) -> Certs:
    from cryptography import x509
    ca_key = _key()
    ca_cert = _build(_name("Usagi test CA"), _name("Usagi test CA"), ca_key.public_key(), ca_key, ca=True)
    sk = _key()
    sc = _build(_name("localhost"), ca_cert.subject, sk.public_key(), ca_key,
                sans=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    c = Certs(d, os.path.join(d, "ca.pem"), os.path.join(d, "ca.key"), os.path.join(d, "server.pem"),
              os.path.join(d, "server.key"))
    _write_cert(ca_cert, c.ca)
    _write_key(ca_key, c.ca_key)
    _write_cert(sc, c.server_cert)
    _write_key(sk, c.server_key)
    return c


def make_client(c: Certs, cn: str, san_dns: list, ca_signed: bool) -> tuple[str, str]:
    base = os.path.join(c.dir, f"client-{cn}-{'ca' if ca_signed else 'self'}")
    if _have_cryptography():
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        with open(c.ca, "rb") as f:
            ca_cert = x509.load_pem_x509_certificate(f.read())
        with open(c.ca_key, "rb") as f:
            ca_key = serialization.load_pem_private_key(f.read(), None)
        k = _key()
        if ca_signed:
            cert = _build(_name(cn), ca_cert.subject, k.public_key(), ca_key, client=True,
                          sans=[x509.DNSName(n) for n in san_dns] or None)
        else:
            cert = _build(_name(cn), _name(cn), k.public_key(), k, client=True)
        _write_cert(cert, base + ".pem")
        _write_key(k, base + ".key")
        return base + ".pem", base + ".key"
    return _openssl_client(c, cn, san_dns, ca_signed, base)


# ---------------------------------------------------------------------------------------- openssl CLI
def _run(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _make_with_openssl(d) -> Certs:
    c = Certs(d, os.path.join(d, "ca.pem"), os.path.join(d, "ca.key"), os.path.join(d, "server.pem"),
              os.path.join(d, "server.key"))
    _run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj", "/C=JP/O=Usagi tests/CN=Usagi test CA",
         "-keyout", c.ca_key, "-out", c.ca)
    ext = os.path.join(d, "server.ext")
    with open(ext, "w") as f:
        f.write("basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
                "subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    csr = os.path.join(d, "server.csr")
    _run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/C=JP/O=Usagi tests/CN=localhost",
         "-keyout", c.server_key, "-out", csr)
    _run("x509", "-req", "-in", csr, "-CA", c.ca, "-CAkey", c.ca_key, "-CAcreateserial", "-days", "30",
         "-extfile", ext, "-out", c.server_cert)
    return c


def _openssl_client(c, cn, san_dns, ca_signed, base):
    subj = f"/C=JP/O=Usagi tests/CN={cn}"
    if not ca_signed:
        _run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj", subj,
             "-keyout", base + ".key", "-out", base + ".pem")
        return base + ".pem", base + ".key"
    ext = base + ".ext"
    with open(ext, "w") as f:
        f.write("basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")
        if san_dns:
            f.write("subjectAltName=" + ",".join(f"DNS:{n}" for n in san_dns) + "\n")
    _run("req", "-newkey", "rsa:2048", "-nodes", "-subj", subj, "-keyout", base + ".key", "-out", base + ".csr")
    _run("x509", "-req", "-in", base + ".csr", "-CA", c.ca, "-CAkey", c.ca_key, "-CAcreateserial", "-days", "30",
         "-extfile", ext, "-out", base + ".pem")
    return base + ".pem", base + ".key"
