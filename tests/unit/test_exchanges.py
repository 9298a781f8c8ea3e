"""Exchange routing: direct, fanout, topic (against a reference regex) and headers, as RabbitMQ routes."""
from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from usagi.amqp import properties as P
from usagi.model.exchanges import TYPES, DirectExchange, FanoutExchange, HeadersExchange, TopicExchange
from usagi.model.exchanges.base import Binding
from usagi.model.message import Message
from usagi.model.queue import Queue


def queues(n):
    return [Queue("/", f"q{i}") for i in range(n)]


def bind(x, q, key="", args=None):
    b = Binding(x, q, key, args or {})
    return x.add_binding(b)


def names(dests):
    return sorted(d.name for d in dests)


def msg(headers=None, key=""):
    props = P.encode({"headers": headers}) if headers is not None else P.EMPTY
    return Message("x", key, props, b"body")


def test_types_registry():
    for name, cls in (("direct", DirectExchange), ("fanout", FanoutExchange), ("topic", TopicExchange),
                      ("headers", HeadersExchange)):
        assert TYPES[name] is cls and cls.TYPE == name
    assert all(cls.TYPE == name for name, cls in TYPES.items())


# ---------------------------------------------------------------- direct

def test_direct_routing():
    x = DirectExchange("/", "d")
    q0, q1, q2 = queues(3)
    assert bind(x, q0, "a") and bind(x, q1, "a") and bind(x, q2, "b") and bind(x, q2, "")
    assert names(x.route("a", None)) == ["q0", "q1"]
    assert names(x.route("b", None)) == ["q2"]
    assert names(x.route("", None)) == ["q2"]
    assert names(x.route("A", None)) == []
    assert names(x.route("a.b", None)) == []
    assert x.remove_binding(q0, "a", {}) is not None
    assert names(x.route("a", None)) == ["q1"]
    assert x.remove_binding(q0, "a", {}) is None


def test_direct_same_queue_two_bindings_with_different_arguments():
    x = DirectExchange("/", "d")
    (q,) = queues(1)
    assert bind(x, q, "k", {"n": 1}) and bind(x, q, "k", {"n": 2})
    assert not bind(x, q, "k", {"n": 1})          # duplicate binding
    assert x.route("k", None) == [q]              # delivered once
    x.remove_binding(q, "k", {"n": 1})
    assert x.route("k", None) == [q]
    x.remove_binding(q, "k", {"n": 2})
    assert list(x.route("k", None)) == []


def test_binding_identity_ignores_argument_order():
    x = DirectExchange("/", "d")
    (q,) = queues(1)
    assert bind(x, q, "k", {"a": 1, "b": [1, {"c": 2}]})
    assert x.has_binding(q, "k", {"b": [1, {"c": 2}], "a": 1})
    assert not bind(x, q, "k", {"b": [1, {"c": 2}], "a": 1})
    assert not x.has_binding(q, "k", {"a": 1})


def test_remove_destination():
    for cls in (DirectExchange, FanoutExchange, TopicExchange, HeadersExchange):
        x = cls("/", "x")
        q0, q1 = queues(2)
        bind(x, q0, "k")
        bind(x, q0, "k", {"z": 1})
        bind(x, q1, "k")
        assert len(x.remove_destination(q0)) == 2
        assert names(x.route("k", msg({}))) == ["q1"], cls.TYPE
        assert len(x.bindings) == 1


# ---------------------------------------------------------------- fanout

def test_fanout():
    x = FanoutExchange("/", "f")
    q0, q1 = queues(2)
    bind(x, q0, "a")
    bind(x, q0, "b")
    bind(x, q1)
    for key in ("", "a", "anything.at.all"):
        assert names(x.route(key, None)) == ["q0", "q1"]
    x.remove_binding(q0, "a", {})
    assert names(x.route("z", None)) == ["q0", "q1"]    # still bound with "b"
    x.remove_binding(q0, "b", {})
    assert names(x.route("z", None)) == ["q1"]


# ---------------------------------------------------------------- topic

def rabbit_words(key):
    """RabbitMQ's split_topic_key: the empty key is zero words, otherwise split on every dot."""
    return [] if key == "" else key.split(".")


def topic_regex(binding_key):
    """Reference matcher: the routing key as '.w1.w2...' matched by a regex built from the binding."""
    parts = []
    for w in rabbit_words(binding_key):
        if w == "#":
            parts.append(r"(?:\.[^.]*)*")
        elif w == "*":
            parts.append(r"\.[^.]*")
        else:
            parts.append(r"\." + re.escape(w))
    return re.compile("".join(parts), re.DOTALL)


def ref_match(binding_key, routing_key):
    subject = "".join("." + w for w in rabbit_words(routing_key))
    return topic_regex(binding_key).fullmatch(subject) is not None


TOPIC_CASES = [
    ("#", "", True), ("#", "a", True), ("#", "a.b.c", True), ("#", ".", True),
    ("*", "a", True), ("*", "a.b", False), ("*", ".", False),
    ("a.*", "a.b", True), ("a.*", "a", False), ("a.*", "a.b.c", False), ("a.*", "b.a", False),
    ("a.#", "a", True), ("a.#", "a.b", True), ("a.#", "a.b.c", True), ("a.#", "ab", False), ("a.#", "b.a", False),
    ("a.#.b", "a.b", True), ("a.#.b", "a.x.b", True), ("a.#.b", "a.x.y.b", True), ("a.#.b", "a.b.b", True),
    ("a.#.b", "a.x.y", False), ("a.#.b", "a", False), ("a.#.b", "x.a.b", False),
    ("#.b", "b", True), ("#.b", "a.b", True), ("#.b", "a.b.c", False),
    ("#.#", "", True), ("#.#", "a", True), ("#.#", "a.b.c", True),
    ("#.*", "a", True), ("#.*", "a.b.c", True), ("*.#", "a", True), ("*.#", "a.b", True),
    ("*.*", "a.b", True), ("*.*", "a", False), ("*.*", "a.b.c", False),
    ("#.a.#", "a", True), ("#.a.#", "x.a.y", True), ("#.a.#", "x.y", False),
    ("*.#.*", "a", False), ("*.#.*", "a.b", True), ("*.#.*", "a.b.c.d", True),
    # empty words
    ("a..b", "a..b", True), ("a.*.b", "a..b", True), ("a..b", "a.b", False),
    ("*.*", ".", True), ("a.", "a.", True), ("a.*", "a.", True), ("a.#", "a.", True),
    ("#.", "a.", True), (".a", ".a", True), ("*.a", ".a", True),
    ("", "", True), ("", "a", False), ("a", "", False), (".", "", False),
    # '*' and '#' inside a word are literal
    ("a*", "ab", False), ("a*", "a*", True), ("a#", "a#", True), ("#a", "xa", False), ("*", "*", True),
    ("a", "*", False), ("a.b", "a.b", True), ("a.b", "A.b", False),
]

# RabbitMQ splits the empty routing key into zero words (rabbit_db_topic_exchange:split_topic_key_binary),
# so a binding that needs at least one word cannot match it. Usagi splits "" into one empty word.
TOPIC_EMPTY_KEY_CASES = [("*", ""), ("*.#", ""), ("#.*", ""), ("#.", "")]


@pytest.mark.parametrize("binding_key,routing_key,expected", TOPIC_CASES)
def test_reference_matcher(binding_key, routing_key, expected):
    assert ref_match(binding_key, routing_key) is expected


@pytest.mark.parametrize("binding_key,routing_key,expected", TOPIC_CASES)
def test_topic_cases(binding_key, routing_key, expected):
    x = TopicExchange("/", "t")
    (q,) = queues(1)
    bind(x, q, binding_key)
    assert (x.route(routing_key, None) == [q]) is expected


@pytest.mark.parametrize("binding_key,routing_key", TOPIC_EMPTY_KEY_CASES)
def test_reference_empty_routing_key_is_zero_words(binding_key, routing_key):
    assert ref_match(binding_key, routing_key) is False


@pytest.mark.parametrize("binding_key,routing_key", TOPIC_EMPTY_KEY_CASES)
def test_topic_empty_routing_key_matches_no_word_pattern(binding_key, routing_key):
    x = TopicExchange("/", "t")
    (q,) = queues(1)
    bind(x, q, binding_key)
    assert x.route(routing_key, None) == []


def test_topic_dedup_and_cache_invalidation():
    x = TopicExchange("/", "t")
    q0, q1 = queues(2)
    bind(x, q0, "a.*")
    bind(x, q0, "#")
    bind(x, q0, "a.b")
    assert x.route("a.b", None) == [q0]          # once, though three bindings match
    assert x.route("a.b", None) == [q0]          # cached
    bind(x, q1, "*.b")
    assert names(x.route("a.b", None)) == ["q0", "q1"]
    x.remove_binding(q0, "#", {})
    x.remove_binding(q0, "a.*", {})
    assert names(x.route("a.b", None)) == ["q0", "q1"]
    x.remove_binding(q0, "a.b", {})
    assert names(x.route("a.b", None)) == ["q1"]
    assert x.route("c", None) == []
    x.remove_binding(q1, "*.b", {})
    assert x.route("a.b", None) == []
    assert x.root.children == {} and x.root.dests == {}   # trie pruned


def test_topic_same_key_two_argument_sets():
    x = TopicExchange("/", "t")
    (q,) = queues(1)
    bind(x, q, "a.#", {"v": 1})
    bind(x, q, "a.#", {"v": 2})
    x.remove_binding(q, "a.#", {"v": 1})
    assert x.route("a.z", None) == [q]
    x.remove_binding(q, "a.#", {"v": 2})
    assert x.route("a.z", None) == []


def test_topic_many_hashes_is_fast():
    x = TopicExchange("/", "t")
    (q,) = queues(1)
    bind(x, q, ".".join(["#"] * 30) + ".z")
    key = ".".join(["w"] * 60)
    assert x.route(key, None) == []
    assert x.route(key + ".z", None) == [q]


binding_word = st.sampled_from(["a", "b", "", "*", "#", "a*"])
routing_word = st.sampled_from(["a", "b", "", "c", "*", "a*"])
binding_keys = st.lists(binding_word, max_size=5).map(".".join)
routing_keys = st.lists(routing_word, min_size=1, max_size=6).map(".".join).filter(lambda k: k != "")


@settings(max_examples=300, deadline=None, database=None)
@given(binding_keys, routing_keys)
def test_topic_single_binding_against_reference(bk, rk):
    x = TopicExchange("/", "t")
    (q,) = queues(1)
    bind(x, q, bk)
    assert (x.route(rk, None) == [q]) == ref_match(bk, rk), (bk, rk)


@settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 3), binding_keys), max_size=25),
       st.lists(routing_keys, min_size=1, max_size=6))
def test_topic_bind_unbind_sequence_against_reference(ops, rks):
    x = TopicExchange("/", "t")
    qs = queues(4)
    model = set()
    for add, qi, bk in ops:
        if add:
            assert bind(x, qs[qi], bk) == ((qi, bk) not in model)
            model.add((qi, bk))
        else:
            removed = x.remove_binding(qs[qi], bk, {})
            assert (removed is not None) == ((qi, bk) in model)
            model.discard((qi, bk))
        for rk in rks:   # routing between changes exercises the cache
            got = x.route(rk, None)
            assert len(got) == len({id(d) for d in got})
            assert sorted(d.name for d in got) == sorted({f"q{qi}" for qi, bk in model if ref_match(bk, rk)})
    if not model:
        assert x.root.children == {} and x.root.dests == {}


# ---------------------------------------------------------------- headers

HEADER_CASES = [
    # (binding arguments, message headers or None, expected)
    ({"x-match": "all", "a": 1, "b": "x"}, {"a": 1, "b": "x"}, True),
    ({"x-match": "all", "a": 1, "b": "x"}, {"a": 1, "b": "x", "c": 3}, True),
    ({"x-match": "all", "a": 1, "b": "x"}, {"a": 1}, False),
    ({"x-match": "all", "a": 1, "b": "x"}, {"a": 1, "b": "y"}, False),
    ({"x-match": "all", "a": 1, "b": "x"}, None, False),
    ({"a": 1}, {"a": 1}, True),                                   # x-match defaults to all
    ({"a": 1, "b": 2}, {"a": 1}, False),
    ({"x-match": "any", "a": 1, "b": "x"}, {"a": 1}, True),
    ({"x-match": "any", "a": 1, "b": "x"}, {"b": "x", "c": 2}, True),
    ({"x-match": "any", "a": 1, "b": "x"}, {"a": 2, "b": "y"}, False),
    ({"x-match": "any", "a": 1, "b": "x"}, {}, False),
    ({"x-match": "any", "a": 1}, None, False),
    ({"x-match": "all"}, None, True),                             # nothing to match: all matches
    ({"x-match": "all"}, {"z": 1}, True),
    ({"x-match": "any"}, {"z": 1}, False),                        # nothing to match: any does not
    # x- arguments are ignored unless the mode is *-with-x
    ({"x-match": "all", "x-foo": "bar", "a": 1}, {"a": 1}, True),
    ({"x-match": "any", "x-foo": "bar"}, {"x-foo": "bar"}, False),
    ({"x-match": "any", "x-foo": "bar", "a": 1}, {"x-foo": "bar"}, False),
    ({"x-match": "all-with-x", "x-foo": "bar", "a": 1}, {"a": 1}, False),
    ({"x-match": "all-with-x", "x-foo": "bar", "a": 1}, {"a": 1, "x-foo": "bar"}, True),
    ({"x-match": "all-with-x", "x-foo": "bar", "a": 1}, {"a": 1, "x-foo": "baz"}, False),
    ({"x-match": "all-with-x"}, {"x-match": "any"}, True),
    ({"x-match": "any-with-x", "x-foo": "bar", "a": 1}, {"x-foo": "bar"}, True),
    ({"x-match": "any-with-x", "x-foo": "bar", "a": 1}, {"a": 2, "x-foo": "baz"}, False),
    ({"x-match": "any-with-x", "x-foo": "bar"}, {"x-foo": "bar"}, True),
    # the x-match argument itself is never matched against a header
    ({"x-match": "any-with-x"}, {"x-match": "any-with-x"}, False),
    # a void binding value means "present, any value"
    ({"x-match": "all", "a": None}, {"a": 5}, True),
    ({"x-match": "all", "a": None}, {"a": None}, True),
    ({"x-match": "all", "a": None}, {"b": 5}, False),
    ({"x-match": "any", "a": None, "b": 1}, {"a": "whatever"}, True),
    ({"x-match": "all", "a": 1}, {"a": None}, False),
    # value comparisons
    ({"a": "1"}, {"a": 1}, False),
    ({"a": 1}, {"a": 1.0}, True),                                 # Erlang 1 == 1.0
    ({"a": [1, "x"]}, {"a": [1, "x"]}, True),
    ({"a": {"n": 1}}, {"a": {"n": 2}}, False),
]


@pytest.mark.parametrize("args,headers,expected", HEADER_CASES)
def test_headers_cases(args, headers, expected):
    x = HeadersExchange("/", "h")
    (q,) = queues(1)
    assert x.validate_binding("", args) is None
    bind(x, q, "", args)
    assert (x.route("ignored", msg(headers)) == [q]) is expected


# RabbitMQ compares values with Erlang's ==: true is not 1, and a longstr equals a byte array ('x')
# with the same octets (pika sends bytes values as 'x').
def test_headers_bool_is_not_int():
    x = HeadersExchange("/", "h")
    (q,) = queues(1)
    bind(x, q, "", {"a": True})
    assert x.route("", msg({"a": 1})) == []


def test_headers_longstr_equals_byte_array():
    x = HeadersExchange("/", "h")
    (q,) = queues(1)
    bind(x, q, "", {"a": "v"})
    assert x.route("", msg({"a": b"v"})) == [q]


def test_headers_routing_ignores_routing_key_and_dedups():
    x = HeadersExchange("/", "h")
    q0, q1 = queues(2)
    bind(x, q0, "k1", {"x-match": "any", "a": 1})
    bind(x, q0, "k2", {"x-match": "any", "b": 2})
    bind(x, q1, "", {"x-match": "all", "a": 1, "b": 2})
    assert names(x.route("zzz", msg({"a": 1, "b": 2}))) == ["q0", "q1"]
    assert names(x.route("", msg({"b": 2}))) == ["q0"]
    x.remove_binding(q0, "k2", {"x-match": "any", "b": 2})
    assert names(x.route("", msg({"b": 2}))) == []
    assert names(x.route("", msg({"a": 1}))) == ["q0"]


@pytest.mark.parametrize("mode", ["ALL", "", "some", "all ", b"all"])
def test_headers_invalid_x_match(mode):
    err = HeadersExchange("/", "h").validate_binding("", {"x-match": mode})
    assert err is not None and "Invalid x-match field value" in err


def rabbit_headers_match(args, headers):
    mode = args.get("x-match", "all")
    with_x = mode in ("all-with-x", "any-with-x")
    results = []
    for k, v in args.items():
        if k == "x-match" or (k.startswith("x-") and not with_x):
            continue
        results.append(k in headers and (v is None or headers[k] == v))
    return all(results) if mode.startswith("all") else any(results)


hkeys = st.sampled_from(["a", "b", "c", "x-a", "x-b"])
hvals = st.one_of(st.integers(0, 2), st.sampled_from(["s", "t"]), st.none())


@settings(max_examples=250, deadline=None, database=None)
@given(st.sampled_from(["all", "any", "all-with-x", "any-with-x", None]),
       st.dictionaries(hkeys, hvals, max_size=4), st.dictionaries(hkeys, hvals, max_size=4) | st.none())
def test_headers_against_reference(mode, args, headers):
    if mode is not None:
        args = dict(args, **{"x-match": mode})
    x = HeadersExchange("/", "h")
    (q,) = queues(1)
    bind(x, q, "", args)
    assert (x.route("", msg(headers)) == [q]) == rabbit_headers_match(args, headers or {})
