"""Paging: what a queue holds past its in-memory budget lives in files, so memory stays bounded.

Three kinds of files, all scratch space in PAGING["dir"] (deleted when read, and at start;
durability of persistent messages is the store's job):

- Segments of a queue's paged-out ready messages (`Pager`). Once a queue is over its in-memory
  budget, messages that arrive go to the tail segment instead of memory, in order; when the
  in-memory head runs low the next batch is read back from the oldest segment. A priority queue
  has one pager per level. A run of in-memory entries can also be paged out in front of what is
  already paged (`Pager.prepend`), which keeps the order.
- Their deadlines: a record carries the time its message expires at, and a segment knows the
  earliest deadline among the entries it still holds (`Segment.due`), so expiry stays timely
  wherever an entry is, with no per-message structure in memory for paged entries. In a segment
  whose deadlines only grow (one queue TTL, the usual case) the due entries are its unread head,
  read and dropped in order. Otherwise the segment gets a deadline index when it is sealed: a
  small file of (deadline, file offset) sorted by deadline, read from a cursor; an entry it has
  expired is skipped when the segment is read (its (deadline, offset) is at or below the cursor's
  last one), and one already read back into memory (offset below the read position) is left to
  the in-memory structures.
- The spill area (`SpillArea`): bodies and properties of single messages that leave memory while
  a record of them stays (unacknowledged deliveries, requeued messages). The record becomes a
  `Spilled` stub that knows where to read the message back from: a spill file, or the message
  store for a persistent message of a durable queue (its `read_message`, so nothing is written
  twice). A spill file is deleted once no stub refers to it.

Record layout: seq u64, msg_id u64, expires i64 (ms since the epoch, 0 for none), flags u8,
route len u16, properties len u32, body len u32, then the route (exchange and routing key as two
shortstrs, Message.route: as basic.deliver carries them), the properties and the body.
"""
from __future__ import annotations

import heapq
import itertools
import os
import struct
from collections import deque

from .message import Message

_REC = struct.Struct(">QQqBHII")
_IDX = struct.Struct(">qQ")          # a deadline index entry: expires, offset of the record
REC_SIZE = _REC.size
F_STORED = 1                         # the message is in the store (Message.stored)
F_PERSISTENT = 2                     # delivery mode 2: counted by messages_persistent

SEGMENT_BYTES = 64 * 1024 * 1024     # a segment is sealed past this many bytes ...
SEGMENT_COUNT = 16384                # ... or entries (bounds the deadline index sorted at sealing)
SPILL_FILE_BYTES = 64 * 1024 * 1024  # a spill file takes no more records past this size
READ_CHUNK = 1024 * 1024             # bytes read per system call when reading records in order

_ids = itertools.count(1)


def encode(seq: int, msg, exp: int = 0) -> bytes:
    flags = (F_STORED if msg.stored else 0) | (F_PERSISTENT if msg.scan.delivery_mode == 2 else 0)
    route = msg.route
    body = msg.body
    return b"".join((_REC.pack(seq, msg.id, exp or 0, flags, len(route), len(msg.props), len(body)),
                     route, msg.props, body))


_SCANS: dict = {}     # property bytes -> Scan, for messages read back (their properties repeat)


def message(route: bytes, props: bytes, body: bytes, msg_id: int, flags: int):
    """A Message read back from a record."""
    lx = route[0]
    ex = route[1:1 + lx].decode("utf-8", "surrogateescape") if lx else ""
    rk = route[2 + lx:].decode("utf-8", "surrogateescape")
    scan = _SCANS.get(props)
    if scan is None:
        m = Message(ex, rk, props, body, None, msg_id, route)
        if len(props) <= 96:
            if len(_SCANS) >= 4096:
                _SCANS.clear()
            _SCANS[props] = m.scan
    else:
        m = Message(ex, rk, props, body, scan, msg_id, route)
    if flags & F_STORED:
        m.stored = True
    return m


def _record_at(buf, pos: int):
    """(seq, msg_id, exp, flags, route, props, body, end) of the record at buf[pos:], or None if
    the buffer ends inside it."""
    if len(buf) - pos < REC_SIZE:
        return None
    seq, msg_id, exp, flags, lr, lp, lb = _REC.unpack_from(buf, pos)
    start = pos + REC_SIZE
    end = start + lr + lp + lb
    if end > len(buf):
        return None
    return seq, msg_id, exp, flags, buf[start:start + lr], buf[start + lr:start + lr + lp], \
        buf[start + lr + lp:end], end


def _pread_record(fd: int, off: int):
    """The record at file offset `off`: (seq, msg_id, exp, flags, route, props, body, length)."""
    head = os.pread(fd, REC_SIZE, off)
    seq, msg_id, exp, flags, lr, lp, lb = _REC.unpack(head)
    n = lr + lp + lb
    data = os.pread(fd, n, off + REC_SIZE) if n else b""
    return seq, msg_id, exp, flags, data[:lr], data[lr:lr + lp], data[lr + lp:], REC_SIZE + n


def _write_all(fd: int, data, pos: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, pos)
        view = view[n:]
        pos += n


class Segment:
    """One file of paged entries, in queue order.

    `count`, `bytes`, `persistent`, `persistent_bytes` describe the live entries it still holds
    (not read back, not expired). `read_pos` is where reading in order goes on. Deadlines: see the
    module docstring; `due` is the earliest deadline among its live entries (None: none)."""

    __slots__ = ("path", "count", "bytes", "persistent", "persistent_bytes", "writer", "size", "read_pos",
                 "sealed", "timed", "monotone", "last_exp", "due", "exps", "offs", "xpath", "xpos", "xend",
                 "wexp", "woff", "written")

    def __init__(self, directory: str):
        self.path = os.path.join(directory, f"seg-{os.getpid()}-{next(_ids)}.q")
        self.count = 0
        self.bytes = 0
        self.persistent = 0
        self.persistent_bytes = 0
        self.writer = open(self.path, "wb", buffering=1024 * 1024)
        self.size = 0                 # bytes written
        self.read_pos = 0
        self.sealed = False
        self.written = 0              # entries written
        # deadlines
        self.timed = 0                # entries written with a deadline
        self.monotone = True          # every entry has a deadline, none earlier than the one before
        self.last_exp = 0
        self.due = None
        self.exps = None              # while open: deadlines and offsets of the timed entries
        self.offs = None
        self.xpath = None             # sealed, not monotone: the deadline index file
        self.xpos = 0                 # its cursor (bytes)
        self.xend = 0
        self.wexp = -1                # (deadline, offset) of the last entry the index expired
        self.woff = -1

    def full(self) -> bool:
        return self.size >= SEGMENT_BYTES or self.written >= SEGMENT_COUNT

    def append(self, seq: int, msg, exp: int = 0):
        rec = encode(seq, msg, exp)
        off = self.size
        self.writer.write(rec)
        self.size += len(rec)
        self.written += 1
        self.count += 1
        n = len(msg.body)
        self.bytes += n
        if msg.scan.delivery_mode == 2:
            self.persistent += 1
            self.persistent_bytes += n
        if exp:
            if self.exps is None:
                self.exps = []
                self.offs = []
            self.exps.append(exp)
            self.offs.append(off)
            if exp < self.last_exp:
                self.monotone = False
            self.last_exp = exp
            self.timed += 1
            if self.due is None or exp < self.due:
                self.due = exp
        elif self.monotone:
            self.monotone = False

    def _count(self, persistent: bool, size: int, n: int):
        self.count += n
        self.bytes += n * size
        if persistent:
            self.persistent += n
            self.persistent_bytes += n * size

    def seal(self):
        """No more appends: flush, and build the deadline index if the deadlines are not in order."""
        if self.sealed:
            return
        self.writer.close()
        self.sealed = True
        exps, offs = self.exps, self.offs
        self.exps = self.offs = None
        if not self.timed or self.monotone:
            self._head_due()
            return
        # cost: one sort of at most SEGMENT_COUNT pairs, once per segment
        pairs = sorted(zip(exps, offs))
        self.xpath = self.path + "x"
        with open(self.xpath, "wb") as f:
            f.write(b"".join(_IDX.pack(e, o) for e, o in pairs))
        self.xpos = 0
        self.xend = len(pairs) * _IDX.size
        self.due = pairs[0][0]

    def _head_due(self):
        """A monotone segment's due time: the deadline of its first live entry."""
        if not self.timed or not self.count:
            self.due = None
            return
        fd = os.open(self.path, os.O_RDONLY)
        try:
            head = os.pread(fd, REC_SIZE, self.read_pos)
        finally:
            os.close(fd)
        self.due = _REC.unpack(head)[2] if len(head) == REC_SIZE else None

    def _expired_by_index(self, exp: int, off: int) -> bool:
        return self.xpath is not None and exp and (exp < self.wexp or (exp == self.wexp and off <= self.woff))

    def read(self, max_count: int, due_by=None, max_bytes: int = 1 << 62) -> list:
        """Up to max_count live (seq, message, expires) triples (and about max_bytes of bodies)
        from the read position on, taken out; with `due_by`, only as long as they are due by then
        (a monotone segment's expiry)."""
        self.seal()
        out = []
        if not self.count:
            return out
        unpack = _REC.unpack_from
        hs = REC_SIZE
        indexed = self.xpath is not None
        wexp, woff = self.wexp, self.woff
        n = b = n_p = b_p = 0
        nxt = None                      # the deadline of the record at pos, if known
        fd = os.open(self.path, os.O_RDONLY)
        try:
            pos = self.read_pos
            size = self.size
            buf = b""
            base = pos
            while pos < size:
                at = pos - base
                if len(buf) - at < hs:
                    buf = os.pread(fd, READ_CHUNK, pos)
                    base = pos
                    at = 0
                seq, msg_id, exp, flags, lr, lp, lb = unpack(buf, at)
                end = at + hs + lr + lp + lb
                if end > len(buf):
                    buf = os.pread(fd, max(READ_CHUNK, end - at), pos)
                    base = pos
                    at = 0
                    end = hs + lr + lp + lb
                if len(out) >= max_count or max_bytes <= 0 or (due_by is not None and exp > due_by):
                    nxt = exp
                    break
                rec_off = pos
                pos = base + end
                if indexed and exp and (exp < wexp or (exp == wexp and rec_off <= woff)):
                    continue            # expired through the index: already counted out
                r = at + hs
                c = r + lr
                d = c + lp
                out.append((seq, message(buf[r:c], buf[c:d], buf[d:end], msg_id, flags), exp))
                n += 1
                b += lb
                if flags & F_PERSISTENT:
                    n_p += 1
                    b_p += lb
                max_bytes -= lb
            self.read_pos = pos
        finally:
            os.close(fd)
        self.count -= n
        self.bytes -= b
        self.persistent -= n_p
        self.persistent_bytes -= b_p
        if not indexed:
            if nxt is not None and self.timed:
                self.due = nxt
            else:
                self._head_due()
        return out

    def peek(self, pos: int, max_count: int) -> tuple:
        """Up to max_count live (seq, message, expires) from file offset `pos`, without taking them;
        and the offset after them."""
        self.seal()
        out = []
        fd = os.open(self.path, os.O_RDONLY)
        try:
            while len(out) < max_count and pos < self.size:
                seq, msg_id, exp, flags, route, props, body, n = _pread_record(fd, pos)
                rec_off = pos
                pos += n
                if not self._expired_by_index(exp, rec_off):
                    out.append((seq, message(route, props, body, msg_id, flags), exp))
        finally:
            os.close(fd)
        return out, pos

    def expire(self, now: int, budget: int) -> list:
        """Live entries due at `now` (at most `budget`), taken out: [(seq, message)]."""
        self.seal()
        out = []
        if self.xpath is None:
            # deadlines in order: the due entries are the unread head
            if self.due is not None and self.due <= now:
                out = [(seq, msg) for seq, msg, _e in self.read(budget, due_by=now)]
            return out
        fd = os.open(self.xpath, os.O_RDONLY)
        data = None
        try:
            while self.xpos < self.xend and len(out) < budget:
                exp, off = _IDX.unpack(os.pread(fd, _IDX.size, self.xpos))
                if exp > now:
                    break
                self.xpos += _IDX.size
                self.wexp, self.woff = exp, off
                if off < self.read_pos:
                    continue            # read back into memory: the in-memory structures expire it
                if data is None:
                    data = os.open(self.path, os.O_RDONLY)
                seq, msg_id, _e, flags, route, props, body, _n = _pread_record(data, off)
                self._count(bool(flags & F_PERSISTENT), len(body), -1)
                out.append((seq, message(route, props, body, msg_id, flags)))
            self.due = _IDX.unpack(os.pread(fd, _IDX.size, self.xpos))[0] if self.xpos < self.xend else None
        finally:
            os.close(fd)
            if data is not None:
                os.close(data)
        return out

    def stored_ids(self) -> list:
        """Message ids of the live entries that are in the store (for a purge)."""
        self.seal()
        out = []
        fd = os.open(self.path, os.O_RDONLY)
        try:
            pos = self.read_pos
            while pos < self.size:
                seq, msg_id, exp, flags, lr, lp, lb = _REC.unpack(os.pread(fd, REC_SIZE, pos))
                if flags & F_STORED and not self._expired_by_index(exp, pos):
                    out.append(msg_id)
                pos += REC_SIZE + lr + lp + lb
        finally:
            os.close(fd)
        return out

    def drop(self):
        try:
            self.writer.close()
        except OSError:
            pass
        for p in (self.path, self.xpath):
            if p is not None:
                try:
                    os.unlink(p)
                except OSError:
                    pass


class Pager:
    """The paged-out part of one queue (or of one priority level): segments in order, oldest
    first. Totals describe the live entries: count and body bytes (and, summed over the segments
    when asked, the persistent ones)."""

    __slots__ = ("directory", "segments", "count", "bytes", "tail")

    def __init__(self, directory: str):
        self.directory = directory
        self.segments: deque = deque()
        self.count = 0
        self.bytes = 0
        self.tail = None              # the segment being written

    def __len__(self):
        return self.count

    @property
    def persistent(self) -> int:
        return sum(seg.persistent for seg in self.segments)

    @property
    def persistent_bytes(self) -> int:
        return sum(seg.persistent_bytes for seg in self.segments)

    def append(self, seq: int, msg, exp: int = 0):
        seg = self.tail
        if seg is None or seg.sealed or seg.size >= SEGMENT_BYTES or seg.written >= SEGMENT_COUNT:
            if seg is not None:
                seg.seal()
            seg = self.tail = Segment(self.directory)
            self.segments.append(seg)
        seg.append(seq, msg, exp)
        self.count += 1
        self.bytes += len(msg.body)

    def prepend(self, entries):
        """Page out (seq, message, expires) entries that come before everything paged, in order."""
        segs = []
        for seq, msg, exp in entries:
            if not segs or segs[-1].full():
                segs.append(Segment(self.directory))
            segs[-1].append(seq, msg, exp)
        for seg in segs:
            seg.seal()
        for seg in reversed(segs):
            self.segments.appendleft(seg)
            self._add(seg, 1)

    def _add(self, seg, sign: int):
        self.count += sign * seg.count
        self.bytes += sign * seg.bytes

    def _apply(self, seg, fn):
        self._add(seg, -1)
        try:
            return fn()
        finally:
            self._add(seg, 1)

    def read(self, max_count: int, max_bytes: int = 1 << 62) -> list:
        """Up to max_count (seq, message, expires), and about max_bytes, from the head, taken out."""
        out = []
        segs = self.segments
        while segs and len(out) < max_count and max_bytes > 0:
            seg = segs[0]
            before = seg.bytes
            got = self._apply(seg, lambda: seg.read(max_count - len(out), None, max_bytes))
            out += got
            max_bytes -= before - seg.bytes
            if seg.count <= 0 and (seg.sealed or seg is not segs[-1]):
                seg.drop()
                segs.popleft()
            elif not got:
                break
        return out

    def peek(self, max_count: int) -> list:
        """The first max_count (seq, message, expires), left in place."""
        out = []
        for seg in self.segments:
            if len(out) >= max_count:
                break
            got, _ = seg.peek(seg.read_pos, max_count - len(out))
            out += got
        return out

    def due(self):
        """The earliest deadline of a live entry, or None."""
        best = None
        for seg in self.segments:
            d = seg.due
            if d is not None and (best is None or d < best):
                best = d
        return best

    def expire(self, now: int, budget: int) -> list:
        """Live entries due at `now`, at most `budget` of them, taken out: [(seq, message)]."""
        out = []
        for seg in list(self.segments):
            if len(out) >= budget:
                break
            if seg.due is None or seg.due > now:
                continue
            out += self._apply(seg, lambda: seg.expire(now, budget - len(out)))
            if seg.count <= 0:
                seg.drop()
                self.segments.remove(seg)
        return out

    def stored_ids(self) -> list:
        ids = []
        for seg in self.segments:
            ids += seg.stored_ids()
        return ids

    def drop(self):
        for seg in self.segments:
            seg.drop()
        self.segments.clear()
        self.count = self.bytes = 0
        self.tail = None


# ------------------------------------------------------------------------------ the spill area
class SpillCount:
    """How many `Spilled` stubs of one queue exist (kept up to date by the stubs themselves)."""

    __slots__ = ("n", "bytes")

    def __init__(self):
        self.n = 0
        self.bytes = 0


class SpillFile:
    __slots__ = ("path", "fd", "size", "live", "full")

    def __init__(self, directory: str):
        self.path = os.path.join(directory, f"spill-{os.getpid()}-{next(_ids)}.s")
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o600)
        self.size = 0
        self.live = 0             # stubs that point here
        self.full = False         # takes no more records

    def release(self):
        self.live -= 1
        if self.live <= 0:
            if self.full:
                self.close()
            elif self.fd >= 0:        # still written to: start it over
                try:
                    os.ftruncate(self.fd, 0)
                    self.size = 0
                except OSError:
                    pass

    def close(self):
        if self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = -1
            try:
                os.unlink(self.path)
            except OSError:
                pass

    def read(self, off: int):
        return _pread_record(self.fd, off)


class SpillArea:
    """Where transient messages of spilled records go: append-only files, each deleted when no
    stub points into it any more."""

    def __init__(self, directory: str):
        self.directory = directory
        self.current = None

    def write(self, blobs: list) -> list:
        """Write encoded records; returns [(file, offset)] for each."""
        cur = self.current
        if cur is None or cur.full:
            cur = self.current = SpillFile(self.directory)
        offs = []
        pos = cur.size
        for b in blobs:
            offs.append((cur, pos))
            pos += len(b)
        _write_all(cur.fd, b"".join(blobs), cur.size)
        cur.size = pos
        cur.live += len(blobs)
        if pos >= SPILL_FILE_BYTES:
            cur.full = True
            self.current = None
        return offs

    def close(self):
        if self.current is not None:
            self.current.full = True
            if self.current.live <= 0:
                self.current.close()
            self.current = None


_SPILL_AREAS: dict = {}


def spill_area(directory: str) -> SpillArea:
    area = _SPILL_AREAS.get(directory)
    if area is None:
        area = _SPILL_AREAS[directory] = SpillArea(directory)
    return area


class Spilled:
    """A message whose properties and body left memory; its record (an unacknowledged delivery,
    a requeued entry) keeps this stub instead: about STUB_BYTES of memory.

    `where` is a SpillFile with `off` the record's offset; or (off None) the store, read back by
    message id with `where.read_message(id)`; or (off -1) nothing: a stream delivery's record,
    whose message is never needed again (the stream keeps it)."""

    __slots__ = ("id", "stored", "size", "scan", "where", "off", "count")

    def __init__(self, msg_id, stored, size, scan, where, off, count):
        self.id = msg_id
        self.stored = stored
        self.size = size
        self.scan = scan
        self.where = where
        self.off = off
        self.count = count
        count.n += 1
        count.bytes += size

    def __del__(self):
        try:
            c = self.count
            c.n -= 1
            c.bytes -= self.size
            if self.off is not None and self.off >= 0:
                self.where.release()
        except Exception:       # interpreter shutdown: nothing left to keep right
            pass

    def load(self):
        """The message back from where it went (a new Message), or None if it cannot be read."""
        off = self.off
        if off is None:
            row = self.where.read_message(self.id)
            if row is None:
                return None
            exchange, routing_key, props, body = row
            m = Message(exchange, routing_key, props, body, None, self.id)
            m.stored = True
            return m
        if off < 0:
            return None
        _s, msg_id, _e, flags, route, props, body, _n = self.where.read(off)
        return message(route, props, body, msg_id, flags)


STUB_BYTES = 200   # a Spilled stub (80 B) and the tuple or record slot that holds it, estimated

_STUB_SCANS: dict = {}


def stub_scan(scan):
    """A shared Scan with only what records of a stub read (delivery mode, priority)."""
    key = (scan.delivery_mode, scan.priority)
    s = _STUB_SCANS.get(key)
    if s is None:
        s = _STUB_SCANS[key] = type(scan)()
        s.delivery_mode, s.priority = key
    return s


def spill(entries: list, directory: str, store=None, durable_queue=False, count=None) -> list:
    """Stubs for [(seq, message)] entries of one queue: persistent messages of a durable queue that
    are in the store are read back from it (nothing written), the others are written to the
    spill area. Returns the stubs in the same order."""
    out = [None] * len(entries)
    blobs = []
    where = []
    for i, (seq, msg) in enumerate(entries):
        if store is not None and durable_queue and msg.stored and msg.scan.delivery_mode == 2:
            out[i] = Spilled(msg.id, True, len(msg.body), stub_scan(msg.scan), store, None, count)
        else:
            blobs.append(encode(seq, msg))
            where.append(i)
    if blobs:
        for i, (f, off) in zip(where, spill_area(directory).write(blobs)):
            msg = entries[i][1]
            out[i] = Spilled(msg.id, msg.stored, len(msg.body), stub_scan(msg.scan), f, off, count)
    return out


def dropped(msg, count) -> Spilled:
    """A stub for a record whose message is never read again (stream deliveries)."""
    return Spilled(msg.id, msg.stored, len(msg.body), stub_scan(msg.scan), None, -1, count)


def heap_compact(heap: list, live) -> list:
    """A heap of (key, seq) with only the entries whose seq is in `live`."""
    h = [e for e in heap if e[1] in live and live[e[1]][0] == e[0]]
    heapq.heapify(h)
    return h


# ------------------------------------------------------------------------------ stream segments
_LIDX = struct.Struct(">QqIQ")       # a stream index entry: file offset, timestamp ms, body size, msg id


class LogSegment:
    """Part of a stream's log on disk: records of offsets first_off .. first_off + count - 1, and an
    offset index (fixed-size entries: file offset, timestamp, body size, message id) so that any
    offset is one index read and one record read away. Retention trims its head logically
    (`start`); the files go when nothing in them is live."""

    __slots__ = ("path", "xpath", "first_off", "count", "start", "bytes", "first_ts", "last_ts",
                 "writer", "xwriter", "size", "sealed", "head")

    def __init__(self, directory: str, first_off: int):
        n = next(_ids)
        self.path = os.path.join(directory, f"log-{os.getpid()}-{n}.s")
        self.xpath = self.path + "x"
        self.first_off = first_off
        self.count = 0            # entries written
        self.start = 0            # entries trimmed from the head
        self.bytes = 0            # body bytes of the live entries
        self.first_ts = self.last_ts = 0
        self.writer = open(self.path, "wb", buffering=1024 * 1024)
        self.xwriter = open(self.xpath, "wb", buffering=256 * 1024)
        self.size = 0
        self.sealed = False
        self.head = None          # (timestamp, size, msg id) of the first live entry, when read

    @property
    def live(self) -> int:
        return self.count - self.start

    @property
    def end_off(self) -> int:
        return self.first_off + self.count

    def full(self) -> bool:
        return self.size >= SEGMENT_BYTES or self.count >= SEGMENT_COUNT

    def append(self, off: int, msg, ts: int):
        rec = encode(off, msg, ts)
        self.writer.write(rec)
        self.xwriter.write(_LIDX.pack(self.size, ts, len(msg.body), msg.id))
        self.size += len(rec)
        if not self.count:
            self.first_ts = ts
        self.last_ts = ts
        self.count += 1
        self.bytes += len(msg.body)

    def flush(self):
        if not self.sealed:
            self.writer.flush()
            self.xwriter.flush()

    def seal(self):
        if not self.sealed:
            self.writer.close()
            self.xwriter.close()
            self.sealed = True

    def index(self, i: int, n: int = 1) -> list:
        """Index entries i .. i+n-1 (relative to first_off): [(pos, ts, size, msg_id)]."""
        self.flush()
        fd = os.open(self.xpath, os.O_RDONLY)
        try:
            data = os.pread(fd, n * _LIDX.size, i * _LIDX.size)
        finally:
            os.close(fd)
        return [_LIDX.unpack_from(data, k) for k in range(0, len(data) - _LIDX.size + 1, _LIDX.size)]

    def head_entry(self):
        if self.head is None and self.live:
            e = self.index(self.start)[0]
            self.head = (e[1], e[2], e[3])
        return self.head

    def trim_one(self):
        """The first live entry goes: returns its (timestamp, size, msg id)."""
        h = self.head_entry()
        self.start += 1
        self.bytes -= h[1]
        self.head = None
        return h

    def read(self, off: int, max_count: int, max_bytes: int) -> list:
        """Up to max_count entries (and about max_bytes) from offset `off`: [(off, message, ts)]."""
        i = off - self.first_off
        n = min(max_count, self.count - i)
        if n <= 0:
            return []
        idx = self.index(i, n)
        total = 0
        for k, e in enumerate(idx):
            total += e[2]
            if total > max_bytes and k:
                idx = idx[:k]
                break
        start = idx[0][0]
        end = idx[-1][0]
        fd = os.open(self.path, os.O_RDONLY)
        try:
            last = _pread_record(fd, end)
            data = os.pread(fd, end - start, start) if end > start else b""
        finally:
            os.close(fd)
        out = []
        pos = 0
        for k in range(len(idx) - 1):
            seq, msg_id, ts, flags, route, props, body, pos = _record_at(data, pos)
            out.append((seq, message(route, props, body, msg_id, flags), ts))
        seq, msg_id, ts, flags, route, props, body, _n = last
        out.append((seq, message(route, props, body, msg_id, flags), ts))
        return out

    def offset_at(self, ts_ms: int):
        """The first live offset whose timestamp is at or after ts_ms (None: none here)."""
        lo, hi = self.start, self.count
        if not self.live or self.last_ts < ts_ms:
            return None
        while lo < hi:
            mid = (lo + hi) // 2
            if self.index(mid)[0][1] >= ts_ms:
                hi = mid
            else:
                lo = mid + 1
        return self.first_off + lo

    def msg_ids(self) -> list:
        """(offset, msg id) of the live entries (for the store when the segment goes)."""
        return [(self.first_off + self.start + k, e[3]) for k, e in enumerate(self.index(self.start, self.live))]

    def drop(self):
        for f in (self.writer, self.xwriter):
            try:
                f.close()
            except OSError:
                pass
        for p in (self.path, self.xpath):
            try:
                os.unlink(p)
            except OSError:
                pass
