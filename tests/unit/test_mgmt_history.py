"""The management API's history (usagi.mgmt.stats): what each object keeps is bounded whatever the
sampling interval, a range is read and formatted as RabbitMQ's `samples`, and a range RabbitMQ
refuses is refused."""
from __future__ import annotations

import pytest

from usagi.mgmt import stats as S


def series(**kw) -> S._Series:
    return S._Series(S.QUEUE_KEYS, **kw)


def vals(n: int) -> tuple:
    return (n, 0, 0, 0, n, 0, n)        # publish, ..., messages_ready, ..., messages


def test_history_is_bounded_whatever_the_interval():
    s = series()
    t = 1_000_000_000_000
    # a count that changes at every sample, sampled every 200 ms for half an hour
    for i in range(9000):
        s.add(i * 0.2, vals(i), t + i * 200)
    assert len(s.times) <= S.HISTORY_POINTS
    assert len(s.data) == len(s.times) * len(S.QUEUE_KEYS)
    # at most one point per slot, covering the last HISTORY_SECONDS
    slots = [x // (S.HISTORY_STEP * 1000) for x in s.times]
    assert len(set(slots)) == len(slots)
    now = t + 8999 * 200
    assert s.times[0] <= now - S.HISTORY_SECONDS * 1000 < s.times[1]
    assert s.trimmed


def test_unchanged_counts_keep_one_point():
    s = series()
    for i in range(1000):
        s.add(i, vals(7), 1_000_000 + i * 5000)
    assert list(s.times) == [1_000_000]
    # the point holds: any later instant reads it
    assert list(s.at([1_000_000 + 4_000_000], 7, 10 ** 12)[0]) == list(vals(7))


def test_a_slot_keeps_its_latest_value():
    s = series()
    s.add(0, vals(1), 10_000)
    s.add(1, vals(2), 11_000)       # same 5 s slot: replaces
    s.add(2, vals(3), 14_999)       # same slot again
    s.add(3, vals(4), 15_000)       # the next slot
    assert list(s.times) == [14_999, 15_000]
    assert [r[6] for r in s.at([9_999, 14_999, 15_000, 20_000], 7, 10 ** 12)] == [0, 3, 4, 4]


def test_instants_before_after_and_now():
    s = series()
    s.add(0, vals(5), 100_000)
    s.add(1, vals(9), 200_000)
    rows = s.at([50_000, 100_000, 150_000, 200_000, 250_000, 300_000], 7, 260_000, live=vals(11))
    # before the object: zeros; then the value of the latest point; the live value from now on
    assert [r[6] for r in rows] == [0, 5, 5, 9, 9, 11]
    # an unknown object reads as zeros (and live from now on)
    assert [r[6] for r in S._Series(S.QUEUE_KEYS).at([1, 2], 7, 2, live=vals(3))] == [0, 3]


def test_dict_series_of_vhosts_and_the_node():
    s = S._Series(order=S.VHOST_KEYS)
    s.add(0, {"publish": 3, "messages": 2}, 10_000)
    s.add(1, {"publish": 8, "messages": 1}, 20_000)
    w = S.Window([10_000, 20_000], s.at([10_000, 20_000], len(S.VHOST_KEYS), 10 ** 12), S.VHOST_INDEX)
    assert [x["sample"] for x in w.details("publish")["samples"]] == [8, 3]
    assert s.rate("publish") == 5.0          # the instant rate from the last two samples, as before


def test_details_as_rabbitmq_formats_them():
    instants = [0, 5000, 10000, 15000]
    d = S._details(instants, [0, 0, 5, 8])
    assert d["samples"] == [{"sample": 8, "timestamp": 15000}, {"sample": 5, "timestamp": 10000},
                            {"sample": 0, "timestamp": 5000}, {"sample": 0, "timestamp": 0}]
    assert d["rate"] == (8 - 5) / 5 and d["avg_rate"] == 8 / 15 and d["avg"] == 13 / 4
    one = S._details([5000], [4])
    assert one == {"rate": 0.0, "samples": [{"sample": 4, "timestamp": 5000}]}     # no averages for one sample
    assert S.Window(instants, [], {}).constant(0)["samples"][0] == {"sample": 0, "timestamp": 15000}


@pytest.mark.parametrize("age,incr,ceil,first,last", [
    ("60", "5", False, 1_000_000 - 60_000, 1_000_000),
    ("60", "5", True, 1_005_000 - 60_000, 1_005_000),
    ("+7", "5", False, 1_000_000 - 7_000, 1_000_000),
    ("2500", "5", False, 1_000_000 - 2_500_000, 1_000_000),
])
def test_ranges_as_rabbitmq_reads_them(age, incr, ceil, first, last):
    now = 1_003_456
    r = S.parse_range({"lengths_age": age, "lengths_incr": incr}, "lengths", now, ceil)
    assert (r.first, r.last, r.incr) == (first, last, int(incr) * 1000)
    assert len(r.instants()) == int(age) // int(incr) + 1


@pytest.mark.parametrize("query", [{}, {"lengths_age": "60"}, {"lengths_incr": "5"},
                                   {"lengths_age": "x", "lengths_incr": "5"}, {"lengths_age": " 60", "lengths_incr": "5"},
                                   {"lengths_age": "60.0", "lengths_incr": "5"}])
def test_no_range_unless_both_are_integers(query):
    assert S.parse_range(query, "lengths", 1_000_000) is None


@pytest.mark.parametrize("age,incr", [("2505", "5"), ("60", "0"), ("0", "5"), ("-5", "5"), ("60", "-1"),
                                      ("1000000000000", "1")])
def test_ranges_rabbitmq_refuses(age, incr):
    with pytest.raises(S.RangeError) as e:
        S.parse_ranges({"msg_rates_age": age, "msg_rates_incr": incr}, 1_000_000)
    assert str(e.value) == f"Invalid range parameters: age {int(age)}, incr {int(incr)}"
