"""Queues: ready messages in arrival order, requeued ones back at their original place.

A queue holds (seq, message) pairs. `ready` is FIFO; `returned` is a heap of requeued pairs,
which always come before anything in `ready` (they were taken from its head earlier), so a
requeued message goes back to its original position. Consumers are served round-robin.
"""
from __future__ import annotations

import heapq
from collections import deque


class Consumer:
    __slots__ = ("tag", "channel", "queue", "no_ack", "exclusive", "prefetch", "unacked",
                 "arguments", "priority", "active", "prefix")

    def __init__(self, tag, channel, queue, no_ack, exclusive, prefetch, arguments):
        self.tag = tag
        self.channel = channel
        self.queue = queue
        self.no_ack = no_ack
        self.exclusive = exclusive
        self.prefetch = prefetch     # 0 = unlimited
        self.unacked = 0
        self.arguments = arguments
        self.priority = 0
        self.active = True
        self.prefix = b""            # basic.deliver's class, method and consumer tag, pre-encoded


class Queue:
    def __init__(self, vhost: str, name: str, durable: bool = False, exclusive_owner=None,
                 auto_delete: bool = False, arguments: dict | None = None):
        self.vhost = vhost
        self.name = name
        self.durable = durable
        self.exclusive_owner = exclusive_owner   # the owning connection, or None
        self.auto_delete = auto_delete
        self.arguments = arguments or {}
        self.ready: deque = deque()
        self.returned: list = []     # heap of (seq, message), redelivered
        self.ready_bytes = 0
        self.unacked = 0
        self.consumers: list = []
        self.rr = 0                  # round-robin position
        self.seq = 0
        self.bindings: list = []     # Binding objects whose destination is this queue
        self.deleted = False
        self.had_consumer = False
        # statistics
        self.published = 0
        self.delivered = 0
        self.acked = 0
        self.redelivered_count = 0

    # -- contents
    @property
    def message_count(self) -> int:
        return len(self.ready) + len(self.returned)

    def push(self, msg) -> int:
        self.seq += 1
        self.ready.append((self.seq, msg))
        self.ready_bytes += len(msg.body)
        self.published += 1
        return self.seq

    def next_seq(self) -> int:
        self.seq += 1
        self.published += 1
        return self.seq

    def pop(self):
        """(seq, message, redelivered) of the head, or None."""
        if self.returned:
            seq, msg = heapq.heappop(self.returned)
            self.ready_bytes -= len(msg.body)
            return seq, msg, True
        if self.ready:
            seq, msg = self.ready.popleft()
            self.ready_bytes -= len(msg.body)
            return seq, msg, False
        return None

    def requeue(self, seq: int, msg):
        heapq.heappush(self.returned, (seq, msg))
        self.ready_bytes += len(msg.body)

    def purge(self) -> list:
        msgs = [m for _, m in self.returned] + [m for _, m in self.ready]
        self.returned = []
        self.ready.clear()
        self.ready_bytes = 0
        return msgs

    def peek_all(self) -> list:
        """(seq, message, redelivered) in delivery order, without taking anything."""
        out = [(s, m, True) for s, m in sorted(self.returned)]
        out += [(s, m, False) for s, m in self.ready]
        return out

    # -- consumers
    def add_consumer(self, c: Consumer):
        self.consumers.append(c)
        self.had_consumer = True

    def remove_consumer(self, c: Consumer):
        try:
            i = self.consumers.index(c)
        except ValueError:
            return
        del self.consumers[i]
        if i < self.rr:
            self.rr -= 1
        if self.rr >= len(self.consumers):
            self.rr = 0

    def has_exclusive_consumer(self) -> bool:
        return any(c.exclusive for c in self.consumers)
