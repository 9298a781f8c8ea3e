"""Messages waiting in x-delayed-message exchanges.

With a durable store every delayed message is written through the storage interface (rows by due
time, committed with everything else, so a publish confirm waits for it and the replication
stream carries it), and survives a restart. Only those due before a moving horizon are held in
memory, in a heap; the rest stay in the store and are read back as the horizon advances. Memory
is therefore bounded by how many messages fall due within the horizon, not by how many are
waiting. With a store that keeps nothing (in memory), everything stays in the heap.

Due times are wall-clock milliseconds (they must mean the same after a restart).
"""
from __future__ import annotations

import heapq
import logging
import time

log = logging.getLogger("usagi.delayed")

HORIZON_MS = 30_000          # how far ahead messages are held in memory
MAX_IN_MEMORY = 100_000      # past this, the horizon shrinks
MAX_DUE = 2 ** 63 - 1        # the largest due time an SQLite INTEGER holds


class DelayedMessages:
    def __init__(self, store=None):
        self.heap: list = []              # (due_ms, id, vhost, xname, message)
        self.next_id = 1
        self.store = store if store is not None and store.durable else None
        self.horizon = float("inf")       # rows due before this are in the heap
        self.on_disk = 0                  # rows not (yet) in the heap
        if self.store is not None:
            rows, top = self.store.delayed_stats()
            self.next_id = top + 1
            self.on_disk = rows
            self.horizon = 0              # nothing loaded yet: the first refill reads what is due

    def __len__(self):
        return len(self.heap) + self.on_disk

    def add(self, due_ms: int, vhost: str, xname: str, msg) -> bool:
        """Keep a message until `due_ms`. True when it was recorded in the store (a publish
        confirm then waits for the commit)."""
        if due_ms > MAX_DUE:        # an x-delay of up to 2^63-1 ms: beyond what a row can hold
            due_ms = MAX_DUE
        i = self.next_id
        self.next_id += 1
        if self.store is not None:
            self.store.add_delayed((i, due_ms, vhost, xname, msg.exchange, msg.routing_key, msg.props,
                                    msg.body))
        if due_ms < self.horizon:
            heapq.heappush(self.heap, (due_ms, i, vhost, xname, msg))
            if len(self.heap) > MAX_IN_MEMORY and self.store is not None:
                self._shrink()
        else:
            self.on_disk += 1
        return self.store is not None

    def drop_vhost(self, vhost: str) -> int:
        """Forget the messages waiting in a deleted vhost's exchanges (so a vhost re-created under
        the same name does not receive them). Returns how many went from memory."""
        before = len(self.heap)
        self.heap = [e for e in self.heap if e[2] != vhost]
        heapq.heapify(self.heap)
        if self.store is not None:
            self.store.drop_delayed_vhost(vhost)
            rows, _top = self.store.delayed_stats()
            self.on_disk = min(self.on_disk, rows)
        return before - len(self.heap)

    def _shrink(self):
        """Too many in memory: pull the horizon in and keep only what falls before it."""
        keep = sorted(self.heap)[:MAX_IN_MEMORY // 2]
        dropped = len(self.heap) - len(keep)
        self.horizon = keep[-1][0] if keep else self.horizon
        self.heap = [e for e in keep if e[0] < self.horizon]
        heapq.heapify(self.heap)
        self.on_disk += dropped + (len(keep) - len(self.heap))

    def due(self, now_ms: int, make) -> list:
        """Messages due by now_ms, oldest first: [(vhost, xname, message)]."""
        if self.store is not None and now_ms + HORIZON_MS // 2 >= self.horizon:
            if self.on_disk:
                self._refill(now_ms, make)
            else:
                self.horizon = now_ms + HORIZON_MS
        out = []
        h = self.heap
        while h and h[0][0] <= now_ms:
            _, i, vhost, xname, msg = heapq.heappop(h)
            out.append((vhost, xname, msg))
            if self.store is not None:
                self.store.remove_delayed(i)
        return out

    def _refill(self, now_ms: int, make):
        new_horizon = now_ms + HORIZON_MS
        lo = self.horizon
        limit = max(1, MAX_IN_MEMORY - len(self.heap))
        rows = self.store.delayed_window(lo, new_horizon, limit)
        if len(rows) == limit:
            # the window is full: stop it before the last due time read (all of that time or none)
            new_horizon = rows[-1][1]
            rows = [r for r in rows if r[1] < new_horizon]
            if not rows:        # one instant holds more than the window: take that instant whole
                new_horizon = lo + 1
                rows = self.store.delayed_window(lo, new_horizon, None)
        for i, due, vhost, xname, ex, rk, props, body in rows:
            heapq.heappush(self.heap, (due, i, vhost, xname, make(ex, rk, bytes(props), bytes(body))))
        self.on_disk = max(0, self.on_disk - len(rows))
        self.horizon = new_horizon

    def flush(self):
        """Kept for callers: the store writes delayed messages with its group commits."""

    def close(self):
        pass


def now_ms() -> int:
    return int(time.time() * 1000)
