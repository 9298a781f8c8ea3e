"""Routing a published message to queues: exchange types, exchange-to-exchange bindings, CC/BCC,
alternate exchanges and delayed messages.

Part of the engine (see broker.py): methods of Broker, split out by concern.
"""
from __future__ import annotations

import logging
import time

from ..amqp import properties as P
from ..model.message import Message
from ..model.queue import Queue
from ..model import deadletter as DL
from ..model.vhost import VHost
from . import upkeep


log = logging.getLogger("usagi.broker")


class RoutingMixin:
    # ------------------------------------------------------------------ publish -> route -> deliver
    def new_message(self, exchange: str, routing_key: str, props: bytes, body: bytes, scan=None,
                    route=None) -> Message:
        m = Message(exchange, routing_key, props, body, scan, self.next_msg_id, route)
        self.next_msg_id += 1
        return m

    def route(self, vhost: VHost, x, msg, keys=None) -> list:
        """Queues a message reaches from exchange x, each once: through exchange-to-exchange
        bindings and alternate exchanges, as RabbitMQ routes (see _route_walk). `keys` are its
        routing keys when there are several (CC and BCC headers); by default its routing key."""
        x.publish_in += 1
        if keys is None:
            if x.name == "":
                q = vhost.queues.get(msg.routing_key)
                return [q] if q is not None else []
            dests = x.route(msg.routing_key, msg)
            if dests:
                queues = []
                for d in dests:
                    if not isinstance(d, Queue):
                        break
                    queues.append(d)
                else:
                    return queues    # the common case: queues only (an exchange lists each once)
            elif not (x.arguments.get("alternate-exchange") or x.policy_ae):
                return []
            return self._route_walk(vhost, x, msg, (msg.routing_key,), dests)
        return self._route_walk(vhost, x, msg, keys, None)

    def _route_walk(self, vhost: VHost, x, msg, keys, dests) -> list:
        """RabbitMQ's routing walk (rabbit_exchange:route/2): starting from x, every exchange
        reached (through an exchange-to-exchange binding, or as the alternate exchange of an
        exchange whose own bindings matched nothing) routes the message with all its routing keys.
        Each exchange is visited at most once, recorded by name in a seen set that x starts, so
        cycles of bindings or of alternate exchanges end; a queue reached several times gets the
        message once. An explicit worklist (last in, first out, as RabbitMQ's), never recursion:
        the cost of one publish is at most one visit per exchange of the vhost and one look-up per
        routing key at each, however the user chained them. `dests`: x's own, if already known."""
        exchanges = vhost.exchanges
        found: dict = {}                # id(queue) -> queue, in the order reached
        seen = {x.name}
        work = [x]
        while work:
            ex = work.pop()
            if dests is None:
                if ex is not x:
                    ex.publish_in += 1
                dests = self._exchange_dests(vhost, ex, msg, keys)
            if not dests:
                ae = ex.arguments.get("alternate-exchange") or ex.policy_ae
                if ae:
                    if isinstance(ae, bytes):
                        ae = ae.decode("utf-8", "replace")
                    if ae not in seen:
                        seen.add(ae)
                        ax = exchanges.get(ae)
                        if ax is not None:
                            work.append(ax)
            else:
                for d in dests:
                    if isinstance(d, Queue):
                        found[id(d)] = d
                    elif d.name not in seen and not d.deleted:
                        seen.add(d.name)
                        work.append(d)
            dests = None
        return list(found.values())

    @staticmethod
    def _exchange_dests(vhost: VHost, ex, msg, keys):
        """What one exchange routes the message to (queues and exchanges), over all its keys."""
        if ex.name == "":                       # the default exchange (reached as an alternate)
            return [q for q in (vhost.queues.get(k) for k in dict.fromkeys(keys)) if q is not None]
        if len(keys) == 1:
            return ex.route(keys[0], msg)
        out = {}
        for k in keys:
            for d in ex.route(k, msg):
                out[id(d)] = d
        return list(out.values())

    def route_publish(self, vhost: VHost, x, msg) -> list:
        """Queues for a published message: CC/BCC keys, alternate exchanges, delayed and reply-to."""
        if x.TYPE == "x-delayed-message":
            return self._delay(vhost, x, msg)
        if msg.scan.headers_span is not None and (b"\x02CC" in msg.props or b"\x03BCC" in msg.props):
            return self._route_cc(vhost, x, msg)
        return self.route(vhost, x, msg)

    def _route_cc(self, vhost, x, msg) -> list:
        """Route by the routing key and the CC and BCC headers; BCC is then stripped."""
        queues = self.route(vhost, x, msg, DL.routing_keys(msg))
        msg.bcc = DL.bcc_keys(msg)
        msg.props = DL.strip_bcc(msg.props, msg.scan)
        msg.scan = P.scan(msg.props)
        msg._headers = None
        return queues

    def _delay(self, vhost, x, msg) -> list:
        h = msg.headers if msg.scan.headers_span is not None else {}
        delay = h.get("x-delay", 0)
        if isinstance(delay, int) and not isinstance(delay, bool) and delay > 0:
            self.delayed.add(int(time.time() * 1000) + delay, vhost.name, x.name, msg)
            return [None]        # accepted: not unroutable
        return self.route(vhost, x, msg)

    def _release_delayed(self, now_ms: int):
        """Route the delayed messages now due. One that fails is logged and dropped; the others
        still go, and the store of delayed messages is still brought up to date."""
        try:
            for vname, xname, msg in self.delayed.due(now_ms, self._delayed_message):
                try:
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
                except Exception:
                    upkeep.failed("delayed message release", log, f"exchange '{xname}' in vhost '{vname}'")
        finally:
            self.delayed.flush()

    def _delayed_message(self, exchange, routing_key, props, body) -> Message:
        return self.new_message(exchange, routing_key, props, body)
