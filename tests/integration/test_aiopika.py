"""aio-pika (asyncio, aiormq underneath) against a live broker.

pytest-asyncio is not required: each test runs its coroutine with asyncio.run and its own
deadline, so a hung broker fails the test rather than blocking the suite.
"""
from __future__ import annotations

import asyncio
import datetime

import aio_pika
import aiormq.exceptions as aexc
import pytest

from itutil import uname

pytestmark = pytest.mark.timeout(30)


def run(coro, timeout=15):
    async def guarded():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(guarded())


async def connect(broker):
    return await aio_pika.connect(broker.url, timeout=5)


def test_publish_and_iterate(broker):
    async def main():
        conn = await connect(broker)
        async with conn:
            ch = await conn.channel()
            await ch.set_qos(prefetch_count=5)
            q = await ch.declare_queue(uname("aq"), exclusive=True)
            for i in range(10):
                await ch.default_exchange.publish(
                    aio_pika.Message(f"m{i}".encode(), message_id=str(i),
                                     headers={"i": i}, content_type="text/plain"),
                    routing_key=q.name)
            got = []
            async with q.iterator() as it:
                async for message in it:
                    async with message.process():
                        got.append((message.body, message.message_id, message.headers["i"],
                                    message.delivery_tag, message.redelivered))
                    if len(got) == 10:
                        break
            return got

    got = run(main())
    assert [g[0] for g in got] == [f"m{i}".encode() for i in range(10)]
    assert [g[1] for g in got] == [str(i) for i in range(10)]
    assert [g[2] for g in got] == list(range(10))
    assert [g[3] for g in got] == list(range(1, 11))
    assert not any(g[4] for g in got)


def test_get_and_declare_counts(broker):
    async def main():
        conn = await connect(broker)
        async with conn:
            ch = await conn.channel()                  # publisher confirms on by default
            q = await ch.declare_queue(uname("aq"), exclusive=True)
            for i in range(3):
                await ch.default_exchange.publish(aio_pika.Message(b"x"), routing_key=q.name)
            again = await ch.declare_queue(q.name, passive=True)
            count = again.declaration_result.message_count
            first = await q.get(no_ack=False)
            await first.reject(requeue=True)
            second = await q.get(no_ack=True)
            rest = [await q.get(no_ack=True), await q.get(no_ack=True)]
            empty = await q.get(no_ack=True, fail=False)
            return count, first.redelivered, second.redelivered, len(rest), empty

    count, first_redelivered, second_redelivered, n_rest, empty = run(main())
    assert count == 3
    assert first_redelivered is False
    assert second_redelivered is True
    assert n_rest == 2
    assert empty is None


def test_exchanges_and_bindings(broker):
    async def main():
        conn = await connect(broker)
        async with conn:
            ch = await conn.channel()
            topic = await ch.declare_exchange(uname("at"), aio_pika.ExchangeType.TOPIC, auto_delete=True)
            headers_x = await ch.declare_exchange(uname("ah"), aio_pika.ExchangeType.HEADERS,
                                                  auto_delete=True)
            q1 = await ch.declare_queue(uname("aq"), exclusive=True)
            q2 = await ch.declare_queue(uname("aq"), exclusive=True)
            await q1.bind(topic, routing_key="kern.*")
            await q2.bind(headers_x, arguments={"x-match": "any", "format": "pdf", "type": "report"})
            await topic.publish(aio_pika.Message(b"k1"), routing_key="kern.crit")
            await topic.publish(aio_pika.Message(b"k2"), routing_key="kern.crit.deep")
            await headers_x.publish(aio_pika.Message(b"h1", headers={"type": "report"}), routing_key="")
            await headers_x.publish(aio_pika.Message(b"h2", headers={"type": "log"}), routing_key="")
            out1 = [(await q1.get(no_ack=True)).body, await q1.get(no_ack=True, fail=False)]
            out2 = [(await q2.get(no_ack=True)).body, await q2.get(no_ack=True, fail=False)]
            await q1.unbind(topic, routing_key="kern.*")
            await topic.delete()
            await headers_x.delete()
            return out1, out2

    out1, out2 = run(main())
    assert out1 == [b"k1", None]
    assert out2 == [b"h1", None]


def test_unroutable_mandatory_publish_is_reported(broker):
    async def main():
        conn = await connect(broker)
        async with conn:
            ch = await conn.channel(on_return_raises=True)
            try:
                await ch.default_exchange.publish(aio_pika.Message(b"lost"),
                                                  routing_key=uname("nobody"), mandatory=True)
            except aexc.DeliveryError as e:
                return e.message.body, e.frame
            return None

    result = run(main())
    assert result is not None, "unroutable mandatory message was not reported"
    body, frame = result
    assert body == b"lost"


def test_channel_errors_are_raised_with_texts(broker):
    async def main():
        conn = await connect(broker)
        async with conn:
            results = {}
            ch = await conn.channel()
            missing = uname("missing")
            try:
                await ch.declare_queue(missing, passive=True)
            except aexc.ChannelNotFoundEntity as e:
                results["404"] = (e.args, missing)
            ch = await conn.channel()
            try:
                await ch.declare_exchange("amq.reserved", aio_pika.ExchangeType.DIRECT)
            except aexc.ChannelAccessRefused as e:
                results["403"] = e.args
            ch = await conn.channel()
            name = uname("aq")
            q = await ch.declare_queue(name, auto_delete=False)
            ch2 = await conn.channel()
            try:
                await ch2.declare_queue(name, durable=True)
            except aexc.ChannelPreconditionFailed as e:
                results["406"] = (e.args, name)
            await q.delete()
            # the connection is still usable
            ch3 = await conn.channel()
            q = await ch3.declare_queue(exclusive=True)
            results["alive"] = q.name
            return results

    res = run(main())
    args, missing = res["404"]
    assert f"NOT_FOUND - no queue '{missing}' in vhost '/'" in str(args) or \
        f"NOT_FOUND - no queue '{missing}' in vhost '{broker.vhost}'" in str(args)
    assert "ACCESS_REFUSED - exchange name 'amq.reserved' contains reserved prefix 'amq.*'" in str(res["403"])
    args, name = res["406"]
    assert (f"PRECONDITION_FAILED - inequivalent arg 'durable' for queue '{name}' in vhost "
            f"'{broker.vhost}': received 'true' but current is 'false'") in str(args)
    assert res["alive"].startswith("amq.gen-")


def test_message_properties_roundtrip(broker):
    ts = datetime.datetime(2023, 3, 4, 5, 6, 7, tzinfo=datetime.timezone.utc)

    async def main():
        conn = await connect(broker)
        async with conn:
            ch = await conn.channel()
            q = await ch.declare_queue(exclusive=True)
            msg = aio_pika.Message(
                b"\x00binary\xff", content_type="application/octet-stream", content_encoding="raw",
                headers={"a": "b", "n": 1, "nested": {"x": [1, 2]}},
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT, priority=4, correlation_id="cid",
                reply_to="rq", expiration=30, message_id="mid", timestamp=ts, type="t",
                user_id="guest", app_id="aio")
            await ch.default_exchange.publish(msg, routing_key=q.name)
            return await q.get(no_ack=True)

    m = run(main())
    assert m.body == b"\x00binary\xff"
    assert m.content_type == "application/octet-stream"
    assert m.content_encoding == "raw"
    assert m.headers == {"a": "b", "n": 1, "nested": {"x": [1, 2]}}
    assert m.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert m.priority == 4
    assert m.correlation_id == "cid"
    assert m.reply_to == "rq"
    assert m.expiration == 30                 # aio-pika: seconds; on the wire "30000"
    assert m.message_id == "mid"
    assert m.timestamp == ts
    assert m.type == "t"
    assert m.user_id == "guest"
    assert m.app_id == "aio"


def test_transactions(broker):
    async def main():
        conn = await connect(broker)
        async with conn:
            ch = await conn.channel(publisher_confirms=False)
            q = await ch.declare_queue(exclusive=True)
            tx = ch.transaction()
            await tx.select()
            await ch.default_exchange.publish(aio_pika.Message(b"rb"), routing_key=q.name)
            await tx.rollback()
            await ch.default_exchange.publish(aio_pika.Message(b"ok"), routing_key=q.name)
            await tx.commit()
            first = await q.get(no_ack=True)
            second = await q.get(no_ack=True, fail=False)
            return first.body, second

    assert run(main()) == (b"ok", None)
