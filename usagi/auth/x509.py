"""SASL EXTERNAL: the user name taken from the client's TLS certificate, as rabbitmq_auth_mechanism_ssl.

`ssl_cert_login_from` chooses where the name comes from: `common_name` (the subject's CN),
`distinguished_name` (the whole subject, written as RabbitMQ writes it: "CN=...,O=...,C=...") or
`subject_alternative_name` (entry number `ssl_cert_login_san_index` of type
`ssl_cert_login_san_type` among the certificate's SANs). The certificate is the one the TLS layer
verified (Python's `SSLObject.getpeercert()`), so EXTERNAL is offered only on listeners that ask
for and verify client certificates.
"""
from __future__ import annotations

BASE_MECHANISMS = ("PLAIN", "AMQPLAIN")

# short attribute names, as Erlang's public_key and RabbitMQ print them
_SHORT = {
    "commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU", "countryName": "C",
    "localityName": "L", "stateOrProvinceName": "ST", "domainComponent": "DC", "emailAddress": "EMAILADDRESS",
    "streetAddress": "STREET", "serialNumber": "SERIALNUMBER", "userId": "UID", "title": "TITLE",
    "surname": "SN", "givenName": "GN", "initials": "INITIALS", "generationQualifier": "GENERATION",
    "dnQualifier": "DNQUALIFIER", "pseudonym": "PSEUDONYM",
}
_SAN_TYPES = {"dns": "DNS", "ip": "IP Address", "ip_address": "IP Address", "email": "email", "uri": "URI",
              "other_name": "othername"}


def verifies_peer(tls) -> bool:
    """Whether the TLS session asked for (and verified) a client certificate."""
    if tls is None:
        return False
    try:
        import ssl
        return tls.context.verify_mode != ssl.CERT_NONE
    except Exception:
        return False


def mechanisms(tls) -> tuple:
    """SASL mechanisms for connection.start: EXTERNAL only where client certificates are verified."""
    return BASE_MECHANISMS + ("EXTERNAL",) if verifies_peer(tls) else BASE_MECHANISMS


def _escape(value: str) -> str:
    out = []
    for i, ch in enumerate(value):
        if ch in ',+"\\<>;' or (ch == "#" and i == 0) or (ch == " " and i in (0, len(value) - 1)):
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def distinguished_name(cert: dict) -> str:
    """The subject as RabbitMQ formats it: RDNs most specific first, "CN=client,O=org,C=UK"."""
    rdns = []
    for rdn in cert.get("subject", ()):
        rdns.append("+".join(f"{_SHORT.get(k, k)}={_escape(str(v))}" for k, v in rdn))
    return ",".join(reversed(rdns))


def common_name(cert: dict):
    for rdn in cert.get("subject", ()):
        for k, v in rdn:
            if k == "commonName":
                return str(v)
    return None


def subject_alternative_name(cert: dict, san_type: str = "dns", index: int = 0):
    want = _SAN_TYPES.get(san_type.lower(), san_type)
    values = [str(v) for k, v in cert.get("subjectAltName", ()) if k == want]
    if 0 <= index < len(values):
        return values[index]
    return None


def login_name(tls, config) -> tuple:
    """(user name, None) from the peer certificate, or (None, why) as RabbitMQ words the refusal."""
    if tls is None:
        return None, "not a TLS-enabled connection"
    try:
        cert = tls.getpeercert()
    except Exception:
        cert = None
    if not cert:
        return None, "connection peer presented no TLS (x.509) certificate"
    source = getattr(config, "ssl_cert_login_from", "common_name") or "common_name"
    if source == "distinguished_name":
        name = distinguished_name(cert)
    elif source == "subject_alternative_name":
        name = subject_alternative_name(cert, getattr(config, "ssl_cert_login_san_type", "dns") or "dns",
                                        int(getattr(config, "ssl_cert_login_san_index", 0) or 0))
    else:
        name = common_name(cert)
    if not name:
        return None, "no name found"
    return name, None
