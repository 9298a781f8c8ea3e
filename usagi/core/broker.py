"""The engine: vhosts, entities and the publish -> route -> deliver path. No sockets, no asyncio.

Everything here runs on the event loop's thread, synchronously. Errors are raised as AMQPError
subclasses carrying RabbitMQ's reply codes and texts; the caller decides whether they close a
channel or a connection. The management API uses the same operations as the AMQP handlers.
"""
from __future__ import annotations

import logging
import re
import os
import socket
import time

from .. import RABBITMQ_COMPAT_VERSION, __version__
from ..amqp import errors as E
from ..amqp import properties as P
from ..amqp.errors import ChannelError, ConnectionError_, channel_error
from ..auth import x509
from ..auth.users import UserDB
from ..model.exchanges import TYPES
from ..model.exchanges.base import Binding
from ..model.message import Message
from ..model.queue import PriorityQueue, Queue
from . import deadletter as DL
from .delayed import DelayedMessages
from . import limits
import heapq
from ..model.util import freeze, gen_name
from ..model.vhost import VHost
from ..storage import MemoryStore, Store

log = logging.getLogger("usagi.broker")


def _q(name):
    return f"queue '{name}'"


def _x(name):
    return f"exchange '{name}'"


def not_found(kind: str, name: str, vhost: str) -> ChannelError:
    return ChannelError(f"no {kind} '{name}' in vhost '{vhost}'", E.NOT_FOUND)


# The value types RabbitMQ names in "inequivalent arg" texts.
def _type_name(v) -> str:
    """The AMQP field type RabbitMQ reports for a value (as its clients send them)."""
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "signedint" if -2147483648 <= v <= 2147483647 else "long"
    if isinstance(v, float):
        return "double"
    if isinstance(v, (str, bytes)):
        return "longstr"
    if isinstance(v, dict):
        return "table"
    if isinstance(v, list):
        return "array"
    return "void" if v is None else type(v).__name__


def _fmt_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return str(v)


def _numeric_equal(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b and type(a) is type(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, bytes):
        a = a.decode("utf-8", "surrogateescape")
    if isinstance(b, bytes):
        b = b.decode("utf-8", "surrogateescape")
    return freeze(a) == freeze(b)


# Queue arguments RabbitMQ compares on redeclare (others are ignored for equivalence).
QUEUE_EQUIV_ARGS = ("x-expires", "x-message-ttl", "x-dead-letter-exchange", "x-dead-letter-routing-key",
                    "x-max-length", "x-max-length-bytes", "x-max-priority", "x-overflow",
                    "x-queue-mode", "x-queue-type", "x-single-active-consumer", "x-delivery-limit",
                    "x-queue-master-locator", "x-max-age", "x-stream-max-segment-size-bytes",
                    "x-initial-cluster-size", "x-queue-leader-locator", "x-dead-letter-strategy",
                    "x-queue-version")


# Which queue arguments each queue type accepts (RabbitMQ refuses a known argument that the type
# does not support).
QUEUE_TYPE_ARGS = {
    "classic": {"x-expires", "x-message-ttl", "x-dead-letter-exchange", "x-dead-letter-routing-key",
                "x-max-length", "x-max-length-bytes", "x-max-priority", "x-overflow", "x-queue-mode",
                "x-single-active-consumer", "x-queue-type", "x-queue-master-locator", "x-queue-version"},
    "quorum": {"x-expires", "x-message-ttl", "x-dead-letter-exchange", "x-dead-letter-routing-key",
               "x-max-length", "x-max-length-bytes", "x-delivery-limit", "x-overflow", "x-single-active-consumer",
               "x-queue-type", "x-quorum-initial-group-size", "x-max-in-memory-length",
               "x-max-in-memory-bytes", "x-dead-letter-strategy", "x-queue-leader-locator"},
    "stream": {"x-max-length-bytes", "x-max-age", "x-stream-max-segment-size-bytes", "x-queue-type",
               "x-initial-cluster-size", "x-queue-leader-locator"},
}
KNOWN_QUEUE_ARGS = set().union(*QUEUE_TYPE_ARGS.values())


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
        self.handshake_timeout = 10.0
        self.consumer_timeout = 30 * 60.0
        self.node_name = f"usagi@{socket.gethostname()}"
        self.write_high_water = 1024 * 1024          # stop deliveries to a connection past this
        self.write_hard_limit = 64 * 1024 * 1024     # stop reading from it past this
        self.data_dir = None
        self.disk_free_limit = 50 * 1000 * 1000      # bytes, as RabbitMQ's default
        self.memory_high_watermark = 0.4             # fraction of RAM, as RabbitMQ's default
        self.quorum_delivery_limit = 20              # RabbitMQ 4.x default for quorum queues
        self.connection_max = None                   # node-wide connection limit (None: infinity)
        self.ssl_cert_login_from = "common_name"     # SASL EXTERNAL: common_name, distinguished_name,
        self.ssl_cert_login_san_type = "dns"         # or subject_alternative_name (of this type and
        self.ssl_cert_login_san_index = 0            # index)
        for k, v in kw.items():
            if not hasattr(self, k):
                raise TypeError(f"unknown setting {k}")
            setattr(self, k, v)


class Broker:
    def __init__(self, config: Config | None = None, store: Store | None = None):
        self.config = config or Config()
        self.store = store or MemoryStore()
        self.vhosts: dict[str, VHost] = {}
        self.users = UserDB()
        self.connections: set = set()
        self.dirty: dict = {}              # queues that may be able to deliver: id -> queue
        self.flush_pending: list = []      # connections with output to write
        self.on_flush_needed = None        # set by the server: schedules flush_output()
        self.on_commit_needed = None       # set by the server: schedules a store commit
        self.on_defer = None               # set by the server: runs a callback on a later turn
        self.next_msg_id = 1
        self.started_at = time.time()
        self.server_properties = server_properties(self.config.node_name)
        self.policies: dict = {}           # (vhost, name) -> policy dict
        self.operator_policies: dict = {}
        self.parameters: dict = {}
        self.global_parameters: dict = {}
        self.stats = {"publish": 0, "deliver": 0, "ack": 0, "get": 0, "redeliver": 0,
                      "return_unroutable": 0, "confirm": 0, "drop_unroutable": 0}
        # confirm bookkeeping: channels waiting for a commit
        self.commit_epoch = 0              # the epoch now collecting writes
        self.committed_epoch = 0           # the last epoch known to be on disk
        self.commit_waiters: list = []     # channels waiting on the current epoch
        self.alarms: set = set()           # "memory", "disk"
        self.ttl_queues: dict = {}         # queues holding messages with a TTL
        self.delayed = DelayedMessages(None)   # x-delayed-message exchanges' waiting messages
        self.reply_to: dict = {}           # direct reply-to token -> channel

    # ------------------------------------------------------------------ setup
    def bootstrap(self):
        """Default vhost and user on first start, as RabbitMQ creates them."""
        c = self.config
        if not self.vhosts:
            self.add_vhost(c.default_vhost)
            if c.default_user not in self.users.users:
                self.add_user(c.default_user, c.default_pass, ["administrator"])
                self.set_permissions(c.default_user, c.default_vhost, ".*", ".*", ".*")

    # ------------------------------------------------------------------ vhosts, users, permissions
    def add_vhost(self, name: str, description: str = "", tags=None, default_queue_type="classic") -> VHost:
        v = self.vhosts.get(name)
        if v is not None:
            return v
        v = self.vhosts[name] = VHost(name, description, tags, default_queue_type)
        self.store.put_definition("vhost", (name,), {"name": name, **v.metadata()})
        log.info("vhost '%s' added", name)
        return v

    def delete_vhost(self, name: str) -> bool:
        v = self.vhosts.get(name)
        if v is None:
            return False
        for conn in list(self.connections):
            if conn.vhost == name:
                conn.force_close(E.CONNECTION_FORCED, f"vhost '{name}' is deleted")
        for q in list(v.queues.values()):
            self.delete_queue(q)
        for x in list(v.exchanges.values()):
            if x.durable and x.name:
                self.store.delete_definition("exchange", (name, x.name))
        for key in [k for k in self.users.permissions if k[1] == name]:
            self.users.permissions.pop(key)
            self.store.delete_definition("permission", key)
        for key in [k for k in self.policies if k[0] == name]:
            self.policies.pop(key)
            self.store.delete_definition("policy", key)
        del self.vhosts[name]
        self.store.delete_definition("vhost", (name,))
        log.info("vhost '%s' deleted", name)
        return True

    def add_user(self, name, password=None, tags=None, password_hash=None, hashing_algorithm=None):
        kw = {}
        if hashing_algorithm:
            kw["hashing_algorithm"] = hashing_algorithm
        u = self.users.add_user(name, password, tags, password_hash=password_hash, **kw)
        self.save_user(u)
        return u

    def save_user(self, u):
        self.store.put_definition("user", (u.name,), {
            "name": u.name, "password_hash": u.password_hash, "hashing_algorithm": u.hashing_algorithm,
            "tags": list(u.tags), "limits": dict(u.limits)})

    def delete_user(self, name: str) -> bool:
        perms = [k for k in self.users.permissions if k[0] == name]
        if not self.users.delete_user(name):
            return False
        self.store.delete_definition("user", (name,))
        for k in perms:
            self.store.delete_definition("permission", k)
        for conn in list(self.connections):
            if conn.user is not None and conn.user.name == name:
                conn.force_close(E.CONNECTION_FORCED, f"user '{name}' is deleted")
        return True

    def set_permissions(self, user, vhost, configure, write, read):
        p = self.users.set_permission(user, vhost, configure, write, read)
        self.store.put_definition("permission", (user, vhost), {
            "user": user, "vhost": vhost, "configure": configure, "write": write, "read": read})
        return p

    def clear_permissions(self, user, vhost) -> bool:
        if self.users.clear_permission(user, vhost):
            self.store.delete_definition("permission", (user, vhost))
            return True
        return False

    def vhost(self, name: str) -> VHost:
        v = self.vhosts.get(name)
        if v is None:
            raise ChannelError(f"vhost {name} not found", E.NOT_ALLOWED)
        return v

    # ------------------------------------------------------------------ permissions
    def check_access(self, user, vhost: str, kind: str, resource: str, name: str):
        """Raise ACCESS_REFUSED unless `user` may `kind` (configure/write/read) `resource` `name`."""
        if user is None:
            return
        p = self.users.permission(user.name, vhost)
        if p is None or not p.allows(kind, name):
            raise ChannelError(f"access to {resource} '{name}' in vhost '{vhost}' refused for user "
                               f"'{user.name}'", E.ACCESS_REFUSED)

    # ------------------------------------------------------------------ exchanges
    def declare_exchange(self, vhost: VHost, name: str, type_: str, durable=False, auto_delete=False,
                         internal=False, arguments=None, passive=False, owner=None):
        arguments = arguments or {}
        x = vhost.exchanges.get(name)
        if not passive and type_ not in TYPES:
            raise ChannelError(f"unknown exchange type '{type_}'", E.PRECONDITION_FAILED)
        if passive:
            if x is None:
                raise not_found("exchange", name, vhost.name)
            return x
        if x is None and name.startswith("amq."):
            raise ChannelError(f"exchange name '{name}' contains reserved prefix 'amq.*'",
                               E.ACCESS_REFUSED)
        if x is not None:
            if x.type != type_:
                raise ChannelError(f"inequivalent arg 'type' for exchange '{name}' in vhost "
                                   f"'{vhost.name}': received '{type_}' but current is '{x.type}'",
                                   E.PRECONDITION_FAILED)
            for arg, new, cur in (("durable", durable, x.durable), ("auto_delete", auto_delete, x.auto_delete),
                                  ("internal", internal, x.internal)):
                if bool(new) != bool(cur):
                    raise ChannelError(
                        f"inequivalent arg '{arg}' for exchange '{name}' in vhost '{vhost.name}': "
                        f"received '{_fmt_value(bool(new))}' but current is '{_fmt_value(bool(cur))}'",
                        E.PRECONDITION_FAILED)
            self._check_args_equivalent("exchange", name, vhost.name, ("alternate-exchange",),
                                        arguments, x.arguments)
            return x
        if type_ == "x-delayed-message":
            inner = arguments.get("x-delayed-type")
            if isinstance(inner, bytes):
                inner = inner.decode()
            if inner not in TYPES or inner == "x-delayed-message":
                raise ChannelError("Invalid argument, 'x-delayed-type' must be an existing exchange type",
                                   E.PRECONDITION_FAILED)
        cls = TYPES.get(type_)
        if cls is None:
            raise ChannelError(f"invalid type '{type_}' for exchange '{name}' in vhost '{vhost.name}'",
                               E.PRECONDITION_FAILED)
        x = cls(vhost.name, name, durable, auto_delete, internal, arguments)
        vhost.exchanges[name] = x
        if self.policies:
            self.apply_policies_to_exchange(x)
        if durable:
            self.store.put_definition("exchange", (vhost.name, name), self.exchange_definition(x))
        return x

    @staticmethod
    def exchange_definition(x) -> dict:
        return {"name": x.name, "vhost": x.vhost, "type": x.type, "durable": x.durable,
                "auto_delete": x.auto_delete, "internal": x.internal, "arguments": x.arguments}

    def _check_args_equivalent(self, kind, name, vhost_name, keys, new: dict, cur: dict):
        for k in keys:
            a, b = new.get(k), cur.get(k)
            if a is None and b is None:
                continue
            if a is not None and b is not None:
                if _numeric_equal(a, b):
                    continue
                raise ChannelError(f"inequivalent arg '{k}' for {kind} '{name}' in vhost '{vhost_name}': "
                                   f"received '{_fmt_value(a)}' but current is '{_fmt_value(b)}'",
                                   E.PRECONDITION_FAILED)
            recv = "none" if a is None else f"the value '{_fmt_value(a)}' of type '{_type_name(a)}'"
            curr = "none" if b is None else f"the value '{_fmt_value(b)}' of type '{_type_name(b)}'"
            raise ChannelError(f"inequivalent arg '{k}' for {kind} '{name}' in vhost '{vhost_name}': "
                               f"received {recv} but current is {curr}", E.PRECONDITION_FAILED)

    def delete_exchange(self, vhost: VHost, name: str, if_unused=False):
        x = vhost.exchanges.get(name)
        if x is None:
            return False
        if if_unused and x.bindings:
            raise ChannelError(f"exchange '{name}' in vhost '{vhost.name}' in use", E.PRECONDITION_FAILED)
        self._remove_exchange(vhost, x)
        return True

    def _remove_exchange(self, vhost: VHost, x):
        # bindings where x is the source
        for b in list(x.bindings.values()):
            x.remove_binding(b.destination, b.routing_key, b.arguments)
            self._forget_binding(vhost, b)
        # bindings where x is the destination
        for src in list(vhost.exchanges.values()):
            if src is x:
                continue
            for b in src.remove_destination(x):
                self._forget_binding(vhost, b)
                self._maybe_auto_delete_exchange(vhost, src)
        x.deleted = True
        vhost.exchanges.pop(x.name, None)
        if x.durable:
            self.store.delete_definition("exchange", (vhost.name, x.name))

    def _maybe_auto_delete_exchange(self, vhost: VHost, x):
        if x.auto_delete and not x.bindings and not x.deleted:
            self._remove_exchange(vhost, x)

    # ------------------------------------------------------------------ queues
    def declare_queue(self, vhost: VHost, name: str, durable=False, exclusive=False, auto_delete=False,
                      arguments=None, passive=False, owner=None, server_named=False) -> Queue:
        arguments = arguments or {}
        q = vhost.queues.get(name) if name else None
        if passive:
            if q is None:
                raise not_found("queue", name, vhost.name)
            self.check_exclusive(q, owner)
            return q
        if not name:
            name = gen_name("amq.gen-")
        elif q is None and name.startswith("amq.") and not server_named:   # amq.gen- named by a channel
            raise ChannelError(f"queue name '{name}' contains reserved prefix 'amq.*'", E.ACCESS_REFUSED)
        if q is not None:
            self.check_exclusive(q, owner)
            for arg, new, cur in (("durable", durable if q.exclusive_owner is None else q.durable, q.durable),
                                  ("exclusive", exclusive, q.exclusive_owner is not None),
                                  ("auto_delete", auto_delete, q.auto_delete)):
                if bool(new) != bool(cur):
                    if arg == "exclusive":
                        raise self.locked(q)
                    raise ChannelError(
                        f"inequivalent arg '{arg}' for queue '{name}' in vhost '{vhost.name}': "
                        f"received '{_fmt_value(bool(new))}' but current is '{_fmt_value(bool(cur))}'",
                        E.PRECONDITION_FAILED)
            self._check_args_equivalent("queue", name, vhost.name, QUEUE_EQUIV_ARGS, arguments, q.arguments)
            q.last_used = time.monotonic()          # a redeclare counts as use for x-expires
            return q
        self.validate_queue_arguments(vhost, name, arguments)
        qtype = arguments.get("x-queue-type") or "classic"
        if isinstance(qtype, bytes):
            qtype = qtype.decode()
        if qtype in ("quorum", "stream"):
            for prop, bad in (("non-durable", not durable), ("exclusive-owner", exclusive),
                              ("auto-delete", auto_delete)):
                if bad:
                    raise ChannelError(f"invalid property '{prop}' for queue '{name}' in vhost "
                                       f"'{vhost.name}'", E.PRECONDITION_FAILED)
        limits.check_queue_limit(self, vhost, name)
        q = self.make_queue(vhost.name, name, durable, owner if exclusive else None, auto_delete, arguments)
        vhost.queues[name] = q
        if exclusive and owner is not None:
            owner.exclusive_queues.append(q)
        if durable and not exclusive:
            self.store.put_definition("queue", (vhost.name, name), self.queue_definition(q))
        self.apply_policies_to_queue(q)
        return q

    def make_queue(self, vhost_name, name, durable, owner, auto_delete, arguments) -> Queue:
        qtype = arguments.get("x-queue-type") or "classic"
        if isinstance(qtype, bytes):
            qtype = qtype.decode()
        if qtype == "stream":
            from ..model.stream import StreamQueue
            q = StreamQueue(vhost_name, name, durable, owner, auto_delete, arguments)
        elif isinstance(arguments.get("x-max-priority"), int) and arguments["x-max-priority"] > 0 \
                and qtype == "classic":
            q = PriorityQueue(vhost_name, name, durable, owner, auto_delete, arguments,
                              max_priority=arguments["x-max-priority"])
        else:
            q = Queue(vhost_name, name, durable, owner, auto_delete, arguments)
            if qtype == "quorum":
                q.kind = "quorum"
        q.last_used = time.monotonic()
        return q

    @staticmethod
    def queue_definition(q) -> dict:
        return {"name": q.name, "vhost": q.vhost, "durable": q.durable, "auto_delete": q.auto_delete,
                "arguments": q.arguments}

    def validate_queue_arguments(self, vhost, name, args):
        def bad(k, why):
            return ChannelError(f"invalid arg '{k}' for queue '{name}' in vhost '{vhost.name}': {why}",
                                E.PRECONDITION_FAILED)

        def is_int(v):
            return isinstance(v, int) and not isinstance(v, bool)

        for k in ("x-expires", "x-message-ttl", "x-max-length", "x-max-length-bytes", "x-delivery-limit",
                  "x-max-priority"):
            if k not in args:
                continue
            v = args[k]
            if not is_int(v):
                raise bad(k, f'"expected integer, got {_type_name(v)}"')
            if k == "x-expires" and v == 0:
                raise bad(k, "{value_zero,0}")
            if v < 0:
                raise bad(k, f"{{value_negative,{v}}}")
            if k == "x-max-priority" and v > 255:
                raise bad(k, f"{{max_value_exceeded,{v}}}")
        if "x-overflow" in args:
            ov = args["x-overflow"]
            if isinstance(ov, bytes):
                ov = ov.decode("utf-8", "replace")
            if ov not in ("drop-head", "reject-publish", "reject-publish-dlx"):
                raise bad("x-overflow", "invalid_overflow")
        if "x-dead-letter-routing-key" in args and "x-dead-letter-exchange" not in args:
            raise bad("x-dead-letter-routing-key", "routing_key_but_no_dlx_defined")
        if "x-single-active-consumer" in args and not isinstance(args["x-single-active-consumer"], bool):
            raise bad("x-single-active-consumer",
                      f"{{unacceptable_type,{_type_name(args['x-single-active-consumer'])}}}")
        for k in ("x-dead-letter-exchange", "x-dead-letter-routing-key"):
            if k in args and not isinstance(args[k], (str, bytes)):
                raise bad(k, f"{{unacceptable_type,{_type_name(args[k])}}}")
        qt = args.get("x-queue-type")
        if isinstance(qt, bytes):
            qt = qt.decode("utf-8", "replace")
        if qt is not None and qt not in ("classic", "quorum", "stream"):
            raise bad("x-queue-type", f"{{unsupported_queue_type,<<\"{_fmt_value(qt)}\">>}}")
        supported = QUEUE_TYPE_ARGS[qt or "classic"]
        for k in args:
            if k in KNOWN_QUEUE_ARGS and k not in supported:
                raise ChannelError(f"invalid arg '{k}' for queue '{name}' in vhost '{vhost.name}' of queue type "
                                   f"rabbit_{qt or 'classic'}_queue", E.PRECONDITION_FAILED)

    def locked(self, q) -> ChannelError:
        return ChannelError(
            f"cannot obtain exclusive access to locked queue '{q.name}' in vhost '{q.vhost}'. It could be "
            f"originally declared on another connection or the exclusive property value does not match "
            f"that of the original declaration.", E.RESOURCE_LOCKED)

    def check_exclusive(self, q, owner):
        if q.exclusive_owner is not None and q.exclusive_owner is not owner:
            raise self.locked(q)

    def get_queue(self, vhost: VHost, name: str, owner=None) -> Queue:
        q = vhost.queues.get(name)
        if q is None:
            raise not_found("queue", name, vhost.name)
        if owner is not False:
            self.check_exclusive(q, owner)
        return q

    def get_exchange(self, vhost: VHost, name: str):
        x = vhost.exchanges.get(name)
        if x is None:
            raise not_found("exchange", name, vhost.name)
        return x

    def delete_queue(self, q: Queue, if_unused=False, if_empty=False, reason="") -> int:
        if if_unused and q.consumers:
            raise ChannelError(f"queue '{q.name}' in vhost '{q.vhost}' in use", E.PRECONDITION_FAILED)
        if if_empty and q.message_count:
            raise ChannelError(f"queue '{q.name}' in vhost '{q.vhost}' not empty", E.PRECONDITION_FAILED)
        count = q.message_count
        vhost = self.vhosts.get(q.vhost)
        q.deleted = True
        for c in list(q.consumers):
            c.channel.consumer_cancelled_by_server(c)
        q.consumers.clear()
        msgs = q.purge()
        self._drop_messages(q, msgs)
        if vhost is not None:
            if vhost.queues.get(q.name) is q:
                del vhost.queues[q.name]
            for b in list(q.bindings):
                src = b.source
                src.remove_binding(q, b.routing_key, b.arguments)
                self._maybe_auto_delete_exchange(vhost, src)
        q.bindings.clear()
        if q.exclusive_owner is not None:
            try:
                q.exclusive_owner.exclusive_queues.remove(q)
            except ValueError:
                pass
        if q.durable and q.exclusive_owner is None:
            self.store.delete_definition("queue", (q.vhost, q.name))
            self.store.drop_queue_messages(q.vhost, q.name)
        self.dirty.pop(id(q), None)
        return count

    def purge_queue(self, q: Queue) -> int:
        msgs = q.purge()
        self._drop_messages(q, msgs)
        return len(msgs)

    def _drop_messages(self, q, msgs):
        if q.durable and self.store.durable:
            for m in msgs:
                if m.stored:
                    self.store.dequeue(q.vhost, q.name, 0, m.id)

    # ------------------------------------------------------------------ bindings
    def bind(self, vhost: VHost, source, destination, routing_key: str, arguments: dict):
        err = source.validate_binding(routing_key, arguments or {})
        if err:
            raise ChannelError(err, E.PRECONDITION_FAILED)
        b = Binding(source, destination, routing_key, arguments or {})
        if source.add_binding(b):
            if isinstance(destination, Queue):
                destination.bindings.append(b)
            if source.durable and destination.durable and getattr(destination, "exclusive_owner", None) is None:
                self.store.put_definition("binding", self.binding_key(vhost, b), self.binding_definition(b))

    @staticmethod
    def binding_definition(b) -> dict:
        d = b.destination
        return {"source": b.source.name, "vhost": b.source.vhost, "destination": d.name,
                "destination_type": "queue" if isinstance(d, Queue) else "exchange",
                "routing_key": b.routing_key, "arguments": b.arguments}

    @staticmethod
    def binding_key(vhost, b) -> tuple:
        d = b.destination
        return (vhost.name, b.source.name, "queue" if isinstance(d, Queue) else "exchange", d.name,
                b.routing_key, repr(freeze(b.arguments)))

    def unbind(self, vhost: VHost, source, destination, routing_key: str, arguments: dict):
        b = source.remove_binding(destination, routing_key, arguments or {})
        if b is None:
            return False
        self._forget_binding(vhost, b)
        self._maybe_auto_delete_exchange(vhost, source)
        return True

    def _forget_binding(self, vhost, b):
        d = b.destination
        if isinstance(d, Queue):
            try:
                d.bindings.remove(b)
            except ValueError:
                pass
        if b.source.durable and d.durable:
            self.store.delete_definition("binding", self.binding_key(vhost, b))

    def bindings_of(self, vhost: VHost) -> list:
        """All bindings in a vhost, the implicit default-exchange ones included, as RabbitMQ lists them."""
        out = []
        for q in vhost.queues.values():
            out.append(("", q, q.name, {}))
        for x in vhost.exchanges.values():
            for b in x.bindings.values():
                out.append((x.name, b.destination, b.routing_key, b.arguments))
        return out

    # ------------------------------------------------------------------ publish -> route -> deliver
    def new_message(self, exchange: str, routing_key: str, props: bytes, body: bytes, scan=None,
                    route=None) -> Message:
        m = Message(exchange, routing_key, props, body, scan, self.next_msg_id, route)
        self.next_msg_id += 1
        return m

    def route(self, vhost: VHost, x, msg) -> list:
        """Queues a message reaches from exchange x, following exchange-to-exchange bindings."""
        x.publish_in += 1
        if x.name == "":
            q = vhost.queues.get(msg.routing_key)
            return [q] if q is not None else []
        dests = x.route(msg.routing_key, msg)
        if not dests:
            return []
        queues = []
        seen = None
        for d in dests:
            if isinstance(d, Queue):
                queues.append(d)
            else:
                if seen is None:
                    seen = {id(x)}
                self._route_e2e(d, msg, queues, seen)
        if seen is not None and len(queues) > 1:
            uniq = {}
            for q in queues:
                uniq[id(q)] = q
            queues = list(uniq.values())
        return queues

    def _route_e2e(self, x, msg, queues, seen):
        if id(x) in seen:
            return
        seen.add(id(x))
        x.publish_in += 1
        for d in x.route(msg.routing_key, msg):
            if isinstance(d, Queue):
                queues.append(d)
            else:
                self._route_e2e(d, msg, queues, seen)

    def route_publish(self, vhost: VHost, x, msg) -> list:
        """Queues for a published message: CC/BCC keys, alternate exchanges, delayed and reply-to."""
        scan = msg.scan
        if x.TYPE == "x-delayed-message":
            return self._delay(vhost, x, msg)
        if scan.headers_span is not None and (b"\x02CC" in msg.props or b"\x03BCC" in msg.props):
            queues = self._route_cc(vhost, x, msg)
        else:
            queues = self.route(vhost, x, msg)
        if not queues:
            ae = x.arguments.get("alternate-exchange") or x.policy_ae
            seen = {x.name}
            while not queues and ae:
                if isinstance(ae, bytes):
                    ae = ae.decode()
                if ae in seen:
                    break
                seen.add(ae)
                ax = vhost.exchanges.get(ae)
                if ax is None:
                    break
                queues = self.route(vhost, ax, msg)
                ae = ax.arguments.get("alternate-exchange") or ax.policy_ae
        return queues

    def _route_cc(self, vhost, x, msg) -> list:
        """Route by the routing key and the CC and BCC headers; BCC is then stripped."""
        queues = self._route_keys(vhost, x, msg, DL.routing_keys(msg))
        msg.bcc = DL.bcc_keys(msg)
        msg.props = DL.strip_bcc(msg.props, msg.scan)
        msg.scan = P.scan(msg.props)
        msg._headers = None
        return queues

    def _route_keys(self, vhost, x, msg, keys) -> list:
        out = {}
        rk = msg.routing_key
        for k in keys:
            msg.routing_key = k
            for q in self.route(vhost, x, msg):
                out[id(q)] = q
        msg.routing_key = rk
        return list(out.values())

    def _delay(self, vhost, x, msg) -> list:
        h = msg.headers if msg.scan.headers_span is not None else {}
        delay = h.get("x-delay", 0)
        if isinstance(delay, int) and not isinstance(delay, bool) and delay > 0:
            self.delayed.add(int(time.time() * 1000) + delay, vhost.name, x.name, msg)
            return [None]        # accepted: not unroutable
        return self.route(vhost, x, msg)

    def _release_delayed(self, now_ms: int):
        for vname, xname, msg in self.delayed.due(now_ms, self._delayed_message):
            v = self.vhosts.get(vname)
            x = v.exchanges.get(xname) if v is not None else None
            if x is None:
                continue
            if msg.scan.headers_span is not None and (b"\x02CC" in msg.props or b"\x03BCC" in msg.props):
                queues = self._route_cc(v, x, msg)
            else:
                queues = self.route(v, x, msg)
            for q in queues:
                self.enqueue(q, msg)
        self.delayed.flush()

    def _delayed_message(self, exchange, routing_key, props, body) -> Message:
        return self.new_message(exchange, routing_key, props, body)

    # -- time to live
    @staticmethod
    def message_ttl(q: Queue, msg: Message):
        ttl = q.message_ttl
        exp = msg.scan.expiration
        if exp is not None:
            try:
                e = int(exp)
            except ValueError:
                e = None
            if e is not None and (ttl is None or e < ttl):
                ttl = e
        return ttl

    def enqueue(self, q: Queue, msg: Message) -> bool:
        """Put a routed message on a queue, or hand it straight to a consumer that has room.

        Returns False when the queue refuses it (x-overflow reject-publish)."""
        if q.limited and q.overflow != "drop-head" and self._full(q, msg):
            if q.overflow == "reject-publish-dlx":
                self.dead_letter(q, msg, "maxlen")
            return False
        ttl = None
        if q.message_ttl is not None or msg.scan.expiration is not None:
            ttl = self.message_ttl(q, msg)
            if ttl is not None and ttl <= 0:
                # expires at once unless a consumer takes it right now
                if q.consumers and q.message_count == 0:
                    c = self._pick_consumer(q)
                    if c is not None:
                        c.channel.deliver(c, q, q.next_seq(), msg, False)
                        return True
                q.published += 1
                self.dead_letter(q, msg, "expired")
                return True
        if q.kind == "stream":
            return q.append(self, msg)
        if ttl is None:
            if not self.enqueue_plain(q, msg) and q.limited:
                self._drop_head(q)
            return True
        if q.durable and msg.scan.delivery_mode == 2 and self.store.durable:
            self.persist(q, msg)
        seq = q.push(msg)
        exp = int(time.time() * 1000) + ttl
        q.expiry[seq] = exp
        heapq.heappush(q.deadlines, (exp, seq, msg))
        self.ttl_queues[id(q)] = q
        if q.limited:
            self._drop_head(q)
        if q.consumers:
            self.dirty[id(q)] = q
        return True

    def enqueue_plain(self, q: Queue, msg: Message) -> bool:
        """A message with no TTL: straight to a consumer with room if the queue is empty (True),
        else onto the queue (False). The publish hot path calls this directly for plain queues."""
        if msg.scan.delivery_mode == 2 and q.durable and self.store.durable:
            self.persist(q, msg)
        if q.consumers and not q.ready and not q.returned and not q.paged:
            c = self._pick_consumer(q)
            if c is not None:
                c.channel.deliver(c, q, q.next_seq(), msg, False)
                return True
        q.push(msg)
        if q.consumers:
            self.dirty[id(q)] = q
        return False

    def persist(self, q: Queue, msg: Message):
        """Record a persistent message's entry in a durable queue (the seq it is about to get)."""
        if not msg.stored:
            self.store.add_message(msg.id, msg.exchange, msg.routing_key, msg.props, msg.body)
            msg.stored = True
        msg.refs += 1
        self.store.enqueue(q.vhost, q.name, q.seq + 1, msg.id)

    def _full(self, q, msg) -> bool:
        if q.max_length is not None and q.message_count >= q.max_length:
            return True
        if q.max_length_bytes is not None and q.message_bytes + len(msg.body) > q.max_length_bytes:
            return True
        return False

    def _drop_head(self, q):
        while (q.max_length is not None and q.message_count > q.max_length) or \
                (q.max_length_bytes is not None and q.message_bytes > q.max_length_bytes):
            item = q.pop()
            if item is None:
                break
            seq, msg, _ = item
            q.expiry.pop(seq, None)
            q.delivery_counts.pop(seq, None)
            self.dead_letter(q, msg, "maxlen")
            self._forget(q, seq, msg)

    def _forget(self, q, seq, msg):
        """An entry left the queue without a delivery (dropped, expired, dead-lettered)."""
        if msg.stored and q.durable:
            self.store.dequeue(q.vhost, q.name, seq, msg.id)

    def take(self, q: Queue):
        """The next live entry to deliver: expired ones on the way are dead-lettered."""
        while True:
            item = q.pop()
            if item is None:
                return None
            if q.expiry:
                seq = item[0]
                exp = q.expiry.pop(seq, None)
                if exp is not None:
                    if exp <= time.time() * 1000:
                        self.dead_letter(q, item[1], "expired")
                        self._forget(q, seq, item[1])
                        continue
                    q.held_expiry[seq] = exp
            return item

    def expire(self, now_ms: int):
        """Dead-letter or drop every message whose TTL has passed, wherever it is in its queue."""
        for key, q in list(self.ttl_queues.items()):
            dl = q.deadlines
            while dl and dl[0][0] <= now_ms:
                exp, seq, msg = heapq.heappop(dl)
                if q.expiry.get(seq) != exp:
                    continue          # delivered meanwhile
                del q.expiry[seq]
                q.remove(seq, msg)
                self.dead_letter(q, msg, "expired")
                self._forget(q, seq, msg)
            if not dl:
                del self.ttl_queues[key]

    def expire_queues(self, now: float):
        """x-expires: delete queues unused for their expiry period."""
        for v in list(self.vhosts.values()):
            for q in list(v.queues.values()):
                if q.expires is not None and not q.consumers and not q.deleted and \
                        (now - q.last_used) * 1000 >= q.expires:
                    log.info("queue '%s' in vhost '%s' expired", q.name, q.vhost)
                    self.delete_queue(q)

    # -- dead lettering
    def dead_letter(self, q: Queue, msg: Message, reason: str):
        dlx = q.dlx
        if dlx is None:
            return
        v = self.vhosts.get(q.vhost)
        x = v.exchanges.get(dlx) if v is not None else None
        if x is None:
            log.debug("dead-letter exchange '%s' of queue '%s' does not exist; message dropped", dlx, q.name)
            return
        props = DL.record_death(msg, q.name, reason, int(time.time() * 1000))
        keys = [q.dlrk] if q.dlrk is not None else DL.routing_keys(msg) + (msg.bcc or [])
        new = self.new_message(dlx, keys[0], props, msg.body)
        targets = self._route_keys(v, x, new, keys) if len(keys) > 1 else self.route(v, x, new)
        if not targets:
            return
        deaths = DL.deaths_of(new)
        for tq in targets:
            if DL.is_cycle(deaths, tq.name):
                log.warning("dead-letter cycle: message from queue '%s' to '%s' dropped", q.name, tq.name)
                continue
            self.enqueue(tq, new)

    def _pick_consumer(self, q: Queue):
        consumers = q.consumers
        n = len(consumers)
        if q.consumer_priorities:
            # highest priority with room first; round-robin among consumers of that priority
            level = None
            first = None
            for i, c in enumerate(consumers):
                if level is not None and c.priority < level:
                    break
                if c.active and c.channel.can_deliver(c):
                    if level is None:
                        level, first = c.priority, (i, c)
                    if i >= q.rr:
                        q.rr = i + 1
                        return c
            if first is not None:
                q.rr = first[0] + 1
                return first[1]
            return None
        i = q.rr
        for _ in range(n):
            if i >= n:
                i = 0
            c = consumers[i]
            i += 1
            if c.active and c.channel.can_deliver(c):
                q.rr = i
                return c
        return None

    def dispatch(self, q: Queue):
        """Deliver ready messages to consumers with room, round-robin."""
        if q.deleted:
            return
        if q.kind == "stream":
            q.dispatch(self)
            return
        while q.consumers and q.message_count:
            c = self._pick_consumer(q)
            if c is None:
                return
            item = self.take(q)
            if item is None:
                return
            seq, msg, redelivered = item
            c.channel.deliver(c, q, seq, msg, redelivered)

    def run_dirty(self):
        while self.dirty:
            dirty = self.dirty
            self.dirty = {}
            for q in dirty.values():
                self.dispatch(q)

    def mark_dirty(self, q: Queue):
        if q.consumers and q.message_count:
            self.dirty[id(q)] = q

    def get_message(self, q: Queue):
        """basic.get: the head of the queue as (seq, message, redelivered), or None."""
        q.last_used = time.monotonic()
        if q.kind == "stream":
            raise ChannelError(f"queue '{q.name}' in vhost '{q.vhost}' does not support basic.get",
                               E.NOT_IMPLEMENTED if False else E.PRECONDITION_FAILED)
        return self.take(q)

    def reject(self, q: Queue, seq: int, msg: Message):
        """A delivery was rejected or nacked without requeue: dead-letter it if the queue says so."""
        q.held_expiry.pop(seq, None)
        q.delivery_counts.pop(seq, None)
        if not q.deleted:
            self.dead_letter(q, msg, "rejected")
        self._forget(q, seq, msg)

    def validate_consumer_arguments(self, q: Queue, args: dict):
        if args and "x-priority" in args:
            v = args["x-priority"]
            if isinstance(v, bool) or not isinstance(v, int):
                raise ChannelError(f"invalid arg 'x-priority' for {_q(q.name)} in vhost '{q.vhost}': "
                                   f'"expected integer, got {_type_name(v)}"', E.PRECONDITION_FAILED)
        if q.kind == "stream":
            q.validate_consumer(args)

    @staticmethod
    def consumer_priority(args: dict) -> int:
        v = args.get("x-priority", 0) if args else 0
        return v if isinstance(v, int) and not isinstance(v, bool) else 0

    def consumer_added(self, q: Queue, c):
        """Hook for queue features that react to consumers."""
        q.last_used = time.monotonic()
        if q.kind == "stream":
            q.consumer_added(c)

    def consumer_removed(self, q: Queue, c):
        q.last_used = time.monotonic()
        self.mark_dirty(q)

    def settle(self, q: Queue, seq: int, msg: Message):
        """A delivery was acknowledged: the queue no longer holds the message."""
        if q.kind == "stream":
            q.acked += 1
            self.mark_dirty(q)
            return
        if q.held_expiry:
            q.held_expiry.pop(seq, None)
        if q.delivery_counts:
            q.delivery_counts.pop(seq, None)
        if msg.stored and q.durable:
            self.store.dequeue(q.vhost, q.name, seq, msg.id)
        q.acked += 1

    def requeue(self, q: Queue, seq: int, msg: Message):
        if q.deleted:
            self._drop_messages(q, [msg])
            return
        if q.kind == "stream":
            return
        if q.kind == "quorum" or q.delivery_limit is not None:
            n = q.delivery_counts.get(seq, 0) + 1
            limit = q.delivery_limit
            if limit is None and q.kind == "quorum":
                limit = self.config.quorum_delivery_limit
            if limit is not None and limit >= 0 and n > limit:
                q.delivery_counts.pop(seq, None)
                q.held_expiry.pop(seq, None)
                self.dead_letter(q, msg, "delivery_limit")
                self._forget(q, seq, msg)
                return
            q.delivery_counts[seq] = n
        q.requeue(seq, msg)
        exp = q.held_expiry.pop(seq, None) if q.held_expiry else None
        if exp is not None:
            q.expiry[seq] = exp
            heapq.heappush(q.deadlines, (exp, seq, msg))
            self.ttl_queues[id(q)] = q
        q.redelivered_count += 1
        self.mark_dirty(q)

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

    def flush_output(self):
        pending = self.flush_pending
        self.flush_pending = []
        for conn in pending:
            conn.flush()

    def wait_for_commit(self, channel) -> int:
        """Register `channel` to be told when the writes recorded so far are durable."""
        if not self.commit_waiters and self.on_commit_needed is not None:
            self.on_commit_needed()
        self.commit_waiters.append(channel)
        return self.commit_epoch

    def begin_commit(self) -> tuple:
        """Close the current epoch: returns (epoch, channels waiting on it)."""
        epoch = self.commit_epoch
        waiters = self.commit_waiters
        self.commit_epoch += 1
        self.commit_waiters = []
        return epoch, waiters

    def commit_done(self, epoch: int, waiters: list, error: Exception | None = None):
        self.committed_epoch = max(self.committed_epoch, epoch)
        seen = set()
        for ch in waiters:
            if id(ch) in seen:
                continue
            seen.add(id(ch))
            ch.on_commit(epoch, error)

    # ------------------------------------------------------------------ policies
    POLICY_QUEUE_KEYS = {"message-ttl": "x-message-ttl", "expires": "x-expires", "max-length": "x-max-length",
                         "max-length-bytes": "x-max-length-bytes", "overflow": "x-overflow",
                         "dead-letter-exchange": "x-dead-letter-exchange",
                         "dead-letter-routing-key": "x-dead-letter-routing-key",
                         "delivery-limit": "x-delivery-limit"}

    POLICY_MIN_KEYS = {"x-message-ttl", "x-expires", "x-max-length", "x-max-length-bytes", "x-delivery-limit"}

    def _matching_policy(self, table: dict, vhost: str, name: str, kinds: tuple):
        best = None
        for (vname, _pname), p in table.items():
            if vname != vhost or p.get("apply-to", "all") not in kinds:
                continue
            try:
                if re.search(p.get("pattern", ""), name) is None:
                    continue
            except re.error:
                continue
            if best is None or p.get("priority", 0) > best.get("priority", 0):
                best = p
        return best

    def apply_policies_to_queue(self, q: Queue):
        kinds = ("all", "queues", {"classic": "classic_queues", "quorum": "quorum_queues",
                                   "stream": "streams"}.get(q.kind, "classic_queues"))
        p = self._matching_policy(self.policies, q.vhost, q.name, kinds)
        op = self._matching_policy(self.operator_policies, q.vhost, q.name, kinds)
        eff = dict(q.arguments)
        if p is not None:
            for k, v in (p.get("definition") or {}).items():
                arg = self.POLICY_QUEUE_KEYS.get(k)
                if arg is None:
                    continue
                cur = q.arguments.get(arg)
                if cur is None:
                    eff[arg] = v
                elif arg in self.POLICY_MIN_KEYS and isinstance(v, int) and isinstance(cur, int):
                    eff[arg] = min(cur, v)          # for limits the lower of argument and policy wins
        if op is not None:
            # operator policies bound numeric limits: the lower value wins
            for k, v in (op.get("definition") or {}).items():
                arg = self.POLICY_QUEUE_KEYS.get(k)
                if arg is None or not isinstance(v, int):
                    continue
                cur = eff.get(arg)
                eff[arg] = v if not isinstance(cur, int) else min(cur, v)
        q.policy = p.get("name") if p else None
        q.operator_policy = op.get("name") if op else None
        q.configure(eff)
        if q.limited:
            self._drop_head(q)

    def apply_policies_to_exchange(self, x):
        p = self._matching_policy(self.policies, x.vhost, x.name, ("all", "exchanges"))
        x.policy = p.get("name") if p else None
        x.policy_ae = (p.get("definition") or {}).get("alternate-exchange") if p else None

    def apply_policies(self, vhost_name: str):
        v = self.vhosts.get(vhost_name)
        if v is None:
            return
        for q in v.queues.values():
            self.apply_policies_to_queue(q)
        for x in v.exchanges.values():
            self.apply_policies_to_exchange(x)

    def set_policy(self, vhost: str, name: str, pattern: str, definition: dict, priority: int = 0,
                   apply_to: str = "all", operator: bool = False):
        if vhost not in self.vhosts:
            raise ChannelError(f"vhost {vhost} not found", E.NOT_FOUND)
        try:
            re.compile(pattern)
        except re.error as e:
            raise ValueError(f"invalid pattern '{pattern}': {e}") from None
        p = {"vhost": vhost, "name": name, "pattern": pattern, "apply-to": apply_to,
             "definition": dict(definition), "priority": int(priority)}
        (self.operator_policies if operator else self.policies)[(vhost, name)] = p
        self.store.put_definition("operator_policy" if operator else "policy", (vhost, name), p)
        self.apply_policies(vhost)
        return p

    def clear_policy(self, vhost: str, name: str, operator: bool = False) -> bool:
        table = self.operator_policies if operator else self.policies
        if table.pop((vhost, name), None) is None:
            return False
        self.store.delete_definition("operator_policy" if operator else "policy", (vhost, name))
        self.apply_policies(vhost)
        return True

    # ------------------------------------------------------------------ resource alarms
    def alarm_reason(self) -> str:
        return "low on disk" if "disk" in self.alarms else "low on memory"

    def set_alarm(self, name: str, active: bool):
        """A memory or disk alarm: block publishers (connection.blocked, stop reading) until it clears."""
        if active and name not in self.alarms:
            self.alarms.add(name)
            log.warning("%s resource limit alarm set; publishers will be blocked until it clears", name)
            for conn in list(self.connections):
                conn.set_blocked(True, self.alarm_reason())
        elif not active and name in self.alarms:
            self.alarms.discard(name)
            log.warning("%s resource limit alarm cleared", name)
            if not self.alarms:
                for conn in list(self.connections):
                    conn.alarm_cleared()
        self.flush_output()

    def check_resources(self):
        """Disk free space under the data dir and process memory against their limits."""
        c = self.config
        if c.data_dir and c.disk_free_limit:
            try:
                import shutil
                free = shutil.disk_usage(c.data_dir).free
                self.set_alarm("disk", free < c.disk_free_limit)
            except OSError:
                pass
        if c.memory_high_watermark:
            try:
                total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
                self.set_alarm("memory", self.memory_usage() > total * c.memory_high_watermark)
            except (ValueError, OSError):
                pass

    def tick(self, now: float):
        """Called about once a second: slow time-based work (x-expires of unused queues)."""
        self.expire_queues(time.monotonic())

    def timers(self):
        """Called every few tens of milliseconds: message TTLs and delayed messages."""
        if self.ttl_queues:
            self.expire(int(time.time() * 1000))
        if len(self.delayed):
            self._release_delayed(int(time.time() * 1000))
        if self.dirty:
            self.run_dirty()

    # ------------------------------------------------------------------ connections
    def sasl_mechanisms(self, conn) -> tuple:
        """Mechanisms offered in connection.start: EXTERNAL too where client certificates are verified."""
        return x509.mechanisms(conn.tls)

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

    def memory_usage(self) -> int:
        try:
            with open(f"/proc/{os.getpid()}/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            return 0


__all__ = ["Broker", "Config", "channel_error"]
