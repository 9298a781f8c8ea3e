"""Queues: ready messages in arrival order, requeued ones back at their original place.

A queue holds (seq, message) pairs. `ready` is FIFO; `returned` is a heap of requeued pairs,
which always come before anything in `ready` (they were taken from its head earlier), so a
requeued message goes back to its original position. Consumers are served round-robin.

Features that RabbitMQ configures with x- arguments or policies (TTL, length limits, dead
lettering, priorities, single active consumer, delivery limits) are read by `configure` from the
queue's effective arguments. Expired or dropped entries are removed lazily: their seq goes into
`dead` and `pop` skips them, so expiry never waits for the head of the queue.

Memory: every kind of queue keeps at most its in-memory budget (PAGING: a count and bytes of
bodies) of ready messages in memory; past it, what arrives is paged out to segment files in order
(paging.py) and read back in batches as the head drains. Entries with a TTL carry their deadline
into the segment, and the segment its earliest one, so paged entries expire on time without any
structure per entry in memory: `deadlines` and `expiry` hold in-memory entries only. A requeued
entry or an unacknowledged delivery whose body left memory is a `Spilled` stub (paging.py), read
back when it is delivered again. A plain queue under its budget does exactly what it did without
paging: `_append` compares two integers.
"""
from __future__ import annotations

import itertools

import heapq
from bisect import bisect_left, insort
from collections import OrderedDict, deque

from .paging import Pager, SpillCount, Spilled, heap_compact
from .state import ConsumerState, QueueState, own_slots

# Paging (see paging.py): where segment and spill files go (None = never page), the in-memory
# budget of one queue before the rest goes to disk, and how many entries are read back at once.
PAGING = {"dir": None, "bytes": 32 * 1024 * 1024, "count": 50_000, "batch": 4096}
UNLIMITED = 1 << 62
PEEK_LIMIT = 10_000      # entries peek_all reads from paged-out segments (management listings)

# What the memory accounting counts per entry besides the bytes of its body (estimates for
# CPython 3.11 on 64 bits, measured with tracemalloc): an in-memory entry of a queue (the
# (seq, message) tuple, the Message with its properties and route bytes, the deque slot);
# the deadline of an entry with a TTL (its expiry dict entry and heap tuple).
ENTRY_BYTES = 400
TIMED_BYTES = 180


def budget() -> tuple:
    """(count, bytes) a queue keeps in memory before it pages: PAGING's, or unlimited without a
    paging directory."""
    if not PAGING["dir"]:
        return UNLIMITED, UNLIMITED
    return PAGING["count"], PAGING["bytes"]


def _load(msg):
    if type(msg) is Spilled:
        return msg.load()
    return msg


class _StoredRef:
    """A paged-out entry that a purge removed: what the engine needs to dequeue it from the store."""

    __slots__ = ("id",)
    stored = True

    def __init__(self, msg_id):
        self.id = msg_id


class Purged:
    """The messages a purge took out: in-memory ones (messages or stubs) and, for a durable queue
    that stays, references to the paged-out ones that are in the store; its length counts the
    paged-out ones too, which are never read back into memory."""

    __slots__ = ("msgs", "paged", "ids")

    def __init__(self, msgs: list, paged: int = 0, ids=()):
        self.msgs = msgs
        self.paged = paged
        self.ids = ids

    def __len__(self):
        return len(self.msgs) + self.paged

    def __iter__(self):
        yield from self.msgs
        for i in self.ids:
            yield _StoredRef(i)


# Where a consumer that cannot take more waits, out of its queue's rotation (Consumer.parked)
RUNNING = 0          # in the rotation (or waiting for single active consumer)
PARKED_OWN = 1       # its own prefetch is full: back when one of its deliveries is settled
PARKED_CHANNEL = 2   # its connection's output is full or its channel's flow is held: back on Channel.kick
PARKED_GLOBAL = 3    # its channel's global prefetch is full: back on Channel.kick, as many as have room


class Consumer(ConsumerState):
    __slots__ = own_slots(ConsumerState, ("tag", "channel", "queue", "no_ack", "exclusive", "prefetch",
                                          "unacked", "arguments", "priority", "active", "prefix", "offset",
                                          "parked"))

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


class Queue(QueueState):
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
        self.returned: list = []     # heap of (seq, message or Spilled stub), redelivered
        self.ready_bytes = 0         # bodies of ready and returned entries (a stub's: its size)
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
        self.deadlines: list = []    # heap of (expires_at_ms, seq) of in-memory entries (lazily cleaned)
        self.expiry: dict = {}       # seq -> (expires_at_ms, message) of in-memory entries with a TTL
        self.delivery_counts: dict = {}   # seq -> times returned to the queue
        self.held_expiry: dict = {}  # seq -> expires_at_ms of delivered, unacked entries
        self.pager = None            # paged-out ready messages
        self.paged = 0               # how many (the pager's live count)
        self.cap_count, self.cap_bytes = budget()   # the in-memory budget
        self.spilled = SpillCount()  # stubs of this queue alive (in `returned` or unacked records)
        self.returned_stubs = 0      # ... of them in `returned`, and their bytes
        self.returned_stub_bytes = 0
        self.unacked_avg = 0         # mean body size of its unacked deliveries (see Broker.examine_unacked)
        self.ttl_due = None          # the deadline the engine's expiry timer has this queue down for
        self.expires_due = None      # the same for x-expires
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
        self.delivered = 0           # by basic.consume and basic.get, of which:
        self.delivered_auto = 0      # ... by basic.consume with automatic acks
        self.get_ack = 0             # ... by basic.get with manual acks
        self.get_auto = 0            # ... by basic.get with automatic acks
        self.get_empty = 0           # basic.get that found it empty
        self.acked = 0               # settled: acked by a consumer, or delivered with automatic acks
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

    def ram_count(self) -> int:
        """Entries whose message is in memory (ready and returned, dead ones until they go)."""
        return len(self.ready) + len(self.returned) - self.returned_stubs

    def ram_bytes(self) -> int:
        return self.ready_bytes - self.returned_stub_bytes

    def paged_stats(self) -> tuple:
        """(count, bytes, persistent count, persistent bytes) of the paged-out ready entries."""
        p = self.pager
        if p is None:
            return 0, 0, 0, 0
        return p.count, p.bytes, p.persistent, p.persistent_bytes

    # push and _append (an entry at the tail, in memory while the queue is under its budget) are
    # QueueState's (model/hotstate.py)

    def _page_out(self, seq: int, msg, exp: int):
        """An entry at the tail once the queue is over its memory budget: to its segment files."""
        if self.pager is None:
            self.pager = Pager(PAGING["dir"])
        self.pager.append(seq, msg, exp)
        self.paged += 1

    def _timed(self, seq: int, msg, exp: int):
        """An in-memory entry expires at `exp`. The heap is cleaned lazily (an entry delivered
        meanwhile leaves its (exp, seq) behind) and rebuilt when stale entries outnumber the live."""
        self.expiry[seq] = (exp, msg)
        dl = self.deadlines
        heapq.heappush(dl, (exp, seq))
        if len(dl) > 2 * len(self.expiry) + 1024:
            self.deadlines = heap_compact(dl, self.expiry)

    def take_expiry(self, seq: int):
        """The deadline of an entry leaving the queue (None if it has none)."""
        e = self.expiry.pop(seq, None)
        return e[0] if e is not None else None

    def _drop_pager(self):
        if self.pager is not None:
            self.pager.drop()
            self.pager = None
        self.paged = 0

    def _took(self, got):
        """Entries read back from the pager join the in-memory head, in order."""
        ready = self.ready
        n = 0
        for seq, msg, exp in got:
            ready.append((seq, msg))
            n += len(msg.body)
            if exp:
                self._timed(seq, msg, exp)
        self.ready_bytes += n

    def _room(self) -> tuple:
        """(count, bytes) a batch read back may bring: PAGING's batch, within the room the budget
        leaves besides what is in memory, unacknowledged messages included (at least a few
        entries, so that reading goes on in batches)."""
        ram_unacked = self.unacked - (self.spilled.n - self.returned_stubs)
        return (max(64, min(PAGING["batch"], self.cap_count - self.ram_count() - ram_unacked)),
                max(64 * 1024, self.cap_bytes - self.ram_bytes() - ram_unacked * self.unacked_avg))

    def page_in(self):
        """Bring the next batch of paged-out messages back into memory."""
        n, b = self._room()
        got = self.pager.read(n, b)
        self._took(got)
        self.paged = self.pager.count
        if not got or not self.paged:     # (nothing readable though counted: never loop on it)
            self._drop_pager()

    def page_out(self, keep_count: int, keep_bytes: int) -> int:
        """Page out the in-memory tail of `ready` (in front of what is already paged, so order
        holds) until the queue holds at most keep_count entries and keep_bytes bytes in memory
        (ram_count, ram_bytes). Returns how many went."""
        out = self._take_tail(self.ready, keep_count, keep_bytes)
        if out:
            if self.pager is None:
                self.pager = Pager(PAGING["dir"])
            self.pager.prepend(out)
            self.paged = self.pager.count
        return len(out)

    def _take_tail(self, dq, keep_count: int, keep_bytes: int, level: bool = False) -> list:
        """Take entries off the tail of `dq` (ready entries; `level`: a priority level, counted in
        level_count) until the queue holds at most keep_count entries and keep_bytes bytes in
        memory: [(seq, msg, deadline or 0)] in queue order, without the dead ones (let go)."""
        dead = self.dead
        out = []
        while dq and (self.ram_count() > keep_count or self.ram_bytes() > keep_bytes):
            seq, msg = dq.pop()
            if level:
                self.level_count -= 1
            size = len(msg.body)
            self.ready_bytes -= size
            if dead and seq in dead:
                dead.discard(seq)
                self.dead_bytes -= size
                continue
            e = self.expiry.pop(seq, None)
            out.append((seq, msg, e[0] if e is not None else 0))
        out.reverse()
        return out

    def next_seq(self) -> int:
        self.seq += 1
        self.published += 1
        return self.seq

    def _returned_pop(self):
        seq, msg = heapq.heappop(self.returned)
        if type(msg) is Spilled:
            self.returned_stubs -= 1
            self.returned_stub_bytes -= msg.size
            self.ready_bytes -= msg.size
        else:
            self.ready_bytes -= len(msg.body)
        return seq, msg

    def pop(self):
        """(seq, message, redelivered) of the head, or None. The message of a requeued entry may
        be a Spilled stub (the engine reads it back before delivering it)."""
        dead = self.dead
        while True:
            if self.returned:
                seq, msg = self._returned_pop()
                red = True
            elif self.ready:
                seq, msg = self.ready.popleft()
                self.ready_bytes -= len(msg.body)
                red = False
            elif self.paged:
                self.page_in()
                continue
            else:
                return None
            if dead and seq in dead:
                dead.discard(seq)
                self.dead_bytes -= msg.size
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
            self._returned_push(seq, msg)
        else:
            self.ready.appendleft((seq, msg))
            self.ready_bytes += len(msg.body)

    def _returned_push(self, seq, msg):
        heapq.heappush(self.returned, (seq, msg))
        if type(msg) is Spilled:
            self.returned_stubs += 1
            self.returned_stub_bytes += msg.size
            self.ready_bytes += msg.size
        else:
            self.ready_bytes += len(msg.body)

    def requeue(self, seq: int, msg, exp=None):
        """A delivered entry comes back (to its place: before anything ready); `exp`: its deadline."""
        self._returned_push(seq, msg)
        if exp is not None:
            self._timed(seq, msg, exp)

    def restore(self, seq: int, msg, redelivered: bool, exp=None):
        """Put back an entry recovered from the store, in order."""
        if seq > self.seq:
            self.seq = seq
        if redelivered:
            self.requeue(seq, msg, exp)
        else:
            self._append(seq, msg, exp or 0)

    def restore_stubs(self, entries: list):
        """Put back, redelivered, (seq, Spilled stub, expires or None) entries recovered after
        every entry restored so far (their seqs ascending and above all of them): appended in
        bulk, the heap of returned entries stays a heap. Plain queues only (a priority queue's
        returned entries carry their level: `restore` one by one)."""
        if not entries:
            return
        ret = self.returned
        size = 0
        for seq, stub, exp in entries:
            ret.append((seq, stub))
            size += stub.size
            if exp is not None:
                self._timed(seq, stub, exp)
        self.returned_stubs += len(entries)
        self.returned_stub_bytes += size
        self.ready_bytes += size
        last = entries[-1][0]
        if last > self.seq:
            self.seq = last

    def remove(self, seq: int, msg):
        """Take an entry out from anywhere (expiry): it is skipped when it reaches the head."""
        self.dead.add(seq)
        self.dead_bytes += msg.size

    def trim_dead(self):
        """Let go of dead entries at the heads of `ready` and `returned` (their memory with them)."""
        dead = self.dead
        ready = self.ready
        while dead and ready and ready[0][0] in dead:
            seq, msg = ready.popleft()
            self.ready_bytes -= len(msg.body)
            dead.discard(seq)
            self.dead_bytes -= len(msg.body)
        while dead and self.returned and self._returned_head() in dead:
            seq, msg = self._returned_pop()
            dead.discard(seq)
            self.dead_bytes -= msg.size

    def _returned_head(self) -> int:
        return self.returned[0][0]

    def next_due(self):
        """The earliest deadline of an entry still in the queue, in memory or paged (None: none)."""
        dl = self.deadlines
        ex = self.expiry
        best = None
        while dl:
            e, s = dl[0]
            v = ex.get(s)
            if v is None or v[0] != e:
                heapq.heappop(dl)
                continue
            best = e
            break
        if self.pager is not None:
            d = self.pager.due()
            if d is not None and (best is None or d < best):
                best = d
        return best

    def expire_due(self, now: int, budget: int) -> list:
        """Take out entries whose deadline has passed, wherever they are: at most `budget` of them.
        Returns [(seq, message or stub)] for the engine to dead-letter and forget."""
        out = []
        dl = self.deadlines
        ex = self.expiry
        while dl and len(out) < budget and dl[0][0] <= now:
            e, s = heapq.heappop(dl)
            v = ex.get(s)
            if v is None or v[0] != e:
                continue          # delivered or expired meanwhile
            del ex[s]
            self.remove(s, v[1])
            out.append((s, v[1]))
        if len(out) < budget and self.paged:
            out += self._pager_expire(now, budget - len(out))
        self.trim_dead()
        return out

    def _pager_expire(self, now, budget) -> list:
        got = self.pager.expire(now, budget)
        self.paged = self.pager.count
        if not self.paged:
            self._drop_pager()
        return got

    def purge(self) -> Purged:
        dead = self.dead
        msgs = [m for s, m in self.returned if s not in dead] + [m for s, m in self.ready if s not in dead]
        ids = ()
        paged = self.paged
        if self.pager is not None:
            if self.durable and not self.deleted:
                ids = self.pager.stored_ids()     # their store entries go; a deleted queue drops all
            self._drop_pager()
        self.ready.clear()
        self._emptied()
        return Purged(msgs, paged, ids)

    def _emptied(self):
        self.returned = []
        self.returned_stubs = 0
        self.returned_stub_bytes = 0
        self.ready_bytes = 0
        self.dead.clear()
        self.dead_bytes = 0
        self.deadlines = []
        self.expiry.clear()

    def peek_all(self, limit: int | None = None) -> list:
        """(seq, message, redelivered) in delivery order, without taking anything: the in-memory
        entries and up to PEEK_LIMIT paged-out ones (spilled messages read back); the first
        `limit` of them only, walking no further than those (a peek at the head of a long queue
        costs what it returns)."""
        dead = self.dead

        returned = self.returned
        returned = _heap_in_order(returned) if limit is not None else sorted(returned, key=_seq_key)

        def entries():
            for s, m in returned:
                if s not in dead:
                    yield s, _load(m), True
            for s, m in self.ready:
                if s not in dead:
                    yield s, m, False
            if self.pager is not None:
                n = PEEK_LIMIT if limit is None else min(limit, PEEK_LIMIT)
                for s, m, _e in self.pager.peek(n):
                    yield s, m, False
        return list(itertools.islice((e for e in entries() if e[1] is not None), limit))

    def contents(self) -> tuple:
        """(persistent count, persistent bytes) of the ready entries, in memory and paged out: a
        walk over the in-memory ones (at most the budget, and the requeued ones)."""
        dead = self.dead
        n = b = 0
        for entries in (self.returned, self.ready):
            for e in entries:
                m = e[-1]
                if m.scan.delivery_mode == 2 and e[-2] not in dead:
                    n += 1
                    b += m.size
        _c, _b, pn, pb = self.paged_stats()
        return n + pn, b + pb

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


def _seq_key(e):
    return e[-2]


def _heap_in_order(heap: list, key=_seq_key):
    """The entries of a heap ordered by `key` (_seq_key by default: the key the heap is ordered
    by), smallest first, read without sorting it: the first k cost O(k log k), whatever the
    heap's size."""
    if not heap:
        return
    n = len(heap)
    frontier = [(key(heap[0]), 0)]
    while frontier:
        _k, i = heapq.heappop(frontier)
        yield heap[i]
        for j in (2 * i + 1, 2 * i + 2):
            if j < n:
                heapq.heappush(frontier, (key(heap[j]), j))


def _level_seq_key(e):
    """A priority queue's requeued entry (-level, seq, message): highest level, then oldest."""
    return e[0], e[1]


class PriorityQueue(Queue):
    """x-max-priority: one FIFO per priority level; higher levels are served first.

    A requeued message goes back into its own level, ahead of that level's ready messages (at
    its original place), as in RabbitMQ: a newer message of a higher priority still comes
    first. `returned` is one heap of (-level, seq, message) over all levels.

    Paging: the queue's budget covers all levels together; past it, each level pages on its own
    (one pager per level, made when needed), so a level's order holds and a newer message of a
    higher level still comes first, read back from that level's pager."""

    def __init__(self, *a, max_priority: int = 0, **kw):
        self.max_priority = max_priority
        self.levels = [deque() for _ in range(max_priority + 1)]
        self.pagers = [None] * (max_priority + 1)
        self.level_count = 0          # entries in memory in all levels
        super().__init__(*a, **kw)

    def _level(self, msg) -> int:
        p = msg.scan.priority
        if not p:
            return 0
        return p if p <= self.max_priority else self.max_priority

    @property
    def message_count(self) -> int:
        return self.level_count + len(self.returned) - len(self.dead) + self.paged

    @property
    def message_bytes(self) -> int:
        return self.ready_bytes - self.dead_bytes + sum(p.bytes for p in self.pagers if p is not None)

    def ram_count(self) -> int:
        return self.level_count + len(self.returned) - self.returned_stubs

    def paged_stats(self) -> tuple:
        out = [0, 0, 0, 0]
        for p in self.pagers:
            if p is not None:
                out[0] += p.count
                out[1] += p.bytes
                out[2] += p.persistent
                out[3] += p.persistent_bytes
        return tuple(out)

    def _recount(self):
        self.paged = sum(p.count for p in self.pagers if p is not None)

    def _append(self, seq: int, msg, exp: int = 0):
        lvl = self._level(msg)
        pg = self.pagers[lvl]
        if pg is not None or self.level_count >= self.cap_count or self.ready_bytes >= self.cap_bytes:
            if pg is None:
                pg = self.pagers[lvl] = Pager(PAGING["dir"])
            pg.append(seq, msg, exp)
            self.paged += 1
        else:
            self.levels[lvl].append((seq, msg))
            self.level_count += 1
            self.ready_bytes += len(msg.body)
            if exp:
                self._timed(seq, msg, exp)

    def _page_in(self, lvl: int):
        pg = self.pagers[lvl]
        n, b = self._room()
        got = pg.read(n, b)
        lv = self.levels[lvl]
        for seq, msg, exp in got:
            lv.append((seq, msg))
            self.ready_bytes += len(msg.body)
            if exp:
                self._timed(seq, msg, exp)
        self.level_count += len(got)
        if not got or not pg.count:
            pg.drop()
            self.pagers[lvl] = None
        self._recount()

    def _drop_pager(self):
        for p in self.pagers:
            if p is not None:
                p.drop()
        self.pagers = [None] * len(self.levels)
        self.paged = 0

    def page_out(self, keep_count: int, keep_bytes: int) -> int:
        """Page out the in-memory tails of the levels, lowest levels first."""
        went = 0
        for lvl, lv in enumerate(self.levels):
            if self.ram_count() <= keep_count and self.ram_bytes() <= keep_bytes:
                break
            out = self._take_tail(lv, keep_count, keep_bytes, level=True)
            if out:
                pg = self.pagers[lvl]
                if pg is None:
                    pg = self.pagers[lvl] = Pager(PAGING["dir"])
                pg.prepend(out)
                went += len(out)
        self._recount()
        return went

    def _returned_pop(self):
        _, seq, msg = heapq.heappop(self.returned)
        if type(msg) is Spilled:
            self.returned_stubs -= 1
            self.returned_stub_bytes -= msg.size
            self.ready_bytes -= msg.size
        else:
            self.ready_bytes -= len(msg.body)
        return seq, msg

    def _returned_push(self, seq, msg):
        heapq.heappush(self.returned, (-self._level(msg), seq, msg))
        if type(msg) is Spilled:
            self.returned_stubs += 1
            self.returned_stub_bytes += msg.size
            self.ready_bytes += msg.size
        else:
            self.ready_bytes += len(msg.body)

    def _returned_head(self) -> int:
        return self.returned[0][1]

    def pop(self):
        dead = self.dead
        levels = self.levels
        pagers = self.pagers
        while True:
            # the highest level with a ready message, above the best requeued one's level
            floor = -self.returned[0][0] if self.returned else -1
            for p in range(len(levels) - 1, floor, -1):
                lv = levels[p]
                if not lv and self.paged and pagers[p] is not None:
                    self._page_in(p)
                if lv:
                    seq, msg = lv.popleft()
                    self.level_count -= 1
                    self.ready_bytes -= len(msg.body)
                    red = False
                    break
            else:
                if not self.returned:
                    return None
                seq, msg = self._returned_pop()
                red = True
            if dead and seq in dead:
                dead.discard(seq)
                self.dead_bytes -= msg.size
                continue
            return seq, msg, red

    def unpop(self, seq, msg, redelivered):
        if redelivered:
            self._returned_push(seq, msg)
        else:
            self.levels[self._level(msg)].appendleft((seq, msg))
            self.level_count += 1
            self.ready_bytes += len(msg.body)

    def trim_dead(self):
        dead = self.dead
        for lv in self.levels:
            while dead and lv and lv[0][0] in dead:
                seq, msg = lv.popleft()
                self.level_count -= 1
                self.ready_bytes -= len(msg.body)
                dead.discard(seq)
                self.dead_bytes -= len(msg.body)
        while dead and self.returned and self._returned_head() in dead:
            seq, msg = self._returned_pop()
            dead.discard(seq)
            self.dead_bytes -= msg.size

    def next_due(self):
        best = super().next_due()       # (the in-memory deadlines: a priority queue has no self.pager)
        for pg in self.pagers:
            if pg is not None:
                d = pg.due()
                if d is not None and (best is None or d < best):
                    best = d
        return best

    def _pager_expire(self, now, budget) -> list:
        out = []
        for lvl, pg in enumerate(self.pagers):
            if pg is None or len(out) >= budget:
                continue
            out += pg.expire(now, budget - len(out))
            if not pg.count:
                pg.drop()
                self.pagers[lvl] = None
        self._recount()
        return out

    @property
    def ready(self):
        # the ready entries of every level, highest priority first (for listing)
        out = deque()
        for lv in reversed(self.levels):
            out.extend(lv)
        return out

    @ready.setter
    def ready(self, value):
        pass

    def purge(self) -> Purged:
        dead = self.dead
        msgs = [m for _, s, m in self.returned if s not in dead]
        for lv in reversed(self.levels):
            msgs += [m for s, m in lv if s not in dead]
            lv.clear()
        self.level_count = 0
        paged = self.paged
        ids = []
        if self.durable and not self.deleted:
            for pg in self.pagers:
                if pg is not None:
                    ids += pg.stored_ids()
        self._drop_pager()
        self._emptied()
        return Purged(msgs, paged, ids)

    def peek_all(self, limit: int | None = None) -> list:
        """As Queue.peek_all, level by level, highest first; with a limit, walking no further than
        the entries it returns (the requeued ones read in heap order, not sorted)."""
        dead = self.dead
        returned = iter(sorted(self.returned, key=_level_seq_key) if limit is None
                        else _heap_in_order(self.returned, _level_seq_key))
        nxt = next(returned, None)
        out = []
        budget = PEEK_LIMIT
        for p in range(len(self.levels) - 1, -1, -1):
            while nxt is not None and -nxt[0] == p:        # requeued ones first in a level
                _, s, m = nxt
                nxt = next(returned, None)
                if s not in dead:
                    m = _load(m)
                    if m is not None:
                        out.append((s, m, True))
                        if limit is not None and len(out) >= limit:
                            return out
            for s, m in self.levels[p]:
                if s not in dead:
                    out.append((s, m, False))
                    if limit is not None and len(out) >= limit:
                        return out
            pg = self.pagers[p]
            if pg is not None and budget > 0:
                want = budget if limit is None else min(budget, limit - len(out))
                got = pg.peek(want)
                budget -= len(got)
                out += [(s, m, False) for s, m, _e in got]
                if limit is not None and len(out) >= limit:
                    return out[:limit]
        return out

    def contents(self) -> tuple:
        dead = self.dead
        n = b = 0
        for e in self.returned:
            m = e[2]
            if m.scan.delivery_mode == 2 and e[1] not in dead:
                n += 1
                b += m.size
        for lv in self.levels:
            for s, m in lv:
                if m.scan.delivery_mode == 2 and s not in dead:
                    n += 1
                    b += m.size
        _c, _b, pn, pb = self.paged_stats()
        return n + pn, b + pb

    def drop_head_entry(self):
        """For drop-head overflow: the lowest-priority oldest entry goes first, as in RabbitMQ."""
        return self.pop()
