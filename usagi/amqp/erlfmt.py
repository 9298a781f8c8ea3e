"""Erlang's ~p printing of the few terms RabbitMQ puts in frame error texts.

RabbitMQ formats frame errors with io_lib's pretty printer, so clients see Erlang syntax:
binaries as <<1,2,3>> or <<"text">> when printable, and a tuple that would run past column 80
broken after its first element, the rest indented under it.
"""
from __future__ import annotations

LINE = 80
_ESC = {0x22: '\\"', 0x5C: "\\\\", 0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t", 0x0B: "\\v", 0x08: "\\b",
        0x0C: "\\f", 0x1B: "\\e"}


def binary(b) -> str:
    b = bytes(b)
    if not b:
        return "<<>>"
    try:
        text = b.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all((32 <= ord(c) < 127) or ord(c) >= 160 or ord(c) in _ESC for c in text):
        return '<<"' + "".join(_ESC.get(ord(c), c) for c in text) + '">>'
    return "<<" + ",".join(str(x) for x in b) + ">>"


def tuple_(col: int, *items) -> str:
    """{a,b,...} printed at column `col`: on one line if it fits, else one element per line."""
    parts = [str(i) for i in items]
    flat = "{" + ",".join(parts) + "}"
    if col + len(flat) < LINE:
        return flat
    pad = "\n" + " " * (col + 1)
    return "{" + ("," + pad).join(parts) + "}"


def frame_octets(ftype: int, payload) -> str:
    """'type T, all octets = <<...>>' (or 'first 16 octets') as RabbitMQ describes a bad frame."""
    payload = bytes(payload)
    if len(payload) > 16:
        return f"type {ftype}, first 16 octets = {binary(payload[:16])}"
    return f"type {ftype}, all octets = {binary(payload)}"


def frame_error(ftype: int, payload, *reason) -> str:
    head = frame_octets(ftype, payload) + ": "
    if len(reason) == 1:
        return head + str(reason[0])
    return head + tuple_(len(head), *reason)
