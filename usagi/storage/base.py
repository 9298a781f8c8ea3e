"""The storage interface.

The engine calls these methods synchronously from the event loop; they only record what must
be written. `commit()` makes everything recorded so far durable and is called off the event
loop by the server's group-commit driver, many publishes to one commit. Definitions (vhosts,
users, permissions, topic permissions, durable exchanges, queues and bindings, policies,
parameters, global parameters) are small and rare; messages are many: a message is added once
and enqueued on each durable queue it reaches, each entry with the absolute time it expires at
(if it has a TTL) so that it still expires after a restart.
"""
from __future__ import annotations

from dataclasses import dataclass, field


UNKNOWN_EXPIRY = -1
"""The `expires` of an entry written before stores recorded it (a store of an older format)."""


@dataclass
class Recovered:
    """What a store gives back at start."""
    vhosts: list = field(default_factory=list)         # [(name, metadata dict)]
    users: list = field(default_factory=list)          # [dict as in definitions]
    permissions: list = field(default_factory=list)    # [dict as in definitions]
    topic_permissions: list = field(default_factory=list)   # [dict as in definitions]
    exchanges: list = field(default_factory=list)      # [dict as in definitions]
    queues: list = field(default_factory=list)         # [dict as in definitions]
    bindings: list = field(default_factory=list)       # [dict as in definitions]
    policies: list = field(default_factory=list)
    operator_policies: list = field(default_factory=list)
    parameters: list = field(default_factory=list)
    global_parameters: list = field(default_factory=list)   # [{"name": ..., "value": ...}]
    # (vhost, queue) -> [(seq, exchange, routing_key, props, body, redelivered, msg_id, expires)] in
    # queue order; expires: ms since the epoch, None for no expiry, UNKNOWN_EXPIRY if not recorded
    messages: dict = field(default_factory=dict)
    fresh: bool = True


class Store:
    """Base class and in-memory no-op behaviour. Subclasses persist."""

    durable = False
    recorded = 0      # changes recorded so far (a durable store counts them): did an operation write?
    writing_since = None    # time.perf_counter() when the write under way began (a worker thread's)

    def open(self) -> Recovered:
        return Recovered()

    def close(self, commit: bool = True):
        pass

    # ---- definitions
    def put_definition(self, kind: str, key: tuple, value: dict):
        pass

    def delete_definition(self, kind: str, key: tuple):
        pass

    # ---- messages
    def add_message(self, msg_id: int, exchange: str, routing_key: str, props: bytes, body: bytes):
        pass

    def enqueue(self, vhost: str, queue: str, seq: int, msg_id: int, expires: int | None = None):
        """Entry `seq` of a queue holds the message; `expires`: when it expires (ms since the
        epoch), None if never (for a stream: when it was appended)."""

    def add_with_entry(self, msg_id: int, exchange: str, routing_key: str, props: bytes, body: bytes,
                       vhost: str, queue: str, seq: int, expires: int | None = None):
        """add_message then enqueue, for a message not recorded before (the publish path: one call
        where a store can make it cheaper)."""
        self.add_message(msg_id, exchange, routing_key, props, body)
        self.enqueue(vhost, queue, seq, msg_id, expires)

    def add_entries(self, rows):
        """add_with_entry (no expiry), then mark_delivered where `delivered`, for each row
        (msg_id, exchange, routing_key, props, body, vhost, queue, seq, delivered) of messages not
        recorded before: the engine's staged entries, handed over at once when a commit begins."""
        for msg_id, exchange, routing_key, props, body, vhost, queue, seq, delivered in rows:
            self.add_with_entry(msg_id, exchange, routing_key, props, body, vhost, queue, seq)
            if delivered:
                self.mark_delivered(vhost, queue, seq)

    def dequeue(self, vhost: str, queue: str, seq: int, msg_id: int):
        pass

    def mark_delivered(self, vhost: str, queue: str, seq: int):
        pass

    def read_message(self, msg_id: int):
        """(exchange, routing_key, props, body) of a message the store holds (recorded, being
        written or written), or None. Called on the event loop for one message at a time, to read
        back a message that left memory (the engine bounds how many per loop turn): a durable
        store answers from what is pending or from an indexed read that no commit blocks."""
        return None

    def memory_bytes(self) -> int:
        """About how much memory the store holds (its in-memory index, its cache, writes not yet
        made), for the memory accounting."""
        return 0

    def drop_queue_messages(self, vhost: str, queue: str):
        pass

    # ---- delayed messages (x-delayed-message exchanges), written with everything else
    def add_delayed(self, row: tuple):
        """(id, due ms, vhost, exchange, message's exchange, routing key, props, body)."""

    def remove_delayed(self, delayed_id: int):
        pass

    def drop_delayed_vhost(self, vhost: str):
        pass

    def delayed_stats(self) -> tuple:
        """(rows stored, highest id stored)."""
        return (0, 0)

    def delayed_window(self, lo: int, hi: int, limit: int | None) -> list:
        """Stored delayed rows due in [lo, hi), by due time then id, at most `limit`."""
        return []

    # ---- commits
    def pending(self) -> bool:
        """Whether anything is waiting for commit()."""
        return False

    def take_batch(self):
        """What commit() would write, taken as one unit (replication sends it to followers), or
        None. Written by write_batch(), in take order."""
        return None

    def write_batch(self, batches, position: tuple | None = None):
        """Write a unit from take_batch(), with the replication position (epoch, lsn) if given."""

    def commit(self):
        """Write everything recorded so far and sync it. Runs in a worker thread."""

    def pending_summary(self) -> str:
        """What is waiting for commit(), in words (for the log when it cannot be written)."""
        return ""
