"""Management work in slices of bounded cost, so that the event loop every client shares keeps turning.

The HTTP API and the statistics run on the loop that carries all AMQP traffic. Work whose size
users control (a listing of 100,000 queues, a definitions file of 200,000, a 20 MB body, the
statistics of every queue) is cut here into slices: a `Pacer` lets a task run for SLICE_SECONDS and
then yields one loop turn (`await asyncio.sleep(0)`), in which every connection that has something
to do gets its turn. Each step between two checks of the clock is bounded too (one item of a
listing, one element of a definitions file, one window of JSON text), so a slice lasts at most
SLICE_SECONDS plus one step: a few milliseconds, whatever the size of the whole.

The pieces:
- `Pacer`: the clock of one task's slices.
- `sort`: sorting a long list as sorted runs merged lazily (one call to `sorted` on 100,000 keys
  holds the loop for 100-600 ms).
- `decode_json`: a JSON request body parsed in slices, never nesting deeper than MAX_DEPTH (the
  AMQP field-table bound, amqp.table.MAX_DEPTH): deeper bodies are refused before anything walks
  them, so no walk over a value that came from the API can recurse past that depth.
"""
from __future__ import annotations

import asyncio
import codecs
import heapq
import json
import re
import time

from ..amqp.table import MAX_DEPTH

SLICE_SECONDS = 0.004       # a task's work between two loop turns (plus the step under way)
SORT_RUN = 2_000            # a sorted run: sorting 2,000 keys takes 1-7 ms
WINDOW = 1024               # JSON text tried in one go for a value (a definitions element is ~100)
BIG_WINDOW = 65536          # ... and then this much: a parse of it takes ~1-2 ms
SMALL_WINDOW = 64           # ... or this little where brackets are dense
SCAN_CHUNK = 1 << 20        # characters searched or decoded in one step (~1-10 ms)

_perf = time.perf_counter


class Pacer:
    """The slices of one task: `due()` says its slice is over, `pause()` yields one loop turn."""
    __slots__ = ("seconds", "deadline", "turns")

    def __init__(self, seconds: float = SLICE_SECONDS):
        self.seconds = seconds
        self.deadline = _perf() + seconds
        self.turns = 0

    def due(self) -> bool:
        return _perf() >= self.deadline

    async def pause(self):
        await asyncio.sleep(0)
        self.turns += 1
        self.deadline = _perf() + self.seconds

    async def tick(self):
        """Yield a loop turn if this slice is over."""
        if _perf() >= self.deadline:
            await self.pause()

    async def drain(self, steps):
        """Run a generator that yields between bounded steps, a slice at a time; its return value."""
        try:
            while True:
                next(steps)
                if _perf() >= self.deadline:
                    await self.pause()
        except StopIteration as e:
            return e.value


def run(steps):
    """Run such a generator in one go (where there is no loop to share, or the work is known small)."""
    try:
        while True:
            next(steps)
    except StopIteration as e:
        return e.value


async def sort(items: list, key, pacer: Pacer, reverse: bool = False) -> list:
    """`sorted(items, key=key)` (stable; reversed as `list(reversed(...))`) with the keys taken,
    runs of SORT_RUN sorted and the runs merged a slice at a time."""
    n = len(items)
    keyed = []
    for i, it in enumerate(items):
        keyed.append((key(it), i))
        if _perf() >= pacer.deadline:
            await pacer.pause()
    if n <= SORT_RUN:
        keyed.sort()
        order = keyed
    else:
        runs = []
        for start in range(0, n, SORT_RUN):
            runs.append(sorted(keyed[start:start + SORT_RUN]))
            await pacer.tick()
        order = []
        for k in heapq.merge(*runs):
            order.append(k)
            if _perf() >= pacer.deadline:
                await pacer.pause()
    out = [items[i] for _k, i in order]
    if reverse:
        out.reverse()
    return out


# ---------------------------------------------------------------------------------------- JSON bodies

MAX_CONTAINERS = 100_000          # objects and arrays in one request body ...
MAX_CONTAINERS_BULK = 4_000_000   # ... or in a definitions file (200,000 queues take ~400,000)


class JSONTooLarge(ValueError):
    """A JSON body holds more objects and arrays than its request may (counted as brackets)."""

    def __init__(self, limit: int):
        super().__init__(f"JSON body holds more than {limit} objects and arrays")


class JSONTooDeep(ValueError):
    """A JSON body nests containers deeper than MAX_DEPTH."""

    def __init__(self):
        super().__init__(f"JSON nested deeper than {MAX_DEPTH} levels")


def _not_json(constant):
    raise ValueError(f"{constant} is not JSON")


def _finite(text: str) -> float:
    v = float(text)
    if v in (_INF, -_INF):            # 1e999999: out of a double's range, so not a number RabbitMQ reads
        raise ValueError(f"number out of range: {text[:20]}")
    return v


_INF = float("inf")
_decoder = json.JSONDecoder(parse_constant=_not_json, parse_float=_finite)   # strict: no control chars
_scan = _decoder.scan_once                                 # one value at an index, in C
_WS = re.compile(r"[ \t\n\r]*")
_SURROGATE_ESCAPE = re.compile(r"\\[uU][dD][89a-fA-F]")
_VALUE, _AFTER, _KEY, _DONE = range(4)
_DESCEND = object()


def _text(raw: bytes):
    """Body bytes as text (as json.loads reads bytes: UTF-8, or UTF-16/32 by their first bytes), in
    steps of SCAN_CHUNK bytes. Invalid UTF-8 is refused (a decoder of Erlang's would refuse it)."""
    enc = json.detect_encoding(raw)
    dec = codecs.getincrementaldecoder(enc)()
    parts = []
    for start in range(0, len(raw), SCAN_CHUNK):
        parts.append(dec.decode(raw[start:start + SCAN_CHUNK], start + SCAN_CHUNK >= len(raw)))
        yield
    return "".join(parts)


def _scan_at(chunk: str):
    """The value at the start of `chunk` and where it ends, or None if it is not all there."""
    try:
        return _scan(chunk, 0)
    except StopIteration:
        raise ValueError("Expecting value") from None


def decode_steps(raw: bytes):
    """Parse a JSON body in bounded steps (a generator; see `Pacer.drain`). Raises ValueError
    (not JSON, or UnicodeDecodeError) or JSONTooDeep.

    Containers are parsed here one level at a time, with an explicit stack (no recursion), until a
    container fits in a window of text with too few brackets in it to nest deeper than the depth
    left: such a value is parsed by the json module's C scanner in one call, whose cost is bounded
    by the window. A string longer than a window is decoded a window at a time."""
    if isinstance(raw, str):
        text = raw
    elif len(raw) <= SCAN_CHUNK:
        text = raw.decode(json.detect_encoding(raw))
    else:
        text = yield from _text(raw)
    n = len(text)
    ws = _WS.match
    stack: list = []            # open containers: [dict or list, pending key]
    pos = ws(text, 0).end()
    state = _VALUE
    root = None
    while state != _DONE:
        yield
        if state == _VALUE:
            if pos >= n:
                raise ValueError("Expecting value")
            c = text[pos]
            if c == "{" or c == "[":
                value, end = _container(text, pos, MAX_DEPTH - len(stack))
                if value is _DESCEND:
                    if len(stack) >= MAX_DEPTH:
                        raise JSONTooDeep()
                    pos = ws(text, pos + 1).end()
                    close = "}" if c == "{" else "]"
                    if pos < n and text[pos] == close:
                        value, pos = ({} if c == "{" else []), pos + 1
                    else:
                        stack.append([{}, None] if c == "{" else [[], None])
                        state = _KEY if c == "{" else _VALUE
                        continue
                else:
                    pos = end
            elif c == '"':
                value, pos = yield from _string(text, pos)
            else:
                value, pos = _scalar(text, pos)
        elif state == _KEY:
            if pos >= n or text[pos] != '"':
                raise ValueError("Expecting property name enclosed in double quotes")
            key, pos = yield from _string(text, pos)
            pos = ws(text, pos).end()
            if pos >= n or text[pos] != ":":
                raise ValueError("Expecting ':' delimiter")
            stack[-1][1] = key
            pos = ws(text, pos + 1).end()
            state = _VALUE
            continue
        else:   # _AFTER: a value ended inside the container on top of the stack
            top = stack[-1]
            is_dict = isinstance(top[0], dict)
            c = text[pos] if pos < n else ""
            if c == ",":
                pos = ws(text, pos + 1).end()
                state = _KEY if is_dict else _VALUE
                continue
            if c != ("}" if is_dict else "]"):
                raise ValueError("Expecting ',' delimiter")
            stack.pop()
            value, pos = top[0], pos + 1
        # a value is complete: it goes into its container, or it is the body
        pos = ws(text, pos).end()
        if not stack:
            root, state = value, _DONE
        else:
            top = stack[-1]
            if isinstance(top[0], dict):
                top[0][top[1]] = value
            else:
                top[0].append(value)
            state = _AFTER
    if pos != n:
        raise ValueError("Extra data")
    if _SURROGATE_ESCAPE.search(text, 0, SCAN_CHUNK) or (n > SCAN_CHUNK and (yield from _has_surrogate(text))):
        yield from _check_text(root)
    return root


def _container(text: str, pos: int, room: int):
    """A whole object or array at `pos` parsed in one C call, if it fits in a window holding at most
    `room` brackets (so it nests no deeper than that); else _DESCEND. Where brackets are dense, a
    small window is tried before giving up (a list of many small lists)."""
    n = len(text)
    for w in (WINDOW, BIG_WINDOW):
        chunk = text[pos:pos + w]
        if chunk.count("[") + chunk.count("{") > room:
            if w == WINDOW:
                chunk = text[pos:pos + SMALL_WINDOW]
                if chunk.count("[") + chunk.count("{") <= room:
                    try:
                        value, end = _scan_at(chunk)
                        return value, pos + end
                    except ValueError:
                        pass
            return _DESCEND, pos
        try:
            value, end = _scan_at(chunk)
        except ValueError:
            if pos + w >= n:
                raise
            continue                    # not all there (or broken: parsing level by level will say)
        return value, pos + end
    return _DESCEND, pos


def _scalar(text: str, pos: int):
    """A number, true, false or null at `pos`. A number of more than BIG_WINDOW characters is refused."""
    chunk = text[pos:pos + 64]
    value, end = _scan_at(chunk)
    if end >= len(chunk) and pos + len(chunk) < len(text):
        chunk = text[pos:pos + BIG_WINDOW]
        value, end = _scan_at(chunk)
        if end >= len(chunk) and pos + len(chunk) < len(text):
            raise ValueError("number too long")
    return value, pos + end


def _string(text: str, pos: int):
    """The string whose opening quote is at `pos`, and the index after its closing quote."""
    chunk = text[pos:pos + WINDOW]
    try:
        value, end = _scan_at(chunk)
        return value, pos + end
    except ValueError:
        if pos + WINDOW >= len(text):
            raise
    # a long string: decoded a window at a time, each cut moved back until it splits no escape
    # (nor a surrogate pair written as two escapes)
    n = len(text)
    parts = []
    i = pos + 1
    while True:
        yield
        cut = min(i + BIG_WINDOW, n)
        for back in range(13):
            c = cut - back
            if c <= i:
                raise ValueError("Unterminated string")
            piece = text[i:c]
            try:
                s, end = json.decoder.scanstring(piece + '"', 0, True)
            except ValueError:
                continue
            if end <= len(piece):           # the string's own closing quote
                parts.append(s)
                return "".join(parts), i + end
            if c >= n:
                raise ValueError("Unterminated string")
            if s and "\ud800" <= s[-1] <= "\udbff" and back < 12:
                continue                    # a high surrogate whose low half may follow
            parts.append(s)
            i = c
            break
        else:
            raise ValueError("Invalid string")


def _has_surrogate(text: str):
    for start in range(SCAN_CHUNK - 8, len(text), SCAN_CHUNK):
        yield
        if _SURROGATE_ESCAPE.search(text, start, start + SCAN_CHUNK + 8):
            return True
    return False


def _check_text(value):
    """Every string of a value is UTF-8 text (a lone \\udXXX escape has no UTF-8 for it, in the
    store or in a reply). Iterative."""
    stack = [value]
    while stack:
        yield
        x = stack.pop()
        if isinstance(x, str):
            if not x.isascii():
                x.encode("utf-8")           # UnicodeEncodeError is a ValueError
        elif isinstance(x, dict):
            stack.extend(x.keys())
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)


async def decode_json(raw: bytes, pacer: Pacer, max_containers: int | None = None):
    """A JSON body parsed a slice at a time (see decode_steps). With `max_containers`, a body with
    more opening brackets than that (strings included: a bound, not a count) is refused before it
    is parsed: what a body can make the parser build, and the collector then walk, is bounded."""
    if max_containers is not None:
        n = 0
        for start in range(0, len(raw), SCAN_CHUNK):
            chunk = raw[start:start + SCAN_CHUNK]
            n += chunk.count(b"[") + chunk.count(b"{")
            if n > max_containers:
                raise JSONTooLarge(max_containers)
            await pacer.tick()
    return await pacer.drain(decode_steps(raw))
