"""A durable store in one SQLite database (WAL, synchronous=FULL).

The recording methods run on the event loop and only change in-memory state under a lock:
pending rows to write, and an index of the live queue entries (which message each (queue, seq)
holds, and how many entries each message has). `commit()` runs in a worker thread: it swaps
the pending state out under the lock and writes it in one transaction, so a commit that returns
has made everything recorded before it durable.

Pending work is coalesced: an entry enqueued and dequeued between two commits is never
written, nor is a message all of whose entries went that way. A dequeue of an entry that is
written (or being written by a commit in progress) becomes a DELETE in the next commit, which
runs after that one. A message whose last entry goes is deleted.

Tables:
    definitions(kind, key JSON list, value JSON)   primary key (kind, key)
    messages(id, exchange, routing_key, props, body, refs)
    queue_entries(vhost, queue, seq, msg_id, delivered, expires)   primary key (vhost, queue, seq)

`expires` is when the entry's message expires (ms since the epoch), NULL if never; for an entry of
a stream, when it was appended (its age, for x-max-age, counts from there). Format 1 had
no such column: a format-1 file is migrated when it is opened, its entries marked -1 (not
recorded), and the engine gives those a deadline from their queue's TTL at recovery.
"""
from __future__ import annotations

import base64
import datetime
import itertools
import json
import logging
import operator
import os
import sqlite3
import threading
import time
import urllib.parse
from collections import Counter
from decimal import Decimal

from .base import UNKNOWN_EXPIRY, Recovered, Store

log = logging.getLogger("usagi.storage")

DB_NAME = "usagi.db"
FORMAT_VERSION = 2     # PRAGMA user_version of the database file (1: no queue_entries.expires)


class StoreError(Exception):
    """The store cannot be opened: the message names the file and what is wrong."""

def probe_file(path: str) -> str:
    """What is at `path`, without creating or changing anything: "missing", "empty" (0 bytes),
    "no tables" (a database without the store's tables) or "present" (a store, or something the
    store will report as unreadable when it opens it)."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return "missing"
    if size == 0:
        return "empty"
    try:
        conn = sqlite3.connect(f"file:{urllib.parse.quote(path)}?mode=rw", uri=True, timeout=30)
        try:
            n = conn.execute("SELECT count(*) FROM sqlite_master WHERE type='table' "
                             "AND name='definitions'").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return "present"
    return "present" if n else "no tables"


KINDS = {
    "vhost": "vhosts", "user": "users", "permission": "permissions", "exchange": "exchanges",
    "queue": "queues", "binding": "bindings", "policy": "policies", "parameter": "parameters",
    "operator_policy": "operator_policies", "topic_permission": "topic_permissions",
    "global_parameter": "global_parameters",
}

SCHEMA = """
CREATE TABLE IF NOT EXISTS definitions (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    exchange TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    props BLOB NOT NULL,
    body BLOB NOT NULL,
    refs INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS queue_entries (
    vhost TEXT NOT NULL,
    queue TEXT NOT NULL,
    seq INTEGER NOT NULL,
    msg_id INTEGER NOT NULL,
    delivered INTEGER NOT NULL DEFAULT 0,
    expires INTEGER,
    PRIMARY KEY (vhost, queue, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS delayed (
    id INTEGER PRIMARY KEY,
    due INTEGER NOT NULL,
    vhost TEXT NOT NULL,
    xname TEXT NOT NULL,
    exchange TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    props BLOB NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS delayed_due ON delayed (due, id);
CREATE TABLE IF NOT EXISTS repl_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    epoch INTEGER NOT NULL,
    lsn INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS repl_history (
    epoch INTEGER PRIMARY KEY,
    first_lsn INTEGER NOT NULL
);
"""

SQL_PUT_DEF = "INSERT OR REPLACE INTO definitions (kind, key, value) VALUES (?, ?, ?)"
SQL_DEL_DEF = "DELETE FROM definitions WHERE kind = ? AND key = ?"
SQL_DROP_QUEUE = "DELETE FROM queue_entries WHERE vhost = ? AND queue = ?"
SQL_SET_REFS = "UPDATE messages SET refs = ? WHERE id = ?"
SQL_ADD_DELAYED = "INSERT OR REPLACE INTO delayed VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
SQL_DEL_DELAYED = "DELETE FROM delayed WHERE id = ?"
SQL_DROP_DELAYED = "DELETE FROM delayed WHERE vhost = ?"
SQL_POSITION = "INSERT OR REPLACE INTO repl_state (id, epoch, lsn) VALUES (1, ?, ?)"
SQL_HISTORY = "INSERT OR IGNORE INTO repl_history (epoch, first_lsn) VALUES (?, ?)"

# the same, for many rows in one statement (see _values, _in_list)
SQL_MARK_IN = "UPDATE queue_entries SET delivered = 1 WHERE vhost = ? AND queue = ? AND seq IN "
SQL_DEL_ENTRY_IN = "DELETE FROM queue_entries WHERE vhost = ? AND queue = ? AND seq IN "
SQL_DEL_MSG_IN = "DELETE FROM messages WHERE id IN "
SQL_ADD_MSGS = "INSERT OR REPLACE INTO messages (id, exchange, routing_key, props, body, refs) VALUES "
SQL_ADD_ENTRIES = "INSERT OR REPLACE INTO queue_entries (vhost, queue, seq, msg_id, delivered, expires) VALUES "

# Rows per statement. sqlite3 lets other threads run while each statement executes and takes the
# GIL back after it, and while the event loop is busy, taking it back waits for the loop's switch
# interval (5 ms): with a statement per row, a commit of a few thousand rows would take seconds
# under load. A statement per CHUNK rows takes a few.
CHUNK = 256
_SQL: dict = {}


def _chunks(n: int):
    """Sizes that add up to n: CHUNK as often as it goes, then powers of two (few distinct
    statement texts, so sqlite3's statement cache keeps them prepared)."""
    while n >= CHUNK:
        yield CHUNK
        n -= CHUNK
    k = CHUNK
    while n:
        k >>= 1
        if n >= k:
            yield k
            n -= k


def _values(conn, head: str, width: int, rows):
    """`head` (INSERT ... VALUES) for every row, CHUNK rows per statement, in order (a later row
    replaces an earlier one with the same key, as one statement per row would)."""
    i = 0
    for k in _chunks(len(rows)):
        sql = _SQL.get((head, k))
        if sql is None:
            one = "(" + ",".join("?" * width) + ")"
            sql = _SQL[(head, k)] = head + ",".join([one] * k)
        conn.execute(sql, list(itertools.chain.from_iterable(rows[i:i + k])))
        i += k


def _in_list(conn, head: str, fixed: tuple, keys):
    """`head` (... IN) with `fixed` parameters first, for every key, CHUNK keys per statement."""
    i = 0
    for k in _chunks(len(keys)):
        sql = _SQL.get((head, k))
        if sql is None:
            sql = _SQL[(head, k)] = head + "(" + ",".join("?" * k) + ")"
        conn.execute(sql, fixed + tuple(keys[i:i + k]))
        i += k


def _by_queue(conn, head: str, rows):
    """Rows (vhost, queue, seq): `head` per queue, its seqs in IN lists."""
    groups: dict = {}
    for v, q, s in rows:
        g = groups.get((v, q))
        if g is None:
            groups[(v, q)] = [s]
        else:
            g.append(s)
    for key, seqs in groups.items():
        _in_list(conn, head, key, seqs)


# ---------------------------------------------------------------------------------------------
# JSON for definition values: AMQP table values (bytes, Decimal, Timestamp, Typed, ...) tagged.

_TAGS = ("__bytes__", "__decimal__", "__ts__", "__typed__", "__tuple__", "__set__",
         "__datetime__", "__items__", "__dict__", "__float__")


def _enc(v):
    """A definition value as plain JSON data, AMQP types tagged.

    Iterative, with an explicit stack: values decoded from AMQP nest at most amqp.table.MAX_DEPTH
    deep, but arguments and policy definitions given as JSON through the management API have no
    such bound, and a recursion here would fail the write of a definition the engine already holds."""
    root = [None]
    stack = [(v, root, 0)]
    while stack:
        v, into, at = stack.pop()
        into[at], children = _enc_node(v)
        stack.extend(children)
    return root[0]


def _enc_node(v):
    """One value encoded, with placeholders for what it holds: (encoded, [(child, container, index)])."""
    t = v.__class__
    if t is str or t is int or t is bool or v is None:
        return v, ()
    if t is float:
        if v != v or v in (float("inf"), float("-inf")):
            return {"__float__": repr(v)}, ()
        return v, ()
    if t is dict:
        if all(k.__class__ is str for k in v):
            if len(v) == 1 and next(iter(v)) in _TAGS:   # would read as a tag: escape it
                pairs = [[k, None] for k in v]
                return {"__dict__": pairs}, [(x, p, 1) for p, x in zip(pairs, v.values())]
            out = dict.fromkeys(v)
            return out, [(x, out, k) for k, x in v.items()]
        pairs = [[None, None] for _ in v]
        children = []
        for p, (k, x) in zip(pairs, v.items()):
            children += ((k, p, 0), (x, p, 1))
        return {"__items__": pairs}, children
    if t is list:
        out = [None] * len(v)
        return out, [(x, out, i) for i, x in enumerate(v)]
    if isinstance(v, (bytes, bytearray, memoryview)):
        return {"__bytes__": base64.b64encode(bytes(v)).decode("ascii")}, ()
    if isinstance(v, bool):
        return bool(v), ()
    if isinstance(v, int):
        from ..amqp.table import Timestamp
        if isinstance(v, Timestamp):
            return {"__ts__": int(v)}, ()
        return int(v), ()
    if isinstance(v, float):
        return _enc_node(float(v))
    if isinstance(v, str):
        return str(v), ()
    if isinstance(v, Decimal):
        return {"__decimal__": str(v)}, ()
    if isinstance(v, (tuple, set, frozenset)):
        items = list(v)
        out = [None] * len(items)
        return {"__tuple__" if isinstance(v, tuple) else "__set__": out}, \
            [(x, out, i) for i, x in enumerate(items)]
    if isinstance(v, datetime.datetime):
        return {"__datetime__": v.isoformat()}, ()
    if isinstance(v, dict):
        return _enc_node(dict(v))
    if isinstance(v, list):
        return _enc_node(list(v))
    from ..amqp.table import Typed
    if isinstance(v, Typed):
        out = [v.code, None]
        return {"__typed__": out}, [(v.value, out, 1)]
    raise TypeError(f"cannot store a {t.__name__} in a definition: {v!r}")


def _hook(d):
    if len(d) != 1:
        return d
    (k, v), = d.items()
    if k not in _TAGS:
        return d
    if k == "__bytes__":
        return base64.b64decode(v)
    if k == "__decimal__":
        return Decimal(v)
    if k == "__ts__":
        from ..amqp.table import Timestamp
        return Timestamp(v)
    if k == "__typed__":
        from ..amqp.table import Typed
        return Typed(v[0], v[1])
    if k == "__tuple__":
        return tuple(v)
    if k == "__set__":
        return set(v)
    if k == "__datetime__":
        return datetime.datetime.fromisoformat(v)
    if k == "__items__":
        return {_freeze(a): b for a, b in v}
    if k == "__float__":
        return float(v)
    return {a: b for a, b in v}  # __dict__: an escaped dict whose only key looks like a tag


def _freeze(k):
    return tuple(_freeze(x) for x in k) if isinstance(k, list) else k


def encode_json(value) -> str:
    v = _enc(value)
    text = json.dumps(v, separators=(",", ":"), ensure_ascii=False)
    if not text.isascii() and not _utf8(text):
        # a name in bytes that are not UTF-8 (surrogate escapes): \u escapes round-trip it
        text = json.dumps(v, separators=(",", ":"))
    return text


def _utf8(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def db_text(s):
    """A str as SQLite can hold it: itself, or its bytes (a BLOB) when it carries surrogate
    escapes, as a routing key in bytes that are not UTF-8 does (RabbitMQ takes any bytes there).
    Always the same for the same str, so keys written this way are found again."""
    if s.__class__ is str and not s.isascii() and not _utf8(s):
        return s.encode("utf-8", "surrogateescape")
    return s


def from_db(v):
    return v.decode("utf-8", "surrogateescape") if v.__class__ is bytes else v


def decode_json(text: str):
    return json.loads(text, object_hook=_hook)


def encode_key(key) -> str:
    return encode_json(list(key))


def decode_key(text: str) -> tuple:
    return tuple(decode_json(text))


def _storable(names) -> bool:
    """Whether every name of `names` (tuples of str) is stored as it is (see db_text)."""
    for t in names:
        for x in t:
            if x.__class__ is str and not x.isascii() and not _utf8(x):
                return False
    return True


_NAMES = operator.itemgetter(0, 1)
_ROUTE = operator.itemgetter(1, 2)


def _texts(rows, n):
    """Rows whose first n (1 or 2) values are names, made storable (see db_text); as they are if
    all are. The rows of a commit name few queues: their distinct names are checked (at C speed,
    as the commit holds the GIL against the event loop meanwhile)."""
    if not rows or _storable(set(map(_NAMES if n == 2 else operator.itemgetter(0, 0), rows))):
        return rows
    return [tuple(db_text(x) for x in r[:n]) + tuple(r[n:]) for r in rows]


def _msg_texts(rows):
    """Message rows (id, exchange, routing_key, ...) made storable (see db_text)."""
    if not rows or _storable(set(map(_ROUTE, rows))):
        return rows
    return [(r[0], db_text(r[1]), db_text(r[2])) + tuple(r[3:]) for r in rows]


# ---------------------------------------------------------------------------------------------

class _QueueIndex:
    """The live entries of one queue: seq -> msg_id, and on demand msg_id -> [seq]."""

    __slots__ = ("by_seq", "by_msg")

    def __init__(self):
        self.by_seq = {}
        self.by_msg = None

    def msg_index(self):
        bm = self.by_msg
        if bm is None:
            bm = self.by_msg = {}
            for s, m in self.by_seq.items():
                lst = bm.get(m)
                if lst is None:
                    bm[m] = [s]
                else:
                    lst.append(s)
        return bm


class _Rows:
    """One queue's recovered entries in order, read as they are iterated (see _LazyMessages).

    `light()` switches what follows to rows without their message: (seq, None, None, props, None,
    redelivered, msg_id, expires, body size), read without the bodies, for entries that recovery
    leaves in the store (stubs read back when delivered)."""

    FULL = ("SELECT e.seq, e.msg_id, e.delivered, e.expires, m.exchange, m.routing_key, m.props, m.body "
            "FROM queue_entries e JOIN messages m ON m.id = e.msg_id "
            "WHERE e.vhost = ? AND e.queue = ? AND e.seq > ? ORDER BY e.seq")
    LIGHT = ("SELECT e.seq, e.msg_id, e.delivered, e.expires, m.props, length(m.body) "
             "FROM queue_entries e JOIN messages m ON m.id = e.msg_id "
             "WHERE e.vhost = ? AND e.queue = ? AND e.seq > ? ORDER BY e.seq")

    __slots__ = ("conn", "key", "cur", "last", "is_light")

    def __init__(self, conn, key):
        self.conn = conn
        self.key = (db_text(key[0]), db_text(key[1]))
        self.last = -(1 << 63)
        self.is_light = False
        self.cur = conn.execute(self.FULL, self.key + (self.last,))

    def __iter__(self):
        return self

    def __next__(self):
        row = next(self.cur)
        if self.is_light:
            seq, mid, delivered, expires, props, size = row
            self.last = seq
            return seq, None, None, bytes(props), None, bool(delivered), mid, expires, size
        seq, mid, delivered, expires, ex, rk, props, body = row
        self.last = seq
        return seq, from_db(ex), from_db(rk), bytes(props), bytes(body), bool(delivered), mid, expires

    def light(self):
        if not self.is_light:
            self.cur.close()
            self.is_light = True
            self.cur = self.conn.execute(self.LIGHT, self.key + (self.last,))


class _LazyMessages:
    """Recovered.messages for a large store: (vhost, queue) -> entries, read as they are iterated.

    Entries are (seq, exchange, routing_key, props, body, redelivered, msg_id, expires); `refs`
    says how many entries hold each message id."""

    def __init__(self, conn, keys, refs):
        self.conn = conn
        self.keys = keys
        self.refs = refs

    def __len__(self):
        return len(self.keys)

    def __bool__(self):
        return bool(self.keys)

    def keys_(self):
        return list(self.keys)

    def _entries(self, key):
        return _Rows(self.conn, key)

    def items(self):
        for key in self.keys:
            yield key, self._entries(key)

    def get(self, key, default=None):
        return list(self._entries(key)) if key in self.keys else default

    def __getitem__(self, key):
        if key not in self.keys:
            raise KeyError(key)
        return list(self._entries(key))

    def __contains__(self, key):
        return key in self.keys

    def __iter__(self):
        return iter(self.keys)

    def __eq__(self, other):
        if isinstance(other, dict):
            return {k: list(v) for k, v in self.items()} == other
        return NotImplemented


class SQLiteStore(Store):
    durable = True

    def __init__(self, data_dir: str, filename: str = DB_NAME):
        self.data_dir = str(data_dir)
        self.path = os.path.join(self.data_dir, filename)
        self.conn: sqlite3.Connection | None = None
        self.max_msg_id = 0            # highest message id stored, known after open()
        self.commits = 0               # transactions written
        self.recorded = 0              # changes recorded (definitions, messages, entries)
        self._lock = threading.Lock()          # guards the in-memory state below
        self._commit_lock = threading.Lock()   # one commit at a time
        # live state (committed, in flight or pending)
        self._queues: dict = {}        # (vhost, queue) -> _QueueIndex
        self._refs: dict = {}          # msg_id -> live entries holding it (absent when 0)
        # pending until the next commit
        self._defs: dict = {}          # (kind, key text) -> value JSON text, or None to delete
        self._new_msgs: dict = {}      # msg_id -> (id, exchange, routing_key, props, body)
        self._new_entries: dict = {}   # (vhost, queue, seq) -> (vhost, queue, seq, msg_id, delivered, expires)
        self._del_entries: list = []   # [(vhost, queue, seq)] of written entries
        self._marks: dict = {}         # (vhost, queue, seq) of written entries -> None (a dequeue
        #                                before the commit takes its mark back: no UPDATE then DELETE)
        self._drops: list = []         # [(vhost, queue)]
        self._del_msgs: set = set()    # written message ids whose refs reached 0
        self._touched: set = set()     # written message ids whose refs changed
        self._delayed_new: dict = {}   # delayed message id -> row to insert
        self._delayed_gone: list = []  # [(id,)] of written delayed messages
        self._delayed_drops: list = []  # [(vhost,)]: every delayed message of a deleted vhost
        # messages whose last entry went before they were written, in case an entry brings one
        # back: those of this cycle (since the last swap) and of the one before
        self._limbo: dict = {}
        self._limbo_prev: dict = {}
        self._failed = None            # batches whose transaction failed: retried first
        self.writing_since = None      # time.perf_counter() when the transaction being written began
        # replication (cluster mode): the position of the last batch written, and when epochs began
        self.position = (0, 0)         # (epoch, lsn)
        self.history: list = []        # [(epoch, first lsn)]
        self._reader = None            # a second connection for reads off the commit path
        self._writing: dict = {}       # msg_id -> row of the messages taken for a write not yet done

    # ------------------------------------------------------------------ open / close
    def open(self) -> Recovered:
        os.makedirs(self.data_dir, exist_ok=True)
        try:
            return self._open()
        except sqlite3.DatabaseError as e:
            if self.conn is not None:
                self.conn.close()
                self.conn = None
            raise StoreError(f"{self.path}: the store is unreadable ({e}); refusing to start so that "
                             f"nothing is lost: restore the file from a backup or move it away") from e

    def _open(self) -> Recovered:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                               timeout=30)
        self.conn = conn
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            log.warning("sqlite store: journal_mode is %s, not wal", mode)
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA cache_size=-65536")
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.execute("PRAGMA journal_size_limit=67108864")
        fresh = conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='definitions'"
        ).fetchone()[0] == 0
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if fresh:
            conn.executescript(SCHEMA)
            conn.execute(f"PRAGMA user_version={FORMAT_VERSION}")
        elif version not in (0, 1, FORMAT_VERSION):
            raise StoreError(f"{self.path}: on-disk format version {version} is not supported by this "
                             f"Usagi (it reads versions 1 to {FORMAT_VERSION})")
        else:
            conn.executescript(SCHEMA)
            if version != FORMAT_VERSION:
                self._migrate(version)
        rec = Recovered(fresh=fresh)
        if not fresh:
            self._load(rec)
        self._read_position(conn)
        return rec

    def _migrate(self, version: int):
        """Bring a file of an older format (0: before formats were numbered, 1) to this one, in
        one transaction: a crash leaves either the old file or the new one."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            cols = {row[1] for row in conn.execute("PRAGMA table_info(queue_entries)")}
            if "expires" not in cols:
                conn.execute("ALTER TABLE queue_entries ADD COLUMN expires INTEGER")
                conn.execute("UPDATE queue_entries SET expires = ?", (UNKNOWN_EXPIRY,))
            conn.execute(f"PRAGMA user_version={FORMAT_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        log.info("sqlite store %s: migrated from format %d to %d", self.path, version, FORMAT_VERSION)

    def _load(self, rec: Recovered):
        conn = self.conn
        for kind, key, value in conn.execute(
                "SELECT kind, key, value FROM definitions ORDER BY rowid"):
            attr = KINDS.get(kind)
            if attr is None:
                log.warning("sqlite store: unknown definition kind %r ignored", kind)
                continue
            try:
                v = decode_json(value)
            except ValueError:
                log.error("sqlite store: bad definition %s %s ignored", kind, key)
                continue
            if kind == "vhost":
                name = v.pop("name", None) if isinstance(v, dict) else None
                if name is None:
                    name = decode_key(key)[0]
                rec.vhosts.append((name, v if isinstance(v, dict) else {}))
            else:
                getattr(rec, attr).append(v)

        # Clean up what a crash cannot leave but a bug could: entries without a message and
        # messages without an entry.
        conn.execute("BEGIN")
        conn.execute("DELETE FROM queue_entries WHERE msg_id NOT IN (SELECT id FROM messages)")
        conn.execute("DELETE FROM messages WHERE id NOT IN (SELECT msg_id FROM queue_entries)")
        conn.execute("COMMIT")

        # Index pass: which message each entry holds, without reading any body (the dicts are
        # built from the cursors in C: a large backlog costs a promoted leader little here).
        queues = self._queues
        counts = Counter()
        for vhost, queue in conn.execute("SELECT DISTINCT vhost, queue FROM queue_entries"):
            idx = queues[(from_db(vhost), from_db(queue))] = _QueueIndex()
            idx.by_seq = dict(conn.execute("SELECT seq, msg_id FROM queue_entries WHERE vhost = ? AND queue = ?",
                                           (vhost, queue)))
            counts.update(idx.by_seq.values())
        refs = self._refs
        refs.update(counts)
        del counts
        stored = dict(conn.execute("SELECT id, refs FROM messages"))
        if stored != refs:
            fix = [(refs.get(mid, 0), mid) for mid, n in stored.items() if refs.get(mid, 0) != n]
            conn.execute("BEGIN")
            conn.executemany(SQL_SET_REFS, fix)
            conn.execute("COMMIT")
        del stored
        # Bodies are streamed queue by queue while the engine rebuilds its queues, so a large
        # backlog is never all in memory at once.
        rec.messages = _LazyMessages(conn, list(queues), refs)
        self.max_msg_id = conn.execute("SELECT coalesce(max(id), 0) FROM messages").fetchone()[0]

    def close(self, commit: bool = True):
        """Commit what is pending (unless `commit` is False: a cluster leader that lost its followers
        must not write alone what they never saw) and close."""
        if self.conn is None:
            return
        try:
            if commit:
                self.commit()
        finally:
            with self._commit_lock:
                conn, self.conn = self.conn, None
                if conn is not None:
                    conn.close()
                if self._reader is not None:
                    self._reader.close()
                    self._reader = None

    # ------------------------------------------------------------------ definitions
    def put_definition(self, kind: str, key: tuple, value: dict):
        k = (kind, encode_key(key))
        v = encode_json(value)
        with self._lock:
            self._defs[k] = v
            self.recorded += 1

    def delete_definition(self, kind: str, key: tuple):
        k = (kind, encode_key(key))
        with self._lock:
            self._defs[k] = None
            self.recorded += 1

    # ------------------------------------------------------------------ messages
    def add_message(self, msg_id: int, exchange: str, routing_key: str, props: bytes, body: bytes):
        with self._lock:
            self.recorded += 1
            self._new_msgs[msg_id] = (msg_id, exchange, routing_key, props, body)
            if msg_id > self.max_msg_id:
                self.max_msg_id = msg_id

    def add_with_entry(self, msg_id: int, exchange: str, routing_key: str, props: bytes, body: bytes,
                       vhost: str, queue: str, seq: int, expires: int | None = None):
        with self._lock:
            fresh = self._add_locked(msg_id, exchange, routing_key, props, body, vhost, queue, seq, 0, expires)
        if not fresh:
            self.enqueue(vhost, queue, seq, msg_id, expires)

    def add_entries(self, rows):
        # add_with_entry and mark_delivered for each row, under one lock
        later = []
        with self._lock:
            add = self._add_locked
            for row in rows:
                if not add(*row, None):
                    later.append(row)
        for msg_id, _x, _k, _p, _b, vhost, queue, seq, delivered in later:
            self.enqueue(vhost, queue, seq, msg_id)
            if delivered:
                self.mark_delivered(vhost, queue, seq)

    def _add_locked(self, msg_id, exchange, routing_key, props, body, vhost, queue, seq, delivered, expires) -> bool:
        """A message and its entry (under the lock). False when the message already has entries
        or the seq is taken: the entry then goes the general way (enqueue), after the lock."""
        self.recorded += 1
        self._new_msgs[msg_id] = (msg_id, exchange, routing_key, props, body)
        if msg_id > self.max_msg_id:
            self.max_msg_id = msg_id
        qk = (vhost, queue)
        idx = self._queues.get(qk)
        if msg_id in self._refs or (idx is not None and seq in idx.by_seq):
            return False
        if idx is None:
            idx = self._queues[qk] = _QueueIndex()
        idx.by_seq[seq] = msg_id
        idx.by_msg = None
        self._refs[msg_id] = 1
        self._new_entries[(vhost, queue, seq)] = (vhost, queue, seq, msg_id, 1 if delivered else 0, expires)
        self.recorded += 1
        return True

    def enqueue(self, vhost: str, queue: str, seq: int, msg_id: int, expires: int | None = None):
        qk = (vhost, queue)
        with self._lock:
            idx = self._queues.get(qk)
            if idx is None:
                idx = self._queues[qk] = _QueueIndex()
            old = idx.by_seq.get(seq)
            if old is not None:     # the same seq again: the old entry is replaced
                self._unref(old, 1)
            idx.by_seq[seq] = msg_id
            idx.by_msg = None
            refs = self._refs
            r = refs.get(msg_id, 0)
            if not r and msg_id not in self._new_msgs:
                row = self._limbo.pop(msg_id, None) or self._limbo_prev.pop(msg_id, None)
                if row is not None:
                    self._new_msgs[msg_id] = row
            refs[msg_id] = r + 1
            if msg_id not in self._new_msgs:
                self._touched.add(msg_id)
            self._new_entries[(vhost, queue, seq)] = (vhost, queue, seq, msg_id, 0, expires)
            self.recorded += 1

    def _unref(self, msg_id, n):
        refs = self._refs
        r = refs.get(msg_id, 0) - n
        if r > 0:
            refs[msg_id] = r
            if msg_id not in self._new_msgs:
                self._touched.add(msg_id)
        else:
            refs.pop(msg_id, None)
            row = self._new_msgs.pop(msg_id, None)
            if row is None:
                self._del_msgs.add(msg_id)
            else:
                # never written: it never will be (the commit's work stays the size of what is
                # left to write, however many messages came and went since the last one)
                self._limbo[msg_id] = row

    def dequeue(self, vhost: str, queue: str, seq: int, msg_id: int):
        """Remove the entry `seq` of the queue; with seq 0, every entry of msg_id on it."""
        qk = (vhost, queue)
        with self._lock:
            idx = self._queues.get(qk)
            if idx is None:
                return
            by_seq = idx.by_seq
            if seq:
                mid = by_seq.get(seq)
                if mid is None or mid != msg_id:
                    # not this message's entry (one of a queue of the same name, re-created since
                    # the delivery being acknowledged was made): it stays
                    return
                del by_seq[seq]
                bm = idx.by_msg
                if bm is not None:
                    lst = bm.get(mid)
                    if lst is not None:
                        lst.remove(seq)
                        if not lst:
                            del bm[mid]
                seqs = (seq,)
            else:
                mid = msg_id
                seqs = idx.msg_index().pop(mid, None)
                if not seqs:
                    return
                for s in seqs:
                    del by_seq[s]
            if not by_seq:
                del self._queues[qk]
            self.recorded += 1
            new_entries = self._new_entries
            marks = self._marks
            for s in seqs:
                key = (vhost, queue, s)
                if new_entries.pop(key, None) is None:
                    self._del_entries.append(key)
                    if marks:
                        marks.pop(key, None)
            self._unref(mid, len(seqs))

    def mark_delivered(self, vhost: str, queue: str, seq: int):
        key = (vhost, queue, seq)
        with self._lock:
            row = self._new_entries.get(key)
            if row is not None:
                if not row[4]:
                    self._new_entries[key] = (vhost, queue, seq, row[3], 1, row[5])
                return
            idx = self._queues.get((vhost, queue))
            if idx is not None and seq in idx.by_seq:
                self._marks[key] = None

    def read_message(self, msg_id: int):
        with self._lock:
            row = (self._new_msgs.get(msg_id) or self._writing.get(msg_id) or self._limbo.get(msg_id)
                   or self._limbo_prev.get(msg_id))
        if row is not None:
            return row[1], row[2], row[3], row[4]
        if self.conn is None:
            return None
        r = self._read_conn().execute("SELECT exchange, routing_key, props, body FROM messages WHERE id = ?",
                                      (msg_id,)).fetchone()
        if r is None:
            return None
        return from_db(r[0]), from_db(r[1]), bytes(r[2]), bytes(r[3])

    INDEX_ENTRY_BYTES = 150        # an entry of `_refs` or of a queue's `by_seq` (dict slot and ints)
    CACHE_BYTES = 64 << 20         # PRAGMA cache_size of the writing connection

    def memory_bytes(self) -> int:
        entries = len(self._refs) + sum(len(idx.by_seq) for idx in list(self._queues.values()))
        try:
            size = os.path.getsize(self.path)
        except OSError:
            size = 0
        with self._lock:
            pending = list(self._new_msgs.values()) + list(self._writing.values())
        return (self.INDEX_ENTRY_BYTES * entries + min(self.CACHE_BYTES, size) +
                sum(200 + len(r[4]) for r in pending))

    def drop_queue_messages(self, vhost: str, queue: str):
        qk = (vhost, queue)
        with self._lock:
            idx = self._queues.pop(qk, None)
            self._drops.append(qk)
            self.recorded += 1
            if idx is None:
                return
            new_entries = self._new_entries
            counts = {}
            for s, mid in idx.by_seq.items():
                new_entries.pop((vhost, queue, s), None)
                counts[mid] = counts.get(mid, 0) + 1
            for mid, n in counts.items():
                self._unref(mid, n)

    # ------------------------------------------------------------------ commits
    def pending(self) -> bool:
        return bool(self._new_entries or self._new_msgs or self._del_entries or self._defs
                    or self._drops or self._del_msgs or self._marks or self._touched
                    or self._delayed_new or self._delayed_gone or self._delayed_drops or self._failed)

    def pending_summary(self) -> str:
        """What is waiting to be written (pending and failed batches), in words for the log."""
        with self._lock:
            puts = dels = marks = del_entries = drops = del_msgs = msgs = entries = 0
            for (p, d, mk, de, dr, dm, _t, ms, en, *_delayed) in self._failed or []:
                puts += len(p)
                dels += len(d)
                marks += len(mk)
                del_entries += len(de)
                drops += len(dr)
                del_msgs += len(dm)
                msgs += len(ms)
                entries += len(en)
            puts += sum(1 for v in self._defs.values() if v is not None)
            dels += sum(1 for v in self._defs.values() if v is None)
            marks += len(self._marks)
            del_entries += len(self._del_entries)
            drops += len(self._drops)
            del_msgs += len(self._del_msgs)
            msgs += sum(1 for m in self._new_msgs if self._refs.get(m))
            entries += len(self._new_entries)
        parts = [(puts, "definitions written"), (dels, "definitions deleted"), (msgs, "messages"),
                 (entries, "queue entries"), (del_entries + del_msgs, "removals of messages"),
                 (drops, "queues emptied"), (marks, "deliveries marked")]
        return ", ".join(f"{n} {what}" for n, what in parts if n) or "nothing"

    def _swap(self):
        """Take the pending work as one batch (under the lock)."""
        refs = self._refs
        new_msgs = self._new_msgs
        msgs = []
        limbo = self._limbo
        for mid, row in new_msgs.items():
            n = refs.get(mid)
            if n:
                msgs.append(row + (n,))
            else:
                limbo[mid] = row           # recorded with no entry (yet)
        self._limbo_prev = limbo
        self._limbo = {}
        del_msgs = [(m,) for m in self._del_msgs if m not in refs]
        touched = [(refs[m], m) for m in self._touched if m in refs]
        defs = self._defs
        batch = (
            [(k, n, v) for (k, n), v in defs.items() if v is not None],
            [(k, n) for (k, n), v in defs.items() if v is None],
            list(self._marks), self._del_entries, self._drops, del_msgs, touched, msgs,
            list(self._new_entries.values()),
            list(self._delayed_new.values()), self._delayed_gone, self._delayed_drops,
        )
        self._delayed_new = {}
        self._delayed_gone = []
        self._delayed_drops = []
        self._defs = {}
        self._new_msgs = {}
        self._new_entries = {}
        self._del_entries = []
        self._marks = {}
        self._drops = []
        self._del_msgs = set()
        self._touched = set()
        return batch

    def commit(self):
        """Write everything recorded so far in one transaction and sync it."""
        with self._commit_lock:
            batches = self.take_batch()
            if batches is not None:
                self._write_locked(batches, None)

    def take_batch(self):
        """Everything recorded since the last take, after whatever a failed write left, as one unit
        to write (a list of batches of plain values: the replication stream carries it as is), or
        None when there is nothing. The caller writes it with `write_batch`, in take order."""
        with self._lock:
            batch = self._swap()
            batches = (self._failed or []) + [batch]
            self._failed = None
            if not any(any(part) for b in batches for part in b):
                return None
            writing = self._writing
            for b in batches:
                for row in b[7]:
                    writing[row[0]] = row      # read_message finds them until they are written
        return batches

    def write_batch(self, batches, position: tuple | None = None):
        """Write what `take_batch` gave in one transaction and sync it; with `position` (epoch,
        lsn), record it in the same transaction. On failure the batches are kept and written first
        next time (by `take_batch`), and the error is raised."""
        with self._commit_lock:
            self._write_locked(batches, position)

    def _write_locked(self, batches, position):
        conn = self.conn
        if conn is None:
            self._failed = batches
            raise RuntimeError("sqlite store is not open")
        self.writing_since = time.perf_counter()
        try:
            conn.execute("BEGIN")
            self._write(conn, batches)
            if position is not None:
                self._write_position(conn, position)
            conn.execute("COMMIT")
        except BaseException:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            # Keep the work: the next commit writes it before anything recorded later.
            self._failed = batches + (self._failed or [])
            raise
        finally:
            self.writing_since = None
        if position is not None:
            self._note_position(position)
        with self._lock:
            writing = self._writing
            for b in batches:
                for row in b[7]:
                    writing.pop(row[0], None)
        self.commits += 1

    @staticmethod
    def _write(conn, batches):
        for (puts, dels, marks, del_entries, drops, del_msgs, touched, msgs, entries,
             delayed_new, delayed_gone, delayed_drops) in batches:
            marks, del_entries, drops, msgs, entries = (
                _texts(marks, 2), _texts(del_entries, 2), _texts(drops, 2), _msg_texts(msgs),
                _texts(entries, 2))
            if puts:
                conn.executemany(SQL_PUT_DEF, puts)
            if dels:
                conn.executemany(SQL_DEL_DEF, dels)
            if marks:
                _by_queue(conn, SQL_MARK_IN, marks)
            if del_entries:
                _by_queue(conn, SQL_DEL_ENTRY_IN, del_entries)
            if drops:
                conn.executemany(SQL_DROP_QUEUE, drops)
            if del_msgs:
                _in_list(conn, SQL_DEL_MSG_IN, (), [r[0] for r in del_msgs])
            if touched:
                conn.executemany(SQL_SET_REFS, touched)
            if msgs:
                _values(conn, SQL_ADD_MSGS, 6, msgs)
            if entries:
                _values(conn, SQL_ADD_ENTRIES, 6, entries)
            if delayed_drops:
                conn.executemany(SQL_DROP_DELAYED, delayed_drops)
            if delayed_gone:
                conn.executemany(SQL_DEL_DELAYED, delayed_gone)
            if delayed_new:
                conn.executemany(SQL_ADD_DELAYED, delayed_new)

    # ------------------------------------------------------------------ replication
    def _write_position(self, conn, position):
        epoch, lsn = position
        conn.execute(SQL_POSITION, (epoch, lsn))
        if not self.history or self.history[-1][0] != epoch:
            conn.execute(SQL_HISTORY, (epoch, lsn))

    def _note_position(self, position):
        self.position = tuple(position)
        if not self.history or self.history[-1][0] != position[0]:
            self.history.append((position[0], position[1]))

    def _read_position(self, conn):
        row = conn.execute("SELECT epoch, lsn FROM repl_state WHERE id = 1").fetchone()
        self.position = (row[0], row[1]) if row else (0, 0)
        self.history = [tuple(r) for r in conn.execute(
            "SELECT epoch, first_lsn FROM repl_history ORDER BY first_lsn, epoch")]

    def open_replica(self):
        """Open the file to receive a leader's batches (a follower): no recovery into memory."""
        os.makedirs(self.data_dir, exist_ok=True)
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self.conn = conn
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA cache_size=-65536")
        fresh = conn.execute("SELECT count(*) FROM sqlite_master WHERE type='table' AND name='definitions'"
                             ).fetchone()[0] == 0
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        conn.executescript(SCHEMA)
        if fresh:
            conn.execute(f"PRAGMA user_version={FORMAT_VERSION}")
        elif version != FORMAT_VERSION:
            if version in (0, 1):
                self._migrate(version)
            else:
                raise StoreError(f"{self.path}: on-disk format version {version} is not supported by this "
                                 f"Usagi (it reads versions 1 to {FORMAT_VERSION})")
        self._read_position(conn)
        return self.position

    def apply_replicated(self, items):
        """A follower: [(epoch, lsn, batches)] from the leader, in order, written in one
        transaction with the position of the last, and synced."""
        with self._commit_lock:
            conn = self.conn
            conn.execute("BEGIN")
            try:
                for _epoch, _lsn, batches in items:
                    self._write(conn, batches)
                for epoch, lsn, _b in items:
                    self._write_position(conn, (epoch, lsn))
                    if not self.history or self.history[-1][0] != epoch:
                        self.history.append((epoch, lsn))
                conn.execute("COMMIT")
            except BaseException:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                self._read_position(conn)
                raise
            self.position = (items[-1][0], items[-1][1])
            self.commits += 1

    def snapshot_to(self, path: str) -> tuple:
        """A consistent copy of the store at `path` (the leader keeps writing meanwhile: the copy
        is one read transaction). Returns the (epoch, lsn) the copy holds."""
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        src = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        try:
            src.execute("VACUUM INTO ?", (path,))
        finally:
            src.close()
        copy = sqlite3.connect(path, isolation_level=None)
        try:
            row = copy.execute("SELECT epoch, lsn FROM repl_state WHERE id = 1").fetchone()
        finally:
            copy.close()
        return (row[0], row[1]) if row else (0, 0)

    def install_snapshot(self, path: str):
        """A follower: replace the whole store with a snapshot the leader sent (already synced)."""
        with self._commit_lock:
            if self.conn is not None:
                self.conn.close()
                self.conn = None
            for suffix in ("-wal", "-shm"):
                try:
                    os.unlink(self.path + suffix)
                except FileNotFoundError:
                    pass
            os.replace(path, self.path)
            fd = os.open(self.data_dir, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self.open_replica()

    # ------------------------------------------------------------------ delayed messages
    def add_delayed(self, row: tuple):
        """(id, due, vhost, xname, exchange, routing_key, props, body) of an x-delayed-message."""
        with self._lock:
            self._delayed_new[row[0]] = row
            self.recorded += 1

    def remove_delayed(self, delayed_id: int):
        with self._lock:
            if self._delayed_new.pop(delayed_id, None) is None:
                self._delayed_gone.append((delayed_id,))
            self.recorded += 1

    def drop_delayed_vhost(self, vhost: str):
        with self._lock:
            for k in [k for k, row in self._delayed_new.items() if row[2] == vhost]:
                del self._delayed_new[k]
            self._delayed_drops.append((vhost,))
            self.recorded += 1

    def _read_conn(self):
        r = self._reader
        if r is None:
            r = self._reader = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                               timeout=30)
        return r

    def delayed_stats(self) -> tuple:
        """(rows, highest id) of the delayed messages written."""
        return self._read_conn().execute("SELECT count(*), coalesce(max(id), 0) FROM delayed").fetchone()

    def delayed_window(self, lo: int, hi: int, limit: int | None) -> list:
        """Delayed messages due in [lo, hi), by due time then id, at most `limit`: those written
        (read on a connection of their own, so a commit in progress never blocks it) and those
        still pending, less those removed since."""
        sql = ("SELECT id, due, vhost, xname, exchange, routing_key, props, body FROM delayed "
               "WHERE due >= ? AND due < ? ORDER BY due, id")
        args = (lo, hi)
        if limit is not None:
            sql += " LIMIT ?"
            args = (lo, hi, limit + len(self._delayed_gone))
        rows = self._read_conn().execute(sql, args).fetchall()
        with self._lock:
            gone = {g[0] for g in self._delayed_gone}
            dropped = {d[0] for d in self._delayed_drops}
            new = [r for r in self._delayed_new.values() if lo <= r[1] < hi]
        rows = [r for r in rows if r[0] not in gone and r[2] not in dropped and r[0] not in self._delayed_new]
        rows = sorted(rows + new, key=lambda r: (r[1], r[0]))
        return rows[:limit] if limit is not None else rows
