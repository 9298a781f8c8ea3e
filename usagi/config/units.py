"""Sizes as operators write them, with RabbitMQ's two conventions.

An information unit (`disk_free_limit.absolute`, `vm_memory_high_watermark.absolute`, and every
size option of `usagi-server`): a whole number of bytes, optionally followed by a unit. k, kB, K,
KB mean 1000; M, MB 1000^2; G, GB 1000^3; T, TB 1000^4; P, PB 1000^5; Ki, KiB 1024; Mi, MiB
1024^2; Gi, GiB 1024^3; Ti, TiB 1024^4; Pi, PiB 1024^5. The unit's case does not matter except
that an `i` makes it binary. This is how RabbitMQ reads these settings since 3.13 (as Kubernetes
does: `1G` is 10^9 bytes, `1Gi` is 2^30).

A byte size (`frame_max`, `initial_frame_max`, `queue_index_embed_msgs_below`): a whole number of
bytes, or one followed by KB, MB or GB (either case), which there mean 1024, 1024^2 and 1024^3.

Both parsers raise ValueError with the text an operator is shown.
"""
from __future__ import annotations

import re

_INFO_RE = re.compile(r"([0-9]+)\s*([A-Za-z]{0,3})")
_DECIMAL = {"": 1, "k": 10 ** 3, "kb": 10 ** 3, "m": 10 ** 6, "mb": 10 ** 6, "g": 10 ** 9, "gb": 10 ** 9,
            "t": 10 ** 12, "tb": 10 ** 12, "p": 10 ** 15, "pb": 10 ** 15}
_BINARY = {"ki": 2 ** 10, "kib": 2 ** 10, "mi": 2 ** 20, "mib": 2 ** 20, "gi": 2 ** 30, "gib": 2 ** 30,
           "ti": 2 ** 40, "tib": 2 ** 40, "pi": 2 ** 50, "pib": 2 ** 50}
INFORMATION_UNIT_HELP = "supported formats: 500MB, 500MiB, 10GB, 10GiB, 2TB, 2TiB, 10000000000"

_BYTESIZE_RE = re.compile(r"([0-9]+)([KkMmGg][Bb])?")
_BYTESIZE = {None: 1, "kb": 2 ** 10, "mb": 2 ** 20, "gb": 2 ** 30}


def parse_information_unit(text) -> int:
    """'1GB' -> 1000000000, '1GiB' -> 1073741824, '500' -> 500 (see the module's docstring)."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError("must not be negative")
        return text
    s = str(text).strip()
    m = _INFO_RE.fullmatch(s)
    if m is None:
        raise ValueError(INFORMATION_UNIT_HELP)
    unit = m.group(2).lower()
    mult = _DECIMAL.get(unit) or _BINARY.get(unit)
    if mult is None:
        raise ValueError(f"unknown unit {m.group(2)!r}; {INFORMATION_UNIT_HELP}")
    return int(m.group(1)) * mult


def parse_bytesize(text) -> int:
    """cuttlefish's bytesize: '128KB' -> 131072, '1mb' -> 1048576, '4096' -> 4096."""
    s = str(text).strip()
    m = _BYTESIZE_RE.fullmatch(s)
    if m is None:
        raise ValueError("expected a number of bytes, optionally followed by KB, MB or GB (powers of 1024)")
    unit = m.group(2).lower() if m.group(2) else None
    return int(m.group(1)) * _BYTESIZE[unit]


def format_bytes(n: int) -> str:
    """A size for a log line: '52428800 bytes (50.0 MB)'."""
    if n >= 10 ** 9:
        return f"{n} bytes ({n / 10 ** 9:.1f} GB)"
    if n >= 10 ** 6:
        return f"{n} bytes ({n / 10 ** 6:.1f} MB)"
    return f"{n} bytes"
