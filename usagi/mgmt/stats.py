"""Message rates: counters sampled every few seconds, rates from the last two samples.

RabbitMQ's management agent emits statistics every `collect_statistics_interval` (5 s) and shows a
rate as the change over the last interval. The engine keeps plain counters on queues, exchanges,
connections and channels; this sampler reads them on a timer and keeps the last two readings per
object (weakly, so a deleted object's history goes with it). Counts of deleted queues are folded
into the global totals, so node-wide totals do not drop when a queue goes away.

A sample walks every queue, exchange, connection and channel: with 100,000 queues that is some
0.2-1 s of work, so the service runs it a slice at a time (`sample_sliced`, one object per step,
mgmt.slices.SLICE_SECONDS per loop turn). The totals of vhosts and of the node that the views
show are those the last sample met, so a view never walks every queue to show them.
"""
from __future__ import annotations

import time
import weakref

from . import slices

GLOBAL_KEYS = ("publish", "confirm", "return_unroutable", "drop_unroutable", "deliver_get", "deliver",
               "get", "ack", "redeliver", "messages", "messages_ready", "messages_unacknowledged",
               "connection_created", "connection_closed")


class _Series:
    """The last two readings of one object's counters: (time, values), values a tuple whose
    positions `index` names (a dict for vhosts and the node)."""
    __slots__ = ("prev", "last", "changed_at", "index")

    def __init__(self, index=None):
        self.prev = None        # (monotonic time, values)
        self.last = None
        self.changed_at = time.time()
        self.index = index      # key -> position in a values tuple; None: values are dicts

    def add(self, t: float, values):
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
        index = self.index
        if index is None:
            return round((v1.get(key, 0) - v0.get(key, 0)) / dt, 1)
        i = index.get(key)
        return 0.0 if i is None else round((v1[i] - v0[i]) / dt, 1)


def _index(keys) -> dict:
    return {k: i for i, k in enumerate(keys)}


QUEUE_KEYS = _index(("publish", "deliver_get", "ack", "redeliver", "messages_ready", "messages_unacknowledged",
                     "messages"))
EXCHANGE_KEYS = _index(("publish_in", "publish_out"))
CONNECTION_KEYS = _index(("recv_oct", "send_oct"))
CHANNEL_KEYS = _index(("publish", "deliver_get", "ack"))
HISTORY_KEYS = ("publish", "deliver_get", "ack", "redeliver")
VHOST_KEYS = ("publish", "deliver_get", "ack", "redeliver", "messages", "messages_ready",
              "messages_unacknowledged", "recv_oct", "send_oct")


def queue_counters(q) -> tuple:
    ready, unacked = q.message_count, q.unacked
    return (q.published, q.delivered, q.acked, q.redelivered_count, ready, unacked, ready + unacked)


def exchange_counters(x) -> tuple:
    return (x.publish_in, x.publish_out)


def connection_counters(c) -> tuple:
    return (c.recv_oct, c.send_oct)


def channel_counters(ch) -> tuple:
    return (ch.published, ch.delivered + ch.get_ack + ch.get_auto, ch.acked)


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
        self._queues: dict = {}                     # id(q) -> [weakref, (publish, deliver_get, ack, redeliver)]
        self._retired = dict.fromkeys(HISTORY_KEYS, 0)
        self._first_conn_id = _next_connection_id()
        self.samples_taken = 0
        self.vhost_totals_sampled: dict = {}        # vhost name -> totals, as of the last sample
        self.totals_sampled: dict | None = None     # node totals, as of the last sample

    # ------------------------------------------------------------------ sampling
    def sample(self):
        """A whole sample in one go (few objects, or no loop to share)."""
        for _ in self.sample_steps():
            pass

    async def sample_sliced(self, pacer):
        """A sample a slice at a time: with 100,000 queues a sample is some 0.2-1 s of work."""
        await pacer.drain(self.sample_steps())

    def sample_steps(self):
        """A sample as a generator of bounded steps (one object each). Each object is read with the
        time it is read at, so its rates are right however long the walk takes; the totals of
        vhosts and of the node are the sums met on the walk, kept for the views (RabbitMQ's totals
        also come from its last statistics events)."""
        b = self.broker
        series = self.series
        mono = time.monotonic
        vtot = {}
        live = dict.fromkeys(HISTORY_KEYS, 0)
        ready_all = unacked_all = 0
        for v in list(b.vhosts.values()):
            t = vtot[v.name] = dict.fromkeys(VHOST_KEYS, 0)
            for q in list(v.queues.values()):
                c = queue_counters(q)
                s = series.get(q)
                if s is None:
                    s = series[q] = _Series(QUEUE_KEYS)
                s.add(mono(), c)
                self._note(q, c[:4])
                t["publish"] += c[0]
                t["deliver_get"] += c[1]
                t["ack"] += c[2]
                t["redeliver"] += c[3]
                t["messages_ready"] += c[4]
                t["messages_unacknowledged"] += c[5]
                yield
            t["messages"] = t["messages_ready"] + t["messages_unacknowledged"]
            for key in HISTORY_KEYS:
                live[key] += t[key]
            ready_all += t["messages_ready"]
            unacked_all += t["messages_unacknowledged"]
            for x in list(v.exchanges.values()):
                s = series.get(x)
                if s is None:
                    s = series[x] = _Series(EXCHANGE_KEYS)
                s.add(mono(), exchange_counters(x))
                yield
        for c in list(b.connections):
            s = series.get(c)
            if s is None:
                s = series[c] = _Series(CONNECTION_KEYS)
            s.add(mono(), connection_counters(c))
            t = vtot.get(c.vhost)
            if t is not None:
                t["recv_oct"] += c.recv_oct
                t["send_oct"] += c.send_oct
            for ch in list(c.channels.values()):
                s = series.get(ch)
                if s is None:
                    s = series[ch] = _Series(CHANNEL_KEYS)
                s.add(mono(), channel_counters(ch))
            yield
        yield from self._sweep()
        now = mono()
        for name in list(self.vhost_series):
            if name not in vtot:
                del self.vhost_series[name]
        for name, vals in vtot.items():
            s = self.vhost_series.get(name)
            if s is None:
                s = self.vhost_series[name] = _Series()
            s.add(now, vals)
        hist = {k: live[k] + self._retired[k] for k in HISTORY_KEYS}
        tot = self._totals(hist, ready_all, unacked_all)
        self.vhost_totals_sampled = vtot
        self.totals_sampled = tot
        self.global_series.add(now, tot)
        self.samples_taken += 1

    # ------------------------------------------------------------------ deleted queues' counts
    def _note(self, q, counts: tuple):
        """Remember a live queue's counts (publish, deliver_get, ack, redeliver)."""
        known = self._queues
        k = id(q)
        e = known.get(k)
        if e is not None and e[0]() is not q:
            del known[k]
            self._retire(e[1])                  # the id was reused: the old queue is gone
            e = None
        if e is None:
            known[k] = [weakref.ref(q), counts]
        else:
            e[1] = counts

    def _sweep(self):
        """Fold the last counts of queues that are gone into the node's totals (a step per queue
        known). Walks that overlap (a sample and a view's) each retire a queue at most once."""
        known = self._queues
        vhosts = self.broker.vhosts
        for k, e in list(known.items()):
            q = e[0]()
            if q is None or (vhosts.get(q.vhost) is None or vhosts[q.vhost].queues.get(q.name) is not q):
                if known.get(k) is e:
                    del known[k]
                    self._retire(e[1])
            yield

    def _retire(self, counts):
        retired = self._retired
        for i, key in enumerate(HISTORY_KEYS):
            retired[key] += counts[i]

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
    def history_steps(self):
        """Counts of live queues plus those of queues deleted since they were last seen, as a
        generator of bounded steps (one queue each) returning them."""
        totals = dict.fromkeys(HISTORY_KEYS, 0)
        for v in list(self.broker.vhosts.values()):
            for q in list(v.queues.values()):
                c = (q.published, q.delivered, q.acked, q.redelivered_count)
                self._note(q, c)
                for i, key in enumerate(HISTORY_KEYS):
                    totals[key] += c[i]
                yield
        yield from self._sweep()
        for key in HISTORY_KEYS:
            totals[key] += self._retired[key]
        return totals

    def totals_steps(self):
        """The node's totals now (history, ready and unacknowledged messages), as bounded steps."""
        hist = yield from self.history_steps()
        ready = unacked = 0
        for v in list(self.broker.vhosts.values()):
            for q in list(v.queues.values()):
                ready += q.message_count
                unacked += q.unacked
                yield
        return self._totals(hist, ready, unacked)

    def queue_history(self) -> dict:
        """history_steps in one go."""
        return slices.run(self.history_steps())

    def global_totals(self) -> dict:
        """The node's totals now, in one go (the views take them a slice at a time: totals_steps)."""
        return slices.run(self.totals_steps())

    def totals(self) -> dict:
        """The node's totals as of the last sample, its counters of publishes and connections
        as of now: what the views show, at no cost in the number of queues."""
        tot = self.totals_sampled
        if tot is None:
            tot = self._totals(dict.fromkeys(HISTORY_KEYS, 0), 0, 0)
        else:
            tot = dict(tot)
        tot.update(self._counters())
        tot["deliver_get"] = max(tot["deliver_get"], tot["get"])
        tot["deliver"] = tot["deliver_get"] - tot["get"]
        return tot

    def _counters(self) -> dict:
        st = self.broker.stats
        created = self.connections_created()
        return {"publish": st.get("publish", 0), "confirm": st.get("confirm", 0),
                "return_unroutable": st.get("return_unroutable", 0),
                "drop_unroutable": st.get("drop_unroutable", 0), "get": st.get("get", 0),
                "ack": max(st.get("ack", 0), 0), "connection_created": created,
                "connection_closed": max(created - len(self.broker.connections), 0)}

    def _totals(self, hist: dict, ready: int, unacked: int) -> dict:
        tot = self._counters()
        get = tot["get"]
        deliver_get = max(hist["deliver_get"], get)
        tot.update({"deliver_get": deliver_get, "deliver": deliver_get - get, "redeliver": hist["redeliver"],
                    "messages": ready + unacked, "messages_ready": ready, "messages_unacknowledged": unacked})
        return tot

    def connections_created(self) -> int:
        n = _next_connection_id()
        if n is None or self._first_conn_id is None:
            return len(self.broker.connections)
        return max(n - self._first_conn_id, len(self.broker.connections))

    def vhost_totals(self) -> dict:
        """Totals per vhost as of the last sample (an empty one for a vhost not sampled yet)."""
        out = {}
        for name in self.broker.vhosts:
            t = self.vhost_totals_sampled.get(name)
            out[name] = dict(t) if t is not None else dict.fromkeys(VHOST_KEYS, 0)
        return out
