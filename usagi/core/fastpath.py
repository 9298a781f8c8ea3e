"""The hot path of publish -> route -> deliver -> ack, in one module so that it can be compiled.

Every message of a busy broker goes through these few functions, so they are written to do as
little as possible per message: a connection's input is scanned for frames in place, a publish
whose header and body came in the same read is handled in one go, a channel remembers the last
publish it parsed, and a delivery is written as one byte string. Everything unusual (a frame that
is incomplete or broken, a state change, a property that needs a check, a queue with features) is
left to the general code, which these functions call.

This module is plain Python and is the only source of these functions. When a C compiler is at
hand, `pip install` also compiles it with Cython (setup.py): the variable annotations below give
Cython C types and mean nothing to Python; fastpath.pxd turns ConnectionState, ChannelState,
BrokerState and Unacked into C structs (the base classes of Connection, Channel and Broker), takes
those of messages, queues, consumers and exchanges from the model (model/hotstate.pxd: the
annotations MessageState, QueueState, ConsumerState and ExchangeState name them, which is why
this source never imports those names), and holds the one routine that exists only compiled
(`_deliver_frames`, the bytes of a delivery written in place, used under `if cython.compiled`;
the join below is its pure-Python twin). `usagi.core.hot` says which form runs (USAGI_PURE_PYTHON=1
forces this source); compiled, it runs only on the compiled form of the model's fields.

A variable annotated with one of those classes is type-checked when assigned, and its declared
fields are then read at their offset; a field it does not declare (`q.kind`, `q.ready`) is looked
up by name as before. None may be assigned to it, but a field must never be read through it
while it is None (compiled code does not check): every such read below is behind a test.

Why Cython, and why this way (16 B autoack in process, `benchmarks/hotpath.py`, µs of CPU per
message, Python 3.11; see BENCHMARKS.md): the path as it was took 4.0; the same modules compiled
unchanged with Cython took 4.1-4.8, because CPython 3.11 specialises an attribute read of a plain
object to a few instructions while compiled code without types looks it up in the dictionary; this
module as pure Python takes 2.9; compiled by mypyc without C types (mypyc compiles functions that
cannot be bound as methods and wants the whole import graph typed) 3.8-4.2; compiled by Cython
with the state of connections, channels and deliveries as C fields, 1.6-1.8. Hand-written C would
reach the same fields only through the same object protocol, and would be a second source. The
model's fields as C fields too took the path from 3.3-3.5 µs to 2.7-2.9 on a slower day (autoack;
manual acks 3.9-4.0 to 3.2-3.3), the pure-Python form unchanged (see BENCHMARKS.md).

These functions are installed as methods of Connection, Channel and the engine
(`Connection._fast`, `Channel.fast_publish`, `Channel.deliver`, `Broker.enqueue_plain`, ...), so
both forms serve the same callers; tests/test_fastpath_diff.py feeds the same bytes through them
and through the general path and compares what comes out.
"""
from __future__ import annotations

import struct
from bisect import bisect_left as _size_bucket
from time import perf_counter

from ..amqp import errors as E
from ..amqp import properties as P
from ..amqp.errors import ChannelError
from ..model.message import Message
from ..model.queue import PARKED_OWN, Queue
from .channel_common import _END, _FH, _QB, _with_delivery_count
from .counters import MSG_SIZE_BOUNDS
from .counters import SUM as SIZE_SUM

try:
    import cython
except ImportError:            # Cython is needed only to compile this module, never to run it
    class cython:              # noqa: N801 - stands in for the module when it is not installed
        compiled = False

INPUT_BUDGET = 256      # frames handled per connection per loop turn before yielding to others
THROTTLED_BUDGET = 24   # ... when its publishes queue up behind consumers that have a backlog
TURN_SECONDS = 0.002    # ... and at most this much time: frames differ in cost (a publish to a
#                         thousand queues, a declare under many policies), so a turn is also cut
#                         by the clock, read every TIME_CHECK frames on the hot path, every frame
#                         on the general one. Each connection's turn costs others at most this.
TIME_CHECK = 16
OPEN = 5                # Connection.state when open (connection.py)

_FH_unpack = _FH.unpack_from
_HHQ_unpack = struct.Struct(">HHQ").unpack_from
_QB_pack = _QB.pack
_FH_pack = _FH.pack
_MID_pack = struct.Struct(">BBHIHHQ").pack     # end of the method frame, then a content header's head
_BODY_pack = struct.Struct(">BBHI").pack       # end of the header frame, then a body frame's head
_PUBLISH_HEAD = b"\x00\x3c\x00\x28"
_ACK_HEAD = b"\x00\x3c\x00\x50"
_REPLY_TO_PREFIX = "amq.rabbitmq.reply-to."

class ConnectionState:
    """What the hot path reads and writes of a connection (the base of core.connection.Connection).
    Compiled, these are C fields (fastpath.pxd), read without a dictionary lookup; as pure Python
    the class is empty and they are ordinary attributes."""


class ChannelState:
    """The same for a channel (the base of core.channel.Channel)."""


class BrokerState:
    """The same for the engine (the base of core.broker.Broker)."""


class Unacked:
    """A delivery waiting for its ack, in its channel's `unacked` (a C struct when compiled)."""

    __slots__ = ("tag", "queue", "seq", "msg", "consumer")

    def __init__(self, tag, queue, seq, msg, consumer):
        self.tag = tag
        self.queue = queue
        self.seq = seq
        self.msg = msg
        self.consumer = consumer


SCANS: dict = {}     # content-header property bytes -> (Scan, needs checks); producers repeat them
SCANS_MAX = 4096     # entries before the cache starts afresh
STAGED_MAX = 2048    # persistent entries staged at most (DeliveryMixin.save_staged)
SCAN_MAX_BYTES = 96  # longer property lists are scanned per message (they are rarely repeated)


def scan_props(props):
    """(Scan, whether the properties need a check at publish) of a content header's properties:
    from the cache when a producer repeats them, as producers do."""
    cached = SCANS.get(props)
    if cached is not None:
        return cached
    scan = P.scan(props)
    special = (scan.user_id is not None or scan.expiration is not None or scan.reply_to is not None
               or (scan.headers_span is not None and (b"\x02CC" in props or b"\x03BCC" in props)))
    cached = (scan, special)
    if len(props) <= SCAN_MAX_BYTES:
        if len(SCANS) >= SCANS_MAX:
            SCANS.clear()
        SCANS[props] = cached
    return cached


def parse_publish(payload) -> tuple:
    """(exchange, routing key, the two as shortstrs, flag bits) of a basic.publish payload."""
    try:
        n = payload[6]
        off = 7 + n
        k = payload[off]
        end = off + 1 + k
        bits = payload[end]
    except IndexError:
        raise E.SyntaxError_("basic.publish method frame truncated", None, 60, 40) from None
    try:
        exchange = payload[7:off].decode() if n else ""
        routing_key = payload[off + 1:end].decode() if k else ""
    except UnicodeDecodeError:
        exchange = payload[7:off].decode("utf-8", "surrogateescape")
        routing_key = payload[off + 1:end].decode("utf-8", "surrogateescape")
    return exchange, routing_key, bytes(payload[6:end]), bits


# ---------------------------------------------------------------------------- input
def fast_input(conn: ConnectionState, data):
    """Connection._fast: frames parsed in place, and a publish whose header and body frames came
    in the same read handled in one go. Anything unusual (an incomplete or broken frame, a state
    change) is left to the general reader: the bytes not consumed are returned."""
    ch: ChannelState
    reader = conn.reader
    buf = reader._buf
    if buf:
        buf = buf + data
        reader._buf = b""
    else:
        buf = data
    if type(buf) is not bytes:
        buf = bytes(buf)
    b: bytes = buf
    n: cython.Py_ssize_t = len(b)
    off: cython.Py_ssize_t = 0
    end: cython.Py_ssize_t
    hoff: cython.Py_ssize_t
    hend: cython.Py_ssize_t
    boff: cython.Py_ssize_t
    bend: cython.Py_ssize_t
    ftype: cython.int
    chnum: cython.int
    size: cython.Py_ssize_t
    hsize: cython.Py_ssize_t
    bsize: cython.Py_ssize_t
    fmax: cython.Py_ssize_t = reader.frame_max
    max_msg: cython.Py_ssize_t = conn.broker.config.max_message_size
    budget: cython.int = INPUT_BUDGET
    channels = conn.channels
    conn.throttled = False
    while n - off >= 7:
        if cython.compiled:
            ftype = b[off]
            chnum = (b[off + 1] << 8) | b[off + 2]
            size = b[off + 3]            # widened before the shift: a size may use all 32 bits
            size = (size << 24) | (b[off + 4] << 16) | (b[off + 5] << 8) | b[off + 6]
        else:
            ftype, chnum, size = _FH_unpack(b, off)
        end = off + 7 + size
        if size > fmax or end >= n or b[end] != 206:
            break
        budget -= 1
        if budget < 0 or (conn.throttled and budget < INPUT_BUDGET - THROTTLED_BUDGET) or \
                (not budget % TIME_CHECK and perf_counter() - conn.turn_start > TURN_SECONDS):
            # enough for one turn: let other connections (consumers, their acks) run first
            conn.yielded = True
            break
        if ftype == 1 and size >= 4 and b[off + 7] == 0 and b[off + 8] == 60 and b[off + 9] == 0:
            mid = b[off + 10]
            if mid == 40:                                   # basic.publish
                ch = channels.get(chnum)
                if ch is not None and not ch.state and not ch.content_expected and not ch.body_expected:
                    hoff = end + 1
                    if n - hoff >= 21 and b[hoff] == 2:
                        if cython.compiled:
                            hsize = b[hoff + 3]
                            hsize = (hsize << 24) | (b[hoff + 4] << 16) | (b[hoff + 5] << 8) | b[hoff + 6]
                            ok = ((b[hoff + 1] << 8) | b[hoff + 2]) == chnum
                        else:
                            _t, hch, hsize = _FH_unpack(b, hoff)
                            ok = hch == chnum
                        hend = hoff + 7 + hsize
                        if ok and 14 <= hsize <= fmax and hend < n and b[hend] == 206:
                            cls, _w, bsize = _HHQ_unpack(b, hoff + 7)
                            if cls == 60 and not _w and bsize <= max_msg:
                                if bsize == 0:
                                    publish(ch, b[off + 7:end], b[hoff + 19:hend], b"")
                                    off = hend + 1
                                    continue
                                boff = hend + 1
                                if n - boff >= 7 and b[boff] == 3:
                                    if cython.compiled:
                                        size = b[boff + 3]
                                        size = (size << 24) | (b[boff + 4] << 16) | (b[boff + 5] << 8) | b[boff + 6]
                                        ok = ((b[boff + 1] << 8) | b[boff + 2]) == chnum
                                    else:
                                        _t, bch, size = _FH_unpack(b, boff)
                                        ok = bch == chnum
                                    bend = boff + 7 + size
                                    if ok and size == bsize and size <= fmax and bend < n and b[bend] == 206:
                                        publish(ch, b[off + 7:end], b[hoff + 19:hend], b[boff + 7:bend])
                                        off = bend + 1
                                        continue
            elif mid == 80 and size == 13:                  # basic.ack
                ch = channels.get(chnum)
                if ch is not None and not ch.state and not ch.content_expected and not ch.body_expected \
                        and ch.held is None:
                    tag = int.from_bytes(b[off + 11:off + 19], "big")
                    ack(ch, tag, b[off + 19] & 1)
                    off = end + 1
                    continue
        if (ftype != 1 and ftype != 2 and ftype != 3 and ftype != 8) or (ftype == 1 and size < 4) \
                or (ftype == 8 and size):
            break
        conn.handle_frames(((ftype, chnum, b[off + 7:end]),))
        off = end + 1
        if conn.state != OPEN or conn.holder is not None:
            break
    return b[off:] if off else b


def ack(ch: ChannelState, tag, multiple):
    """basic.ack on the hot path (Channel.basic_ack, as Channel.handle calls it)."""
    try:
        items = take(ch, tag, multiple)
    except ChannelError as e:
        if not e.class_id:
            e.class_id, e.method_id = 60, 80
        ch.fail(e)
        return
    if ch.tx:
        ch.tx_acks.append((items, None))
    else:
        settle_items(ch, items, None)


def take(ch: ChannelState, tag, multiple) -> list:
    """Channel._take: the unacknowledged deliveries an ack, nack or reject names, taken out."""
    unacked: dict = ch.unacked
    if multiple:
        if tag == 0:
            items = list(unacked.values())
            unacked.clear()
            return items
        if tag not in unacked:
            raise ChannelError(f"unknown delivery tag {tag}", E.PRECONDITION_FAILED)
        items = []
        for t, u in unacked.items():      # tags are in delivery order
            if t > tag:
                break
            items.append(u)
        for u in items:
            del unacked[u.tag]
        return items
    u = unacked.pop(tag, None)
    if u is None:
        raise ChannelError(f"unknown delivery tag {tag}", E.PRECONDITION_FAILED)
    return [u]


def settle_items(ch: ChannelState, items, requeue):
    """Channel._settle: requeue=None: ack; True: back to the queue; False: discard (or dead-letter)."""
    u: Unacked
    c: ConsumerState  # noqa: F821 (model/hotstate.pxd, compiled only)
    q: QueueState  # noqa: F821
    broker: BrokerState = ch.broker
    touched = {}
    for u in items:
        q = u.queue
        c = u.consumer
        if c is not None:
            c.unacked -= 1
            if c.parked == PARKED_OWN:
                broker.consumer_room(c)
        q.unacked -= 1
        if requeue is None:
            settle(broker, q, u.seq, u.msg)
        elif requeue:
            broker.requeue(q, u.seq, u.msg)
        else:
            broker.reject(q, u.seq, u.msg)
        touched[id(q)] = q
    if requeue is None:
        ch.acked += len(items)
        broker.stats["ack"] += len(items)
    elif requeue:
        for q in touched.values():
            broker.check_returned(q)      # a burst of requeues may take a queue over its budget
    if ch.global_prefetch:
        ch.kick()
    else:
        for q in touched.values():
            broker.mark_dirty(q)


def settle(broker: BrokerState, q: QueueState, seq, msg):  # noqa: F821 (QueueState: model/hotstate.pxd)
    """Broker.settle: a delivery was acknowledged, the queue no longer holds the message."""
    if type(q) is not Queue and q.kind == "stream":
        q.acked += 1
        broker.mark_dirty(q)
        return
    if q.held_expiry:
        q.held_expiry.pop(seq, None)
    if q.delivery_counts:
        q.delivery_counts.pop(seq, None)
    if msg.stored and q.durable:
        broker.unstore(q, seq, msg)
        if type(msg) is Message:            # not a stub of a paged message (model/paging.Spilled)
            msg.refs -= 1
            if msg.refs == 0 and msg.confirm is not None:
                confirm_consumed(broker, msg)
    q.acked += 1


def confirm_consumed(broker, msg):
    """Every stored entry of a message whose publisher confirm waits for a commit was acknowledged:
    the consumers have it, nothing is left to make durable, so it is confirmed now (as RabbitMQ
    confirms a persistent message once it is persisted or consumed from every queue). Its commit,
    when it comes, skips it (Channel.on_commit)."""
    ch, seq = msg.confirm
    msg.confirm = None
    ch.confirm_early(seq)


# ---------------------------------------------------------------------------- publish
def publish(ch: ChannelState, payload, props, body):
    """Channel.fast_publish: basic.publish with its header and body, all arrived together. The
    common case (a known exchange, properties that need no check, the default exchange to a plain
    queue) is handled here; the rest by Channel._complete, as if the frames had come one by one."""
    conn: ConnectionState = ch.conn
    memo: tuple
    broker: BrokerState
    msg: MessageState  # noqa: F821 (model/hotstate.pxd, compiled only)
    q: QueueState  # noqa: F821
    x: ExchangeState  # noqa: F821
    conn.publishing = True
    memo = ch.pub_memo
    if memo is None or memo[0] != payload or memo[5].deleted:
        memo = _remember(ch, payload)
        if memo is None:
            ch._pub = parse_publish(payload)
            ch._props = props
            ch._complete(body)
            return
    cached = SCANS.get(props)
    if cached is None or cached[1]:
        ch._pub = memo[1:5]
        ch._props = props
        ch._complete(body)
        return
    broker = ch.broker
    x = memo[5]
    if memo[7] and broker.users.topic_permissions:
        ch._pub = memo[1:5]
        ch._props = props
        ch._complete(body)
        return
    scan = cached[0]
    routing_key = memo[2]
    msg = Message(memo[1], routing_key, props, body, scan, broker.next_msg_id, memo[3])
    broker.next_msg_id += 1
    bits = memo[4]
    if ch.tx:
        ch.tx_publishes.append((x, msg, bits & 1))
        return
    if not memo[6] or scan.headers_span is not None:
        if not memo[8] or scan.headers_span is not None or not _publish_fanout(ch, conn, broker, x, msg):
            ch._route_publish(x, msg, bits & 1)
        return
    # the default exchange: the queue named by the routing key (Channel._route_publish)
    x.publish_in += 1
    q = ch.vhost.queues.get(routing_key)
    ch.published += 1
    stats = broker.stats
    stats["publish"] += 1
    count_size(ch._sizes, len(body))
    rejected = False
    if q is not None:
        x.publish_out += 1
        if q.simple:
            if not enqueue_plain(broker, q, msg, True) and q.consumers:
                # consumers are behind: let them catch up (credit flow, in effect)
                conn.throttled = True
        elif not broker.enqueue(q, msg):
            rejected = True
    elif bits & 1:
        ch._send_return(msg, E.NO_ROUTE, "NO_ROUTE")
        stats["return_unroutable"] += 1
        ch.returned += 1
        x.returned += 1
    else:
        stats["drop_unroutable"] += 1
        ch.dropped += 1
        x.dropped += 1
    if ch.confirm:
        confirm(ch, broker, msg, rejected)


def confirm(ch: ChannelState, broker: BrokerState, msg: MessageState, rejected):  # noqa: F821
    """The publisher confirm of a publish routed (Channel._route_publish's end, for both paths)."""
    ch.publish_seq += 1
    broker.stats["publish_confirm"] += 1
    if rejected:
        ch.nacks_ready.append(ch.publish_seq)
        ch.confirm_dirty = True
    elif msg.stored and msg.refs:
        # a persistent message in a durable queue: confirmed once the commit holding it is on disk,
        # or once consumed from every queue (confirm_consumed), whichever comes first
        epoch = broker.commit_epoch
        if ch.waited_epoch != epoch:             # once per channel and commit
            ch.waited_epoch = epoch = broker.wait_for_commit(ch)
        ch.waiting.append((ch.publish_seq, epoch, msg))
        msg.confirm = (ch, ch.publish_seq)
    else:
        ch.acks_ready.append(ch.publish_seq)
        ch.confirm_dirty = True


def _publish_fanout(ch: ChannelState, conn: ConnectionState, broker: BrokerState,
                    x: ExchangeState, msg: MessageState) -> bool:  # noqa: F821 (model/hotstate.pxd)
    """A publish to a fanout exchange whose destinations are all plain queues, and no header that
    could route it further (CC, BCC): what Channel._route_publish does for it, without the general
    routing walk. False, with nothing done, for anything else (no destination, which may need the
    alternate exchange; an exchange bound; a queue with limits, a TTL or priorities; a message
    with an expiration), which the general path then takes."""
    dests = x.route(msg.routing_key, msg)
    if not dests or msg.scan.expiration is not None:
        return False
    for d in dests:
        if not getattr(d, "simple", False):
            return False
    x.publish_in += 1
    ch.published += 1
    broker.stats["publish"] += 1
    count_size(ch._sizes, len(msg.body))
    x.publish_out += 1
    only = len(dests) == 1
    q: QueueState  # noqa: F821
    for q in dests:
        if not enqueue_plain(broker, q, msg, only) and q.consumers:
            # consumers are behind: let them catch up (credit flow, in effect)
            conn.throttled = True
    if ch.confirm:
        confirm(ch, broker, msg, False)
    return True


def count_size(sizes, n):
    """A published body of n bytes in the message size histogram (rabbitmq_message_size_bytes);
    the general path (Channel._route_publish) counts through here too."""
    sizes[_size_bucket(MSG_SIZE_BOUNDS, n)] += 1
    sizes[SIZE_SUM] += n


def _remember(ch: ChannelState, payload):
    """The channel's memo of a publish method: (payload, exchange, routing key, route bytes, bits,
    exchange object, to the default exchange and no reply-to, to a topic exchange, to a fanout
    exchange); None when the
    general path must see it (the exchange not yet looked up by this channel, or gone)."""
    x: ExchangeState  # noqa: F821 (model/hotstate.pxd, compiled only)
    exchange, routing_key, route, bits = parse_publish(payload)
    if bits & 2:
        return None
    x = ch._x_cache.get(exchange)
    if x is None or x.deleted:
        return None
    memo = ch.pub_memo = (bytes(payload), exchange, routing_key, route, bits, x,
                          not x.name and not routing_key.startswith(_REPLY_TO_PREFIX), x.TYPE == "topic",
                          x.TYPE == "fanout")
    return memo


# ---------------------------------------------------------------------------- delivery
def enqueue_plain(broker: BrokerState, q: QueueState, msg: MessageState, only=False) -> bool:  # noqa: F821
    """A message with no TTL: straight to a consumer with room if the queue is empty (True),
    else onto the queue (False). The publish hot path calls this directly for plain queues.
    `only`: q is the message's only destination, so a persistent one is staged (its entry waits
    in broker.staged for the next commit; see DeliveryMixin.save_staged)."""
    if msg.scan.delivery_mode == 2 and q.durable and broker.store.durable:
        if only and not msg.stored:
            msg.stored = True
            msg.refs += 1
            staged = broker.staged
            staged[msg.id] = [q, q.seq + 1, 0, msg]
            broker.staged_count += 1
            if len(staged) > STAGED_MAX:
                broker._save_one(next(iter(staged)))        # the oldest (DeliveryMixin.save_staged)
        else:
            broker.persist(q, msg)
    if q.consumers and not q.ready and not q.returned and not q.paged:
        c: ConsumerState = pick_consumer(broker, q)  # noqa: F821
        if c is not None:
            q.seq = seq = q.seq + 1          # Queue.next_seq
            q.published += 1
            deliver(c.channel, c, q, seq, msg, False)
            return True
    q.push(msg)
    if q.consumers:
        broker.dirty[id(q)] = q
        if q.paged:
            broker.pressure = q         # the publisher may have to wait (core/flow.py)
    return False


def dispatch(broker: BrokerState, q: QueueState):  # noqa: F821 (model/hotstate.pxd)
    """Broker.dispatch: ready messages to consumers with room, round-robin. The entries of a
    plain queue's ready list go straight out (what Queue.pop and Broker.take do when nothing was
    requeued, nothing is dead or has a TTL); anything else goes through Broker.take: requeued
    entries, dead ones, TTLs, paged-out messages, priorities. A stream delivers by itself."""
    if q.deleted:
        return
    if type(q) is not Queue and q.kind == "stream":
        q.dispatch(broker)
        return
    c: ConsumerState  # noqa: F821
    msg: MessageState  # noqa: F821 (what is delivered is a message, never a stub: Broker.take loads it)
    if type(q) is Queue:
        ready = q.ready
        while ready and q.consumers and not q.returned and not q.dead and not q.expiry:
            c = pick_consumer(broker, q)
            if c is None:
                ready = None
                break
            seq, msg = ready.popleft()
            q.ready_bytes -= len(msg.body)
            deliver(c.channel, c, q, seq, msg, False)       # Channel.deliver
    else:
        ready = True
    if ready is not None:
        while q.consumers and q.message_count:
            c = pick_consumer(broker, q)
            if c is None:
                break
            item = broker.take(q, True)
            if item is None:
                break
            seq, msg, redelivered = item
            deliver(c.channel, c, q, seq, msg, redelivered)      # Channel.deliver
    if broker.flow_waits:
        broker.flow_check(q)


def pick_consumer(broker: BrokerState, q: QueueState):  # noqa: F821 (model/hotstate.pxd)
    """The consumer to give q's next message to, or None: round-robin over the consumers with
    room, highest priority first. One that comes round without room is parked (out of the
    rotation until it has room, see Queue.park), so each is looked at once per time it fills
    up, not once per message: O(1) amortised per delivery, whatever the number of consumers.
    (The test for room is Channel.can_deliver's.)"""
    if q.consumer_priorities:
        return broker._pick_by_priority(q)
    ch: ChannelState
    conn: ConnectionState
    c: ConsumerState  # noqa: F821
    ring = q.ring
    while ring:
        for c in ring:
            break
        ch = c.channel
        conn = ch.conn
        if conn.writable and conn.out_size <= conn.out_limit and ch.flow_active and \
                (c.no_ack or ((not c.prefetch or c.unacked < c.prefetch) and
                              (not ch.global_prefetch or len(ch.unacked) < ch.global_prefetch))):
            if len(ring) > 1:
                ring.move_to_end(c)
            return c
        broker._park(q, c)
    return None


def deliver(ch: ChannelState, c: ConsumerState, q: QueueState, seq, msg: MessageState,  # noqa: F821
            redelivered):
    """Channel.deliver: basic.deliver with the message's content to consumer c of this channel."""
    conn: ConnectionState = ch.conn
    size: cython.Py_ssize_t
    ch.next_tag = tag = ch.next_tag + 1
    if redelivered and q.delivery_counts and seq in q.delivery_counts:
        # the copy with the header is written; the delivery keeps the message itself, which the
        # store knows (its ack must take the stored entry out)
        shown = _with_delivery_count(msg, q.delivery_counts[seq])
        conn.out_size += write_content(ch, c.prefix + _QB_pack(tag, redelivered) + shown.route, shown)
    else:
        body = msg.body
        size = len(body)
        if 0 < size <= conn.frame_max - 8 and not conn.closed:
            # the common case, as write_content writes it: one method, one header and one body frame
            num = ch.number
            prefix = c.prefix
            route = msg.route
            props = msg.props
            data = None
            if cython.compiled:
                data = _deliver_frames(num, prefix, tag, redelivered, route, props, body)  # noqa: F821 (.pxd)
            if data is None:
                data = b"".join((_FH_pack(1, num, len(prefix) + 9 + len(route)), prefix, _QB_pack(tag, redelivered),
                                 route, _MID_pack(206, 2, num, 12 + len(props), 60, 0, size), props,
                                 _BODY_pack(206, 3, num, size), body, _END))
            out = conn.out
            if not out:
                ch.broker.want_flush(conn)
            out.append(data)
            conn.out_size += len(data)
        else:
            conn.out_size += write_content(ch, c.prefix + _QB_pack(tag, redelivered) + msg.route, msg)
    q.delivered += 1
    ch.delivered += 1
    if redelivered:
        ch.redelivered += 1
    if c.no_ack:
        q.delivered_auto += 1
        ch.delivered_auto += 1
        if msg.stored or q.held_expiry or q.delivery_counts or (type(q) is not Queue and q.kind == "stream"):
            settle(ch.broker, q, seq, msg)
        else:
            q.acked += 1
    else:
        ch.unacked[tag] = Unacked(tag, q, seq, msg, c)
        c.unacked += 1
        q.unacked += 1
        if msg.stored and q.durable:
            ch.broker.stored_delivered(q, seq, msg)


def write_content(ch: ChannelState, method_payload, msg):
    """Channel._write_content: a method frame with content (deliver, get-ok, return); the stored
    property and body bytes pass through as received. Returns the bytes written."""
    num = ch.number
    body = msg.body
    props = msg.props
    size: cython.Py_ssize_t = len(body)
    conn: ConnectionState = ch.conn
    chunk: cython.Py_ssize_t = conn.frame_max - 8
    if 0 < size <= chunk:
        # the common case: one write of one method, one header and one body frame
        data = b"".join((_FH_pack(1, num, len(method_payload)), method_payload,
                         _MID_pack(206, 2, num, 12 + len(props), 60, 0, size), props,
                         _BODY_pack(206, 3, num, size), body, _END))
        if conn.closed:
            return 0
        out = conn.out
        if not out:
            ch.broker.want_flush(conn)
        out.append(data)
        return len(data)
    head = (_FH_pack(1, num, len(method_payload)), method_payload,
            _MID_pack(206, 2, num, 12 + len(props), 60, 0, size), props, _END)
    if not size:
        data = b"".join(head)
        conn.write(data)
        return len(data)
    parts = list(head)
    mv = memoryview(body)
    for i in range(0, size, chunk):
        piece = mv[i:i + chunk]
        parts += (_FH_pack(3, num, len(piece)), piece, _END)
    conn.write_parts(parts)
    return size + len(props) + 64

