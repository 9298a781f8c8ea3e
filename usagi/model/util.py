"""Small helpers shared by the model."""
from __future__ import annotations

import base64
import os


def freeze(value):
    """A hashable, order-insensitive form of a (nested) arguments table."""
    if isinstance(value, dict):
        return tuple(sorted((k, freeze(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(freeze(v) for v in value)
    return value


def gen_name(prefix: str) -> str:
    """A server-generated name such as amq.gen-xxxxxxxxxxxxxxxxxxxxxx."""
    return prefix + base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
