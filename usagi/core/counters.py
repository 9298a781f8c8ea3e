"""Node-wide counters that the Prometheus metrics report and that no queue, channel or connection
keeps: login attempts by protocol, messages dead-lettered by reason, and the sizes of the messages
received (a histogram with RabbitMQ's buckets).

They live on the broker (`Counters`, made once) so they survive the objects they count: a counter
goes up, never down, as Prometheus expects. Counting costs an increment or two per event; the one
on the publish path (Channel._route_publish: `sizes`) is a C bisect and two list increments.
"""
from __future__ import annotations

# the upper bounds of rabbitmq_message_size_bytes's buckets (bytes), as RabbitMQ 4.1's, and +Inf
MSG_SIZE_BOUNDS = (100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 50_000_000, 100_000_000)
SUM = len(MSG_SIZE_BOUNDS) + 1          # the histogram's slot holding the sum of sizes

QUEUE_TYPES = {"classic": "rabbit_classic_queue", "quorum": "rabbit_quorum_queue",
               "stream": "rabbit_stream_queue"}
# a queue's counters (model/queue.py) that node-wide totals sum, deleted queues' included
QUEUE_COUNTERS = ("published", "delivered", "delivered_auto", "get_ack", "get_auto", "get_empty", "acked",
                  "redelivered_count")


class Counters:
    __slots__ = ("auth", "deaths", "sizes", "retired")

    def __init__(self):
        self.auth = {"amqp091": [0, 0], "http": [0, 0]}     # protocol -> [succeeded, failed]
        self.deaths: dict = {}          # (queue kind, dead-letter strategy, reason) -> messages
        self.sizes = [0] * (SUM + 1)    # counts per bucket (the last one: over the last bound), then the sum
        self.retired: dict = {}         # queue kind -> QUEUE_COUNTERS summed over deleted queues

    def login(self, protocol: str, ok: bool):
        a = self.auth.get(protocol)
        if a is None:
            a = self.auth[protocol] = [0, 0]
        a[0 if ok else 1] += 1

    def retire_queue(self, q):
        r = self.retired.get(q.kind)
        if r is None:
            r = self.retired[q.kind] = [0] * len(QUEUE_COUNTERS)
        for i, name in enumerate(QUEUE_COUNTERS):
            r[i] += getattr(q, name)

    def death(self, q, reason: str, n: int = 1):
        """n messages left queue q for `reason`: dead-lettered (a DLX is set), or dropped
        ("disabled": RabbitMQ counts those too)."""
        strategy = "disabled" if q.dlx is None else "at_most_once"
        key = (q.kind, strategy, reason)
        self.deaths[key] = self.deaths.get(key, 0) + n

