"""Output waiting for the loop turn's flush goes out before a timer's work.

The event loop runs due timers before the callbacks the last turn's reads queued (the flush among
them), so a delivery made just before the 25 ms tick or the upkeep tick used to wait for that
tick's work; at 10,000 msg/s that was most of the slowest deliveries. Here a real connection (the
engine, sans-IO) has a delivery pending, each tick is run by hand, and the order in which the
delivery was written and the tick's work began is checked.
"""
from __future__ import annotations

import asyncio

import pytest

from usagi.amqp import methods as M
from usagi.amqp.frames import PROTOCOL_HEADER, content_frames, method_frame
from usagi.core.broker import Broker
from usagi.core.connection import Connection
from usagi.server.app import Server
from usagi.storage.memory import MemoryStore

from support.sansio import Transport


def opened(broker, events):
    conn = Connection(broker, Transport(lambda data: events.append(("written", len(data)))), ("127.0.0.1", 1), ("127.0.0.1", 2))
    conn.connection_made()
    conn.data_received(PROTOCOL_HEADER
                       + method_frame(0, M.ConnectionStartOk({}, "PLAIN", b"\x00guest\x00guest").encode())
                       + method_frame(0, M.ConnectionTuneOk(2047, 131072, 0).encode())
                       + method_frame(0, M.ConnectionOpen("/").encode())
                       + method_frame(1, M.ChannelOpen().encode()))
    broker.flush_output()
    return conn


@pytest.mark.parametrize("tick", ["_fast_tick", "_tick"])
def test_a_pending_delivery_is_written_before_the_ticks_work(tick):
    events = []
    broker = Broker(store=MemoryStore())
    broker.bootstrap()
    broker.on_flush_needed = lambda: None          # the flush a loop turn would run: not run here
    publisher, consumer = opened(broker, []), opened(broker, events)
    publisher.data_received(method_frame(1, M.QueueDeclare(queue="q").encode()))
    consumer.data_received(method_frame(1, M.BasicConsume(queue="q", consumer_tag="c", no_ack=True).encode()))
    broker.flush_output()
    events.clear()
    publisher.data_received(method_frame(1, M.BasicPublish(0, "", "q").encode())
                            + b"".join(content_frames(1, 60, b"\x00\x00", b"hello", 131072)))
    assert consumer in broker.flush_pending and not events      # the delivery waits for a flush

    # what each tick does first that is its own work
    broker.memory_tick = lambda: events.append(("tick work", tick))
    broker.run_dirty = lambda: events.append(("tick work", tick))
    loop = asyncio.new_event_loop()
    try:
        server = Server(broker)
        server.loop = loop
        getattr(server, tick)()
    finally:
        loop.close()
    assert events and events[0][0] == "written", events
    assert ("tick work", tick) in events
    assert not broker.flush_pending
