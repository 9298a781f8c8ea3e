"""Headers exchange: match on message headers, x-match all / any / all-with-x / any-with-x.

Bindings are indexed by the (header name, value) pairs they ask for, so routing a message looks
at each of its headers once instead of each binding at each of its pairs: one publish costs
O(H + P + M log M), H the message's headers, P the binding pairs that one of them satisfies and M
the bindings matched, plus normalising once each header value that some binding compares (its
size; the field-table decoder bounds its depth). Adding or removing a binding costs O(its pairs).
"""
from __future__ import annotations

from ...amqp.table import Opaque
from .base import Exchange

_MATCH_MODES = ("all", "any", "all-with-x", "any-with-x")


class _Rule:
    __slots__ = ("seq", "binding", "match_all", "pairs")

    def __init__(self, seq, binding, match_all, pairs):
        self.seq = seq               # order of arrival: matches are reported in it
        self.binding = binding
        self.match_all = match_all
        self.pairs = pairs           # [(header name, normalised value or None for "present")]


class HeadersExchange(Exchange):
    TYPE = "headers"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.rules: dict = {}       # Binding.key -> _Rule
        self.by_value: dict = {}    # (name, normalised value) -> {Binding.key: _Rule}
        self.by_name: dict = {}     # name -> {Binding.key: _Rule}, for void values (presence)
        self.names: dict = {}       # name -> number of pairs comparing a value under it
        self.always: dict = {}      # Binding.key -> _Rule: x-match all with nothing to match
        self.seq = 0

    def validate_binding(self, routing_key, arguments):
        mode = arguments.get("x-match", "all")
        if mode not in _MATCH_MODES:
            if isinstance(mode, bytes):
                mode = mode.decode("utf-8", "replace")
            return f"Invalid x-match field value <<\"{mode}\">>; expected all, any, all-with-x, or any-with-x"
        return None

    def _index_add(self, b):
        args = b.arguments
        mode = args.get("x-match", "all")
        with_x = mode.endswith("-with-x")
        pairs = [(k, None if v is None else _norm(v)) for k, v in args.items()
                 if k != "x-match" and (with_x or not k.startswith("x-"))]
        self.seq += 1
        rule = _Rule(self.seq, b, mode.startswith("all"), pairs)
        self.rules[b.key] = rule
        if not pairs and rule.match_all:
            self.always[b.key] = rule
        for k, v in pairs:
            if v is None:
                self.by_name.setdefault(k, {})[b.key] = rule
            else:
                self.by_value.setdefault((k, v), {})[b.key] = rule
                self.names[k] = self.names.get(k, 0) + 1

    def _index_remove(self, b):
        rule = self.rules.pop(b.key, None)
        if rule is None:
            return
        self.always.pop(b.key, None)
        for k, v in rule.pairs:
            index, key = (self.by_name, k) if v is None else (self.by_value, (k, v))
            rules = index.get(key)
            if rules is not None:
                rules.pop(b.key, None)
                if not rules:
                    del index[key]
            if v is not None:
                n = self.names[k] - 1
                if n:
                    self.names[k] = n
                else:
                    del self.names[k]

    def route(self, routing_key, msg):
        if not self.rules:
            return ()
        headers = msg.headers
        hits: dict = {}             # Binding.key -> [rule, pairs satisfied]
        by_name, by_value, names = self.by_name, self.by_value, self.names
        for k, v in headers.items():
            rules = by_name.get(k)
            if rules:
                for key, rule in rules.items():
                    h = hits.get(key)
                    if h is None:
                        hits[key] = [rule, 1]
                    else:
                        h[1] += 1
            if k in names:
                rules = by_value.get((k, _norm(v)))
                if rules:
                    for key, rule in rules.items():
                        h = hits.get(key)
                        if h is None:
                            hits[key] = [rule, 1]
                        else:
                            h[1] += 1
        matched = [rule for rule, n in hits.values() if not rule.match_all or n == len(rule.pairs)]
        if self.always:
            matched += self.always.values()
        if not matched:
            return []
        matched.sort(key=lambda r: r.seq)
        out = []
        seen = set()
        for rule in matched:
            d = rule.binding.destination
            if id(d) not in seen:
                seen.add(id(d))
                out.append(d)
        return out


def _norm(v):
    """Values compare by type class and value, as RabbitMQ compares them: integers of any width
    and floats alike, booleans apart from numbers, strings alike whether sent as longstr or bytes.
    A value the decoder could not read (see amqp.table.Opaque) equals nothing. Nesting is bounded
    by the field-table decoder (MAX_DEPTH), so the recursion is too."""
    if isinstance(v, bool):
        return ("bool", v)
    if isinstance(v, (int, float)):
        return ("num", v)          # Erlang compares 1 == 1.0 as equal
    if isinstance(v, bytes):
        return ("str", v.decode("utf-8", "surrogateescape"))
    if isinstance(v, str):
        return ("str", v)
    if isinstance(v, dict):
        return ("table", tuple(sorted((k, _norm(x)) for k, x in v.items())))
    if isinstance(v, list):
        return ("array", tuple(_norm(x) for x in v))
    if isinstance(v, Opaque):
        return ("opaque", id(v))
    return ("other", repr(v))
