"""The engine: vhosts, entities and the publish -> route -> deliver path. No sockets, no asyncio.

Everything here runs on the event loop's thread, synchronously. Errors are raised as AMQPError
subclasses carrying RabbitMQ's reply codes and texts; the caller decides whether they close a
channel or a connection. The management API uses the same operations as the AMQP handlers.
"""
from __future__ import annotations

import logging
import socket
import time

from .. import RABBITMQ_COMPAT_VERSION, __version__
from ..amqp import errors as E
from ..amqp.errors import ChannelError, channel_error
from ..auth import x509
from ..auth.users import UserDB
from .delayed import DelayedMessages
from ..model.vhost import VHost
from ..storage import MemoryStore, Store

from .admin import AdminMixin
from .alarms import AlarmMixin
from .counters import Counters
from .deadlettering import DeadLetterMixin
from .delivery import DeliveryMixin
from .entities import EntitiesMixin
from .expiry import ExpiryMixin
from .flow import FlowMixin
from .hot import fastpath
from .policies import PolicyMixin
from .routing import RoutingMixin

log = logging.getLogger("usagi.broker")


class CommitFailed(Exception):
    """A store commit failed: what it held is not known to be durable. The text names the store's error."""


def server_properties(cluster_name: str) -> dict:
    return {
        "capabilities": {
            "publisher_confirms": True,
            "exchange_exchange_bindings": True,
            "basic.nack": True,
            "consumer_cancel_notify": True,
            "connection.blocked": True,
            "consumer_priorities": True,
            "authentication_failure_close": True,
            "per_consumer_qos": True,
            "direct_reply_to": True,
        },
        "cluster_name": cluster_name,
        "copyright": "Copyright (c) the Usagi authors",
        "information": f"Usagi {__version__}, an AMQP 0-9-1 broker compatible with RabbitMQ "
                       f"{RABBITMQ_COMPAT_VERSION}. Licensed under the MIT License.",
        "platform": "Python",
        "product": "RabbitMQ",
        "version": RABBITMQ_COMPAT_VERSION,
        "usagi_version": __version__,
    }


class Config:
    def __init__(self, **kw):
        self.channel_max = 2047
        self.frame_max = 131072
        self.heartbeat = 60
        self.max_message_size = 16 * 1024 * 1024
        self.loopback_users = ("guest",)
        self.default_user = "guest"
        self.default_pass = "guest"
        self.default_vhost = "/"
        self.default_user_tags = ("administrator",)
        self.default_permissions = (".*", ".*", ".*")   # configure, write, read
        self.auth_mechanisms = None                  # SASL mechanisms offered (None: all Usagi has)
        self.handshake_timeout = 10.0
        self.consumer_timeout = 30 * 60.0
        self.node_name = f"usagi@{socket.gethostname()}"
        self.write_high_water = 1024 * 1024          # stop deliveries to a connection past this
        self.write_hard_limit = 64 * 1024 * 1024     # stop reading from it past this
        self.data_dir = None
        # the resource limits, read through Broker.disk_free_limit() and memory_limit() (core/alarms.py)
        self.disk_free_limit = 50 * 1000 * 1000      # bytes, as RabbitMQ's default
        self.disk_free_limit_relative = 0.0          # a fraction of RAM instead, when > 0
        self.memory_high_watermark = 0.4             # fraction of RAM, as RabbitMQ's default
        self.memory_high_watermark_absolute = 0      # bytes instead, when > 0
        self.quorum_delivery_limit = 20              # RabbitMQ 4.x default for quorum queues
        self.connection_max = None                   # node-wide connection limit (None: infinity)
        self.ssl_cert_login_from = "common_name"     # SASL EXTERNAL: common_name, distinguished_name,
        self.ssl_cert_login_san_type = "dns"         # or subject_alternative_name (of this type and
        self.ssl_cert_login_san_index = 0            # index)
        for k, v in kw.items():
            if not hasattr(self, k):
                raise TypeError(f"unknown setting {k}")
            setattr(self, k, v)


class Broker(fastpath.BrokerState, AdminMixin, EntitiesMixin, RoutingMixin, DeliveryMixin, ExpiryMixin, DeadLetterMixin, PolicyMixin,
             AlarmMixin, FlowMixin):
    """The engine's facade: one object per node holding vhosts, users, policies and connections.

    Its methods are grouped by concern in the mixin modules named above; this module keeps the
    state, start-up, output and commit bookkeeping, timers and connections."""

    def __init__(self, config: Config | None = None, store: Store | None = None):
        self.config = config or Config()
        self.store = store or MemoryStore()
        self.vhosts: dict[str, VHost] = {}
        self.users = UserDB()
        self.connections: set = set()
        self.dirty: dict = {}              # queues that may be able to deliver: id -> queue
        # persistent entries not handed to the store yet: msg id -> [queue, seq, delivered, msg]
        # (DeliveryMixin.save_staged)
        self.staged: dict = {}
        self.staged_count = 0              # entries ever staged (Broker.recorded)
        self.flush_pending: list = []      # connections with output to write
        self.on_flush_needed = None        # set by the server: schedules flush_output()
        self.on_commit_needed = None       # set by the server: schedules a store commit
        self.on_commit_barrier = None      # set by the server: returns an awaitable done when what is
        #                                    recorded so far is durable (raises CommitFailed)
        self.on_defer = None               # set by the server: runs a callback on a later turn
        self.next_msg_id = 1
        self.started_at = time.time()
        self.server_properties = server_properties(self.config.node_name)
        self.policies: dict = {}           # (vhost, name) -> policy dict
        self.operator_policies: dict = {}
        self.parameters: dict = {}
        self.global_parameters: dict = {}
        self.init_flow()
        self.stats = {"publish": 0, "deliver": 0, "ack": 0, "get": 0, "redeliver": 0,
                      "return_unroutable": 0, "confirm": 0, "drop_unroutable": 0, "publish_confirm": 0,
                      "channel_created": 0, "queue_declared": 0, "queue_created": 0, "queue_deleted": 0}
        self.counters = Counters()         # logins, dead-lettered messages, message sizes (core/counters.py)
        self.commit_stats = [0, 0.0, 0.0]  # store commits done: how many, their seconds, the last one's
        self._commit_started = 0.0
        # confirm bookkeeping: channels waiting for a commit
        self.commit_epoch = 0              # the epoch now collecting writes
        self.committed_epoch = 0           # the last epoch known to be on disk
        self.commit_waiters: list = []     # channels waiting on the current epoch
        self.commit_in_flight = False      # an epoch is being written
        self.early_confirms: list = []     # channels with confirms of consumed messages to send
        self.alarms: set = set()           # "memory", "disk"
        self.ttl_queues: dict = {}         # queues holding messages with a TTL
        self.delayed = DelayedMessages(None)   # x-delayed-message exchanges' waiting messages
        self.reply_to: dict = {}           # direct reply-to token -> channel
        self.cluster = None                # cluster mode: the leader's view of the cluster (status())

    # ------------------------------------------------------------------ setup
    def bootstrap(self, seed: bool = True):
        """Default vhost and user on first start, as RabbitMQ creates them; not when definitions
        are loaded at start (`seed` False), which then say what exists, as with RabbitMQ."""
        c = self.config
        if not self.vhosts:
            if not seed:
                log.info("Will not seed default virtual host and user: have definitions to load...")
                return
            log.info("Will seed default virtual host and user...")
            self.add_vhost(c.default_vhost, "Default virtual host")
            if c.default_user not in self.users.users:
                self.add_user(c.default_user, c.default_pass, list(c.default_user_tags))
                self.set_permissions(c.default_user, c.default_vhost, *c.default_permissions)
                log.info("Created user '%s' with tags [%s] and permissions '%s', '%s', '%s' (configure, "
                         "write, read) in vhost '%s'", c.default_user, ", ".join(c.default_user_tags),
                         *c.default_permissions, c.default_vhost)

    def vhost(self, name: str) -> VHost:
        v = self.vhosts.get(name)
        if v is None:
            raise ChannelError(f"vhost {name} not found", E.NOT_ALLOWED)
        return v

    # ------------------------------------------------------------------ output and commits
    def defer(self, fn):
        """Run fn on a later loop turn (set up by the server; called at once without one)."""
        if self.on_defer is not None:
            self.on_defer(fn)
        else:
            fn()

    def want_flush(self, conn):
        self.flush_pending.append(conn)
        if len(self.flush_pending) == 1 and self.on_flush_needed is not None:
            self.on_flush_needed()

    def send_early_confirms(self):
        """Send the confirms of publishes whose messages were consumed before their commit, one
        batch per channel (Channel.confirm_early)."""
        chans = self.early_confirms
        self.early_confirms = []
        for ch in chans:
            if ch.confirm_dirty:
                ch.send_confirms()

    def flush_output(self):
        if self.early_confirms:
            self.send_early_confirms()
        pending = self.flush_pending
        self.flush_pending = []
        for conn in pending:
            conn.flush()
            self.after_flush(conn)          # unacknowledged deliveries past their queue's budget leave memory

    def commit_needed(self) -> bool:
        """Whether something recorded so far may not be durable yet: pending in the store, or in a
        commit under way (a write recorded just now may have been taken by it)."""
        return self.store.durable and (self.commit_in_flight or self.store_pending())

    def recorded(self) -> int:
        """A count that changes whenever something is recorded for the store (staged entries
        included): an operation that changed it must wait for a commit before its reply."""
        return self.store.recorded + self.staged_count

    def store_pending(self) -> bool:
        """Whether there is anything for a commit to write (staged entries or the store's own)."""
        return bool(self.staged) or self.store.pending()

    def wait_for_commit(self, waiter) -> int:
        """Register `waiter` (anything with on_commit(epoch, error): channels, the server's barrier) to
        be told when the writes recorded so far are durable, or that the commit holding them failed."""
        if not self.commit_waiters and self.on_commit_needed is not None:
            self.on_commit_needed()
        self.commit_waiters.append(waiter)
        return self.commit_epoch

    def begin_commit(self) -> tuple:
        """Close the current epoch: returns (epoch, waiters on it). The staged entries go to the
        store first, so that the commit writes everything recorded so far."""
        if self.staged:
            self.save_staged()
        epoch = self.commit_epoch
        waiters = self.commit_waiters
        self.commit_epoch += 1
        self.commit_waiters = []
        self.commit_in_flight = True
        self._commit_started = time.perf_counter()
        return epoch, waiters

    def commit_done(self, epoch: int, waiters: list, error: Exception | None = None):
        """The commit of `epoch` is durable (error None) or failed; a failed one's writes stay pending in
        the store, and the next commit that succeeds makes them durable with it."""
        self.commit_in_flight = False
        if error is None:
            self.committed_epoch = max(self.committed_epoch, epoch)
            cs = self.commit_stats
            took = max(0.0, time.perf_counter() - self._commit_started)
            cs[0] += 1
            cs[1] += took
            cs[2] = took
        seen = set()
        for ch in waiters:
            if id(ch) in seen:
                continue
            seen.add(id(ch))
            try:
                ch.on_commit(epoch, error)
            except Exception:      # one waiter's failure must not keep the others waiting
                log.exception("commit notification of %r failed", ch)

    def tick(self, now: float):
        """Called about once a second: slow time-based work (x-expires of unused queues)."""
        self.expire_queues(time.monotonic())

    def timers(self):
        """Called every few tens of milliseconds: message TTLs and delayed messages."""
        if self.ttl_queues or self.ttl_heap:
            self.expire(int(time.time() * 1000))
        if len(self.delayed):
            self._release_delayed(int(time.time() * 1000))
        if self.dirty:
            self.run_dirty()

    # ------------------------------------------------------------------ connections
    def sasl_mechanisms(self, conn) -> tuple:
        """Mechanisms offered in connection.start: EXTERNAL too where client certificates are verified;
        only those of auth_mechanisms when it is set."""
        offered = x509.mechanisms(conn.tls)
        allowed = self.config.auth_mechanisms
        if allowed is not None:
            offered = tuple(m for m in offered if m in allowed)
        return offered

    def connection_opened(self, conn):
        self.connections.add(conn)

    def connection_closed(self, conn):
        self.connections.discard(conn)
        for q in list(conn.exclusive_queues):
            self.delete_queue(q)
        self.run_dirty()

    def shutdown_connections(self, text="broker forced connection closure with reason 'shutdown'"):
        for conn in list(self.connections):
            conn.force_close(E.CONNECTION_FORCED, text)



__all__ = ["Broker", "CommitFailed", "Config", "channel_error"]
