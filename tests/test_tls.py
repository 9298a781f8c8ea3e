"""AMQPS: TLS 1.2+, client certificates verified against a CA, SASL EXTERNAL from the certificate's
name (as rabbitmq_auth_mechanism_ssl), HTTPS for the management API. Certificates are made at run time."""
from __future__ import annotations

import base64
import json
import re
import socket
import ssl
import struct
import time
import urllib.parse
import urllib.request

import pika
import pytest

from support.certs import make_certs
from support.harness import wait_for

pytestmark = pytest.mark.timeout(120)

AMQPS_RE = re.compile(r"AMQPS listener on (\S+):(\d+)")
MGMT_RE = re.compile(r"Management listener on (\S+):(\d+)")


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(str(tmp_path_factory.mktemp("certs")))


def tls_args(c, verify="require", port="0"):
    args = ["--tls-cert", c.server_cert, "--tls-key", c.server_key, "--tls-ca", c.ca, "--tls-port", port]
    if verify is not None:
        args += ["--tls-verify", verify]
    return args


def port_of(srv, rx=AMQPS_RE) -> int:
    m = wait_for(lambda: rx.search("".join(srv.lines)), message="listener line")
    return int(m.group(2))


def client_ctx(c, cert=None, **kw):
    ctx = ssl.create_default_context(cafile=c.ca)
    if cert is not None:
        ctx.load_cert_chain(*cert)
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


def tls_params(c, port, cert=None, credentials=None, **kw):
    return pika.ConnectionParameters("localhost", port, ssl_options=pika.SSLOptions(client_ctx(c, cert, **kw),
                                                                                    "localhost"),
                                     credentials=credentials or pika.credentials.ExternalCredentials(),
                                     connection_attempts=1, socket_timeout=5)


def roundtrip(conn):
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", q, b"over tls")
    m = wait_for(lambda: ch.basic_get(q, auto_ack=True)[2], message="message back")
    assert m == b"over tls"


def start_mechanisms(c, port, cert=None) -> bytes:
    """The mechanisms field of connection.start, read over a raw TLS socket."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    s = client_ctx(c, cert).wrap_socket(raw, server_hostname="localhost")
    try:
        s.sendall(b"AMQP\x00\x00\x09\x01")
        buf = b""
        while len(buf) < 7 or len(buf) < 8 + struct.unpack_from(">I", buf, 3)[0]:
            data = s.recv(65536)
            assert data, "closed before connection.start"
            buf += data
        payload = buf[7:7 + struct.unpack_from(">I", buf, 3)[0]]
        off = 4 + 2
        tlen, = struct.unpack_from(">I", payload, off)
        off += 4 + tlen
        mlen, = struct.unpack_from(">I", payload, off)
        return payload[off + 4:off + 4 + mlen]
    finally:
        s.close()


# ---------------------------------------------------------------------------------------- acceptance
def test_external_with_client_certificate_without_certificate_refused_plain_still_works(fresh_server, certs):
    srv = fresh_server(extra_args=tls_args(certs))
    port = port_of(srv)
    assert "AMQPS listener on 127.0.0.1:" in "".join(srv.lines)
    # pika over TLS with a client certificate whose CN is "guest" and SASL EXTERNAL
    conn = pika.BlockingConnection(tls_params(certs, port, certs.client("guest")))
    roundtrip(conn)
    conn.close()
    # the same client without a certificate: the TLS handshake is refused (fail_if_no_peer_cert)
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(tls_params(certs, port, None))
    # plain AMQP goes on as before
    conn = pika.BlockingConnection(pika.URLParameters(srv.url()))
    roundtrip(conn)
    conn.close()
    assert srv.proc.poll() is None
    log = "".join(srv.lines)
    assert "user 'guest' authenticated" in log
    assert "Traceback" not in log


def test_external_offered_only_where_certificates_are_verified(fresh_server, certs):
    srv = fresh_server(extra_args=tls_args(certs))
    assert start_mechanisms(certs, port_of(srv), certs.client("guest")).split() == [b"PLAIN", b"AMQPLAIN",
                                                                                  b"EXTERNAL"]
    # plain AMQP never offers EXTERNAL
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    s.sendall(b"AMQP\x00\x00\x09\x01")
    time.sleep(0.3)
    data = s.recv(65536)
    s.close()
    assert b"EXTERNAL" not in data and b"PLAIN AMQPLAIN" in data
    srv2 = fresh_server(extra_args=tls_args(certs, verify=None))
    assert start_mechanisms(certs, port_of(srv2)).split() == [b"PLAIN", b"AMQPLAIN"]
    # and a client asking for EXTERNAL there is refused
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(tls_params(certs, port_of(srv2), certs.client("guest")))
    # PLAIN over TLS works without a client certificate
    conn = pika.BlockingConnection(tls_params(certs, port_of(srv2), None,
                                              credentials=pika.PlainCredentials("guest", "guest")))
    roundtrip(conn)
    conn.close()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_unknown_certificate_user_and_untrusted_certificate_refused(fresh_server, certs):
    srv = fresh_server(extra_args=tls_args(certs))
    port = port_of(srv)
    with pytest.raises(pika.exceptions.AMQPConnectionError) as ei:
        pika.BlockingConnection(tls_params(certs, port, certs.client("nobody")))
    assert "EXTERNAL" in str(ei.value) or isinstance(ei.value, pika.exceptions.ProbableAuthenticationError) \
        or "ACCESS_REFUSED" in str(ei.value)
    wait_for(lambda: "user 'nobody' failed to authenticate with EXTERNAL" in "".join(srv.lines),
             message="refusal logged")
    # a certificate from another CA does not get through the TLS handshake
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(tls_params(certs, port, certs.client("guest", ca_signed=False)))
    # TLS 1.1 and older are not accepted
    with pytest.raises((pika.exceptions.AMQPConnectionError, ssl.SSLError, ValueError)):
        pika.BlockingConnection(tls_params(certs, port, certs.client("guest"),
                                           maximum_version=ssl.TLSVersion.TLSv1_1))
    conn = pika.BlockingConnection(tls_params(certs, port, certs.client("guest"),
                                              maximum_version=ssl.TLSVersion.TLSv1_2))
    roundtrip(conn)
    conn.close()


def test_verify_peer_without_fail_if_no_peer_cert(fresh_server, certs):
    srv = fresh_server(extra_args=tls_args(certs, verify="peer"))
    port = port_of(srv)
    # no certificate: TLS is fine, EXTERNAL is offered (as RabbitMQ does) but refused; PLAIN works
    assert b"EXTERNAL" in start_mechanisms(certs, port)
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(tls_params(certs, port, None))
    wait_for(lambda: "connection peer presented no TLS (x.509) certificate" in "".join(srv.lines),
             message="refusal reason logged")
    conn = pika.BlockingConnection(tls_params(certs, port, None, credentials=pika.PlainCredentials("guest", "guest")))
    roundtrip(conn)
    conn.close()
    conn = pika.BlockingConnection(tls_params(certs, port, certs.client("guest")))
    roundtrip(conn)
    conn.close()


def _api(port, method, path, body=None, ctx=None, scheme="http"):
    req = urllib.request.Request(f"{scheme}://localhost:{port}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode(),
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
        return r.status, r.read()


def test_login_name_from_distinguished_name_and_san(fresh_server, certs):
    srv = fresh_server(extra_args=tls_args(certs) + ["--tls-cert-login-from", "distinguished_name"])
    port = port_of(srv)
    mport = port_of(srv, MGMT_RE)
    dn = "CN=dnuser,O=Usagi tests,C=JP"
    _api(mport, "PUT", "/api/users/" + urllib.parse.quote(dn, safe=""), {"password": "", "tags": ""})
    _api(mport, "PUT", "/api/permissions/%2F/" + urllib.parse.quote(dn, safe=""),
         {"configure": ".*", "write": ".*", "read": ".*"})
    conn = pika.BlockingConnection(tls_params(certs, port, certs.client("dnuser")))
    roundtrip(conn)
    conn.close()
    srv2 = fresh_server(extra_args=tls_args(certs) + ["--tls-cert-login-from", "subject_alternative_name"])
    mport2 = port_of(srv2, MGMT_RE)
    _api(mport2, "PUT", "/api/users/sanuser.example", {"password": "x", "tags": ""})
    _api(mport2, "PUT", "/api/permissions/%2F/sanuser.example", {"configure": ".*", "write": ".*", "read": ".*"})
    conn = pika.BlockingConnection(tls_params(certs, port_of(srv2), certs.client("whatever", ["sanuser.example"])))
    roundtrip(conn)
    conn.close()
    # no SAN of that type: no name found, refused
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(tls_params(certs, port_of(srv2), certs.client("guest")))
    wait_for(lambda: "EXTERNAL login refused: no name found" in "".join(srv2.lines), message="no name found")


def test_management_https_and_env_settings(fresh_server, certs):
    env = {"USAGI_TLS_CERT": certs.server_cert, "USAGI_TLS_KEY": certs.server_key, "USAGI_TLS_CA": certs.ca,
           "USAGI_TLS_PORT": "0", "USAGI_TLS_VERIFY": "require", "USAGI_MANAGEMENT_TLS": "1"}
    srv = fresh_server(env=env)
    port = port_of(srv)
    mport = port_of(srv, MGMT_RE)
    status, body = _api(mport, "GET", "/api/overview", ctx=client_ctx(certs), scheme="https")
    assert status == 200
    listeners = {(x["protocol"], x["port"]) for x in json.loads(body)["listeners"]}
    assert ("amqp/ssl", port) in listeners and ("https", mport) in listeners
    with pytest.raises(Exception):
        _api(mport, "GET", "/api/overview")       # plain HTTP is not served there
    conn = pika.BlockingConnection(tls_params(certs, port, certs.client("guest")))
    roundtrip(conn)
    conn.close()


def test_bad_tls_settings_stop_the_start(certs, tmp_path):
    import subprocess
    import sys
    from support.harness import ROOT
    base = [sys.executable, "-m", "usagi.cli.server", "--in-memory", "--port", "0", "--management-port", "-1"]
    r = subprocess.run(base + ["--tls-cert", str(tmp_path / "missing.pem")], capture_output=True, text=True,
                       cwd=ROOT, timeout=30)
    assert r.returncode == 1 and "cannot load TLS certificate" in r.stderr
    r = subprocess.run(base + ["--tls-cert", certs.server_cert, "--tls-key", certs.server_key, "--tls-verify"],
                       capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert r.returncode == 1 and "--tls-verify needs --tls-ca" in r.stderr
