"""Message rates: counters sampled every few seconds, rates from the last two samples.

RabbitMQ's management agent emits statistics every `collect_statistics_interval` (5 s) and shows a
rate as the change over the last interval. The engine keeps plain counters on queues, exchanges,
connections and channels; this sampler reads them on a timer and keeps the last two readings per
object (weakly, so a deleted object's history goes with it). Counts of deleted queues are folded
into the global totals, so node-wide totals do not drop when a queue goes away.
"""
from __future__ import annotations

import time
import weakref

GLOBAL_KEYS = ("publish", "confirm", "return_unroutable", "drop_unroutable", "deliver_get", "deliver",
               "get", "ack", "redeliver", "messages", "messages_ready", "messages_unacknowledged",
               "connection_created", "connection_closed")


class _Series:
    __slots__ = ("prev", "last", "changed_at")

    def __init__(self):
        self.prev = None        # (monotonic time, {key: value})
        self.last = None
        self.changed_at = time.time()

    def add(self, t: float, values: dict):
        if self.last is not None and self.last[1] != values:
            self.changed_at = time.time()
        self.prev = self.last
        self.last = (t, values)

    def rate(self, key: str) -> float:
        if self.prev is None or self.last is None:
            return 0.0
        (t0, v0), (t1, v1) = self.prev, self.last
        dt = t1 - t0
        if dt <= 0:
            return 0.0
        return round((v1.get(key, 0) - v0.get(key, 0)) / dt, 1)


def queue_counters(q) -> dict:
    return {"publish": q.published, "deliver_get": q.delivered, "ack": q.acked,
            "redeliver": q.redelivered_count, "messages_ready": q.message_count,
            "messages_unacknowledged": q.unacked, "messages": q.message_count + q.unacked}


def exchange_counters(x) -> dict:
    return {"publish_in": x.publish_in, "publish_out": x.publish_out}


def connection_counters(c) -> dict:
    return {"recv_oct": c.recv_oct, "send_oct": c.send_oct}


def channel_counters(ch) -> dict:
    return {"publish": ch.published, "deliver_get": ch.delivered, "ack": ch.acked}


def _next_connection_id() -> int | None:
    """How many connections the engine has numbered so far (its id counter), if it can be read."""
    try:
        from ..core import connection as C
        r = repr(C._ids)            # "count(N)": N is the next id
        return int(r[r.index("(") + 1:r.index(")")].split(",")[0])
    except Exception:
        return None


class Sampler:
    def __init__(self, broker, interval: float = 5.0):
        self.broker = broker
        self.interval = interval
        self.series = weakref.WeakKeyDictionary()   # queue/exchange/connection/channel -> _Series
        self.vhost_series: dict = {}                # vhost name -> _Series
        self.global_series = _Series()
        self._queues: dict = {}                     # id(q) -> (weakref, counters at last look)
        self._retired = {"publish": 0, "deliver_get": 0, "ack": 0, "redeliver": 0}
        self._first_conn_id = _next_connection_id()
        self.samples_taken = 0

    # ------------------------------------------------------------------ sampling
    def sample(self):
        now = time.monotonic()
        b = self.broker
        for v in list(b.vhosts.values()):
            for q in list(v.queues.values()):
                self._series(q).add(now, queue_counters(q))
            for x in list(v.exchanges.values()):
                self._series(x).add(now, exchange_counters(x))
        for c in list(b.connections):
            self._series(c).add(now, connection_counters(c))
            for ch in list(c.channels.values()):
                self._series(ch).add(now, channel_counters(ch))
        for name in list(self.vhost_series):
            if name not in b.vhosts:
                del self.vhost_series[name]
        for name, vals in self.vhost_totals().items():
            s = self.vhost_series.get(name)
            if s is None:
                s = self.vhost_series[name] = _Series()
            s.add(now, vals)
        self.global_series.add(now, self.global_totals())
        self.samples_taken += 1

    def _series(self, obj) -> _Series:
        s = self.series.get(obj)
        if s is None:
            s = self.series[obj] = _Series()
        return s

    # ------------------------------------------------------------------ reading
    def rate(self, obj, key: str) -> float:
        s = self.series.get(obj)
        return s.rate(key) if s is not None else 0.0

    def details(self, obj, key: str) -> dict:
        return {"rate": self.rate(obj, key)}

    def idle_since(self, obj) -> float | None:
        s = self.series.get(obj)
        if s is None or s.prev is None or s.prev[1] != s.last[1]:
            return None
        return s.changed_at

    def vhost_rate(self, name: str, key: str) -> float:
        s = self.vhost_series.get(name)
        return s.rate(key) if s is not None else 0.0

    def global_rate(self, key: str) -> float:
        return self.global_series.rate(key)

    # ------------------------------------------------------------------ totals
    def _live_queues(self) -> list:
        out = []
        for v in self.broker.vhosts.values():
            out += v.queues.values()
        return out

    def queue_history(self) -> dict:
        """Counts of live queues plus those of queues deleted since they were last seen."""
        live = self._live_queues()
        seen = set()
        known = self._queues
        retired = self._retired
        for q in live:
            k = id(q)
            seen.add(k)
            entry = known.get(k)
            if entry is not None and entry[0]() is not q:
                for key in retired:                    # the id was reused: the old queue is gone
                    retired[key] += entry[1][key]
            known[k] = (weakref.ref(q), {"publish": q.published, "deliver_get": q.delivered,
                                          "ack": q.acked, "redeliver": q.redelivered_count})
        for k in [k for k in known if k not in seen]:
            _ref, counts = known.pop(k)
            for key in retired:
                retired[key] += counts[key]
        totals = dict(retired)
        for q in live:
            totals["publish"] += q.published
            totals["deliver_get"] += q.delivered
            totals["ack"] += q.acked
            totals["redeliver"] += q.redelivered_count
        return totals

    def global_totals(self) -> dict:
        b = self.broker
        st = b.stats
        hist = self.queue_history()
        ready = unacked = 0
        for q in self._live_queues():
            ready += q.message_count
            unacked += q.unacked
        get = st.get("get", 0)
        deliver_get = max(hist["deliver_get"], get)
        created = self.connections_created()
        return {
            "publish": st.get("publish", 0), "confirm": st.get("confirm", 0),
            "return_unroutable": st.get("return_unroutable", 0),
            "drop_unroutable": st.get("drop_unroutable", 0),
            "deliver_get": deliver_get, "deliver": deliver_get - get, "get": get,
            "ack": max(st.get("ack", 0), 0), "redeliver": hist["redeliver"],
            "messages": ready + unacked, "messages_ready": ready, "messages_unacknowledged": unacked,
            "connection_created": created, "connection_closed": max(created - len(b.connections), 0),
        }

    def connections_created(self) -> int:
        n = _next_connection_id()
        if n is None or self._first_conn_id is None:
            return len(self.broker.connections)
        return max(n - self._first_conn_id, len(self.broker.connections))

    def vhost_totals(self) -> dict:
        out = {}
        for name, v in self.broker.vhosts.items():
            t = {"publish": 0, "deliver_get": 0, "ack": 0, "redeliver": 0, "messages": 0,
                 "messages_ready": 0, "messages_unacknowledged": 0, "recv_oct": 0, "send_oct": 0}
            for q in v.queues.values():
                t["publish"] += q.published
                t["deliver_get"] += q.delivered
                t["ack"] += q.acked
                t["redeliver"] += q.redelivered_count
                t["messages_ready"] += q.message_count
                t["messages_unacknowledged"] += q.unacked
            t["messages"] = t["messages_ready"] + t["messages_unacknowledged"]
            out[name] = t
        for c in self.broker.connections:
            t = out.get(c.vhost)
            if t is not None:
                t["recv_oct"] += c.recv_oct
                t["send_oct"] += c.send_oct
        return out
