"""The topic exchange's trie (normalised keys, path-compressed segments, one-pass matching) against
a plain reference matcher, over random and crafted keys; and the bound on its work.

The reference is the textbook dynamic programme over (binding words, routing words): obviously
right and polynomial, so it can check the long, '#'-heavy keys that a backtracking regex could not.
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from usagi.model.exchanges import TopicExchange
from usagi.model.exchanges import topic as T
from usagi.model.exchanges.base import Binding
from usagi.model.queue import Queue


def words(key: str) -> list:
    return [] if key == "" else key.split(".")


def ref_match(binding_key: str, routing_key: str) -> bool:
    """m[i][j]: the first i binding words match the first j routing words."""
    b, r = words(binding_key), words(routing_key)
    m = [[False] * (len(r) + 1) for _ in range(len(b) + 1)]
    m[0][0] = True
    for i in range(1, len(b) + 1):
        w = b[i - 1]
        for j in range(len(r) + 1):
            if w == "#":
                m[i][j] = m[i - 1][j] or (j > 0 and m[i][j - 1])
            elif j > 0 and (w == "*" or w == r[j - 1]):
                m[i][j] = m[i - 1][j - 1]
    return m[len(b)][len(r)]


def bind(x, q, key):
    return x.add_binding(Binding(x, q, key, {}))


def queues(n):
    return [Queue("/", f"q{i}") for i in range(n)]


def segments(x) -> list:
    """Every segment of the trie below the root (a walk with a stack)."""
    out, stack = [], list(x.root.children.values())
    while stack:
        s = stack.pop()
        out.append(s)
        stack.extend(s.children.values())
    return out


def check_shape(x):
    """Segments are never empty, children are keyed by their first word, a segment with one child
    has a binding ending at it (else it would have been merged), none is left with nothing."""
    for s in segments(x):
        assert s.words
        assert s.dests or s.children
        if len(s.children) == 1:
            assert s.dests
        for first, c in s.children.items():
            assert c.words[0] == first
        assert s.hchild is s.children.get("#")
        assert len(s.words) <= 128


# binding words: the wildcards often, literals from a small set (so keys meet), the empty word
bwords = st.sampled_from(["a", "b", "", "*", "#", "#", "*", "a*", "#a"])
rwords = st.sampled_from(["a", "b", "", "c", "*", "#", "a*"])
bkeys = st.lists(bwords, max_size=10).map(".".join)
rkeys = st.lists(rwords, max_size=14).map(".".join)


@pytest.mark.parametrize("bk,rk,expected", [
    ("#", "", True), ("*", "", False), ("#.*", "", False), ("", "", True), (".", "", False),
    ("a.#.b", "a.b", True), ("#.a.#", "x.a.y", True), ("*.#.*", "a", False), ("a..b", "a..b", True),
    ("#.#.#.#", "a.b", True), ("#.*.#.*.#", "a", False), ("#.*.#.*.#", "a.b", True),
])
def test_reference_matcher(bk, rk, expected):
    assert ref_match(bk, rk) is expected


@pytest.mark.parametrize("key,norm", [
    ("#.#", "#"), ("#.*", "*.#"), ("*.#", "*.#"), ("*.#.*.#", "*.*.#"), ("a.#.#.b.*.#.*", "a.#.b.*.*.#"),
    ("#..#", "#..#"), ("", ""), ("*", "*"), ("a.#a.#", "a.#a.#"), ("#." * 60 + "z", "#.z"),
])
def test_pattern_normalises_runs_of_wildcards(key, norm):
    assert ".".join(T.pattern(key)) == norm


@settings(max_examples=400, deadline=None, database=None)
@given(bkeys, rkeys)
def test_normalised_key_matches_the_same(bk, rk):
    assert ref_match(".".join(T.pattern(bk)), rk) == ref_match(bk, rk)


@settings(max_examples=400, deadline=None, database=None)
@given(bkeys, rkeys)
def test_single_binding_against_reference(bk, rk):
    x = TopicExchange("/", "t")
    (q,) = queues(1)
    bind(x, q, bk)
    assert (x.match(rk) == [q]) == ref_match(bk, rk), (bk, rk)


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 5), bkeys), max_size=40),
       st.lists(rkeys, min_size=1, max_size=8))
def test_bind_unbind_sequences_against_reference(ops, rks):
    """Random binds and unbinds (splitting and merging segments), routed between every change."""
    x = TopicExchange("/", "t")
    qs = queues(6)
    model = set()
    for add, qi, bk in ops:
        if add:
            assert bind(x, qs[qi], bk) == ((qi, bk) not in model)
            model.add((qi, bk))
        else:
            removed = x.remove_binding(qs[qi], bk, {})
            assert (removed is not None) == ((qi, bk) in model)
            model.discard((qi, bk))
        check_shape(x)
        for rk in rks:
            got = x.route(rk, None)
            assert len(got) == len({id(d) for d in got})
            assert sorted(d.name for d in got) == sorted({f"q{qi}" for qi, bk in model if ref_match(bk, rk)}), rk
    for qi, bk in list(model):
        x.remove_binding(qs[qi], bk, {})
    assert x.root.children == {} and x.root.dests == {}


long_bwords = st.sampled_from(["a", "b", "", "*", "#"])
long_rwords = st.sampled_from(["a", "b", ""])


@settings(max_examples=150, deadline=None, database=None)
@given(st.lists(st.lists(long_bwords, min_size=20, max_size=127).map(".".join), min_size=1, max_size=5),
       st.lists(long_rwords, min_size=40, max_size=128).map(".".join))
def test_long_crafted_keys_against_reference(bks, rk):
    """Keys as long as a shortstr allows, wildcards and empty words in any order."""
    x = TopicExchange("/", "t")
    qs = queues(len(bks))
    for q, bk in zip(qs, bks):
        bind(x, q, bk)
    got = sorted(d.name for d in x.match(rk))
    assert got == sorted(q.name for q, bk in zip(qs, bks) if ref_match(bk, rk))


def test_work_of_a_crafted_binding_is_a_few_segment_steps():
    """A 255-byte binding of '#' and words and a 128-word routing key: the walk keeps one or two
    segments whatever the key (the old trie kept 10,000s of (node, position) pairs)."""
    for bk in (".".join(["#"] * 127) + ".z", ".".join(["#", "a"] * 63) + ".z", ".".join(["a", "#", "a"] * 42) + ".z",
               ".".join(["*", "#"] * 63) + ".z", ".".join(["#", ""] * 63) + ".z"):
        x = TopicExchange("/", "t")
        (q,) = queues(1)
        bind(x, q, bk)
        assert len(segments(x)) <= 2
        for rk in (".".join(["a"] * 127) + ".z", ".".join(["a"] * 128), "." * 254 + "z", "." * 255):
            assert (x.match(rk) == [q]) == ref_match(bk, rk)


def test_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(T, "CACHE_MAX", 10)
    monkeypatch.setattr(T, "CACHE_DESTS", 50)
    x = TopicExchange("/", "t")
    qs = queues(30)
    for q in qs:
        bind(x, q, "#")
    for i in range(100):
        assert len(x.route(f"k{i}", None)) == 30
        assert len(x.cache) <= 10 and x.cached_dests <= 50
    bind(x, qs[0], "a.b")
    assert x.cache == {} and x.cached_dests == 0
