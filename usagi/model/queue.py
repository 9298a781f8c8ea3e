"""Queues: ready messages in arrival order, requeued ones back at their original place.

A queue holds (seq, message) pairs. `ready` is FIFO; `returned` is a heap of requeued pairs,
which always come before anything in `ready` (they were taken from its head earlier), so a
requeued message goes back to its original position. Consumers are served round-robin.

Features that RabbitMQ configures with x- arguments or policies (TTL, length limits, dead
lettering, priorities, single active consumer, delivery limits) are read by `configure` from the
queue's effective arguments. Expired or dropped entries are removed lazily: their seq goes into
`dead` and `pop` skips them, so expiry never waits for the head of the queue.
"""
from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from collections import OrderedDict, deque

from .paging import Pager

# Paging of long plain queues (see paging.py): where segment files go (None = never page) and the
# in-memory budget of one queue before the rest goes to disk.
PAGING = {"dir": None, "bytes": 32 * 1024 * 1024, "count": 50_000, "batch": 4096}


# Where a consumer that cannot take more waits, out of its queue's rotation (Consumer.parked)
RUNNING = 0          # in the rotation (or waiting for single active consumer)
PARKED_OWN = 1       # its own prefetch is full: back when one of its deliveries is settled
PARKED_CHANNEL = 2   # its connection's output is full or its channel's flow is held: back on Channel.kick
PARKED_GLOBAL = 3    # its channel's global prefetch is full: back on Channel.kick, as many as have room


class Consumer:
    __slots__ = ("tag", "channel", "queue", "no_ack", "exclusive", "prefetch", "unacked",
                 "arguments", "priority", "active", "prefix", "offset", "parked")

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
        self.offset = 0              # next stream offset to read (stream queues)
        self.parked = RUNNING


class Rotation:
    """Consumers by priority, highest first, in arrival order within a priority: round-robin takes
    the first of the highest level and puts it back at the end of its level (as RabbitMQ's queue
    does). Every operation is O(1), or O(log L + L) for a level that appears or empties (L the
    number of distinct priorities in use, a list insert or delete): adding or cancelling thousands
    of consumers costs time linear in their number."""

    __slots__ = ("levels", "prios", "ring0", "size")

    def __init__(self):
        self.ring0 = OrderedDict()           # priority 0, always there (the only level in most queues)
        self.levels: dict = {0: self.ring0}  # priority -> OrderedDict(consumer -> None)
        self.prios: list = []                # negated priorities of the non-empty levels, ascending
        self.size = 0

    def __len__(self):
        return self.size

    def add(self, c):
        p = c.priority
        ring = self.levels.get(p)
        if ring is None:
            ring = self.levels[p] = OrderedDict()
        if not ring:
            insort(self.prios, -p)
        ring[c] = None
        self.size += 1

    def discard(self, c) -> bool:
        p = c.priority
        ring = self.levels.get(p)
        if ring is None or c not in ring:
            return False
        del ring[c]
        self.size -= 1
        if not ring:
            del self.prios[bisect_left(self.prios, -p)]
            if p:
                del self.levels[p]
        return True

    def first(self):
        """The consumer round-robin would take next (highest priority, longest waiting), or None."""
        if not self.prios:
            return None
        for c in self.levels[-self.prios[0]]:
            return c


def _int_arg(v):
    if isinstance(v, bool) or not isinstance(v, int):
        return None
    return v


class Queue:
    kind = "classic"

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
        # consumers (see "consumers" below): all of them, and those that can be given messages
        self.consumers: dict = {}    # Consumer -> None, in arrival order
        self.rotation = Rotation()   # active consumers that have room, in round-robin order
        self.ring = self.rotation.ring0   # its priority-0 level: every consumer when none has a priority
        self.waiting = Rotation()    # single active consumer: the others, in the order they take over
        self.parked_by: dict = {}    # channel -> {kind: OrderedDict(consumer -> None)} (PARKED_CHANNEL/GLOBAL)
        self.by_channel: dict = {}   # channel -> number of its consumers here
        self.exclusive_consumers = 0
        self.priority_consumers = 0  # consumers with a priority other than 0
        self.seq = 0
        self.bindings: list = []     # Binding objects whose destination is this queue
        self.deleted = False
        self.had_consumer = False
        self.last_used = 0.0         # for x-expires (monotonic seconds)
        # lazily removed entries and per-entry state
        self.dead: set = set()       # seqs removed from the middle (expired), skipped by pop
        self.dead_bytes = 0
        self.deadlines: list = []    # heap of (expires_at_ms, seq, message)
        self.expiry: dict = {}       # seq -> expires_at_ms
        self.delivery_counts: dict = {}   # seq -> times returned to the queue
        self.held_expiry: dict = {}  # seq -> expires_at_ms of delivered, unacked entries
        self.pager = None            # paged-out messages (plain queues only)
        self.paged = 0
        # features, set by configure()
        self.policy = None
        self.operator_policy = None
        self.effective: dict = {}
        self.message_ttl = None      # ms
        self.expires = None          # ms
        self.max_length = None
        self.max_length_bytes = None
        self.overflow = "drop-head"
        self.dlx = None
        self.dlrk = None
        self.delivery_limit = None
        self.single_active = False
        self.limited = False         # any length limit
        self.consumer_priorities = False
        # statistics
        self.published = 0
        self.delivered = 0
        self.acked = 0
        self.redelivered_count = 0
        self.configure(self.arguments)

    # -- configuration
    def configure(self, effective: dict):
        """Apply effective arguments: x- arguments merged with policies (see broker.apply_policies)."""
        self.effective = effective
        self.message_ttl = _int_arg(effective.get("x-message-ttl"))
        self.expires = _int_arg(effective.get("x-expires"))
        self.max_length = _int_arg(effective.get("x-max-length"))
        self.max_length_bytes = _int_arg(effective.get("x-max-length-bytes"))
        ov = effective.get("x-overflow")
        self.overflow = ov if ov in ("drop-head", "reject-publish", "reject-publish-dlx") else "drop-head"
        dlx = effective.get("x-dead-letter-exchange")
        self.dlx = dlx.decode() if isinstance(dlx, bytes) else dlx
        dlrk = effective.get("x-dead-letter-routing-key")
        self.dlrk = dlrk.decode() if isinstance(dlrk, bytes) else dlrk
        self.delivery_limit = _int_arg(effective.get("x-delivery-limit"))
        self.single_active = effective.get("x-single-active-consumer") is True
        self.limited = self.max_length is not None or self.max_length_bytes is not None
        # a plain queue takes the engine's fast path: no limits, TTL or special type
        self.simple = (not self.limited and self.message_ttl is None and type(self) is Queue)

    # -- contents
    @property
    def message_count(self) -> int:
        return len(self.ready) + len(self.returned) - len(self.dead) + self.paged

    @property
    def message_bytes(self) -> int:
        return self.ready_bytes - self.dead_bytes + (self.pager.bytes if self.pager is not None else 0)

    def push(self, msg) -> int:
        self.seq += 1
        self.published += 1
        self._append(self.seq, msg)
        return self.seq

    def _append(self, seq: int, msg):
        """At the tail: in memory, or paged out once the queue is over its memory budget."""
        if self.paged or (self.simple and PAGING["dir"] and (len(self.ready) >= PAGING["count"] or
                                                            self.ready_bytes >= PAGING["bytes"])):
            if self.pager is None:
                self.pager = Pager(PAGING["dir"])
            self.pager.append(seq, msg)
            self.paged += 1
        else:
            self.ready.append((seq, msg))
            self.ready_bytes += len(msg.body)

    def page_in(self):
        """Bring the next batch of paged-out messages back into memory."""
        from .message import Message
        got = self.pager.read(PAGING["batch"], Message.from_page)
        self.paged -= len(got)
        if got:
            self.ready.extend(got)
            self.ready_bytes += sum(len(m.body) for _, m in got)
        if not self.paged:
            self.pager.drop()
            self.pager = None

    def next_seq(self) -> int:
        self.seq += 1
        self.published += 1
        return self.seq

    def pop(self):
        """(seq, message, redelivered) of the head, or None."""
        dead = self.dead
        while True:
            if self.returned:
                seq, msg = heapq.heappop(self.returned)
                red = True
            elif self.ready:
                seq, msg = self.ready.popleft()
                red = False
            elif self.paged:
                self.page_in()
                continue
            else:
                return None
            self.ready_bytes -= len(msg.body)
            if dead and seq in dead:
                dead.discard(seq)
                self.dead_bytes -= len(msg.body)
                continue
            return seq, msg, red

    def peek(self):
        """The head without taking it: (seq, message, redelivered) or None."""
        item = self.pop()
        if item is not None:
            seq, msg, red = item
            self.unpop(seq, msg, red)
        return item

    def unpop(self, seq, msg, redelivered):
        if redelivered:
            heapq.heappush(self.returned, (seq, msg))
        else:
            self.ready.appendleft((seq, msg))
        self.ready_bytes += len(msg.body)

    def requeue(self, seq: int, msg):
        heapq.heappush(self.returned, (seq, msg))
        self.ready_bytes += len(msg.body)

    def restore(self, seq: int, msg, redelivered: bool):
        """Put back an entry recovered from the store, in order."""
        if seq > self.seq:
            self.seq = seq
        if redelivered:
            self.requeue(seq, msg)
        else:
            self._append(seq, msg)

    def remove(self, seq: int, msg):
        """Take an entry out from anywhere (expiry): it is skipped when it reaches the head."""
        self.dead.add(seq)
        self.dead_bytes += len(msg.body)

    def purge(self) -> list:
        dead = self.dead
        if self.pager is not None:
            from .message import Message
            while self.paged:
                got = self.pager.read(PAGING["batch"], Message.from_page)
                if not got:
                    break
                self.paged -= len(got)
                self.ready.extend(got)
            self.pager.drop()
            self.pager = None
            self.paged = 0
        msgs = [m for s, m in self.returned if s not in dead] + [m for s, m in self.ready if s not in dead]
        self.ready.clear()
        self._emptied()
        return msgs

    def _emptied(self):
        self.returned = []
        self.ready_bytes = 0
        self.dead.clear()
        self.dead_bytes = 0
        self.deadlines = []
        self.expiry.clear()

    def peek_all(self) -> list:
        """(seq, message, redelivered) in delivery order, without taking anything."""
        dead = self.dead
        out = [(s, m, True) for s, m in sorted(self.returned) if s not in dead]
        out += [(s, m, False) for s, m in self.ready if s not in dead]
        return out

    # -- consumers
    # Every consumer is in `consumers`. An active one is in `rotation` while it can take messages;
    # one that cannot (the engine finds out when it comes round) is parked until it has room again
    # (`park`, `unpark`, `unpark_channel`), so a delivery never walks past consumers that are full.
    # With single active consumer, the others wait in `waiting`. All of this is O(1) per consumer
    # added, cancelled, parked or unparked (see Rotation for priorities).
    def add_consumer(self, c: Consumer):
        self.consumers[c] = None
        self.had_consumer = True
        ch = c.channel
        self.by_channel[ch] = self.by_channel.get(ch, 0) + 1
        if c.exclusive:
            self.exclusive_consumers += 1
        if c.priority:
            self.priority_consumers += 1
            self.consumer_priorities = True
        c.parked = RUNNING
        if self.single_active and len(self.consumers) - len(self.waiting) > 1:
            c.active = False          # another is active: this one waits its turn
            self.waiting.add(c)
        else:
            self.rotation.add(c)

    def remove_consumer(self, c: Consumer):
        if c not in self.consumers:
            return
        del self.consumers[c]
        ch = c.channel
        n = self.by_channel.get(ch, 0) - 1
        if n > 0:
            self.by_channel[ch] = n
        else:
            self.by_channel.pop(ch, None)
        if c.exclusive:
            self.exclusive_consumers -= 1
        if c.priority:
            self.priority_consumers -= 1
            self.consumer_priorities = self.priority_consumers > 0
        if not c.active:
            self.waiting.discard(c)
        elif c.parked == RUNNING:
            self.rotation.discard(c)
        elif c.parked != PARKED_OWN:
            self._unpark_entry(c)
        c.parked = RUNNING
        if self.single_active and c.active and self.consumers:
            nxt = self.waiting.first()
            if nxt is not None:
                self.waiting.discard(nxt)
                nxt.active = True
                self.rotation.add(nxt)

    def has_exclusive_consumer(self) -> bool:
        return self.exclusive_consumers > 0

    def park(self, c: Consumer, kind: int):
        """c came round in the rotation but cannot take a message: out of the rotation until it has
        room (kind says what it waits for)."""
        self.rotation.discard(c)
        c.parked = kind
        if kind != PARKED_OWN:
            kinds = self.parked_by.get(c.channel)
            if kinds is None:
                kinds = self.parked_by[c.channel] = {}
            waiting = kinds.get(kind)
            if waiting is None:
                waiting = kinds[kind] = OrderedDict()
            waiting[c] = None

    def unpark(self, c: Consumer) -> bool:
        """c's own prefetch has room again (one of its deliveries was settled): back at the end of
        the rotation. False if it was not parked for that."""
        if c.parked != PARKED_OWN or c not in self.consumers:
            return False
        c.parked = RUNNING
        self.rotation.add(c)
        return True

    def _unpark_entry(self, c: Consumer):
        kinds = self.parked_by.get(c.channel)
        if kinds is not None:
            waiting = kinds.get(c.parked)
            if waiting is not None:
                waiting.pop(c, None)
                if not waiting:
                    del kinds[c.parked]
                    if not kinds:
                        del self.parked_by[c.channel]

    def unpark_channel(self, ch, room) -> tuple:
        """ch can take messages again: its consumers parked for the channel go back to the rotation,
        in the order they were parked; of those waiting for its global prefetch, at most `room`
        (None: all). Returns (how many went back, whether some are still parked here)."""
        kinds = self.parked_by.get(ch)
        if not kinds:
            return 0, False
        back = 0
        rotation = self.rotation
        waiting = kinds.pop(PARKED_CHANNEL, None)
        if waiting:
            for c in waiting:
                c.parked = RUNNING
                rotation.add(c)
            back += len(waiting)
        waiting = kinds.get(PARKED_GLOBAL)
        if waiting:
            n = len(waiting) if room is None else min(room, len(waiting))
            for _ in range(n):
                c, _ = waiting.popitem(last=False)
                c.parked = RUNNING
                rotation.add(c)
            back += n
            if not waiting:
                del kinds[PARKED_GLOBAL]
        if not kinds:
            del self.parked_by[ch]
            return back, False
        return back, True


class PriorityQueue(Queue):
    """x-max-priority: one FIFO per priority level; higher levels are served first.

    A requeued message goes back into its own level, ahead of that level's ready messages (at
    its original place), as in RabbitMQ: a newer message of a higher priority still comes
    first. `returned` is one heap of (-level, seq, message) over all levels."""

    def __init__(self, *a, max_priority: int = 0, **kw):
        self.max_priority = max_priority
        self.levels = [deque() for _ in range(max_priority + 1)]
        super().__init__(*a, **kw)

    def _level(self, msg) -> int:
        p = msg.scan.priority
        if not p:
            return 0
        return p if p <= self.max_priority else self.max_priority

    @property
    def message_count(self) -> int:
        return sum(len(lv) for lv in self.levels) + len(self.returned) - len(self.dead)

    def push(self, msg) -> int:
        self.seq += 1
        self.levels[self._level(msg)].append((self.seq, msg))
        self.ready_bytes += len(msg.body)
        self.published += 1
        return self.seq

    def pop(self):
        dead = self.dead
        levels = self.levels
        while True:
            # the highest level with a ready message, above the best requeued one's level
            floor = -self.returned[0][0] if self.returned else -1
            for p in range(len(levels) - 1, floor, -1):
                lv = levels[p]
                if lv:
                    seq, msg = lv.popleft()
                    red = False
                    break
            else:
                if not self.returned:
                    return None
                _, seq, msg = heapq.heappop(self.returned)
                red = True
            self.ready_bytes -= len(msg.body)
            if dead and seq in dead:
                dead.discard(seq)
                self.dead_bytes -= len(msg.body)
                continue
            return seq, msg, red

    def unpop(self, seq, msg, redelivered):
        if redelivered:
            heapq.heappush(self.returned, (-self._level(msg), seq, msg))
        else:
            self.levels[self._level(msg)].appendleft((seq, msg))
        self.ready_bytes += len(msg.body)

    def requeue(self, seq: int, msg):
        heapq.heappush(self.returned, (-self._level(msg), seq, msg))
        self.ready_bytes += len(msg.body)

    def restore(self, seq: int, msg, redelivered: bool):
        if seq > self.seq:
            self.seq = seq
        if redelivered:
            self.requeue(seq, msg)
        else:
            self.levels[self._level(msg)].append((seq, msg))
            self.ready_bytes += len(msg.body)

    @property
    def ready(self):
        # the ready entries of every level, highest priority first (for length limits and listing)
        out = deque()
        for lv in reversed(self.levels):
            out.extend(lv)
        return out

    @ready.setter
    def ready(self, value):
        pass

    def purge(self) -> list:
        dead = self.dead
        msgs = [m for _, s, m in self.returned if s not in dead]
        for lv in reversed(self.levels):
            msgs += [m for s, m in lv if s not in dead]
            lv.clear()
        self._emptied()
        return msgs

    def peek_all(self) -> list:
        dead = self.dead
        returned = sorted(self.returned, key=lambda e: (e[0], e[1]))
        out = []
        i = 0
        for p in range(len(self.levels) - 1, -1, -1):
            while i < len(returned) and -returned[i][0] == p:     # requeued ones first in a level
                _, s, m = returned[i]
                i += 1
                if s not in dead:
                    out.append((s, m, True))
            out += [(s, m, False) for s, m in self.levels[p] if s not in dead]
        return out

    def drop_head_entry(self):
        """For drop-head overflow: the lowest-priority oldest entry goes first, as in RabbitMQ."""
        return self.pop()
