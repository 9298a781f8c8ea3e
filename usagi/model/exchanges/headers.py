"""Headers exchange: match on message headers, x-match all / any / all-with-x / any-with-x."""
from __future__ import annotations

from .base import Exchange

_MATCH_MODES = ("all", "any", "all-with-x", "any-with-x")


class HeadersExchange(Exchange):
    TYPE = "headers"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.rules: list = []   # [(binding, mode, [(key, value, void)])]

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
        self.rules.append((b, mode.startswith("all"), pairs))

    def _index_remove(self, b):
        self.rules = [r for r in self.rules if r[0] is not b]

    def route(self, routing_key, msg):
        if not self.rules:
            return ()
        headers = msg.headers
        out = []
        seen = set()
        for b, match_all, pairs in self.rules:
            d = b.destination
            if id(d) in seen:
                continue
            if _matches(headers, match_all, pairs):
                seen.add(id(d))
                out.append(d)
        return out


def _norm(v):
    """Values compare by type class and value, as RabbitMQ compares them: integers of any width
    and floats alike, booleans apart from numbers, strings alike whether sent as longstr or bytes."""
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
    return ("other", repr(v))


def _matches(headers, match_all, pairs):
    if match_all:
        for k, v in pairs:
            if k not in headers:
                return False
            if v is not None and _norm(headers[k]) != v:   # a void binding value matches presence
                return False
        return True
    for k, v in pairs:
        if k in headers and (v is None or _norm(headers[k]) == v):
            return True
    return False
