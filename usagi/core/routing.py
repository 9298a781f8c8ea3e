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


log = logging.getLogger("usagi.broker")


class RoutingMixin:
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
