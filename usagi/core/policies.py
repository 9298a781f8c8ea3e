"""Policies and operator policies: which one applies to a queue or exchange, and the effective
arguments that result.

Part of the engine (see broker.py): methods of Broker, split out by concern.

Patterns are users' (a policymaker's): they are matched through model.patterns at a bounded cost,
one lookup spends at most POLICY_LOOKUP_BUDGET however many policies the vhost has, and the answer
for a (vhost, name, kinds) is remembered until the policies change. Setting a policy re-applies
the policies to every queue and exchange of the vhost; with many of them that work goes in slices
of APPLY_SLICE per loop turn, so AMQP keeps flowing between slices.
"""
from __future__ import annotations

import logging
import time

from ..amqp import errors as E
from ..amqp.errors import ChannelError
from ..model import patterns
from ..model.patterns import MATCH, SKIPPED, BoundedCache, Budget, PatternError
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

    POLICY_LOOKUP_BUDGET = 0.005   # seconds for all the pattern matches of one lookup
    POLICY_CACHE_SIZE = 65536      # remembered lookups (vhost, name, kinds) -> policy
    APPLY_SLICE = 0.005            # seconds of re-applying policies per loop turn

    _policy_cache = None           # made on first use: (operator?, vhost, name, kinds) -> policy or None
    _policy_runs = None            # vhost -> number of the latest run of apply_policies
    _policy_bulk = False           # within a run of apply_policies

    def _policy_lookups(self) -> BoundedCache:
        if self._policy_cache is None:
            self._policy_cache = BoundedCache(self.POLICY_CACHE_SIZE)
        return self._policy_cache

    def policies_changed(self):
        """Forget remembered lookups: call after changing `policies` or `operator_policies`."""
        if self._policy_cache:
            self._policy_cache.clear()

    def _matching_policy(self, table: dict, vhost: str, name: str, kinds: tuple):
        """The highest-priority policy of `table` in `vhost` whose pattern matches `name` (the first
        in the table among equals). A match that runs out of its budget counts as no match, as a
        PCRE match limit does in RabbitMQ; such an answer is not remembered."""
        if not table:
            return None
        cache = self._policy_lookups()
        key = (table is self.operator_policies, vhost, name, kinds)
        hit = cache.get(key, cache)
        if hit is not cache and (hit is None or table.get((vhost, hit.get("name"))) is hit):
            return hit                 # (a remembered policy still in the table)
        found = []                     # (is expensive, -priority, order, policy, pattern)
        for order, ((vname, _pname), p) in enumerate(table.items()):
            if vname != vhost or p.get("apply-to", "all") not in kinds:
                continue
            try:
                pattern = patterns.compile_pattern(p.get("pattern", ""))
            except PatternError:
                continue
            found.append((pattern.expensive, -p.get("priority", 0), order, p, pattern))
        # cheap patterns first, so that expensive ones cannot spend the budget before them; the
        # highest priority first, so that what cannot win is not matched at all
        found.sort(key=lambda f: f[:3])
        budget = Budget(self.POLICY_LOOKUP_BUDGET) if found else None
        best = win = None
        sure = True
        for _exp, neg_prio, order, p, pattern in found:
            if win is not None and (neg_prio, order) > win:
                continue               # could not win over what already matched
            r = pattern.test(name, budget)
            if r == MATCH:
                best, win = p, (neg_prio, order)
            elif r == SKIPPED:
                sure = False
        if sure and not self._policy_bulk:
            cache.put(key, best)       # (a bulk run would only push out what declares use)
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
        """Re-apply the policies to every queue and exchange of a vhost. The first APPLY_SLICE of
        the work is done now (all of it for a vhost of ordinary size); the rest continues on later
        loop turns, abandoned if the policies change again meanwhile (a newer run covers all)."""
        self.policies_changed()
        v = self.vhosts.get(vhost_name)
        if v is None:
            return
        if self._policy_runs is None:
            self._policy_runs = {}
        run = self._policy_runs[vhost_name] = self._policy_runs.get(vhost_name, 0) + 1
        items = [*v.queues.values(), *v.exchanges.values()]
        self._apply_policies_slice(vhost_name, v, run, items, 0)

    def _apply_policies_slice(self, vhost_name: str, v, run: int, items: list, start: int):
        if self._policy_runs.get(vhost_name) != run or self.vhosts.get(vhost_name) is not v:
            return                     # superseded by a newer run, or the vhost is gone
        sliced = self.on_defer is not None
        deadline = time.perf_counter() + self.APPLY_SLICE
        queues, exchanges = v.queues, v.exchanges
        i, n = start, len(items)
        self._policy_bulk = True
        try:
            while i < n:
                it = items[i]
                i += 1
                if isinstance(it, Queue):
                    if queues.get(it.name) is it:
                        self.apply_policies_to_queue(it)
                elif exchanges.get(it.name) is it:
                    self.apply_policies_to_exchange(it)
                if sliced and i < n and time.perf_counter() >= deadline:
                    self.defer(lambda: self._apply_policies_slice(vhost_name, v, run, items, i))
                    return
        finally:
            self._policy_bulk = False

    def set_policy(self, vhost: str, name: str, pattern: str, definition: dict, priority: int = 0,
                   apply_to: str = "all", operator: bool = False):
        if vhost not in self.vhosts:
            raise ChannelError(f"vhost {vhost} not found", E.NOT_FOUND)
        try:
            patterns.validate(pattern)
        except PatternError as e:
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
