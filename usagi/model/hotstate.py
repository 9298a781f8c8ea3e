"""The fields of messages, queues, consumers and exchanges that every message's path reads, as a
base class of each (Message, Queue, Consumer, Exchange), so that the compiled hot path can read
them as C fields.

This module is plain Python and is the only source of these classes. As such its classes are
empty (no fields, no instance dictionary): the subclasses keep their fields as before, in
`__slots__` (Message, Consumer) or in their dictionary (Queue). `pip install` also compiles it
with Cython (setup.py) into `usagi.model._hotstate`, in which hotstate.pxd makes each class a C
struct with the fields it lists; the compiled hot path (core/fastpath.py) then reads and writes
them at a fixed offset instead of looking each one up by name, and the subclasses leave them
out of their own slots (`usagi.model.state.own_slots`). `usagi.model.state` says which form the
model uses; the compiled hot path runs only on top of the compiled form.

A field listed here must not be defined again by a subclass (a property or a class attribute of
the same name would hide the C field from Python code and not from compiled code):
tests/unit/test_hotstate.py checks every subclass.
"""
from __future__ import annotations

from ..amqp import properties as P


def encode_route(exchange, routing_key):
    """The exchange and routing key as two shortstrs."""
    e = exchange.encode("utf-8", "surrogateescape")
    r = routing_key.encode("utf-8", "surrogateescape")
    return bytes((len(e),)) + e + bytes((len(r),)) + r


class MessageState:
    """Message's fields (model/message.py), and its constructor: every publish makes one, so it
    is compiled with them (as Python code it would write each field through its descriptor)."""

    __slots__ = ()

    # no annotations on these methods' arguments: compiled, Cython would check them (a bytearray
    # body or an `exp` of None would be refused compiled and taken as pure Python)
    def __init__(self, exchange, routing_key, props, body, scan=None, msg_id=0, route=None):
        if route is None:
            route = encode_route(exchange, routing_key)
        self.route = route     # exchange and routing key as two shortstrs, as deliver/return carry them
        self.exchange = exchange
        self.routing_key = routing_key
        self.props = props
        self.body = body
        self.scan = scan if scan is not None else P.scan(props)
        self.id = msg_id
        self.refs = 0          # entries of durable queues holding this message in the store
        self.stored = False    # written (or queued for writing) to the message store
        self._headers = None
        self.bcc = None        # BCC routing keys, kept after the header is stripped (for dead lettering)
        self.confirm = None    # (channel, publish seq) while its publisher confirm waits for a commit


class QueueState:
    """Queue's fields that the hot path reads (model/queue.py), and the append of an entry, which
    every message that waits in a queue goes through; its other fields and methods stay in Queue
    (its dictionary)."""

    __slots__ = ()

    def push(self, msg, exp=0):
        """A new entry at the tail; `exp`: when it expires (ms since the epoch), 0 for never."""
        self.seq += 1
        self.published += 1
        self._append(self.seq, msg, exp)
        return self.seq

    def _append(self, seq, msg, exp=0):
        """At the tail: in memory, or paged out (Queue._page_out) once the queue is over its
        memory budget (PriorityQueue has its own)."""
        ready = self.ready
        if self.paged or len(ready) >= self.cap_count or self.ready_bytes >= self.cap_bytes:
            self._page_out(seq, msg, exp)
        else:
            ready.append((seq, msg))
            self.ready_bytes += len(msg.body)
            if exp:
                self._timed(seq, msg, exp)


class ConsumerState:
    """Consumer's fields that the hot path reads (model/queue.py)."""

    __slots__ = ()


class ExchangeState:
    """Exchange's fields that the hot path reads (model/exchanges/base.py); its other fields stay
    in its dictionary."""

    __slots__ = ()
