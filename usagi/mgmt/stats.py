"""Message rates and their history: counters sampled every few seconds, rates from the last two
samples, and the last ten minutes of each object's counts for charts.

RabbitMQ's management agent emits statistics every `collect_statistics_interval` (5 s) and shows a
rate as the change over the last interval. The engine keeps plain counters on queues, exchanges,
connections and channels; this sampler reads them on a timer and keeps the last two readings per
object (weakly, so a deleted object's history goes with it). Counts of deleted queues are folded
into the global totals, so node-wide totals do not drop when a queue goes away.

History: each object (and each vhost, the node's totals and the node's own figures) also keeps the
points at which its counts changed, at most one per HISTORY_STEP slot, for HISTORY_SECONDS
(RabbitMQ's "basic" retention keeps 10 minutes at 5 s too). The bound is HISTORY_POINTS points per
object whatever the sampling interval, held as 64-bit integers in two arrays (at most some 8 KB for
a queue whose counts change in every slot; an idle object keeps one point). A request that asks for
a range (`lengths_age`/`lengths_incr`, `msg_rates_*`, `data_rates_*`, `node_stats_*`) is answered
from those points at the instants it names, as RabbitMQ's `samples`; a range of more than
MAX_RANGE increments, or a non-positive age or increment, is refused as RabbitMQ refuses it, so an
answer holds at most MAX_RANGE + 1 samples per figure. Older instants than the history reaches are
given the oldest value kept (or zero when the object is younger than the instant).

A sample walks every queue, exchange, connection and channel: with 100,000 queues that is some
0.2-1 s of work, so the service runs it a slice at a time (`sample_sliced`, one object per step,
mgmt.slices.SLICE_SECONDS per loop turn). The totals of vhosts and of the node that the views
show are those the last sample met, so a view never walks every queue to show them.
"""
from __future__ import annotations

import re
import time
import weakref
from array import array
from bisect import bisect_right

from . import slices

GLOBAL_KEYS = ("publish", "confirm", "return_unroutable", "drop_unroutable", "deliver_get", "deliver",
               "get", "ack", "redeliver", "messages", "messages_ready", "messages_unacknowledged",
               "connection_created", "connection_closed")


HISTORY_SECONDS = 600           # how far back each object's history reaches
HISTORY_STEP = 5                # seconds: at most one point per slot of this length
HISTORY_POINTS = HISTORY_SECONDS // HISTORY_STEP + 1    # 121: the most points an object keeps
_STEP_MS = HISTORY_STEP * 1000
_HISTORY_MS = HISTORY_SECONDS * 1000
MAX_RANGE = 500                 # increments a range may ask for (RabbitMQ's ?MAX_RANGE)
RANGE_KINDS = ("lengths", "msg_rates", "data_rates", "node_stats")


def wall_ms() -> int:
    return int(time.time() * 1000)


class _Series:
    """The last two readings of one object's counters: (time, values), values a tuple whose
    positions `index` names (a dict for vhosts and the node, whose keys `order` lists); and the
    history of its values (`times` in ms and `data`, len(index) values per point), a point where
    they changed, at most one per HISTORY_STEP slot, HISTORY_POINTS at most."""
    __slots__ = ("prev", "last", "changed_at", "index", "order", "hkeys", "times", "data", "trimmed")

    def __init__(self, index=None, order=None):
        self.prev = None        # (monotonic time, values)
        self.last = None
        self.changed_at = time.time()
        self.index = index      # key -> position in a values tuple; None: values are dicts
        self.order = order      # dict values: their keys, in the order the history keeps them
        self.hkeys = index if index is not None else {k: i for i, k in enumerate(order or ())}
        self.times = None       # array of ms (made at the first point)
        self.data = None
        self.trimmed = False    # points older than the history were dropped

    def add(self, t: float, values, ms: int | None = None):
        last = self.last
        changed = last is None or last[1] != values
        if changed and last is not None:
            self.changed_at = time.time()
        self.prev = last
        self.last = (t, values)
        if ms is not None and (changed or self.times is None):
            self.record(ms, values)     # (unchanged: the last point, which holds these values, goes on)

    def record(self, ms: int, values):
        """A point of history at `ms` (wall clock): kept if the values changed since the last one;
        a second change in the same slot replaces the slot's point."""
        if self.index is None:
            if self.order is None:
                return
            values = [values.get(k, 0) for k in self.order]
        try:
            new = array("q", values)
        except (OverflowError, TypeError):      # (a count past 2**63 or not a number: not kept)
            return
        times, data = self.times, self.data
        if times is None:
            self.times, self.data = array("q", (ms,)), new
            return
        w = len(new)
        if data[-w:] == new:
            return                  # unchanged: the last point holds on
        if times[-1] // _STEP_MS == ms // _STEP_MS:
            times[-1] = ms
            data[-w:] = new
        else:
            times.append(ms)
            data.extend(new)
        n = len(times)
        horizon = ms - _HISTORY_MS
        cut = 0
        while cut + 1 < n and times[cut + 1] <= horizon:
            cut += 1                # (the last point before the horizon holds at the horizon)
        cut = max(cut, n - HISTORY_POINTS)
        if cut > 0:
            del times[:cut]
            del data[:cut * w]
            self.trimmed = True

    def at(self, instants, width: int, now: int, live=None) -> list:
        """The values as of each instant (ms): those of the latest point at or before it; `live`
        (the values now) for an instant not in the past; before the first point, the first
        point's values if older ones were dropped, else zeros (the object was not there)."""
        times, data = self.times, self.data
        zeros = (0,) * width
        out = []
        for t in instants:
            if live is not None and t >= now:
                out.append(live)
                continue
            if times is None:
                out.append(zeros)
                continue
            i = bisect_right(times, t) - 1
            if i < 0:
                out.append(data[:width] if self.trimmed else zeros)
            else:
                out.append(data[i * width:(i + 1) * width])
        return out

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


# ---------------------------------------------------------------------------------------- ranges

class RangeError(ValueError):
    """A range RabbitMQ refuses: "Invalid range parameters: age A, incr I"."""


class Range:
    """A requested history (RabbitMQ's #range{}): samples at first, first + incr, ... up to last
    (ms), newest first in the answer."""
    __slots__ = ("first", "last", "incr")

    def __init__(self, first: int, last: int, incr: int):
        self.first, self.last, self.incr = first, last, incr

    def instants(self) -> range:
        return range(self.first, self.last + 1, self.incr)


_ERLANG_INT = re.compile(r"[+-]?[0-9]+\Z")


def parse_range(query, prefix: str, now: int, ceil: bool = False) -> Range | None:
    """PREFIX_age and PREFIX_incr (seconds) of a query as RabbitMQ reads them: both integers, or no
    range; then age > 0, incr > 0 and age div incr <= MAX_RANGE, or RangeError. The last instant
    is now rounded down to a multiple of incr (up with `ceil`, as RabbitMQ does for lengths where
    they sit beside the current counts)."""
    age, incr = query.get(prefix + "_age"), query.get(prefix + "_incr")
    if age is None or incr is None or not _ERLANG_INT.match(age) or not _ERLANG_INT.match(incr):
        return None
    age, incr = int(age), int(incr)
    if not (age > 0 and incr > 0 and age // incr <= MAX_RANGE):
        raise RangeError(f"Invalid range parameters: age {age}, incr {incr}")
    age_ms, incr_ms = age * 1000, incr * 1000
    last = (now // incr_ms) * incr_ms
    if ceil and last != now:
        last += incr_ms
    return Range(last - age_ms, last, incr_ms)


def parse_ranges(query, now: int, ceil_lengths: bool = False) -> dict:
    """kind -> Range for the kinds a query asks for (RANGE_KINDS); RangeError for a bad one."""
    out = {}
    for kind in RANGE_KINDS:
        r = parse_range(query, kind, now, ceil_lengths and kind == "lengths")
        if r is not None:
            out[kind] = r
    return out


class Window:
    """A series read at the instants of a range, its figures as RabbitMQ formats them: `rate` from
    the last two samples, `samples` newest first, `avg_rate` over the range and `avg` (those two
    only with more than one sample)."""
    __slots__ = ("instants", "rows", "index")

    def __init__(self, instants: list, rows: list, index: dict):
        self.instants = instants
        self.rows = rows
        self.index = index

    def details(self, key: str) -> dict:
        j = self.index.get(key)
        if j is None:
            return self.constant(0)
        return _details(self.instants, [r[j] for r in self.rows])

    def constant(self, value) -> dict:
        """The details of a figure that does not change (one Usagi does not count)."""
        return _details(self.instants, [value] * len(self.instants))

    @staticmethod
    def total(windows: list, index: dict, instants: list) -> "Window":
        """The sum of windows over the same instants and keys (a user's vhosts)."""
        width = len(index)
        rows = [[0] * width for _ in instants]
        for w in windows:
            for row, add in zip(rows, w.rows):
                for j in range(width):
                    row[j] += add[j]
        return Window(instants, rows, index)


def _details(instants: list, values: list) -> dict:
    n = len(values)
    d = {"rate": 0.0, "samples": [{"sample": values[i], "timestamp": instants[i]} for i in range(n - 1, -1, -1)]}
    if n > 1:
        d["rate"] = (values[-1] - values[-2]) * 1000 / (instants[-1] - instants[-2])
        d["avg_rate"] = (values[-1] - values[0]) * 1000 / (instants[-1] - instants[0])
        d["avg"] = sum(values) / n
    return d


QUEUE_KEYS = _index(("publish", "deliver_get", "ack", "redeliver", "messages_ready", "messages_unacknowledged",
                     "messages"))
EXCHANGE_KEYS = _index(("publish_in", "publish_out"))
CONNECTION_KEYS = _index(("recv_oct", "send_oct"))
CHANNEL_KEYS = _index(("publish", "deliver_get", "ack"))
HISTORY_KEYS = ("publish", "deliver_get", "ack", "redeliver")
VHOST_KEYS = ("publish", "deliver_get", "ack", "redeliver", "messages", "messages_ready",
              "messages_unacknowledged", "recv_oct", "send_oct")
NODE_KEYS = ("mem_used", "fd_used", "sockets_used", "proc_used", "disk_free")


VHOST_INDEX = _index(VHOST_KEYS)
_GLOBAL_INDEX = _index(GLOBAL_KEYS)
_NODE_INDEX = _index(NODE_KEYS)


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
        self.global_series = _Series(order=GLOBAL_KEYS)
        self.node_series = _Series(order=NODE_KEYS)
        self.node_probe = None                      # () -> {NODE_KEYS: value}: the node's own figures
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
        wall = wall_ms
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
                s.add(mono(), c, wall())
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
                s.add(mono(), exchange_counters(x), wall())
                yield
        for c in list(b.connections):
            s = series.get(c)
            if s is None:
                s = series[c] = _Series(CONNECTION_KEYS)
            s.add(mono(), connection_counters(c), wall())
            t = vtot.get(c.vhost)
            if t is not None:
                t["recv_oct"] += c.recv_oct
                t["send_oct"] += c.send_oct
            for ch in list(c.channels.values()):
                s = series.get(ch)
                if s is None:
                    s = series[ch] = _Series(CHANNEL_KEYS)
                s.add(mono(), channel_counters(ch), wall())
            yield
        yield from self._sweep()
        now, ms = mono(), wall()
        for name in list(self.vhost_series):
            if name not in vtot:
                del self.vhost_series[name]
        for name, vals in vtot.items():
            s = self.vhost_series.get(name)
            if s is None:
                s = self.vhost_series[name] = _Series(order=VHOST_KEYS)
            s.add(now, vals, ms)
        hist = {k: live[k] + self._retired[k] for k in HISTORY_KEYS}
        tot = self._totals(hist, ready_all, unacked_all)
        self.vhost_totals_sampled = vtot
        self.totals_sampled = tot
        self.global_series.add(now, tot, ms)
        probe = self.node_probe
        if probe is not None:
            self.node_series.add(now, probe(), ms)
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

    # ------------------------------------------------------------------ history
    @staticmethod
    def _window(s: _Series | None, index: dict, rng: Range, live=None) -> Window:
        instants = list(rng.instants())
        if s is None:
            s = _Series(index)
        return Window(instants, s.at(instants, len(index), wall_ms(), live), index)

    def window(self, obj, index: dict, rng: Range, live=None) -> Window:
        """An object's history over a range (`index`: its kind's keys, QUEUE_KEYS...); `live`, its
        values now, answers for the instants not yet past."""
        return self._window(self.series.get(obj), index, rng, live)

    def vhost_window(self, name: str, rng: Range) -> Window:
        return self._window(self.vhost_series.get(name), VHOST_INDEX, rng)

    def global_window(self, rng: Range) -> Window:
        return self._window(self.global_series, _GLOBAL_INDEX, rng)

    def node_window(self, rng: Range, live=None) -> Window:
        return self._window(self.node_series, _NODE_INDEX, rng, live)

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
