"""Policies and operator policies: which one applies to a queue or exchange, and the effective
arguments that result.

Part of the engine (see broker.py): methods of Broker, split out by concern.
"""
from __future__ import annotations

import logging
import re

from ..amqp import errors as E
from ..amqp.errors import ChannelError
from ..model.queue import Queue


log = logging.getLogger("usagi.broker")


class PolicyMixin:
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
