"""Exchanges, queues and bindings: declare, delete, purge, bind and unbind, with RabbitMQ's
checks and texts; durable ones are written to the store.

Part of the engine (see broker.py): methods of Broker, split out by concern.
"""
from __future__ import annotations

import logging
import time

from ..amqp import errors as E
from ..amqp.errors import ChannelError
from ..model.exchanges import TYPES
from ..model.exchanges.base import Binding
from ..model.queue import PriorityQueue, Queue
from . import access, limits
from ..model.util import freeze, gen_name
from ..model.vhost import VHost

from .arguments import (QUEUE_EQUIV_ARGS, _fmt_value, _numeric_equal, _type_name, not_found, queue_type,
                        validate_queue_arguments)

log = logging.getLogger("usagi.broker")


class EntitiesMixin:
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
        self.check_new_exchange(vhost, name, type_, arguments)
        x = TYPES[type_](vhost.name, name, durable, auto_delete, internal, arguments)
        vhost.exchanges[name] = x
        if self.policies:
            self.apply_policies_to_exchange(x)
        if durable:
            self.store.put_definition("exchange", (vhost.name, name), self.exchange_definition(x))
        return x

    @staticmethod
    def check_new_exchange(vhost: VHost, name: str, type_: str, arguments: dict):
        """What declaring a new exchange checks before it creates it (406, or 403 for amq.*);
        a definitions import runs it on every exchange before it changes anything."""
        if name.startswith("amq."):
            raise ChannelError(f"exchange name '{name}' contains reserved prefix 'amq.*'",
                               E.ACCESS_REFUSED)
        if not isinstance(type_, str) or type_ not in TYPES:
            raise ChannelError(f"unknown exchange type '{type_}'", E.PRECONDITION_FAILED)
        if type_ == "x-delayed-message":
            inner = (arguments or {}).get("x-delayed-type")
            if isinstance(inner, bytes):
                inner = inner.decode("utf-8", "replace")
            if not isinstance(inner, str) or inner not in TYPES or inner == "x-delayed-message":
                raise ChannelError("Invalid argument, 'x-delayed-type' must be an existing exchange type",
                                   E.PRECONDITION_FAILED)

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
        """Delete exchange x with its bindings; then, as RabbitMQ does (rabbit_binding's
        remove_for_destination calling rabbit_exchange:maybe_auto_delete), every auto-delete
        exchange whose last binding went with it, and so on down the chain.

        A worklist, never recursion: users chain auto-delete exchanges as deep as they like. Each
        exchange is removed once and each binding forgotten once; the exchanges bound to x are
        found through x.incoming rather than by scanning the vhost. The cost is therefore linear
        in what is removed (plus what the source exchanges' own indexes charge per unbinding)."""
        todo = [x]
        while todo:
            x = todo.pop()
            if x.deleted:
                continue
            x.deleted = True
            # bindings where x is the source: x goes away, so its routing index is left as it is
            # (nothing routes through a deleted exchange) instead of being updated per binding
            out = list(x.bindings.values())
            x.bindings.clear()
            for b in out:
                self._forget_binding(vhost, b)
            # bindings where x is the destination; a source left without bindings goes next
            for b in list(x.incoming.values()):
                src = b.source
                if src.remove_binding(x, b.routing_key, b.arguments) is None:
                    x.incoming.pop(id(b), None)
                    continue
                self._forget_binding(vhost, b)
                if src.auto_delete and not src.bindings and not src.deleted:
                    todo.append(src)
            if vhost.exchanges.get(x.name) is x:
                del vhost.exchanges[x.name]
            if x.durable:
                self.store.delete_definition("exchange", (vhost.name, x.name))

    def _maybe_auto_delete_exchange(self, vhost: VHost, x):
        """An exchange just lost a binding as the source: delete it (and what that cascades to)
        if it is auto-delete and that was its last binding."""
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
        self.stats["queue_declared"] += 1
        if "x-queue-type" not in arguments and durable and not exclusive and not auto_delete \
                and vhost.default_queue_type not in ("classic", "", None, "undefined") \
                and (q is None or "x-queue-type" in q.arguments):
            # the vhost's default queue type, for a queue that can be of it (as RabbitMQ, which
            # records it in the queue's arguments); a queue that exists without the argument (made
            # before the default was set) is left as it is, as RabbitMQ 3.13 and later leave it
            arguments = {**arguments, "x-queue-type": vhost.default_queue_type}
        if not name:
            name = gen_name("amq.gen-")
            server_named = True
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
        self.check_new_queue(vhost, name, durable, exclusive, auto_delete, arguments, server_named)
        limits.check_queue_limit(self, vhost, name)
        q = self.make_queue(vhost.name, name, durable, owner if exclusive else None, auto_delete, arguments)
        vhost.queues[name] = q
        self.stats["queue_created"] += 1
        if exclusive and owner is not None:
            owner.exclusive_queues.append(q)
        if durable and not exclusive:
            self.store.put_definition("queue", (vhost.name, name), self.queue_definition(q))
        self.apply_policies_to_queue(q)
        return q

    def check_new_queue(self, vhost: VHost, name: str, durable, exclusive, auto_delete, arguments: dict,
                        server_named=False):
        """What declaring a new queue checks before it creates it (the vhost's queue limit
        aside): its arguments' types and ranges, and the properties its type allows (a name
        the server chose among them). A definitions import runs it on every queue before it
        changes anything."""
        self.validate_queue_arguments(vhost, name, arguments)
        qtype = queue_type(arguments)
        if qtype in ("quorum", "stream"):
            if server_named:
                raise ChannelError(f"Cannot declare a server-named queue for type rabbit_{qtype}_queue",
                                   E.PRECONDITION_FAILED)
            for prop, bad in (("non-durable", not durable), ("exclusive-owner", exclusive),
                              ("auto-delete", auto_delete)):
                if bad:
                    raise ChannelError(f"invalid property '{prop}' for queue '{name}' in vhost "
                                       f"'{vhost.name}'", E.PRECONDITION_FAILED)

    def make_queue(self, vhost_name, name, durable, owner, auto_delete, arguments) -> Queue:
        qtype = queue_type(arguments)
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
        """Types and ranges of queue.declare arguments, as RabbitMQ checks them (406)."""
        validate_queue_arguments(vhost.name, name, args)

    def locked(self, q) -> ChannelError:
        return access.locked(q)

    def check_exclusive(self, q, owner):
        access.check_exclusive(q, owner)

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
        if not q.deleted:
            self.stats["queue_deleted"] += 1
            self.counters.retire_queue(q)       # its counts stay in the node's totals
        q.deleted = True
        for c in list(q.consumers):
            c.channel.consumer_cancelled_by_server(c)
        q.consumers.clear()
        msgs = q.purge()
        self._drop_messages(q, msgs)
        self._forget_binding_rows(q)
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

    def _forget_binding_rows(self, q: Queue):
        """The stored rows of a deleted queue's durable bindings go with it (else a queue
        re-created under that name would get them back at the next start)."""
        if q.durable and q.exclusive_owner is None:
            for b in q.bindings:
                if b.source.durable:
                    self.store.delete_definition("binding", (
                        q.vhost, b.source.name, "queue", q.name, b.routing_key, repr(freeze(b.arguments))))

    def purge_queue(self, q: Queue) -> int:
        msgs = q.purge()
        self._drop_messages(q, msgs)
        return len(msgs)

    def _drop_messages(self, q, msgs):
        if q.durable and self.store.durable:
            for m in msgs:
                if m.stored:
                    self.unstore(q, 0, m)

    # ------------------------------------------------------------------ bindings
    def bind(self, vhost: VHost, source, destination, routing_key: str, arguments: dict):
        err = source.validate_binding(routing_key, arguments or {})
        if err:
            raise ChannelError(err, E.PRECONDITION_FAILED)
        b = Binding(source, destination, routing_key, arguments or {})
        if source.add_binding(b):
            if isinstance(destination, Queue):
                destination.bindings.append(b)
            else:
                destination.incoming[id(b)] = b     # for the auto-delete cascade (_remove_exchange)
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
        else:
            d.incoming.pop(id(b), None)
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
