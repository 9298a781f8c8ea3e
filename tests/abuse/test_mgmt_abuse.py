"""The management API under load whose size users control: listings and exports over tens of
thousands of queues, a definitions import of as many, oversized, unauthenticated, mistyped and
deeply nested request bodies, gets and peeks of big messages and of long queues, and changes
forged by another site's page. The API shares the event loop with every AMQP client: while each
attack runs a bystander client measures its publish-to-delivery latency, which must stay low (a
generous bound: a loop held for a whole listing gives seconds) on a connection still open.

The body rules are RabbitMQ's where it has them (credentials and rights before the body, 415 for a
definitions upload that is not JSON, 400 `not_json` / `failed_to_parse_json` for broken JSON);
those tests also run against RabbitMQ with USAGI_TEST_MGMT_URL. The cap on a body is checked before
it is read (413), where RabbitMQ reads up to its cap first."""
from __future__ import annotations

import base64
import json
import os
import socket
import time
import urllib.parse

import pytest

from abuseutil import assert_healthy
from mgmtapi import MGMT_RE
from rawamqp import RawConnection, content_header_payload, frame_bytes, method_payload
from support.bystander import Bystander
from support.harness import wait_for

pytestmark = pytest.mark.timeout(600)

P99_MS = 250            # generous: before slicing, a listing of 100,000 queues held the loop 4.5 s
N_QUEUES = int(os.environ.get("USAGI_TEST_MGMT_ABUSE_QUEUES", "25000"))
GUEST = "Basic " + base64.b64encode(b"guest:guest").decode()


# ------------------------------------------------------------------ HTTP over a raw socket

class Http:
    """Requests written by hand, so a test controls the headers and how much of a body is sent."""

    def __init__(self, host: str, port: int, user: str = "guest", password: str = "guest"):
        self.host, self.port = host, port
        self.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def connect(self, timeout: float = 120) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout=timeout)

    def head(self, method: str, path: str, headers: dict, auth: bool = True) -> bytes:
        h = {"Host": f"{self.host}:{self.port}"}
        if auth:
            h["Authorization"] = self.auth
        h.update(headers)
        return (f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items())
                + "\r\n").encode()

    def request(self, method: str, path: str, body: bytes | None = None, ctype="application/json",
                auth: bool = True, timeout: float = 120):
        headers = {"Connection": "close"}
        if body is not None:
            headers["Content-Length"] = str(len(body))
            if ctype is not None:
                headers["Content-Type"] = ctype
        s = self.connect(timeout)
        try:
            s.sendall(self.head(method, path, headers, auth) + (body or b""))
            return read_response(s)
        finally:
            s.close()

    def json(self, method, path, body=None, **kw):
        status, _h, data = self.request(method, path, json.dumps(body).encode() if body is not None else None,
                                        **kw)
        return status, (json.loads(data) if data else None)


def read_response(s: socket.socket):
    """(status, headers, body) of one response (Content-Length, chunked, or up to the close)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            raise AssertionError(f"connection closed before a response: {buf!r}")
        buf += d
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        n = int(headers["content-length"])
        while len(rest) < n:
            d = s.recv(1 << 20)
            if not d:
                break
            rest += d
        return status, headers, rest[:n]
    if headers.get("transfer-encoding", "").lower() == "chunked":
        out = bytearray()
        while True:
            while b"\r\n" not in rest:
                rest += s.recv(1 << 20)
            size_line, rest = rest.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            while len(rest) < size + 2:
                d = s.recv(1 << 20)
                if not d:
                    raise AssertionError("chunked answer cut short")
                rest += d
            out += rest[:size]
            rest = rest[size + 2:]
            if size == 0:
                return status, headers, bytes(out)
    while True:
        d = s.recv(1 << 20)
        if not d:
            return status, headers, rest
        rest += d


def closed_by_peer(s: socket.socket, timeout: float = 5.0) -> bool:
    s.settimeout(timeout)
    try:
        while True:
            if not s.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


# ------------------------------------------------------------------ targets

def _mgmt_http(srv) -> Http:
    m = wait_for(lambda: MGMT_RE.search("".join(srv.lines)), message="management listener")
    return Http("127.0.0.1", int(m.group(2)))


@pytest.fixture
def http_target(request):
    """The management API these body tests talk to: RabbitMQ's with USAGI_TEST_MGMT_URL, else a
    fresh Usagi server's."""
    url = os.environ.get("USAGI_TEST_MGMT_URL")
    if url:
        p = urllib.parse.urlparse(url)
        yield Http(p.hostname or "127.0.0.1", p.port or 15672, p.username or "guest", p.password or "guest")
        return
    from support.harness import ServerProcess
    srv = ServerProcess().start()
    try:
        yield _mgmt_http(srv)
        assert_healthy(srv)
    finally:
        srv.cleanup()


def declare_queues(srv, names, durable=False):
    c = RawConnection.opened(srv.host, srv.port)
    c.open_channel(1)
    for start in range(0, len(names), 2000):
        part = names[start:start + 2000]
        c.send_raw(b"".join(frame_bytes(1, 1, method_payload("queue.declare", queue=n, durable=durable))
                            for n in part))
        for _ in part:
            c.expect_method("queue.declare-ok", timeout=60)
    c.close_connection()


def bind_queues(srv, names, exchange="amq.direct"):
    c = RawConnection.opened(srv.host, srv.port)
    c.open_channel(1)
    for start in range(0, len(names), 2000):
        part = names[start:start + 2000]
        c.send_raw(b"".join(frame_bytes(1, 1, method_payload("queue.bind", queue=n, exchange=exchange,
                                                             routing_key=n)) for n in part))
        for _ in part:
            c.expect_method("queue.bind-ok", timeout=60)
    c.close_connection()


def check_bystander(b: Bystander, what: str):
    """The bystander's figures since its last reset. Call it before this process does anything that
    holds its GIL for long (parsing a 40 MB answer): the bystander's thread would measure that."""
    s = b.stats()
    assert not s["closed"], f"{what}: the bystander's connection was lost: {s}"
    assert s["count"] > 0, f"{what}: the bystander got nothing through: {s}"
    assert s["lost"] == 0, f"{what}: the bystander lost messages: {s}"
    assert s["p99_ms"] < P99_MS, f"{what}: bystander p99 {s['p99_ms']:.0f} ms: {s}"
    return s


# ------------------------------------------------------------------ many queues

def test_listings_over_many_queues_keep_amqp_flowing(fresh_server):
    srv = fresh_server()
    names = [f"mq.{i:06d}" for i in range(N_QUEUES)]
    declare_queues(srv, names)
    bind_queues(srv, names[:N_QUEUES // 5])
    http = _mgmt_http(srv)
    listings = [
        ("/api/queues", lambda d: len(d) == N_QUEUES + 1),     # and the bystander's
        ("/api/queues/%2F?page=3&page_size=500&sort=name&sort_reverse=true",
         lambda d: d["total_count"] == N_QUEUES + 1 and d["item_count"] == 500
         and d["items"][0]["name"] == names[-1001]),
        ("/api/queues?page=1&page_size=100&name=mq.0001&sort=messages",
         lambda d: d["filtered_count"] == 100 and d["total_count"] == N_QUEUES + 1),
        ("/api/queues?page=1&page_size=50&name=%5Emq%5C.00%5B0-4%5D&use_regex=true",
         lambda d: d["filtered_count"] == 5000 and d["page_count"] == 100),
        ("/api/queues?columns=name,messages", lambda d: len(d) == N_QUEUES + 1 and set(d[0]) == {"name", "messages"}),
        ("/api/exchanges", lambda d: len(d) >= 7),
        ("/api/bindings", lambda d: len(d) == N_QUEUES + 1 + N_QUEUES // 5),
        ("/api/bindings/%2F?page=2&page_size=500", lambda d: d["item_count"] == 500),
        ("/api/connections", lambda d: isinstance(d, list)),
        ("/api/channels", lambda d: isinstance(d, list)),
        ("/api/consumers", lambda d: isinstance(d, list) and len(d) >= 1),
        ("/api/overview", lambda d: d["object_totals"]["queues"] == N_QUEUES + 1),
        ("/api/definitions", lambda d: len(d["queues"]) == N_QUEUES and len(d["bindings"]) == N_QUEUES // 5),
    ]
    with Bystander(srv.host, srv.port) as b:
        time.sleep(0.3)
        for path, ok in listings:
            b.reset()
            status, _h, data = http.request("GET", path)
            time.sleep(0.15)
            check_bystander(b, f"GET {path}")       # before parsing here holds this process's GIL
            assert status == 200, (path, status, data[:300])
            assert ok(json.loads(data)), (path, data[:300])
    assert_healthy(srv)


def test_metrics_and_statistics_over_many_queues_keep_amqp_flowing(fresh_server):
    srv = fresh_server(env={"USAGI_COLLECT_STATISTICS_INTERVAL": "500"})     # a sample every 0.5 s
    declare_queues(srv, [f"mm.{i:06d}" for i in range(N_QUEUES)])
    metrics_port = int(wait_for(lambda: __import__("re").search(r"Metrics listener on \S+:(\d+)",
                                                                  "".join(srv.lines))).group(1))
    prom = Http("127.0.0.1", metrics_port)
    with Bystander(srv.host, srv.port) as b:
        time.sleep(0.3)
        b.reset()
        time.sleep(3)                       # the sampler walks every queue a few times
        check_bystander(b, "statistics sampling")
        for path, needle in (("/metrics", b"rabbitmq_queues %d" % (N_QUEUES + 1)),
                             ("/metrics/per-object", b'rabbitmq_queue_messages{vhost="/",queue="mm.000000"} 0'),
                             ("/metrics/detailed?family=queue_coarse_metrics&family=queue_metrics",
                              b'queue="mm.%06d"' % (N_QUEUES - 1))):
            b.reset()
            status, _h, data = prom.request("GET", path)
            time.sleep(0.15)
            check_bystander(b, f"GET {path}")
            assert status == 200 and needle in data, (path, status, data[:300])
    assert_healthy(srv)


def _scrape_streamed(port: int, path: str, abandon_after: int | None = None) -> tuple:
    """GET a metrics path, reading the answer as it comes and keeping only its size and last
    bytes; with abandon_after, the connection is dropped once that many bytes came."""
    s = socket.create_connection(("127.0.0.1", port), timeout=300)
    try:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        size, tail, head = 0, b"", b""
        while True:
            d = s.recv(1 << 20)
            if not d:
                return head[:12], size, tail
            if not head:
                head = d[:100]
            size += len(d)
            tail = (tail + d)[-4096:]
            if abandon_after is not None and size >= abandon_after:
                return head[:12], size, tail
    finally:
        s.close()


def test_concurrent_and_abandoned_per_object_scrapes_keep_amqp_flowing(fresh_server):
    """/metrics/per-object over N_QUEUES queues (some 2 KB of text per queue), three at once and
    one dropped after its first megabytes, while a bystander measures its latency: each exposition
    is made a slice at a time and written out as it is made, so neither the loop nor memory holds
    one whole; the dropped one stops its work."""
    import threading
    srv = fresh_server()
    declare_queues(srv, [f"po.{i:06d}" for i in range(N_QUEUES)])
    port = int(wait_for(lambda: __import__("re").search(r"Metrics listener on \S+:(\d+)",
                                                       "".join(srv.lines))).group(1))
    from abuseutil import rss
    before = rss(srv.proc.pid)
    results = []

    def scrape(abandon=None):
        results.append(_scrape_streamed(port, "/metrics/per-object", abandon))

    with Bystander(srv.host, srv.port) as b:
        time.sleep(0.3)
        b.reset()
        threads = [threading.Thread(target=scrape) for _ in range(3)]
        threads.append(threading.Thread(target=scrape, args=(2 << 20,)))
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        time.sleep(0.15)
        check_bystander(b, "concurrent /metrics/per-object")
    full = [r for r in results if r[1] > 4 << 20]
    assert len(full) == 3, [(r[0], r[1]) for r in results]
    for head, size, tail in full:
        assert head == b"HTTP/1.1 200", head
        assert size > N_QUEUES * 1000, size
        assert b"rabbitmq_identity_info{" in tail or b"telemetry_scrape" in tail, tail[-300:]
    # three expositions went out at once; the server's memory grew by well under the three of them
    # that a server holding each whole would have needed (the allocator's slack and the slices
    # in flight take some: up to 1.1 of one was seen on a loaded machine, so 1.5 is the bound)
    grown = rss(srv.proc.pid) - before
    assert grown < 1.5 * min(r[1] for r in full), (grown, [r[1] for r in full])
    assert_healthy(srv)


def test_import_of_many_queues_keeps_amqp_flowing(fresh_server):
    srv = fresh_server()
    http = _mgmt_http(srv)
    defs = {"queues": [{"name": f"imp.{i:06d}", "vhost": "/", "durable": True, "auto_delete": False,
                        "arguments": {"x-max-length": 10 + i % 7}} for i in range(N_QUEUES)],
            "bindings": [{"source": "amq.topic", "vhost": "/", "destination": f"imp.{i:06d}",
                          "destination_type": "queue", "routing_key": f"k.{i}", "arguments": {}}
                         for i in range(0, N_QUEUES, 10)]}
    body = json.dumps(defs).encode()
    with Bystander(srv.host, srv.port) as b:
        time.sleep(0.3)
        b.reset()
        status, _h, data = http.request("POST", "/api/definitions", body, timeout=300)
        time.sleep(0.15)
        check_bystander(b, "definitions import")
        assert status == 204, (status, data)
    status, page = http.json("GET", "/api/queues/%2F?page=1&page_size=1&name=imp.")
    assert status == 200 and page["filtered_count"] == N_QUEUES, page
    status, q = http.json("GET", f"/api/queues/%2F/imp.{N_QUEUES - 1:06d}")
    assert q["durable"] is True and q["arguments"] == {"x-max-length": 10 + (N_QUEUES - 1) % 7}, q
    # the import was durable before its 204: every queue is back after a restart
    srv.stop()
    srv.start()
    http = _mgmt_http(srv)
    status, page = http.json("GET", "/api/queues/%2F?page=1&page_size=1&name=imp.")
    assert status == 200 and page["filtered_count"] == N_QUEUES, page
    assert_healthy(srv)


# ------------------------------------------------------------------ bodies

def test_oversized_content_length_is_refused_before_the_body(fresh_server):
    srv = fresh_server()
    http = _mgmt_http(srv)
    with Bystander(srv.host, srv.port) as b:
        time.sleep(0.3)
        b.reset()
        socks = []
        for path in ("/api/definitions", "/api/queues/%2F/big", "/api/definitions"):
            s = http.connect(10)
            s.sendall(http.head("POST" if "definitions" in path else "PUT", path,
                                {"Content-Type": "application/json", "Content-Length": str(30_000_000)}))
            socks.append(s)
        for s in socks:             # answered though not a byte of the 30 MB was sent
            status, _h, data = read_response(s)
            assert status == 413, (status, data)
            assert json.loads(data) == {"error": "payload_too_large",
                                        "reason": "Exceeded HTTP request body size limit"}
            assert closed_by_peer(s), "the connection stays open for a body that will not be read"
            s.close()
        time.sleep(0.5)
        check_bystander(b, "oversized bodies")
    assert http.json("GET", "/api/queues/%2F/big")[0] == 404
    assert "exceeded maximum allowed payload size" in "".join(srv.lines)
    assert_healthy(srv)


def test_big_bodies_are_parsed_in_slices(fresh_server):
    """Three bodies just under the cap at once, each some 19 MB of JSON to parse."""
    srv = fresh_server()
    http = _mgmt_http(srv)
    pad = [{"k": i, "v": "x" * 190} for i in range(90_000)]     # (at most 100,000 objects in a body)
    body = json.dumps({"durable": False, "padding": pad}).encode()
    assert 15_000_000 < len(body) < 20_000_000
    import threading
    out = {}

    def put(i):
        out[i] = http.request("PUT", f"/api/queues/%2F/bigbody{i}", body)[0]
    with Bystander(srv.host, srv.port) as b:
        time.sleep(0.3)
        b.reset()
        ts = [threading.Thread(target=put, args=(i,)) for i in range(3)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(120)
        check_bystander(b, "three big bodies")
    assert out == {0: 201, 1: 201, 2: 201}, out
    assert_healthy(srv)


def test_body_cap_is_a_setting_and_holds_for_chunked_bodies(fresh_server):
    srv = fresh_server(extra_args=["--management-max-body-size", "100000"])
    http = _mgmt_http(srv)
    small = json.dumps({"arguments": {"x-note": "a" * 50_000}}).encode()
    status, _h, data = http.request("PUT", "/api/queues/%2F/capped-ok", small)
    assert status == 201, (status, data)
    big = json.dumps({"arguments": {"x-note": "a" * 150_000}}).encode()
    status, _h, data = http.request("PUT", "/api/queues/%2F/capped-big", big)
    assert status == 413, (status, data)
    # chunked: refused once the cap is passed, while the client is still sending
    s = http.connect(10)
    s.sendall(http.head("PUT", "/api/queues/%2F/capped-chunked", {"Content-Type": "application/json",
                                                                   "Transfer-Encoding": "chunked"}))
    chunk = b"[" + b"1," * 10_000
    sent = 0
    try:
        while sent < 200_000:
            s.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass
    status, _h, data = read_response(s)
    s.close()
    assert status == 413, (status, data)
    assert http.json("GET", "/api/queues/%2F/capped-chunked")[0] == 404
    assert http.json("GET", "/api/queues/%2F/capped-big")[0] == 404
    assert_healthy(srv)


def test_credentials_are_checked_before_the_body(http_target):
    # no credentials: 401 with the realm, and not a byte of the announced body read
    for path, method in (("/api/definitions", "POST"), ("/api/queues/%2F/mgmtabuse-noauth", "PUT")):
        s = http_target.connect(10)
        s.sendall(http_target.head(method, path, {"Content-Type": "application/json",
                                                  "Content-Length": str(30_000_000)}, auth=False))
        s.settimeout(10)
        status, headers, _data = read_response(s)
        s.close()
        assert status == 401, status
        assert headers.get("www-authenticate") == 'Basic realm="RabbitMQ Management"'


def test_rights_are_checked_before_the_body(fresh_server):
    srv = fresh_server()
    http = _mgmt_http(srv)
    assert http.json("PUT", "/api/users/mgmtabuse-mon", {"password": "pw", "tags": "monitoring"})[0] == 201
    mon = Http(http.host, http.port, "mgmtabuse-mon", "pw")
    s = mon.connect(10)
    s.sendall(mon.head("POST", "/api/definitions", {"Content-Type": "application/json",
                                                    "Content-Length": str(30_000_000)}))
    s.settimeout(10)
    status, _h, data = read_response(s)
    s.close()
    assert status == 401 and json.loads(data)["error"] == "not_authorised", (status, data)
    assert_healthy(srv)


def test_definitions_upload_must_be_json(http_target):
    for ctype in ("text/plain", "application/x-www-form-urlencoded", None):
        status, _h, data = http_target.request("POST", "/api/definitions", b"{}", ctype=ctype)
        assert (status, data) == (415, b""), (ctype, status, data)
    status, _h, data = http_target.request("POST", "/api/definitions", b"{}", ctype="application/json; charset=utf-8")
    assert status == 204, (status, data)


def test_queue_put_takes_any_content_type_as_rabbitmq(http_target):
    name = f"mgmtabuse-ctype-{os.getpid()}"
    try:
        status, _h, data = http_target.request("PUT", f"/api/queues/%2F/{name}", b'{"durable":false}',
                                               ctype="text/plain")
        assert status == 201, (status, data)
    finally:
        http_target.request("DELETE", f"/api/queues/%2F/{name}")


def test_broken_json_is_400_as_rabbitmq(http_target):
    name = f"mgmtabuse-bad-{os.getpid()}"
    status, data = http_target.request("PUT", f"/api/queues/%2F/{name}", b'{"durable":')[::2]
    assert (status, json.loads(data)) == (400, {"error": "bad_request", "reason": "not_json"})
    status, data = http_target.request("POST", "/api/definitions", b'{"queues":')[::2]
    assert (status, json.loads(data)) == (400, {"error": "bad_request", "reason": "failed_to_parse_json"})
    assert http_target.request("GET", f"/api/queues/%2F/{name}")[0] == 404


def test_deeply_nested_json_is_refused(fresh_server):
    srv = fresh_server()
    http = _mgmt_http(srv)
    for depth in (150, 100_000):
        body = ('{"arguments":' + '{"a":' * depth + "1" + "}" * depth + "}").encode()
        status, _h, data = http.request("PUT", "/api/queues/%2F/deep", body)
        assert status == 400 and json.loads(data)["error"] == "bad_request", (depth, status, data[:200])
        body = ("[" * depth + "]" * depth).encode()
        status, _h, data = http.request("POST", "/api/definitions", body)
        assert status == 400, (depth, status, data[:200])
    assert http.json("GET", "/api/queues/%2F/deep")[0] == 404
    # nesting within the bound is taken
    body = ('{"arguments":{"x-n":' + '{"a":' * 50 + "1" + "}" * 50 + "}}").encode()
    status, _h, data = http.request("PUT", "/api/queues/%2F/deep", body)
    assert status == 201, (status, data)
    assert_healthy(srv)


def test_numbers_out_of_a_doubles_range_are_not_json(http_target):
    """1e999999 would become Infinity, which no JSON answer can carry: refused as RabbitMQ does."""
    name = f"mgmtabuse-inf-{os.getpid()}"
    for number in (b"1e999999", b"-1e400"):
        status, _h, data = http_target.request("PUT", f"/api/global-parameters/{name}", b'{"value":' + number + b"}")
        assert (status, json.loads(data)) == (400, {"error": "bad_request", "reason": "not_json"}), number
    assert http_target.request("GET", f"/api/global-parameters/{name}")[0] == 404


def test_columns_naming_a_value_and_a_path_inside_it(http_target):
    status, _h, data = http_target.request("GET", "/api/vhosts?columns=name,name.a")
    assert status == 200, data
    assert all(isinstance(v, dict) for v in json.loads(data))


@pytest.mark.parametrize("query", ["page=%201", "page=1&page_size=1_0", "page=1.0", "page=%2B%2B1"])
def test_pagination_parameters_are_digits(http_target, query):
    status, _h, data = http_target.request("GET", f"/api/queues?{query}")
    assert status == 400, (query, status, data[:200])


def test_a_broken_multipart_body_is_400(http_target):
    for ctype, body in (("multipart/form-data", b"x"), ("multipart/form-data; boundary=XX", b"garbage"),
                        ("multipart/form-data; boundary=XX",
                         b'--XX\r\nContent-Disposition: form-data; name="file"\r\n\r\n{"vhosts":[]}')):
        status, _h, data = http_target.request("POST", "/api/definitions", body, ctype=ctype)
        assert status == 400, (ctype, body, status, data[:300])


def test_bodies_that_build_millions_of_objects_are_refused(fresh_server):
    """A body of 20 MB can describe millions of empty arrays: refused before it is parsed (at most
    100,000 objects and arrays in a request, 4,000,000 in a definitions file), and an argument or
    parameter value holds at most 65,536 values, so that no entity makes a later listing slow."""
    srv = fresh_server()
    http = _mgmt_http(srv)
    with Bystander(srv.host, srv.port) as b:
        time.sleep(0.3)
        b.reset()
        huge = b'{"arguments":{"x":[' + b"[]," * 3_000_000 + b"[]]}}"
        status, _h, data = http.request("PUT", "/api/queues/%2F/huge", huge)
        assert status == 400 and b"objects and arrays" in data, (status, data[:300])
        status, _h, data = http.request("PUT", "/api/global-parameters/huge",
                                        b'{"value":[' + b"[]," * 3_000_000 + b"[]]}")
        assert status == 400, (status, data[:300])
        many = b'{"arguments":{"x":[' + b"1," * 70_000 + b"1]}}"
        status, _h, data = http.request("PUT", "/api/queues/%2F/huge", many)
        assert status == 400 and b"more than 65536 values" in data, (status, data[:300])
        time.sleep(0.3)
        check_bystander(b, "bodies of millions of objects")
    assert http.request("GET", "/api/queues/%2F/huge")[0] == 404
    assert http.request("GET", "/api/global-parameters/huge")[0] == 404
    status, _h, _d = http.request("PUT", "/api/queues/%2F/fine", b'{"arguments":{"x":[' + b"1," * 1000 + b"1]}}")
    assert status == 201
    assert_healthy(srv)


def test_a_stalled_definitions_upload_holds_up_no_other_import(fresh_server):
    srv = fresh_server()
    http = _mgmt_http(srv)
    s = http.connect()
    try:
        s.sendall(http.head("POST", "/api/definitions", {"Content-Type": "application/json",
                                                          "Content-Length": "1000"}) + b'{"vhosts":')
        time.sleep(0.3)
        t0 = time.monotonic()
        status, _h, data = http.request("POST", "/api/definitions", b'{"queues":[{"name":"after-stall","vhost":"/"}]}',
                                        timeout=20)
        assert status == 204, (status, data)
        assert time.monotonic() - t0 < 10
    finally:
        s.close()
    assert http.request("GET", "/api/queues/%2F/after-stall")[0] == 200
    time.sleep(0.5)                     # the stalled request ends as its client goes: no traceback
    assert_healthy(srv)


# ------------------------------------------------------------------ get and peek, forged requests

def _read_big(target: Http, method: str, path: str, body: bytes | None = None) -> tuple:
    """(status, body) of a request whose answer is large, read in pieces of a growing buffer (so
    that this process's GIL, which the bystander's thread needs, is held a moment at a time)."""
    import http.client
    c = http.client.HTTPConnection(target.host, target.port, timeout=300)
    try:
        c.request(method, path, body=body, headers={"Authorization": target.auth, "Content-Type": "application/json"})
        r = c.getresponse()
        out = bytearray()
        while True:
            piece = r.read(1 << 20)
            if not piece:
                return r.status, bytes(out)
            out += piece
    finally:
        c.close()


def test_get_and_peek_of_big_messages_keep_amqp_flowing(fresh_server):
    """POST .../get with count 10^9 over eighty 1 MB messages answers 112 MB of base64 in JSON, and a
    peek as much: the messages are taken and encoded one per slice, never all in one go (which held
    the loop over a second)."""
    import pika
    srv = fresh_server(extra_args=["--in-memory"])
    http = _mgmt_http(srv)
    conn = pika.BlockingConnection(pika.URLParameters(srv.url()))
    ch = conn.channel()
    ch.queue_declare("big-get")
    n, size = 80, 1 << 20
    for i in range(n):
        ch.basic_publish("", "big-get", bytes([48 + i]) * size)
    conn.close()
    get = json.dumps({"count": 10 ** 9, "ackmode": "ack_requeue_true", "encoding": "base64"}).encode()
    with Bystander(srv.host, srv.port) as b:
        time.sleep(0.3)
        for method, path, body in (("POST", "/api/queues/%2F/big-get/get", get),
                                   ("GET", "/api/queues/%2F/big-get/peek?count=1000000000&encoding=base64", None)):
            b.reset()
            status, data = _read_big(http, method, path, body)
            time.sleep(0.15)
            st = b.stats()
            # one message is the step (1 MB: base64, JSON, written): the loop turns between two; the
            # whole answer in one go held it 1.9 s (p50 670 ms). A loaded machine adds the odd
            # stall of a few hundred ms, hence these bounds rather than the module's P99_MS
            assert not st["closed"] and st["lost"] == 0 and st["count"] > 0, st
            assert st["p50_ms"] < 100 and st["p99_ms"] < 800, f"{method} {path}: {st}"
            assert status == 200, (status, data[:300])
            got = json.loads(data)
            assert [len(m["payload"]) for m in got] == [len(base64.b64encode(b"x" * size))] * n
            assert [base64.b64decode(m["payload"][:4])[:1] for m in got] == [bytes([48 + i]) for i in range(n)]
            assert [m["message_count"] for m in got] == list(range(n - 1, -1, -1))
    status, q = http.json("GET", "/api/queues/%2F/big-get")
    assert status == 200 and q["messages"] == n       # requeued, all of them
    assert_healthy(srv)


def _publish_bytes(queue: str, body: bytes) -> bytes:
    return (frame_bytes(1, 1, method_payload("basic.publish", exchange="", routing_key=queue))
            + frame_bytes(2, 1, content_header_payload(len(body), None)) + frame_bytes(3, 1, body))


def test_a_peek_at_a_long_queue_reads_only_its_head(fresh_server):
    """The dashboard peeks at a queue's first messages: on a queue of 400,000 (half of them
    requeued by a get) a peek of 3 walks 3, not the whole queue (a copy and a sort of it held the loop
    200 ms a peek), whatever the refresh rate."""
    srv = fresh_server(extra_args=["--in-memory"], env={"USAGI_QUEUE_MEMORY_MESSAGES": "1000000"})  # no paging
    http = _mgmt_http(srv)
    c = RawConnection.opened(srv.host, srv.port)
    c.open_channel(1)
    c.send_method(1, "queue.declare", queue="long")
    c.expect_method("queue.declare-ok")
    n = 400_000
    for start in range(0, n, 10_000):
        c.send_raw(b"".join(_publish_bytes("long", b"m%d" % i) for i in range(start, start + 10_000)))
    wait_for(lambda: http.json("GET", "/api/queues/%2F/long")[1].get("messages") == n, 60, message="all published")
    status, got = http.json("POST", "/api/queues/%2F/long/get", {"count": n // 2, "ackmode": "ack_requeue_true",
                                                                  "encoding": "auto", "truncate": 1})
    assert status == 200 and len(got) == n // 2
    with Bystander(srv.host, srv.port) as b:
        time.sleep(0.3)
        b.reset()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3:
            status, got = http.json("GET", "/api/queues/%2F/long/peek?count=3")
            assert status == 200
            assert [(m["payload"], m["redelivered"]) for m in got] == [("m0", True), ("m1", True), ("m2", True)]
        st = check_bystander(b, "peeks at a long queue")
        # the peeks run back to back: each one that walked the whole queue held the loop ~130 ms,
        # so half the bystander's messages waited for one (p50 54 ms); a peek of 3 is ~1 ms
        assert st["p50_ms"] < 30, f"peeks at a long queue: bystander p50 {st['p50_ms']} ms: {st}"
    c.close_connection()
    assert_healthy(srv)


@pytest.mark.parametrize("site", ["cross-site", "same-site"])
def test_a_change_forged_by_another_sites_page_is_refused(fresh_server, site):
    """A page elsewhere can make the browser send a form POST or a text/plain fetch (no CORS
    preflight) with the basic-auth credentials it remembers for this API: the browser marks such a
    request (Sec-Fetch-Site), and a change it asks for is refused (403), reads are not. The
    dashboard's own requests are same-origin; clients that are not browsers send no such header."""
    srv = fresh_server(extra_args=["--in-memory"])
    http = _mgmt_http(srv)
    forged = {"Sec-Fetch-Site": site, "Origin": "http://elsewhere.example"}
    for method, path, body in (("PUT", "/api/queues/%2F/forged", b'{"durable":true}'),
                               ("POST", "/api/definitions", b'{"users":[{"name":"forged","password":"x",'
                                                            b'"tags":"administrator"}]}'),
                               ("PUT", "/api/users/forged", b'{"password":"x","tags":"administrator"}'),
                               ("DELETE", "/api/vhosts/%2F", None)):
        s = http.connect()
        try:
            headers = {"Connection": "close", "Content-Type": "text/plain", **forged}
            if body is not None:
                headers["Content-Length"] = str(len(body))
            s.sendall(http.head(method, path, headers) + (body or b""))
            status, _h, data = read_response(s)
        finally:
            s.close()
        assert (status, json.loads(data)) == (403, {"error": "forbidden", "reason": "Cross-site request refused"}), \
            (method, path, status, data)
    assert http.request("GET", "/api/queues/%2F/forged")[0] == 404
    assert http.request("GET", "/api/users/forged")[0] == 404
    assert http.request("GET", "/api/vhosts/%2F")[0] == 200
    s = http.connect()          # a read from another site's page is answered (the browser keeps it from the page)
    try:
        s.sendall(http.head("GET", "/api/overview", {"Connection": "close", **forged}))
        assert read_response(s)[0] == 200
    finally:
        s.close()
    for fetch_site in ("same-origin", "none"):      # the dashboard's own, the address bar
        s = http.connect()
        try:
            body = b'{"durable":true}'
            s.sendall(http.head("PUT", f"/api/queues/%2F/own-{fetch_site}", {
                "Connection": "close", "Content-Type": "application/json", "Content-Length": str(len(body)),
                "Sec-Fetch-Site": fetch_site}) + body)
            assert read_response(s)[0] == 201
        finally:
            s.close()
    assert http.request("PUT", "/api/queues/%2F/no-header", b'{"durable":true}')[0] == 201
    assert_healthy(srv)
