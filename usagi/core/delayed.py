"""Messages waiting in x-delayed-message exchanges.

Every delayed message is written to a small SQLite database of its own in the data directory
(rows by due time), so delayed messages survive a restart. Only those due before a moving
horizon are held in memory, in a heap; the rest stay on disk and are read in as the horizon
advances. Memory is therefore bounded by how many messages fall due within the horizon, not by
how many are waiting. Without a data directory everything stays in the heap.

Due times are wall-clock milliseconds (they must mean the same after a restart).
"""
from __future__ import annotations

import heapq
import logging
import os
import sqlite3
import time

log = logging.getLogger("usagi.delayed")

HORIZON_MS = 30_000          # how far ahead messages are held in memory
MAX_IN_MEMORY = 100_000      # past this, the horizon shrinks
MAX_DUE = 2 ** 63 - 1        # the largest due time an SQLite INTEGER holds

SCHEMA = """
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
"""


class DelayedMessages:
    def __init__(self, data_dir: str | None = None):
        self.heap: list = []              # (due_ms, id, vhost, xname, message)
        self.next_id = 1
        self.db = None
        self.horizon = float("inf")       # rows due before this are in the heap
        self.on_disk = 0                  # rows not (yet) in the heap
        self.pending_rows: list = []      # rows to insert on the next flush
        self.pending_deletes: list = []
        if data_dir:
            path = os.path.join(data_dir, "delayed.db")
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
            self.next_id = (self.db.execute("SELECT coalesce(max(id), 0) FROM delayed").fetchone()[0]) + 1
            self.on_disk = self.db.execute("SELECT count(*) FROM delayed").fetchone()[0]
            self.horizon = 0              # nothing loaded yet: the first refill reads what is due

    def __len__(self):
        return len(self.heap) + self.on_disk

    def add(self, due_ms: int, vhost: str, xname: str, msg):
        if due_ms > MAX_DUE:        # an x-delay of up to 2^63-1 ms: beyond what a row can hold
            due_ms = MAX_DUE
        i = self.next_id
        self.next_id += 1
        if self.db is not None:
            self.pending_rows.append((i, due_ms, vhost, xname, msg.exchange, msg.routing_key, msg.props,
                                      msg.body))
        if due_ms < self.horizon:
            heapq.heappush(self.heap, (due_ms, i, vhost, xname, msg))
            if len(self.heap) > MAX_IN_MEMORY and self.db is not None:
                self._shrink()
        else:
            self.on_disk += 1

    def drop_vhost(self, vhost: str) -> int:
        """Forget the messages waiting in a deleted vhost's exchanges (so a vhost re-created under
        the same name does not receive them). Returns how many went."""
        before = len(self.heap)
        self.heap = [e for e in self.heap if e[2] != vhost]
        heapq.heapify(self.heap)
        from_heap = before - len(self.heap)
        if self.db is None:
            return from_heap
        self.flush()
        try:
            gone = self.db.execute("DELETE FROM delayed WHERE vhost = ?", (vhost,)).rowcount
        except sqlite3.Error as e:
            log.error("delayed message store: %s", e)
            return from_heap
        self.on_disk = max(0, self.on_disk - (gone - from_heap))
        return gone

    def _shrink(self):
        """Too many in memory: pull the horizon in and keep only what falls before it."""
        self.flush()
        keep = sorted(self.heap)[:MAX_IN_MEMORY // 2]
        dropped = len(self.heap) - len(keep)
        self.horizon = keep[-1][0] if keep else self.horizon
        self.heap = [e for e in keep if e[0] < self.horizon]
        heapq.heapify(self.heap)
        self.on_disk += dropped + (len(keep) - len(self.heap))

    def due(self, now_ms: int, make) -> list:
        """Messages due by now_ms, oldest first: [(vhost, xname, message)]."""
        if self.db is not None and now_ms + HORIZON_MS // 2 >= self.horizon:
            if self.on_disk:
                self._refill(now_ms, make)
            else:
                self.horizon = now_ms + HORIZON_MS
        out = []
        h = self.heap
        while h and h[0][0] <= now_ms:
            _, i, vhost, xname, msg = heapq.heappop(h)
            out.append((vhost, xname, msg))
            if self.db is not None:
                self.pending_deletes.append((i,))
        return out

    def _refill(self, now_ms: int, make):
        self.flush()
        new_horizon = now_ms + HORIZON_MS
        lo = self.horizon
        limit = max(1, MAX_IN_MEMORY - len(self.heap))
        sql = ("SELECT id, due, vhost, xname, exchange, routing_key, props, body FROM delayed "
               "WHERE due >= ? AND due < ? ORDER BY due, id")
        rows = self.db.execute(sql + " LIMIT ?", (lo, new_horizon, limit)).fetchall()
        if len(rows) == limit:
            # the window is full: stop it before the last due time read (all of that time or none)
            new_horizon = rows[-1][1]
            rows = [r for r in rows if r[1] < new_horizon]
            if not rows:        # one instant holds more than the window: take that instant whole
                new_horizon = lo + 1
                rows = self.db.execute(sql, (lo, new_horizon)).fetchall()
        for i, due, vhost, xname, ex, rk, props, body in rows:
            heapq.heappush(self.heap, (due, i, vhost, xname, make(ex, rk, bytes(props), bytes(body))))
        self.on_disk = max(0, self.on_disk - len(rows))
        self.horizon = new_horizon

    def flush(self):
        """Write new rows and drop delivered ones (called every few tens of milliseconds)."""
        if self.db is None or not (self.pending_rows or self.pending_deletes):
            return
        db = self.db
        try:
            db.execute("BEGIN")
            if self.pending_rows:
                db.executemany("INSERT INTO delayed VALUES (?,?,?,?,?,?,?,?)", self.pending_rows)
            if self.pending_deletes:
                db.executemany("DELETE FROM delayed WHERE id = ?", self.pending_deletes)
            db.execute("COMMIT")
        except sqlite3.Error as e:
            log.error("delayed message store: %s", e)
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            return
        self.pending_rows = []
        self.pending_deletes = []

    def close(self):
        if self.db is not None:
            self.flush()
            self.db.close()
            self.db = None


def now_ms() -> int:
    return int(time.time() * 1000)
