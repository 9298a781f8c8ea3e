"""Small helpers shared by the model."""
from __future__ import annotations

import base64
import os


def freeze(value):
    """A hashable, order-insensitive form of a (nested) arguments table: a table becomes a tuple of
    (key, value) pairs sorted by key, an array a tuple. Iterative (an explicit stack): arguments
    nest at most amqp.table.MAX_DEPTH deep when they come from the wire or the management API, but
    the walk does not depend on it."""
    if not isinstance(value, (dict, list)):
        return value
    stack = [_open(value, None)]
    while True:
        frame = stack[-1]
        items, out, is_dict = frame[0], frame[1], frame[2]
        for item in items:
            v = item[1] if is_dict else item
            if isinstance(v, (dict, list)):
                stack.append(_open(v, item[0] if is_dict else None))
                break
            out.append(item if is_dict else v)
        else:
            stack.pop()
            done = tuple(out)
            if not stack:
                return done
            parent = stack[-1]
            parent[1].append((frame[3], done) if parent[2] else done)


def _key(pair):
    return pair[0]


def _open(value, key) -> list:
    """A frame of freeze's walk: [iterator over the items, frozen items so far, is a table, its key]."""
    if isinstance(value, dict):
        return [iter(sorted(value.items(), key=_key)), [], True, key]
    return [iter(value), [], False, key]


def gen_name(prefix: str) -> str:
    """A server-generated name such as amq.gen-xxxxxxxxxxxxxxxxxxxxxx."""
    return prefix + base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
