"""More RabbitMQ extensions through pika, beyond tests/integration/test_queue_features.py:
TTL edge cases, dead-lettering (reject-publish-dlx, cycles, CC/BCC routing keys), length limits
with dead-lettering, queue expiry, single active consumer hand-over, consumer priorities with
prefetch, alternate exchanges, CC/BCC, quorum queues (x-delivery-count, x-delivery-limit),
streams (x-stream-offset), policies (management API) and x-delayed-message.

Differential mode (USAGI_TEST_BROKER_URL, e.g. RabbitMQ 3.10): everything runs against that
broker except the tests marked usagi_only, where RabbitMQ differs on purpose or lacks a plugin:
  * per-message TTL without head-of-line blocking (RabbitMQ expires only at the queue head)
  * x-delayed-message (rabbitmq_delayed_message_exchange is not enabled on the test node);
    test_delayed_message_survives_restart also needs a server of its own (fresh_server)
Policies need a management API: USAGI_TEST_MGMT_URL (e.g. http://guest:guest@127.0.0.1:15682)
or, against Usagi, the session server's own (from its "Management listener on" log line).
"""
from __future__ import annotations

import base64
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request

import pika
import pika.exceptions as pex
import pytest

from itutil import drain, settle, uname, wait_count
from support.harness import bodies

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def usagi_only(broker):
    if not broker.is_usagi:
        pytest.skip("Usagi-specific behaviour (RabbitMQ differs or lacks the plugin)")


@pytest.fixture
def cleanup(conn):
    """Names of non-exclusive queues and exchanges to delete after the test (quorum, streams)."""
    made = {"queues": [], "exchanges": []}
    yield made
    try:
        ch = conn.channel() if conn.is_open else None
    except Exception:
        ch = None
    if ch is None:
        return
    for q in made["queues"]:
        try:
            ch.queue_delete(q)
        except Exception:
            ch = conn.channel()
    for x in made["exchanges"]:
        try:
            ch.exchange_delete(x)
        except Exception:
            ch = conn.channel()


def get_all(ch, q):
    out = []
    while True:
        m, p, b = ch.basic_get(q, auto_ack=True)
        if m is None:
            return out
        out.append((m, p, b))


def wait_bodies(ch, q, n, timeout=3.0):
    """basic.get from q until n messages came (or fail)."""
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        m, p, b = ch.basic_get(q, auto_ack=True)
        if m is None:
            assert time.monotonic() < deadline, f"{q}: got {len(out)} of {n}: {[x[2] for x in out]}"
            time.sleep(0.02)
            continue
        out.append((m, p, b))
    return out


def get_one(ch, q, timeout=3.0):
    """basic.get (manual ack) until a message comes."""
    deadline = time.monotonic() + timeout
    while True:
        m, p, b = ch.basic_get(q)
        if m is not None:
            return m, p, b
        assert time.monotonic() < deadline, f"no message on {q}"
        time.sleep(0.02)


def wait_gone(conn, q, expires_ms, timeout=8.0):
    """Wait until the queue is gone (404), checking with a passive declare on a fresh channel.

    A declare counts as use and restarts the x-expires timer (RabbitMQ and Usagi), so the
    checks are further apart than the expiry plus the broker's timer granularity (~1 s)."""
    interval = expires_ms / 1000 + 1.2
    deadline = time.monotonic() + timeout
    while True:
        time.sleep(interval)
        ch = conn.channel()
        try:
            ch.queue_declare(q, passive=True)
        except pex.ChannelClosedByBroker as e:
            assert e.reply_code == 404
            return
        ch.close()
        assert time.monotonic() < deadline, f"queue {q} still there"


def dead_letter_target(ch):
    dlx = uname("dlx")
    ch.exchange_declare(dlx, "fanout", auto_delete=True)
    dq = ch.queue_declare(uname("dead"), exclusive=True).method.queue
    ch.queue_bind(dq, dlx)
    return dlx, dq


# --------------------------------------------------------------------------------------------- TTL
def test_per_message_ttl_expires_behind_a_longer_lived_head(ch, usagi_only):
    """Usagi expires each message at its own deadline; RabbitMQ's classic queues only expire
    messages at the head, so there the 100 ms message would wait 10 s behind the first."""
    dlx, dq = dead_letter_target(ch)
    q = ch.queue_declare(uname("q"), exclusive=True,
                         arguments={"x-dead-letter-exchange": dlx}).method.queue
    ch.basic_publish("", q, b"long", pika.BasicProperties(expiration="10000"))
    t0 = time.monotonic()
    ch.basic_publish("", q, b"short", pika.BasicProperties(expiration="100"))
    [(m, p, b)] = wait_bodies(ch, dq, 1, timeout=3.0)
    elapsed = time.monotonic() - t0
    assert b == b"short"
    assert 0.09 <= elapsed <= 1.5, elapsed      # far below the head's 10 s (slack for busy hosts)
    assert p.headers["x-death"][0]["reason"] == "expired"
    assert p.headers["x-death"][0]["original-expiration"] == "100"
    assert ch.queue_declare(q, passive=True).method.message_count == 1


def test_requeued_message_keeps_its_original_expiry(ch):
    dlx, dq = dead_letter_target(ch)
    q = ch.queue_declare(uname("q"), exclusive=True, arguments={
        "x-message-ttl": 300, "x-dead-letter-exchange": dlx}).method.queue
    ch.basic_publish("", q, b"x")
    m, _, _ = ch.basic_get(q, auto_ack=False)
    time.sleep(0.5)                       # expired while held by us
    ch.basic_nack(m.delivery_tag, requeue=True)
    [(m2, p2, b2)] = wait_bodies(ch, dq, 1, timeout=2.0)
    assert b2 == b"x" and p2.headers["x-death"][0]["reason"] == "expired"
    assert ch.basic_get(q) == (None, None, None)


def test_queue_ttl_and_message_expiration_lower_wins(ch):
    q = ch.queue_declare(uname("q"), exclusive=True, arguments={"x-message-ttl": 300}).method.queue
    ch.basic_publish("", q, b"prop-longer", pika.BasicProperties(expiration="60000"))
    ch.basic_publish("", q, b"prop-shorter", pika.BasicProperties(expiration="20"))
    ch.queue_declare(q, passive=True)       # the broker has taken both
    time.sleep(0.6)      # past the queue TTL: the longer expiration does not extend it
    ch.basic_publish("", q, b"fresh")
    assert bodies(ch, q) == [b"fresh"]


# ------------------------------------------------------------------------- dead lettering
def test_reject_publish_dlx_nacks_and_dead_letters(conn):
    ch = conn.channel()
    ch.confirm_delivery()
    dlx, dq = dead_letter_target(ch)
    q = ch.queue_declare(uname("q"), exclusive=True, arguments={
        "x-max-length": 1, "x-overflow": "reject-publish-dlx",
        "x-dead-letter-exchange": dlx}).method.queue
    ch.basic_publish("", q, b"first")
    with pytest.raises(pex.NackError):
        ch.basic_publish("", q, b"second")
    [(m, p, b)] = wait_bodies(ch, dq, 1)
    assert b == b"second"
    [d] = p.headers["x-death"]
    assert (d["reason"], d["queue"], d["count"]) == ("maxlen", q, 1)
    assert bodies(ch, q) == [b"first"]


def test_reject_publish_does_not_dead_letter(conn):
    ch = conn.channel()
    ch.confirm_delivery()
    dlx, dq = dead_letter_target(ch)
    q = ch.queue_declare(uname("q"), exclusive=True, arguments={
        "x-max-length": 1, "x-overflow": "reject-publish",
        "x-dead-letter-exchange": dlx}).method.queue
    ch.basic_publish("", q, b"first")
    with pytest.raises(pex.NackError):
        ch.basic_publish("", q, b"second")
    settle(conn, 0.2)
    assert bodies(ch, dq) == []
    ch.basic_get(q, auto_ack=True)       # room again: publishes are accepted
    ch.basic_publish("", q, b"third")
    assert bodies(ch, q) == [b"third"]


def test_max_length_bytes_drop_head_dead_letters_maxlen(ch):
    dlx, dq = dead_letter_target(ch)
    q = ch.queue_declare(uname("q"), exclusive=True, arguments={
        "x-max-length-bytes": 8, "x-dead-letter-exchange": dlx}).method.queue
    for b in (b"aaaa", b"bbbb", b"cccccc"):
        ch.basic_publish("", q, b)
    # only bodies count: 4+4 fit, the 6-byte one pushes out both older ones
    wait_count(ch, q, 1)
    assert [b for _, _, b in wait_bodies(ch, dq, 2)] == [b"aaaa", b"bbbb"]
    assert bodies(ch, q) == [b"cccccc"]


def test_max_length_bytes_reject_publish_nacks(conn):
    ch = conn.channel()
    ch.confirm_delivery()
    q = ch.queue_declare(uname("q"), exclusive=True, arguments={
        "x-max-length-bytes": 10, "x-overflow": "reject-publish"}).method.queue
    ch.basic_publish("", q, b"123456")
    with pytest.raises(pex.NackError):
        ch.basic_publish("", q, b"789012")
    ch.basic_publish("", q, b"3456")     # 6 + 4 still fits
    assert bodies(ch, q) == [b"123456", b"3456"]


def test_dead_letter_cycle_by_expiry_is_dropped(ch):
    """A message expiring back into the queue it expired from is dropped (other targets still get it)."""
    dlx = uname("dlx")
    ch.exchange_declare(dlx, "fanout", auto_delete=True)
    q = uname("q")
    ch.queue_declare(q, exclusive=True, arguments={"x-message-ttl": 50, "x-dead-letter-exchange": dlx})
    ch.queue_bind(q, dlx)
    watch = ch.queue_declare(uname("watch"), exclusive=True).method.queue
    ch.queue_bind(watch, dlx)
    ch.basic_publish("", q, b"loop")
    wait_bodies(ch, watch, 1)
    time.sleep(0.5)             # room for several 50 ms rounds if the loop were not cut
    assert get_all(ch, watch) == []
    assert ch.queue_declare(q, passive=True).method.message_count == 0


def test_dead_letter_cycle_through_default_exchange_is_dropped(ch):
    q = uname("q")
    ch.queue_declare(q, exclusive=True, arguments={"x-message-ttl": 50, "x-dead-letter-exchange": ""})
    ch.basic_publish("", q, b"loop")
    # were it put back, the queue would never be seen empty
    deadline = time.monotonic() + 3
    while ch.queue_declare(q, passive=True).method.message_count:
        assert time.monotonic() < deadline, "the message keeps coming back"
        time.sleep(0.05)


def test_rejection_breaks_a_dead_letter_cycle(ch):
    """Reject into the same queue (via the default exchange) loops: x-death counts the rounds."""
    q = uname("q")
    ch.queue_declare(q, exclusive=True, arguments={"x-dead-letter-exchange": ""})
    ch.basic_publish("", q, b"again")
    for n in (1, 2, 3):
        m, _, _ = ch.basic_get(q)
        ch.basic_reject(m.delivery_tag, requeue=False)
        [(m, p, b)] = wait_bodies(ch, q, 1)
        [d] = p.headers["x-death"]
        assert (d["count"], d["reason"], d["queue"]) == (n, "rejected", q)
        assert not m.redelivered
        ch.basic_publish("", q, b, p)      # put it back for the next round (keeps x-death)
    assert p.headers["x-first-death-reason"] == "rejected"


def test_expiry_cycle_after_an_older_rejection_is_still_a_cycle(ch):
    """RabbitMQ looks at the deaths up to the newest one in the target queue: a rejection in an
    older queue further back does not make an expiry loop acceptable.

    q2 --rejected--> dlx --> q1, watch;  q1 (TTL) --expired--> dlx --> q1 (cycle: dropped), watch
    """
    dlx = uname("dlx")
    ch.exchange_declare(dlx, "fanout", auto_delete=True)
    q1, q2 = uname("q1"), uname("q2")
    ch.queue_declare(q1, exclusive=True, arguments={"x-message-ttl": 100, "x-dead-letter-exchange": dlx})
    ch.queue_declare(q2, exclusive=True, arguments={"x-dead-letter-exchange": dlx})
    ch.queue_bind(q1, dlx)
    watch = ch.queue_declare(uname("watch"), exclusive=True).method.queue
    ch.queue_bind(watch, dlx)
    ch.basic_publish("", q2, b"m")
    m, _, _ = ch.basic_get(q2)
    ch.basic_reject(m.delivery_tag, requeue=False)
    got = wait_bodies(ch, watch, 2)
    time.sleep(0.6)             # room for several 100 ms rounds if the loop were not cut
    got += get_all(ch, watch)
    reasons = [[(d["queue"], d["reason"], d["count"]) for d in p.headers["x-death"]] for _, p, _ in got]
    assert reasons == [[(q2, "rejected", 1)], [(q1, "expired", 1), (q2, "rejected", 1)]]
    assert ch.queue_declare(q1, passive=True).method.message_count == 0


def test_dead_letter_routing_keys_include_cc_and_bcc(ch):
    """Without x-dead-letter-routing-key the message is re-routed with all the routing keys it
    was published with: its key, CC and BCC (RabbitMQ keeps BCC keys with the message, though
    the header is stripped). x-death routing-keys lists the key and CC only."""
    dlx = uname("dlx")
    ch.exchange_declare(dlx, "direct", auto_delete=True)
    src = uname("src")
    ch.queue_declare(src, exclusive=True, arguments={"x-dead-letter-exchange": dlx})
    by_key = {}
    for key in (src, "cc-key", "bcc-key", "other"):
        by_key[key] = ch.queue_declare(uname("d"), exclusive=True).method.queue
        ch.queue_bind(by_key[key], dlx, key)
    ch.basic_publish("", src, b"m", pika.BasicProperties(headers={"CC": ["cc-key"], "BCC": ["bcc-key"]}))
    m, p, _ = ch.basic_get(src)
    assert p.headers == {"CC": ["cc-key"]}
    ch.basic_reject(m.delivery_tag, requeue=False)
    for key in (src, "cc-key", "bcc-key"):
        [(m2, p2, b2)] = wait_bodies(ch, by_key[key], 1)
        [d] = p2.headers["x-death"]
        assert d["routing-keys"] == [src, "cc-key"]
        assert (m2.exchange, m2.routing_key) == (dlx, src)
        assert "BCC" not in p2.headers
    assert bodies(ch, by_key["other"]) == []


def test_dead_letter_routing_key_replaces_cc_routing(ch):
    dlx = uname("dlx")
    ch.exchange_declare(dlx, "direct", auto_delete=True)
    src = uname("src")
    ch.queue_declare(src, exclusive=True, arguments={"x-dead-letter-exchange": dlx,
                                                     "x-dead-letter-routing-key": "dl"})
    by_key = {}
    for key in ("dl", "cc-key"):
        by_key[key] = ch.queue_declare(uname("d"), exclusive=True).method.queue
        ch.queue_bind(by_key[key], dlx, key)
    ch.basic_publish("", src, b"m", pika.BasicProperties(headers={"CC": ["cc-key"]}))
    m, p, _ = ch.basic_get(src)
    ch.basic_reject(m.delivery_tag, requeue=False)
    [(m2, p2, _)] = wait_bodies(ch, by_key["dl"], 1)
    assert m2.routing_key == "dl"
    assert p2.headers["x-death"][0]["routing-keys"] == [src, "cc-key"]
    settle(ch.connection, 0.1)
    assert bodies(ch, by_key["cc-key"]) == []


# --------------------------------------------------------------------------------- x-expires
def test_queue_with_a_consumer_does_not_expire(conn, vhost):
    ch = conn.channel()
    q = uname("q")
    ch.queue_declare(q, arguments={"x-expires": 300})
    tag = ch.basic_consume(q, lambda *a: None, auto_ack=True)
    settle(conn, 0.8)
    ch.queue_declare(q, passive=True)
    ch.basic_cancel(tag)
    wait_gone(conn, q, 300)


def test_redeclaring_a_queue_resets_its_expiry(conn):
    ch = conn.channel()
    q = uname("q")
    ch.queue_declare(q, arguments={"x-expires": 1000})
    ch.basic_publish("", q, b"kept")
    for _ in range(12):             # 2.4 s in all, never 1 s without a declare
        time.sleep(0.2)
        ok = ch.queue_declare(q, arguments={"x-expires": 1000})
    # the same queue (a re-created one would be empty)
    assert ok.method.message_count == 1
    ch.queue_delete(q)


def test_expired_queue_drops_its_messages_without_dead_lettering(conn):
    ch = conn.channel()
    dlx, dq = dead_letter_target(ch)
    q = uname("q")
    ch.queue_declare(q, arguments={"x-expires": 200, "x-dead-letter-exchange": dlx})
    ch.basic_publish("", q, b"lost")
    wait_gone(conn, q, 200)
    ch = conn.channel()
    assert bodies(ch, dq) == []


# ------------------------------------------------------------------- single active consumer
def test_single_active_consumer_hands_over_unacked_on_connection_close(pika_connect, cleanup):
    c1, c2, pub = pika_connect(), pika_connect(), pika_connect()
    pch = pub.channel()
    q = uname("q")
    pch.queue_declare(q, auto_delete=False, arguments={"x-single-active-consumer": True})
    cleanup["queues"].append(q)
    got1, got2 = [], []
    ch1 = c1.channel()
    ch1.basic_qos(prefetch_count=10)
    ch1.basic_consume(q, lambda c, m, p, b: got1.append(b))       # never acks
    ch2 = c2.channel()
    ch2.basic_qos(prefetch_count=10)
    ch2.basic_consume(q, lambda c, m, p, b: (got2.append((b, m.redelivered)),
                                             c.basic_ack(m.delivery_tag)))
    for i in range(3):
        pch.basic_publish("", q, f"m{i}".encode())
    drain(c1, lambda: len(got1) == 3)
    settle(c2, 0.2)
    assert got2 == []
    c1.close()
    pch.basic_publish("", q, b"m3")
    drain(c2, lambda: len(got2) == 4)
    assert got2 == [(b"m0", True), (b"m1", True), (b"m2", True), (b"m3", False)]


# ---------------------------------------------------------------------- consumer priorities
def test_lower_priority_consumer_gets_messages_when_higher_is_full(pika_connect):
    conn = pika_connect()
    ch_hi, ch_lo = conn.channel(), conn.channel()
    q = ch_hi.queue_declare(uname("q"), exclusive=True).method.queue
    ch_hi.basic_qos(prefetch_count=2)
    got = []
    ch_hi.basic_consume(q, lambda c, m, p, b: got.append(("hi", b)), arguments={"x-priority": 5})
    ch_lo.basic_consume(q, lambda c, m, p, b: got.append(("lo", b)), auto_ack=True,
                        arguments={"x-priority": -1})
    for i in range(5):
        ch_hi.basic_publish("", q, f"m{i}".encode())
    drain(conn, lambda: len(got) == 5)
    assert sorted(got) == [("hi", b"m0"), ("hi", b"m1"), ("lo", b"m2"), ("lo", b"m3"), ("lo", b"m4")]


def test_invalid_consumer_priority_406(conn, vhost):
    ch = conn.channel()
    q = ch.queue_declare(uname("q"), exclusive=True).method.queue
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        ch.basic_consume(q, lambda *a: None, arguments={"x-priority": "high"})
    assert (ei.value.reply_code, ei.value.reply_text) == (
        406, f"PRECONDITION_FAILED - invalid arg 'x-priority' for queue '{q}' in vhost '{vhost}': "
             '"expected integer, got longstr"')


# ---------------------------------------------------------------------------- argument checks
@pytest.mark.parametrize("key", ["x-expires", "x-max-length", "x-max-length-bytes", "x-max-priority"])
def test_non_integer_queue_argument_406(conn, vhost, key):
    """RabbitMQ's check_int_arg: the same text as for x-message-ttl (test_queue_features)."""
    ch = conn.channel()
    q = uname("q")
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        ch.queue_declare(q, exclusive=True, arguments={key: "abc"})
    assert (ei.value.reply_code, ei.value.reply_text) == (
        406, f"PRECONDITION_FAILED - invalid arg '{key}' for queue '{q}' in vhost '{vhost}': "
             '"expected integer, got longstr"')


@pytest.mark.parametrize("qtype, args, module", [
    ("classic", {"x-delivery-limit": 3}, "rabbit_classic_queue"),
    ("stream", {"x-delivery-limit": 3}, "rabbit_stream_queue"),
    ("quorum", {"x-max-priority": 3}, "rabbit_quorum_queue"),
])
def test_argument_not_supported_by_queue_type_406(conn, cleanup, vhost, qtype, args, module):
    ch = conn.channel()
    q = uname("q")
    cleanup["queues"].append(q)
    [key] = args
    kw = {"exclusive": True} if qtype == "classic" else {"durable": True}
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        ch.queue_declare(q, arguments={"x-queue-type": qtype, **args}, **kw)
    assert (ei.value.reply_code, ei.value.reply_text) == (
        406, f"PRECONDITION_FAILED - invalid arg '{key}' for queue '{q}' in vhost '{vhost}' "
             f"of queue type {module}")


# ------------------------------------------------------------------------- alternate exchange
def test_alternate_exchange_takes_unroutable_messages(conn):
    ch = conn.channel()
    ch.confirm_delivery()
    ae = uname("ae")
    ch.exchange_declare(ae, "fanout", auto_delete=True)
    aq = ch.queue_declare(uname("aq"), exclusive=True).method.queue
    ch.queue_bind(aq, ae)
    x = uname("x")
    ch.exchange_declare(x, "direct", auto_delete=True, arguments={"alternate-exchange": ae})
    q = ch.queue_declare(uname("q"), exclusive=True).method.queue
    ch.queue_bind(q, x, "known")
    ch.basic_publish(x, "known", b"routed", mandatory=True)
    ch.basic_publish(x, "unknown", b"to-ae", mandatory=True)     # no basic.return: the AE took it
    assert bodies(ch, q) == [b"routed"]
    [(m, p, b)] = get_all(ch, aq)
    assert (b, m.exchange, m.routing_key) == (b"to-ae", x, "unknown")


def test_alternate_exchange_chain_and_missing_ae(conn):
    ch = conn.channel()
    ch.confirm_delivery()
    ae2 = uname("ae2")
    ch.exchange_declare(ae2, "fanout", auto_delete=True)
    aq = ch.queue_declare(uname("aq"), exclusive=True).method.queue
    ch.queue_bind(aq, ae2)
    ae1 = uname("ae1")                  # a direct AE that routes nothing, with its own AE
    ch.exchange_declare(ae1, "direct", arguments={"alternate-exchange": ae2})
    x = uname("x")
    ch.exchange_declare(x, "direct", arguments={"alternate-exchange": ae1})
    ch.basic_publish(x, "nothing", b"via-two-aes", mandatory=True)
    assert bodies(ch, aq) == [b"via-two-aes"]
    # an AE that does not exist: the message is unroutable
    y = uname("y")
    ch.exchange_declare(y, "direct", arguments={"alternate-exchange": uname("missing")})
    with pytest.raises(pex.UnroutableError):
        ch.basic_publish(y, "nothing", b"lost", mandatory=True)
    for e in (x, y, ae1):
        ch.exchange_delete(e)


def test_alternate_exchange_loop_is_unroutable(conn):
    ch = conn.channel()
    ch.confirm_delivery()
    a, b = uname("a"), uname("b")
    ch.exchange_declare(a, "direct", arguments={"alternate-exchange": b})
    ch.exchange_declare(b, "direct", arguments={"alternate-exchange": a})
    try:
        with pytest.raises(pex.UnroutableError):
            ch.basic_publish(a, "k", b"loop", mandatory=True)
    finally:
        ch.exchange_delete(a)
        ch.exchange_delete(b)


# --------------------------------------------------------------------------------- CC / BCC
def test_cc_and_bcc_route_and_bcc_is_stripped(ch):
    x = uname("x")
    ch.exchange_declare(x, "direct", auto_delete=True)
    qs = {}
    for key in ("main", "cc1", "cc2", "hidden"):
        qs[key] = ch.queue_declare(uname(key), exclusive=True).method.queue
        ch.queue_bind(qs[key], x, key)
    both = ch.queue_declare(uname("both"), exclusive=True).method.queue
    ch.queue_bind(both, x, "main")
    ch.queue_bind(both, x, "cc1")
    ch.basic_publish(x, "main", b"m", pika.BasicProperties(
        headers={"CC": ["cc1", "cc2"], "BCC": ["hidden"], "other": 7}))
    for key in ("main", "cc1", "cc2", "hidden"):
        [(m, p, b)] = wait_bodies(ch, qs[key], 1)
        assert (m.exchange, m.routing_key, b) == (x, "main", b"m")
        assert p.headers == {"CC": ["cc1", "cc2"], "other": 7}
    assert len(wait_bodies(ch, both, 1)) == 1            # once, though two keys match
    settle(ch.connection, 0.1)
    assert bodies(ch, both) == []


def test_cc_on_topic_exchange(ch):
    x = uname("x")
    ch.exchange_declare(x, "topic", auto_delete=True)
    q = ch.queue_declare(uname("q"), exclusive=True).method.queue
    ch.queue_bind(q, x, "audit.#")
    ch.basic_publish(x, "orders.created", b"m", pika.BasicProperties(headers={"CC": ["audit.orders"]}))
    ch.basic_publish(x, "orders.created", b"not-copied")
    assert [b for _, _, b in wait_bodies(ch, q, 1)] == [b"m"]
    settle(ch.connection, 0.1)
    assert bodies(ch, q) == []


@pytest.mark.parametrize("headers, complaint", [
    ({"CC": "one-key"}, '{unacceptable_type_in_header,"CC",longstr}'),
    ({"CC": 5}, '{unacceptable_type_in_header,"CC",signedint}'),
    ({"BCC": {"k": "v"}}, '{unacceptable_type_in_header,"BCC",table}'),
    ({"other": 1, "BCC": "hidden"}, '{unacceptable_type_in_header,"BCC",longstr}'),
])
def test_cc_or_bcc_that_is_not_an_array_is_refused(conn, headers, complaint):
    """Only an array of keys routes: any other type makes the message invalid (406 at publish,
    nothing routed), inside a transaction too."""
    ch = conn.channel()
    q = ch.queue_declare(uname("q"), exclusive=True).method.queue
    for tx in (False, True):
        c2 = conn.channel()
        if tx:
            c2.tx_select()
        with pytest.raises(pex.ChannelClosedByBroker) as e:
            c2.basic_publish("", q, b"m", pika.BasicProperties(headers=headers))
            c2.basic_publish("", q, b"m2")
            c2.queue_declare(q, passive=True)        # a round trip: the close comes before its reply
        assert e.value.reply_code == 406
        assert e.value.reply_text == f"PRECONDITION_FAILED - invalid message: {complaint}"
    assert ch.queue_declare(q, passive=True).method.message_count == 0
    c3 = conn.channel()                               # an array with a non-string item still routes
    c3.basic_publish("", q, b"ok", pika.BasicProperties(headers={"CC": [5]}))
    assert [b for _, _, b in wait_bodies(c3, q, 1)] == [b"ok"]


# ------------------------------------------------------------------------------ quorum queues
def quorum(ch, cleanup, **args):
    q = uname("qq")
    ch.queue_declare(q, durable=True, arguments={"x-queue-type": "quorum", **args})
    cleanup["queues"].append(q)
    return q


def test_quorum_delivery_count_header_and_delivery_limit(ch, cleanup):
    dlx, dq = dead_letter_target(ch)
    q = quorum(ch, cleanup, **{"x-delivery-limit": 2, "x-dead-letter-exchange": dlx})
    ch.confirm_delivery()
    ch.basic_publish("", q, b"poison", pika.BasicProperties(headers={"app": "x"}))
    counts = []
    for _ in range(3):
        m, p, b = get_one(ch, q)
        counts.append(((p.headers or {}).get("x-delivery-count"), m.redelivered))
        ch.basic_reject(m.delivery_tag, requeue=True)
    # 3 deliveries, then the 3rd return exceeds the limit of 2. The first delivery has no
    # header in RabbitMQ 3.13+/4.x; 3.10 sends x-delivery-count 0
    assert counts[0] in ((None, False), (0, False))
    assert counts[1:] == [(1, True), (2, True)]
    [(m, p, b)] = wait_bodies(ch, dq, 1)
    [d] = p.headers["x-death"]
    assert (b, d["reason"], d["queue"], d["count"]) == (b"poison", "delivery_limit", q, 1)
    assert p.headers["app"] == "x"
    assert ch.queue_declare(q, passive=True).method.message_count == 0


def test_quorum_delivery_limit_with_a_consumer(conn, cleanup):
    ch = conn.channel()
    dlx, dq = dead_letter_target(ch)
    q = quorum(ch, cleanup, **{"x-delivery-limit": 1, "x-dead-letter-exchange": dlx})
    ch.confirm_delivery()
    for i in range(2):
        ch.basic_publish("", q, f"m{i}".encode())
    ch.basic_qos(prefetch_count=10)
    seen = []

    def on_msg(c, m, p, b):
        seen.append((b, (p.headers or {}).get("x-delivery-count")))
        c.basic_nack(m.delivery_tag, requeue=True)
    ch.basic_consume(q, on_msg)
    drain(conn, lambda: len(seen) >= 4)
    got = wait_bodies(ch, dq, 2)
    assert sorted(b for _, _, b in got) == [b"m0", b"m1"]
    assert sorted((b, c or 0) for b, c in seen) == [(b"m0", 0), (b"m0", 1), (b"m1", 0), (b"m1", 1)]
    for _, p, _ in got:
        assert p.headers["x-death"][0]["reason"] == "delivery_limit"


def test_quorum_queue_must_be_durable_and_not_exclusive(conn, vhost):
    for kw, prop in (({"durable": False}, "non-durable"), ({"durable": True, "exclusive": True},
                                                          "exclusive-owner")):
        ch = conn.channel()
        q = uname("qq")
        with pytest.raises(pex.ChannelClosedByBroker) as ei:
            ch.queue_declare(q, arguments={"x-queue-type": "quorum"}, **kw)
        assert (ei.value.reply_code, ei.value.reply_text) == (
            406, f"PRECONDITION_FAILED - invalid property '{prop}' for queue '{q}' in vhost '{vhost}'")


# ------------------------------------------------------------------------------------ streams
def stream(ch, cleanup, n=0, **args):
    s = uname("st")
    ch.queue_declare(s, durable=True, arguments={"x-queue-type": "stream", **args})
    cleanup["queues"].append(s)
    if n:
        pch = ch.connection.channel()
        pch.confirm_delivery()
        for i in range(n):
            pch.basic_publish("", s, f"m{i}".encode())
        pch.close()
    return s


def read_stream(conn, s, offset, n, prefetch=100, timeout=5.0):
    ch = conn.channel()
    ch.basic_qos(prefetch_count=prefetch)
    got = []

    def on_msg(c, m, p, b):
        got.append((p.headers["x-stream-offset"], b))
        c.basic_ack(m.delivery_tag)
    args = {} if offset is None else {"x-stream-offset": offset}
    ch.basic_consume(s, on_msg, arguments=args)
    drain(conn, lambda: len(got) >= n, timeout=timeout)
    return ch, got


@pytest.mark.parametrize("offset, expected", [
    ("first", [0, 1, 2, 3, 4]),
    (3, [3, 4]),
    (0, [0, 1, 2, 3, 4]),
])
def test_stream_consume_from_offset(conn, cleanup, offset, expected):
    ch = conn.channel()
    s = stream(ch, cleanup, n=5)
    _, got = read_stream(conn, s, offset, len(expected))
    settle(conn, 0.2)
    assert got == [(o, f"m{o}".encode()) for o in expected]


def test_stream_next_offset_sees_only_new_messages(conn, cleanup):
    ch = conn.channel()
    s = stream(ch, cleanup, n=3)
    for offset in ("next", None):          # no x-stream-offset means next
        rch = conn.channel()
        rch.basic_qos(prefetch_count=10)
        got = []
        rch.basic_consume(s, lambda c, m, p, b: (got.append((p.headers["x-stream-offset"], b)),
                                                 c.basic_ack(m.delivery_tag)),
                          arguments={} if offset is None else {"x-stream-offset": offset})
        settle(conn, 0.3)
        assert got == []
        pch = conn.channel()
        pch.confirm_delivery()
        body = f"new-{offset}".encode()
        pch.basic_publish("", s, body)
        drain(conn, lambda: got)
        settle(conn, 0.1)
        assert [b for _, b in got] == [body]
        rch.close()


def test_stream_messages_stay_after_ack_and_two_readers_read_independently(conn, cleanup):
    ch = conn.channel()
    s = stream(ch, cleanup, n=4)
    _, a = read_stream(conn, s, "first", 4)
    _, b = read_stream(conn, s, 2, 2)
    assert [o for o, _ in a] == [0, 1, 2, 3]
    assert [o for o, _ in b] == [2, 3]
    _, again = read_stream(conn, s, "first", 4)       # acks removed nothing
    assert [o for o, _ in again] == [0, 1, 2, 3]


def test_stream_prefetch_limits_unacked(conn, cleanup):
    ch = conn.channel()
    s = stream(ch, cleanup, n=6)
    rch = conn.channel()
    rch.basic_qos(prefetch_count=2)
    got = []
    rch.basic_consume(s, lambda c, m, p, b: got.append(m.delivery_tag), arguments={"x-stream-offset": "first"})
    drain(conn, lambda: len(got) == 2)
    settle(conn, 0.3)
    assert len(got) == 2
    rch.basic_ack(got[-1], multiple=True)
    drain(conn, lambda: len(got) == 4)


def test_stream_needs_prefetch(conn, cleanup, vhost):
    ch = conn.channel()
    s = stream(ch, cleanup)
    rch = conn.channel()
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        rch.basic_consume(s, lambda *a: None)
    assert ei.value.reply_code == 406
    assert ei.value.reply_text == (f"PRECONDITION_FAILED - consumer prefetch count is not set for "
                                   f"'queue '{s}' in vhost '{vhost}''")
    # no-ack without a prefetch: the prefetch is checked first (a channel error, not 540)
    rch = conn.channel()
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        rch.basic_consume(s, lambda *a: None, auto_ack=True)
    assert ei.value.reply_code == 406
    assert conn.is_open


# ----------------------------------------------------------------------------------- policies
def _mgmt_base(broker):
    url = os.environ.get("USAGI_TEST_MGMT_URL")
    if url:
        return url
    if broker.is_usagi:
        m = re.search(r"Management listener on (\S+):(\d+)", broker.log_text())
        if m:
            host = m.group(1)
            if host in ("0.0.0.0", "::", ""):
                host = "127.0.0.1"
            return f"http://guest:guest@{host}:{m.group(2)}"
    return None


class Mgmt:
    def __init__(self, base: str):
        p = urllib.parse.urlsplit(base)
        self.root = f"{p.scheme}://{p.hostname}:{p.port}/api"
        self.auth = "Basic " + base64.b64encode(
            f"{urllib.parse.unquote(p.username or 'guest')}:{urllib.parse.unquote(p.password or 'guest')}"
            .encode()).decode()
        self.created = []

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.root + path, data=data, method=method,
                                     headers={"content-type": "application/json",
                                              "authorization": self.auth})
        with urllib.request.urlopen(req, timeout=5) as r:
            text = r.read()
            return json.loads(text) if text else None

    def set_policy(self, vhost, name, pattern, definition, apply_to="queues", priority=0):
        v = urllib.parse.quote(vhost, safe="")
        self.call("PUT", f"/policies/{v}/{name}", {"pattern": pattern, "definition": definition,
                                                    "apply-to": apply_to, "priority": priority})
        self.created.append((v, name))


@pytest.fixture
def mgmt(broker):
    base = _mgmt_base(broker)
    if base is None:
        pytest.skip("no management API: set USAGI_TEST_MGMT_URL for the broker under test")
    m = Mgmt(base)
    try:
        m.call("GET", "/overview")
    except Exception as e:        # noqa: BLE001
        pytest.skip(f"management API at {m.root} not reachable: {e}")
    yield m
    for v, name in m.created:
        try:
            m.call("DELETE", f"/policies/{v}/{name}")
        except Exception:
            pass


def eventually(probe, timeout=10.0, interval=0.1, message="policy in effect"):
    """Policies apply asynchronously (and RabbitMQ's API shows them late): poll the behaviour."""
    deadline = time.monotonic() + timeout
    while True:
        v = probe()
        if v:
            return v
        assert time.monotonic() < deadline, f"timed out waiting for {message}"
        time.sleep(interval)


def test_policy_max_length_applies_to_an_existing_queue(ch, mgmt, vhost):
    q = ch.queue_declare(uname("pq"), exclusive=True).method.queue
    for i in range(5):
        ch.basic_publish("", q, f"m{i}".encode())
    wait_count(ch, q, 5)
    mgmt.set_policy(vhost, uname("pol"), f"^{re.escape(q)}$", {"max-length": 2})
    eventually(lambda: ch.queue_declare(q, passive=True).method.message_count == 2)
    assert bodies(ch, q) == [b"m3", b"m4"]


def test_policy_and_argument_lower_max_length_wins(ch, mgmt, vhost):
    """For max-length (and message-ttl, expires, max-length-bytes) RabbitMQ uses the lower of
    the policy's value and the queue argument, whichever sets it."""
    q = ch.queue_declare(uname("pq"), exclusive=True, arguments={"x-max-length": 5}).method.queue
    for i in range(6):
        ch.basic_publish("", q, f"m{i}".encode())
    wait_count(ch, q, 5)
    mgmt.set_policy(vhost, uname("pol"), f"^{re.escape(q)}$", {"max-length": 2})
    eventually(lambda: ch.queue_declare(q, passive=True).method.message_count == 2, timeout=6)
    assert bodies(ch, q) == [b"m4", b"m5"]


def test_policy_lower_argument_max_length_wins(ch, mgmt, vhost):
    q = ch.queue_declare(uname("pq"), exclusive=True, arguments={"x-max-length": 2}).method.queue
    mgmt.set_policy(vhost, uname("pol"), f"^{re.escape(q)}$", {"max-length": 4, "message-ttl": 60000})
    # wait until the queue listing names the policy, then check that the argument still rules
    v = urllib.parse.quote(vhost, safe="")
    eventually(lambda: (mgmt.call("GET", f"/queues/{v}/{urllib.parse.quote(q, safe='')}") or {})
               .get("policy"), message="queue listing shows the policy")
    for i in range(5):
        ch.basic_publish("", q, f"m{i}".encode())
    wait_count(ch, q, 2)
    assert bodies(ch, q) == [b"m3", b"m4"]


def test_policy_dead_letter_exchange_and_argument_precedence(ch, mgmt, vhost):
    pol_dlx, pol_dq = dead_letter_target(ch)
    arg_dlx, arg_dq = dead_letter_target(ch)
    prefix = uname("pdl")
    q1 = ch.queue_declare(prefix + "-a", exclusive=True).method.queue
    q2 = ch.queue_declare(prefix + "-b", exclusive=True,
                          arguments={"x-dead-letter-exchange": arg_dlx}).method.queue
    mgmt.set_policy(vhost, uname("pol"), f"^{re.escape(prefix)}-", {"dead-letter-exchange": pol_dlx})

    def reject_one(q):
        ch.basic_publish("", q, q.encode())
        m, _, _ = get_one(ch, q)
        ch.basic_reject(m.delivery_tag, requeue=False)

    def q1_dead_letters():
        reject_one(q1)          # dropped until the policy gives q1 a DLX
        time.sleep(0.1)
        return bodies(ch, pol_dq)
    assert eventually(q1_dead_letters) == [q1.encode()]
    time.sleep(0.5)             # the same policy reaches q2 at about the same time
    reject_one(q2)
    # the queue argument wins over the policy for the dead-letter exchange
    assert [b for _, _, b in wait_bodies(ch, arg_dq, 1)] == [q2.encode()]
    settle(ch.connection, 0.1)
    assert bodies(ch, pol_dq) == []


def test_policy_alternate_exchange(conn, mgmt, vhost):
    ch = conn.channel()
    ch.confirm_delivery()
    ae = uname("pae")
    ch.exchange_declare(ae, "fanout", auto_delete=True)
    aq = ch.queue_declare(uname("aq"), exclusive=True).method.queue
    ch.queue_bind(aq, ae)
    x = uname("px")
    ch.exchange_declare(x, "direct", auto_delete=False)
    try:
        mgmt.set_policy(vhost, uname("pol"), f"^{re.escape(x)}$", {"alternate-exchange": ae},
                        apply_to="exchanges")

        def routed_to_ae():
            try:
                ch.basic_publish(x, "nowhere", b"to-ae", mandatory=True)
                return True
            except pex.UnroutableError:
                return False
        eventually(routed_to_ae)
        assert bodies(ch, aq) == [b"to-ae"]
    finally:
        ch.exchange_delete(x)


def test_policy_message_ttl(ch, mgmt, vhost):
    q = ch.queue_declare(uname("pq"), exclusive=True).method.queue
    mgmt.set_policy(vhost, uname("pol"), f"^{re.escape(q)}$", {"message-ttl": 100})

    def expires():
        ch.basic_publish("", q, b"probe")
        ch.queue_declare(q, passive=True)
        time.sleep(0.4)
        return ch.queue_declare(q, passive=True).method.message_count == 0
    eventually(expires, interval=0)
    ch.basic_publish("", q, b"short-lived")
    ch.queue_declare(q, passive=True)       # the broker has taken it (its TTL starts there)
    time.sleep(0.4)
    ch.basic_publish("", q, b"fresh")
    assert bodies(ch, q) == [b"fresh"]


# --------------------------------------------------------------------------- x-delayed-message
def delayed_exchange(ch, type_="direct"):
    x = uname("dx")
    ch.exchange_declare(x, "x-delayed-message", auto_delete=True, arguments={"x-delayed-type": type_})
    return x


def consume_times(conn, ch, q, n, timeout=5.0):
    got = []
    ch.basic_consume(q, lambda c, m, p, b: got.append((time.monotonic(), b)), auto_ack=True)
    drain(conn, lambda: len(got) >= n, timeout=timeout)
    return got


def test_delayed_messages_arrive_by_due_time(conn, usagi_only):
    ch = conn.channel()
    x = delayed_exchange(ch)
    q = ch.queue_declare(uname("q"), exclusive=True).method.queue
    ch.queue_bind(q, x, "k")
    t0 = time.monotonic()
    ch.basic_publish(x, "k", b"late", pika.BasicProperties(headers={"x-delay": 600}))
    ch.basic_publish(x, "k", b"early", pika.BasicProperties(headers={"x-delay": 200}))
    ch.basic_publish(x, "k", b"now")
    ch.basic_publish(x, "k", b"zero", pika.BasicProperties(headers={"x-delay": 0}))
    ch.basic_publish(x, "k", b"negative", pika.BasicProperties(headers={"x-delay": -500}))
    got = consume_times(conn, ch, q, 5)
    order = [b for _, b in got]
    assert order == [b"now", b"zero", b"negative", b"early", b"late"]
    at = {b: t - t0 for t, b in got}
    # lower bounds are exact; upper ones leave room for a busy host
    assert at[b"now"] < 0.5, at
    assert 0.2 <= at[b"early"] < 1.5, at
    assert 0.6 <= at[b"late"] < 2.0, at


def test_delayed_message_routes_with_the_delayed_type(conn, usagi_only):
    ch = conn.channel()
    x = delayed_exchange(ch, "topic")
    q = ch.queue_declare(uname("q"), exclusive=True).method.queue
    ch.queue_bind(q, x, "orders.*")
    ch.basic_publish(x, "orders.new", b"yes", pika.BasicProperties(headers={"x-delay": 100}))
    ch.basic_publish(x, "invoices.new", b"no", pika.BasicProperties(headers={"x-delay": 100}))
    got = consume_times(conn, ch, q, 1)
    settle(conn, 0.3)
    assert [b for _, b in got] == [b"yes"]


def test_delayed_message_with_cc_header_is_still_delayed(conn, usagi_only):
    """The delay applies whatever the routing keys: a CC header must not bypass it."""
    ch = conn.channel()
    x = delayed_exchange(ch)
    q = ch.queue_declare(uname("q"), exclusive=True).method.queue
    q2 = ch.queue_declare(uname("q"), exclusive=True).method.queue
    ch.queue_bind(q, x, "k")
    ch.queue_bind(q2, x, "k2")
    t0 = time.monotonic()
    ch.basic_publish(x, "k", b"cc", pika.BasicProperties(headers={"x-delay": 500, "CC": ["k2"]}))
    got = consume_times(conn, ch, q, 1)
    assert got[0][0] - t0 >= 0.5, f"delivered after {got[0][0] - t0:.3f}s, x-delay was 500 ms"
    assert [b for _, _, b in wait_bodies(ch, q2, 1)] == [b"cc"]


def test_delayed_message_confirmed_at_publish(conn, usagi_only):
    ch = conn.channel()
    ch.confirm_delivery()
    x = delayed_exchange(ch)
    q = ch.queue_declare(uname("q"), exclusive=True).method.queue
    ch.queue_bind(q, x, "k")
    t0 = time.monotonic()
    # mandatory: not returned (the plugin returns it as NO_ROUTE, rabbitmq-delayed-message-exchange#7)
    ch.basic_publish(x, "k", b"d", pika.BasicProperties(headers={"x-delay": 1000}), mandatory=True)
    assert time.monotonic() - t0 < 0.5            # the confirm does not wait for the delay
    assert ch.queue_declare(q, passive=True).method.message_count == 0


def test_delayed_message_dropped_when_exchange_deleted(conn, usagi_only):
    ch = conn.channel()
    x = uname("dx")
    ch.exchange_declare(x, "x-delayed-message", arguments={"x-delayed-type": "fanout"})
    q = ch.queue_declare(uname("q"), exclusive=True).method.queue
    ch.queue_bind(q, x)
    ch.basic_publish(x, "", b"d", pika.BasicProperties(headers={"x-delay": 200}))
    ch.exchange_delete(x)
    time.sleep(0.4)
    assert bodies(ch, q) == []


def test_delayed_exchange_needs_delayed_type(conn, usagi_only):
    ch = conn.channel()
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        ch.exchange_declare(uname("dx"), "x-delayed-message")
    assert (ei.value.reply_code, ei.value.reply_text) == (
        406, "PRECONDITION_FAILED - Invalid argument, 'x-delayed-type' must be an existing exchange type")


def test_delayed_message_survives_restart(fresh_server):
    """The plugin keeps delayed messages on disk; so does Usagi (usagi/core/delayed.py)."""
    server = fresh_server()
    conn = pika.BlockingConnection(pika.URLParameters(server.url()))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.exchange_declare("dx-restart", "x-delayed-message", durable=True,
                        arguments={"x-delayed-type": "direct"})
    ch.queue_declare("dq-restart", durable=True)
    ch.queue_bind("dq-restart", "dx-restart", "k")
    ch.basic_publish("dx-restart", "k", b"later", pika.BasicProperties(
        delivery_mode=2, headers={"x-delay": 1500}))
    conn.close()
    server.stop()
    server.start()
    conn = pika.BlockingConnection(pika.URLParameters(server.url()))
    ch = conn.channel()
    try:
        [(m, p, b)] = wait_bodies(ch, "dq-restart", 1, timeout=5.0)
        assert b == b"later"
    finally:
        conn.close()
