"""Limits as RabbitMQ names and words them, enforced from the engine through small hooks.

* node-wide connection limit (`connection_max`, usagi-server --max-connections), vhost limits
  `max-connections` and `max-queues` (kept by the management API as the `vhost-limits` runtime
  parameter and on `VHost.limits`), user limits `max-connections` and `max-channels`
  (`User.limits`): checked by `check_connection_open`, `check_channel_open`, `check_queue_limit`;
* the consumer acknowledgement timeout (`consumer_timeout`, 30 minutes by default): `sweep`;
* failed logins slowed down per source address: `login_admit`, `login_failed`.

Nothing here touches sockets; the server layer gives the module its timer (`attach`).
"""
from __future__ import annotations

import logging
import time

from ..amqp import errors as E
from ..amqp.errors import ChannelError, ConnectionError_
from . import upkeep

log = logging.getLogger("usagi.limits")


# ---------------------------------------------------------------------------------------- lookup
def _int_limit(value):
    """A limit value as RabbitMQ reads it: None for no limit (absent, negative, not an integer)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def vhost_limit(broker, vhost, name: str):
    """A vhost limit ('max-connections', 'max-queues'), or None. The management API keeps the
    limits on the vhost; after a restart without it they are still in the vhost-limits parameter."""
    if vhost is None:
        return None
    limits = getattr(vhost, "limits", None) or {}
    if name in limits:
        return _int_limit(limits[name])
    p = broker.parameters.get((vhost.name, "vhost-limits", "limits"))
    if p and isinstance(p.get("value"), dict) and name in p["value"]:
        return _int_limit(p["value"][name])
    return None


def user_limit(user, name: str):
    if user is None:
        return None
    return _int_limit((getattr(user, "limits", None) or {}).get(name))


# ---------------------------------------------------------------------------------------- connections
def _running(broker):
    # RabbitMQ tracks a connection (per vhost, per user) once it has been opened
    from .connection import OPEN
    return [c for c in broker.connections if c.state == OPEN and not c.closed]


def check_connection_open(conn, vhost_name: str):
    """connection.open: node, vhost and user connection limits, in RabbitMQ's order
    (rabbit_reader: is_over_node/vhost/user_connection_limit), before the vhost access check."""
    broker = conn.broker
    node_max = getattr(broker.config, "connection_max", None)
    if node_max is not None and node_max >= 0:
        # ranch counts every accepted socket, this one included
        if len(broker.connections) > node_max:
            raise ConnectionError_(f"connection refused: node connection limit ({node_max}) is reached",
                                   E.NOT_ALLOWED, 10, 40)
    user = conn.user
    username = user.name if user is not None else ""
    v = broker.vhosts.get(vhost_name)
    limit = vhost_limit(broker, v, "max-connections")
    if limit is not None:
        count = 0 if limit == 0 else sum(1 for c in _running(broker) if c.vhost == vhost_name)
        if count >= limit:
            raise ConnectionError_(f"access to vhost '{vhost_name}' refused for user '{username}': "
                                   f"connection limit ({limit}) is reached", E.NOT_ALLOWED, 10, 40)
    limit = user_limit(user, "max-connections")
    if limit is not None:
        count = 0 if limit == 0 else sum(1 for c in _running(broker)
                                         if c.user is not None and c.user.name == username)
        if count >= limit:
            raise ConnectionError_(f"connection refused for user '{username}': "
                                   f"user connection limit ({limit}) is reached", E.NOT_ALLOWED, 10, 40)


def check_channel_open(conn):
    """channel.open: the user's max-channels limit (after the negotiated channel_max)."""
    user = conn.user
    limit = user_limit(user, "max-channels")
    if limit is None:
        return
    count = 0 if limit == 0 else sum(len(c.channels) for c in conn.broker.connections
                                     if c.user is not None and c.user.name == user.name and not c.closed)
    if count >= limit:
        # RabbitMQ 4.0 formats this text with the node name where the user name is announced
        # (rabbit_reader:create_channel passes [node(), Limit]); kept as it is on the wire
        raise ConnectionError_(f"number of channels opened for user '{conn.broker.config.node_name}' has "
                               f"reached the maximum allowed user limit of ({limit})", E.NOT_ALLOWED)


# ---------------------------------------------------------------------------------------- queues
def check_queue_limit(broker, vhost, name: str):
    """A new queue in `vhost`: its max-queues limit (rabbit_queue_type:check_vhost_queue_limit)."""
    limit = vhost_limit(broker, vhost, "max-queues")
    if limit is None:
        return
    if limit == 0 or len(vhost.queues) + 1 > limit:
        raise ChannelError(f"cannot declare queue '{name}': queue limit in vhost '{vhost.name}' ({limit}) "
                           f"is reached", E.PRECONDITION_FAILED)


# ---------------------------------------------------------------------------------------- state
class State:
    """Per-broker bookkeeping: the timer, the oldest unacked delivery seen per channel, and
    recent failed logins per source address."""

    def __init__(self):
        self.call_later = None          # set by the server: loop.call_later
        self.oldest: dict = {}          # id(channel) -> (channel, delivery tag, first seen)
        self.failures: dict = {}        # address -> [failures, last failure, answers pending]
        self.last_sweep = 0.0


def state(broker) -> State:
    st = getattr(broker, "_limits_state", None)
    if st is None:
        st = broker._limits_state = State()
    return st


def attach(broker, call_later):
    state(broker).call_later = call_later


# ---------------------------------------------------------------------------------------- consumer timeout
def consumer_timeout_text(channel: int, timeout_ms: int) -> str:
    return (f"delivery acknowledgement on channel {channel} timed out. Timeout value used: {timeout_ms} ms. "
            f"This timeout value can be configured, see consumers doc guide to learn more")


def _timeout_ms(broker, u) -> int | None:
    t = getattr(broker.config, "consumer_timeout", None)
    ms = int(t * 1000) if t else None
    q = getattr(u, "queue", None)
    args = getattr(q, "arguments", None)
    if args:
        v = args.get("x-consumer-timeout")
        if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
            ms = v
    return ms


def sweep(broker, now: float | None = None):
    """Close channels whose oldest unacknowledged delivery is older than the consumer timeout.

    The age of a delivery is counted from the first sweep that saw it at the head of the channel's
    unacked deliveries (sweeps run a few times a second), so no per-delivery timestamp is needed
    on the hot path. RabbitMQ itself checks once per channel tick."""
    now = time.monotonic() if now is None else now
    st = state(broker)
    seen = {}
    old = st.oldest
    expired = []
    for conn in list(broker.connections):
        if conn.closed:
            continue
        for ch in list(conn.channels.values()):
            try:
                unacked = ch.unacked
                if not unacked or ch.state:
                    continue
                tag = next(iter(unacked))
                key = id(ch)
                prev = old.get(key)
                first = prev[2] if prev is not None and prev[0] is ch and prev[1] == tag else now
                seen[key] = (ch, tag, first)
                ms = _timeout_ms(broker, unacked[tag])
                if ms is not None and (now - first) * 1000 >= ms:
                    expired.append((ch, tag, ms))
            except Exception:       # one odd channel must not stop the timeout for all the others
                upkeep.failed("consumer timeout sweep", log)
    st.oldest = seen
    for ch, tag, ms in expired:
        try:
            u = ch.unacked.get(tag)
            consumer = getattr(getattr(u, "consumer", None), "tag", "")
            qname = getattr(getattr(u, "queue", None), "name", "")
            log.warning("Consumer '%s' on channel %d and queue '%s' in vhost '%s' has timed out waiting for a "
                        "consumer acknowledgement of a delivery with delivery tag = %d. Timeout used: %d ms. "
                        "This timeout value can be configured, see consumers doc guide to learn more",
                        consumer, ch.number, qname, getattr(ch.vhost, "name", ""), tag, ms)
            ch.fail(ChannelError(consumer_timeout_text(ch.number, ms), E.PRECONDITION_FAILED))
        except Exception:           # never let the timer die
            upkeep.failed("closing a timed out channel", log)
    if expired:
        try:
            broker.run_dirty()
        finally:
            broker.flush_output()


# ---------------------------------------------------------------------------------------- failed logins
FREE_FAILURES = 1        # failures from one address answered at once
BASE_DELAY = 0.1         # then after 0.1 s, 0.2 s, 0.4 s ...
MAX_DELAY = 5.0          # ... at most 5 s (under the 10 s handshake timeout)
MAX_PENDING = 2          # failures of one address waiting for their answer; more attempts are dropped
FORGET_AFTER = 300.0     # an address without failures for this long starts afresh


def login_delay(failures: int) -> float:
    """Seconds before answering the `failures`-th recent failed login from one address."""
    if failures <= FREE_FAILURES:
        return 0.0
    return min(MAX_DELAY, BASE_DELAY * (2 ** (failures - FREE_FAILURES - 1)))


def login_admit(conn) -> bool:
    """After a login failed: False (drop the connection unanswered) while MAX_PENDING failed
    logins from the same address still wait for their answer. Guesses from one address, however
    many connections it opens, then go no faster than MAX_PENDING per delay (0.4/s at the cap).
    Successful logins are never delayed, so clients sharing an address are only held up while
    failures from it are pending."""
    st = state(conn.broker)
    rec = st.failures.get(conn.peer[0])
    if rec is None or rec[2] < MAX_PENDING:
        return True
    log.warning("connection %s: failed logins from %s are still being answered; attempt dropped",
                conn.name, conn.peer[0])
    return False


def login_failed(conn, refuse) -> float:
    """Count a failed login from conn's address. Returns 0 to refuse at once, or the delay after
    which `refuse()` will be called (by the server's timer)."""
    st = state(conn.broker)
    now = time.monotonic()
    addr = conn.peer[0]
    rec = st.failures.get(addr)
    if rec is None or (now - rec[1] > FORGET_AFTER and rec[2] == 0):
        rec = st.failures[addr] = [0, now, 0]     # failures, last failure, answers pending
    rec[0] += 1
    rec[1] = now
    if len(st.failures) > 100_000:      # bounded memory under a spray of addresses
        for a in sorted(st.failures, key=lambda a: st.failures[a][1])[:50_000]:
            if st.failures[a][2] == 0:
                del st.failures[a]
    delay = login_delay(rec[0])
    if delay <= 0 or st.call_later is None:
        return 0.0
    rec[2] += 1

    def answer():
        rec[2] -= 1
        try:
            refuse()
        except Exception:  # never let the timer die
            upkeep.failed("answering a failed login", log)
    st.call_later(delay, answer)
    return delay


def forget_stale(broker, now: float | None = None):
    st = state(broker)
    now = time.monotonic() if now is None else now
    for addr in [a for a, r in st.failures.items() if now - r[1] > FORGET_AFTER and r[2] == 0]:
        del st.failures[addr]
