"""A vhost's default queue type applies to the queues declared in it without `x-queue-type`, as in
RabbitMQ (observed on 3.10.8): a durable, non-exclusive, non-auto-delete queue takes the default
and records it in its arguments; any other stays classic; an explicit type wins; what the type
does not allow is refused as if the client had named the type. Over AMQP and HTTP alike."""
from __future__ import annotations

import pika
import pytest

pytestmark = pytest.mark.timeout(120)


def qinfo(api, vhost, name):
    r = api.get(f"/api/queues/{vhost}/{name}")
    assert r.status == 200, (name, r.status)
    return r.json()


def test_the_vhost_default_queue_type_applies_where_rabbitmq_applies_it(mgmt, api):
    api.ok("PUT", "/api/vhosts/dqt", {"default_queue_type": "quorum"})
    api.ok("PUT", "/api/permissions/dqt/guest", {"configure": ".*", "write": ".*", "read": ".*"})
    conn = mgmt.pika(vhost="dqt")
    ch = conn.channel()
    ch.queue_declare("dq1", durable=True)
    ch.queue_declare("dq2", durable=False)
    ch.queue_declare("dq3", durable=True, auto_delete=True)
    ch.queue_declare("dq4", durable=True, exclusive=True)
    ch.queue_declare("dq5", durable=True, arguments={"x-queue-type": "classic"})
    for name, qtype, args in (("dq1", "quorum", {"x-queue-type": "quorum"}), ("dq2", "classic", {}),
                              ("dq3", "classic", {}), ("dq4", "classic", {}),
                              ("dq5", "classic", {"x-queue-type": "classic"})):
        q = qinfo(api, "dqt", name)
        assert (q["type"], q["arguments"]) == (qtype, args), name
    ch.queue_declare("dq1", durable=True)            # the redeclare takes the default too: equivalent
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare("dq1", durable=True, arguments={"x-queue-type": "classic"})
    assert e.value.reply_code == 406
    assert "inequivalent arg 'x-queue-type' for queue 'dq1' in vhost 'dqt': received 'classic' but current " \
           "is 'quorum'" in e.value.reply_text
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare("dq6", durable=True, arguments={"x-max-priority": 5})
    assert e.value.reply_code == 406
    assert e.value.reply_text == ("PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue 'dq6' in vhost "
                                  "'dqt' of queue type rabbit_quorum_queue")
    # the HTTP API declares through the same gate
    api.ok("PUT", "/api/queues/dqt/hq1", {"durable": True})
    api.ok("PUT", "/api/queues/dqt/hq2", {"durable": False})
    assert qinfo(api, "dqt", "hq1")["type"] == "quorum"
    assert qinfo(api, "dqt", "hq2")["type"] == "classic"


def test_a_queue_made_before_the_default_was_set_keeps_its_type_and_redeclares(mgmt, api):
    api.ok("PUT", "/api/vhosts/dqt2", {})
    api.ok("PUT", "/api/permissions/dqt2/guest", {"configure": ".*", "write": ".*", "read": ".*"})
    conn = mgmt.pika(vhost="dqt2")
    conn.channel().queue_declare("old", durable=True)
    api.ok("PUT", "/api/vhosts/dqt2", {"default_queue_type": "quorum"})
    conn.channel().queue_declare("old", durable=True)     # no inequivalent x-queue-type (RabbitMQ 3.13+)
    assert qinfo(api, "dqt2", "old")["type"] == "classic"
    conn.channel().queue_declare("new", durable=True)
    assert qinfo(api, "dqt2", "new")["type"] == "quorum"


@pytest.mark.parametrize("qtype", ["quorum", "stream"])
def test_a_server_named_queue_of_a_replicated_type_is_refused_as_rabbitmq_refuses_it(mgmt, api, qtype):
    api.ok("PUT", f"/api/vhosts/sn-{qtype}", {"default_queue_type": qtype})
    api.ok("PUT", f"/api/permissions/sn-{qtype}/guest", {"configure": ".*", "write": ".*", "read": ".*"})
    conn = mgmt.pika(vhost=f"sn-{qtype}")
    for kw in ({"durable": True}, {"durable": True, "arguments": {"x-queue-type": qtype}}):
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            conn.channel().queue_declare("", **kw)
        assert (e.value.reply_code, e.value.reply_text) == (
            406, f"PRECONDITION_FAILED - Cannot declare a server-named queue for type rabbit_{qtype}_queue")
    # a server-named queue the default does not apply to is declared as ever
    assert conn.channel().queue_declare("", exclusive=True).method.queue.startswith("amq.gen-")
    assert conn.channel().queue_declare("", durable=False).method.queue.startswith("amq.gen-")


def test_the_vhost_field_of_rabbitmq_3_10_sets_the_default_too(mgmt, api):
    api.ok("PUT", "/api/vhosts/v310", {"defaultqueuetype": "quorum"})
    assert api.get("/api/vhosts/v310").json()["default_queue_type"] == "quorum"
    api.ok("PUT", "/api/vhosts/v311", {"default_queue_type": "stream", "defaultqueuetype": "quorum"})
    assert api.get("/api/vhosts/v311").json()["default_queue_type"] == "stream"
    r = api.put("/api/vhosts/v312", {"defaultqueuetype": "bogus"})
    assert r.status == 400 and api.get("/api/vhosts/v312").status == 404
