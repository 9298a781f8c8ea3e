"""Small helpers shared by the management modules: JSON coercion, errors, names, time formats."""
from __future__ import annotations

import base64
import datetime
import hashlib
import json
import math
import urllib.parse
from decimal import Decimal

from ..amqp.table import Timestamp, Typed


class ApiError(Exception):
    """An HTTP error in RabbitMQ's shape: {"error": error, "reason": reason} with `status`."""

    def __init__(self, status: int, error: str, reason, headers: dict | None = None):
        super().__init__(f"{status} {error}: {reason}")
        self.status = status
        self.error = error
        self.reason = reason
        self.headers = headers or {}


def not_found() -> ApiError:
    return ApiError(404, "Object Not Found", "Not Found")


def bad_request(reason) -> ApiError:
    return ApiError(400, "bad_request", reason)


def not_authorised(reason: str) -> ApiError:
    # RabbitMQ (3.x and 4.x) answers 401 for an authenticated user lacking rights, without a realm
    return ApiError(401, "not_authorised", reason)


def key_missing(body: dict, keys) -> None:
    missing = [k for k in keys if k not in body]
    if missing:
        raise bad_request("[" + ",".join(f"{{key_missing,{k}}}" for k in missing) + "]")


_NESTED = object()


def _json_leaf(v):
    """A value that holds no others, as JSON; _NESTED for a table, an array or a typed value."""
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, Timestamp):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).decode("utf-8", "replace")
    if isinstance(v, (dict, list, tuple, Typed)):
        return _NESTED
    if isinstance(v, Decimal):
        return float(v)
    if isinstance(v, datetime.datetime):
        return int(v.timestamp())
    return str(v)


def jsonable(v):
    """An AMQP value (field-table value, property) as JSON, the way the management API shows it.

    Iterative, with an explicit stack: values decoded from AMQP nest at most amqp.table.MAX_DEPTH
    deep, but those given as JSON through this API (arguments, policy definitions) have no such
    bound, and a recursion here would break every listing that shows them."""
    leaf = _json_leaf(v)
    if leaf is not _NESTED:
        return leaf
    root = [None]
    stack = [(v, root, 0)]
    while stack:
        v, into, at = stack.pop()
        while isinstance(v, Typed):
            v = v.value
        leaf = _json_leaf(v)
        if leaf is not _NESTED:
            into[at] = leaf
        elif isinstance(v, dict):
            items = [(str(k), x) for k, x in v.items()]
            out = into[at] = dict.fromkeys(k for k, _ in items)
            for k, x in reversed(items):        # first item first; a repeated key keeps the last value
                stack.append((x, out, k))
        else:
            out = into[at] = [None] * len(v)
            for i in range(len(v) - 1, -1, -1):
                stack.append((v[i], out, i))
    return root[0]


def dumps(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogateescape")


def parse_bool(v, default=False) -> bool:
    if v is None:
        return default
    if isinstance(v, bool):
        return v
    if isinstance(v, str):
        s = v.strip().lower()
        if s in ("true", "1", "yes"):
            return True
        if s in ("false", "0", "no", ""):
            return False
        raise bad_request(f"not_boolean: {v}")
    if isinstance(v, (int, float)):
        return bool(v)
    raise bad_request(f"not_boolean: {v}")


def parse_tags(v) -> list:
    """Tags as a comma-separated string or a list, as RabbitMQ accepts them."""
    if v is None:
        return []
    if isinstance(v, str):
        return [t.strip() for t in v.replace(" ", ",").split(",") if t.strip()]
    if isinstance(v, list):
        out = []
        for t in v:
            out += parse_tags(t) if isinstance(t, str) else [str(t)]
        return out
    raise bad_request("tags must be a string or a list")


def quote_plus(s: str) -> str:
    return urllib.parse.quote_plus(s, safe="").replace("~", "%7E")


def args_hash(args: dict) -> str:
    """A short stable digest of binding arguments, base64url without padding (6 characters)."""
    canon = json.dumps(jsonable(args), sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canon.encode("utf-8", "surrogateescape")).digest()[:4]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def properties_key(routing_key: str, args: dict) -> str:
    """A binding's `properties_key` as RabbitMQ builds it: quoted key, then ~ and an args digest."""
    if not args:
        return "~" if routing_key == "" else quote_plus(routing_key)
    return quote_plus(routing_key) + "~" + quote_plus(args_hash(args))


def iso_time(ts: float) -> str:
    """RabbitMQ's `idle_since` format: 2026-11-25T20:38:23.272+00:00."""
    d = datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}+00:00"


def is_loopback(host: str) -> bool:
    return host.startswith("127.") or host in ("::1", "localhost") or host.startswith("::ffff:127.")


def get_path(d, path: str):
    """d["a"]["b"] for "a.b", or None."""
    for part in path.split("."):
        if not isinstance(d, dict):
            return None
        d = d.get(part)
    return d
