"""User patterns (usagi.model.patterns): PCRE's syntax and answers as RabbitMQ's Erlang `re` gives
them, Python `re`'s answers for ordinary patterns, PCRE's refusals, and a bounded cost per match.

The PCRE tables were checked against Erlang's `re` (re:compile/1, re:run/3 with {capture, none}),
which is what RabbitMQ runs for policies, permissions and the management API's name filter."""
from __future__ import annotations

import logging
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usagi.model import patterns as P

# (pattern, subject, matches?) as Erlang's re answers
PCRE_CASES = [
    ("^amq\\.", "amq.direct", True), ("^amq\\.", "xamq.direct", False),
    ("abc$", "abc\n", True), ("abc\\Z", "abc\n", True), ("abc\\z", "abc\n", False), ("abc\\z", "abc", True),
    ("(?<n>ab)c", "xabc", True), ("(?<n>a)\\k<n>", "aa", True), ("(?'n'a)\\k{n}", "aa", True),
    ("(?P<n>a)(?P=n)", "aa", True),
    ("a++b", "aab", True), ("a++a", "aaa", False), ("(?>a+)b", "aab", True),
    ("\\h", "\t", True), ("\\h", "a", False), ("\\H", "a", True), ("\\v", "\x0b", True), ("\\R", "\r\n", True),
    ("a\\x{41}", "aA", True), ("\\x41", "A", True), ("\\x", "\x00", True), ("\\o{101}", "A", True),
    ("\\101", "A", True), ("\\e", "\x1b", True), ("\\cz", "\x1a", True),
    ("\\Qa.b\\E", "a.b", True), ("\\Qa.b\\E", "axb", False), ("[\\Q]\\E]", "]", True),
    ("a(?i)b", "aB", True), ("A(?i)b", "ab", False), ("(a(?i)b)c", "aBC", False), ("a(?i)b|c", "C", True),
    ("(?i:a)b", "AB", False),
    ("\\i", "i", True), ("\\m", "m", True), ("a{,3}", "a{,3}", True), ("x{a}", "x{a}", True), ("a{", "a{", True),
    ("a{1,2", "a{1,2", True), ("a{2}", "aa", True), ("a{2,}", "a", False),
    ("[[:alpha:]]+", "ab", True), ("[[:digit:]]", "a", False), ("[[a]", "[", True), ("[a&&b]", "&", True),
    ("(?x) a # [ b\n c", "ac", True), ("(a)\\g{-1}", "aa", True), ("(a)\\g1", "aa", True), ("(a)\\1", "aa", True),
    ("\\N", "a", True), ("\\N", "\n", False), ("(?s).", "\n", True), (".", "\n", False),
    ("^$", "", True), ("^$", "a", False),
    # without the unicode option a name is bytes, each a Latin-1 character
    ("\\w", "é", True), ("^.$", "é", False), ("^..$", "é", True), ("é", "é", True),
    ("(?i)abc", "xABC", True), ("\\d+", "x42", True), ("\\bfoo\\b", "a foo b", True),
    ("(?=a)a", "a", True), ("(?<=a)b", "ab", True), ("(?<!a)b", "ab", False),
    ("a|b", "b", True), ("(a|b)*c", "ababc", True), ("a\\Eb", "ab", True), ("\\8", "8", True), ("(?#x)a", "a", True),
]

# (pattern, reason, offset or None where Usagi's offset differs from PCRE's) as Erlang's re refuses
PCRE_REFUSED = [
    ("(a", "missing )", 2), ("a)", "unmatched parentheses", 1), ("*a", "nothing to repeat", 0),
    ("[a", "missing terminating ] for character class", 2), ("a\\", "\\ at end of pattern", 2),
    ("a{2,1}", "numbers out of order in {} quantifier", 5), ("a**", "nothing to repeat", 2),
    ("(?z)", "unrecognized character after (? or (?-", 2),
    ("\\x{100}", "character value in \\x{} or \\o{} is too large", 6), ("\\c", "\\c at end of pattern", 2),
    ("[\\N]", "\\N is not supported in a class", 2), ("a{70000}", "number too big in {} quantifier", 7),
    ("\\L", "PCRE does not support \\L, \\l, \\N{name}, \\U, or \\u", 1),
    ("[[.a.]]", "POSIX collating elements are not supported", 1),
    ("(?<n>a)(?<n>b)", "two named subpatterns have the same name", None),
    ("\\2(a)", "reference to non-existent subpattern", None),
    ("(?P<n>a)(?P=m)", "reference to non-existent subpattern", None),
    ("\\k<m>", "reference to non-existent subpattern", None),
    ("[z-a]", "range out of order in character class", None),
]


@pytest.mark.parametrize("pattern,subject,expected", PCRE_CASES)
def test_answers_as_pcre(pattern, subject, expected):
    assert P.compile_pattern(pattern).search(subject) is expected


@pytest.mark.parametrize("pattern,reason,offset", PCRE_REFUSED)
def test_refused_as_pcre(pattern, reason, offset):
    with pytest.raises(P.PatternError) as e:
        P.compile_pattern(pattern)
    assert e.value.reason == reason
    if offset is not None:
        assert e.value.offset == offset
    assert e.value.erlang().startswith('{"')


def test_erlang_form_of_an_error():
    with pytest.raises(P.PatternError) as e:
        P.validate("(a")
    assert e.value.erlang() == '{"missing )",2}'


def test_length_limit_is_rabbitmqs():
    P.validate("a" * P.MAX_PATTERN_LENGTH)
    with pytest.raises(P.PatternError) as e:
        P.validate("a" * (P.MAX_PATTERN_LENGTH + 1))
    assert e.value.too_long
    with pytest.raises(P.PatternError):
        P.validate("é" * (P.MAX_PATTERN_LENGTH // 2 + 1))     # bytes, not characters


@pytest.mark.parametrize("pattern", [
    "(?:\\w{1000}){1000}", "((a{100}){100}){100}", "(?:x|a{1000}){1000}", "(?:a{300}){300}",
    "(?:" * 250 + "a" + ")" * 250, "(?U)a+", "(*UTF8)a",
])
def test_programs_too_large_or_unsupported_are_refused_quickly(pattern):
    t0 = time.perf_counter()
    with pytest.raises(P.PatternError):
        P.validate(pattern)
    assert time.perf_counter() - t0 < 1.0          # generous: compiling would take up to seconds


def test_compiled_once():
    assert P.compile_pattern("^compiled-once$") is P.compile_pattern("^compiled-once$")
    assert P.compile_pattern("^compiled-once$", caseless=True) is not P.compile_pattern("^compiled-once$")


def test_caseless_as_the_management_filter():
    assert P.compile_pattern("^ORDERS", caseless=True).search("orders.eu")
    assert not P.compile_pattern("^ORDERS").search("orders.eu")


# ------------------------------------------------------------------ Python re, for ordinary patterns

_atoms = st.sampled_from(["a", "b", "c", ".", "[ab]", "[^a]", "[a-c]", "\\d", "\\w", "\\s", "x", "-", "\\.", "0"])


def _pattern():
    def quantify(p):
        return st.tuples(p, st.sampled_from(["", "*", "+", "?", "{2}", "{1,3}", "*?", "+?"])).map(
            lambda t: (f"(?:{t[0]})" if len(t[0]) > 1 and not t[0].startswith(("[", "\\")) else t[0]) + t[1])

    base = quantify(_atoms)
    return st.recursive(
        st.lists(base, min_size=1, max_size=4).map("".join),
        lambda inner: st.one_of(
            st.tuples(inner, inner).map(lambda t: f"{t[0]}|{t[1]}"),
            inner.map(lambda s: f"({s})"),
            quantify(inner.map(lambda s: f"(?:{s})")),
            st.tuples(st.sampled_from(["^", ""]), inner, st.sampled_from(["$", ""])).map("".join),
        ),
        max_leaves=8)


@settings(max_examples=400, deadline=None)
@given(_pattern(), st.text(alphabet="abcx0-. 9", max_size=12))
def test_ordinary_patterns_answer_as_python_re(pattern, subject):
    assert P.compile_pattern(pattern).search(subject) == (re.search(pattern, subject) is not None)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=20))
def test_escape_matches_the_text_literally(text):
    assert P.matches("^" + P.escape(text) + "$", text)
    assert not P.matches("^" + P.escape(text) + "$", text + "x")


# ------------------------------------------------------------------ bounded cost

PATHOLOGICAL = [
    ("(a|aa)+$", "a" * 254 + "!"),
    ("(a*)*$", "a" * 254 + "!"),
    ("(.*a){20}$", "a" * 254 + "!"),
    ("((a+)+)+c", "a" * 254),
    ("^(\\w+\\s?)*$" + "(x+x+)+y", "a" * 254 + "!"),
]


@pytest.mark.parametrize("pattern,subject", PATHOLOGICAL)
def test_a_pathological_match_is_no_match_within_its_budget(pattern, subject):
    p = P.compile_pattern(pattern + "(?#fresh-1)")
    t0 = time.perf_counter()
    assert not p.search(subject)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(1000):
        assert not p.search(subject)
    rest = time.perf_counter() - t0
    # generous bounds (the budgets are 1 ms a match, and 20 ms at once then 10 ms/s for expensive
    # patterns all together): an unbounded match takes from seconds to forever
    assert first < 0.1
    assert rest < 0.5


def test_expensive_patterns_share_one_allowance():
    subject = "a" * 254 + "!"
    ps = [P.compile_pattern(f"(a|aa)+$(?#many-{i})") for i in range(50)]
    for p in ps:
        p.search(subject)                 # each is found out once (~1 ms)
    t0 = time.perf_counter()
    for _ in range(20):
        for p in ps:
            assert not p.search(subject)
    assert time.perf_counter() - t0 < 0.5  # 1000 matches: not 1000 budgets


def test_cheap_patterns_are_not_throttled_by_expensive_ones():
    bad = P.compile_pattern("(a|aa)+$(?#hog)")
    for _ in range(100):
        bad.search("a" * 254 + "!")       # spends the shared allowance
    good = P.compile_pattern("^orders\\.")
    assert all(good.search("orders.%d" % i) for i in range(10000))


def test_a_cheap_patterns_odd_slow_match_is_forgotten():
    """Strikes (slow matches, as a busy machine gives a cheap pattern now and then) are forgotten
    after a run of cheap matches: over many thousands they never add up to a throttled pattern."""
    good = P.compile_pattern("^orders\\.(?#strikes)")
    good.strikes = 1
    n = 0
    while good.strikes and n < 50 * P.CHEAP_RUN:   # a slow match under load starts the run again
        assert good.search("orders.%d" % n)
        n += 1
    assert good.strikes == 0 and not good.expensive, (good.strikes, n)
    assert n >= P.CHEAP_RUN                        # not before a whole run of cheap matches


def test_an_operation_budget_skips_and_is_not_remembered():
    p = P.compile_pattern("^budget+ed$")
    spent = P.Budget(0.0)
    assert p.test("budgeted", spent) == P.SKIPPED
    assert p.test("budgeted", P.Budget(1.0)) == P.MATCH


def test_linear_patterns_are_answered_without_a_clock():
    """`.*` and literal text (anchored or not) cannot backtrack: they are answered even with no
    time left, so that a starved process never refuses what they grant."""
    spent = P.Budget(0.0)
    for src, subject, want in ((".*", "anything", P.MATCH), ("^.*$", "", P.MATCH), ("^amq\\.gen", "amq.gen-x", P.MATCH),
                               ("^amq\\.gen", "amqXgen", P.NOMATCH), ("abc", "xabcx", P.MATCH),
                               ("^abc$", "abcd", P.NOMATCH), ("^$", "", P.MATCH)):
        p = P.compile_pattern(src)
        assert p.linear, src
        assert p.test(subject, spent) == want, (src, subject)
    for src in ("a.c", ".*x", "(a*)*$", "a+", "foo|bar", "\\d", "[ab]"):
        assert not P.compile_pattern(src).linear, src


def test_out_of_budget_is_logged_once_per_pattern(caplog):
    p = P.compile_pattern("(a|aa)+$(?#logged-once)")
    with caplog.at_level(logging.WARNING, logger="usagi.patterns"):
        for _ in range(50):
            p.search("a" * 254 + "!")
    said = [r for r in caplog.records if "logged-once" in r.getMessage()]
    assert len(said) == 1


def test_matches_denies_on_a_bad_pattern_and_remembers_per_pattern():
    assert not P.matches("(a", "a")
    assert P.matches("^a", "abc")
    assert not P.matches("^b", "abc")
    assert P.matches("", "anything")


def test_bounded_cache():
    c = P.BoundedCache(3)
    for i in range(10):
        c.put(i, i)
    assert list(c) == [7, 8, 9]


def test_no_budget_ever_raises():
    # matches cut short anywhere (first run, the second run that tells a pause from a slow
    # pattern, the shared allowance) answer, they never raise
    subjects = ["a" * n + "!" for n in (20, 40, 80, 254)]
    for i, pat in enumerate(["((a+)+)+c", "^(\\w+\\s?)*$", "(a|aa)+$", "^(a+)+$"]):
        for j, seconds in enumerate((0.00002, 0.0001, 0.0003, 0.0008, 0.002)):
            p = P.compile_pattern(f"{pat}(?#raise-{i}-{j})")
            for s in subjects:
                assert p.test(s, P.Budget(seconds)) in (P.MATCH, P.NOMATCH, P.SKIPPED)
                assert p.test(s) in (P.MATCH, P.NOMATCH, P.SKIPPED)


# ------------------------------------------------------------------ the engine's policy lookup

def _broker():
    from usagi.core.broker import Broker
    b = Broker()
    b.bootstrap()
    return b


def test_policy_lookup_priorities_and_ties():
    b = _broker()
    v = b.vhosts["/"]
    b.set_policy("/", "first", "^q", {"max-length": 1}, priority=1)
    b.set_policy("/", "second", "^q", {"max-length": 2}, priority=1)
    assert b.declare_queue(v, "q1").policy == "first"            # the first among equals
    b.set_policy("/", "slow-high", "^q(a|aa)+$|^q1$", {"max-length": 3}, priority=5)
    assert v.queues["q1"].policy == "slow-high"                   # re-applied: the higher wins
    b.clear_policy("/", "slow-high")
    assert v.queues["q1"].policy == "first"


def test_policy_lookups_are_forgotten_when_policies_change():
    b = _broker()
    v = b.vhosts["/"]
    b.set_policy("/", "p", "^q", {"max-length": 1})
    assert b.declare_queue(v, "q").policy == "p"
    b.delete_queue(v.queues["q"])
    b.delete_vhost("/")                   # drops the vhost's policies without re-applying
    b.add_vhost("/")
    assert b.declare_queue(b.vhosts["/"], "q").policy is None
    b.set_policy("/", "p2", "^q$", {"max-length": 1})
    assert b.vhosts["/"].queues["q"].policy == "p2"


def test_expensive_policies_do_not_starve_an_ordinary_one():
    b = _broker()
    v = b.vhosts["/"]
    for i in range(20):
        b.set_policy("/", f"slow-{i}", f"^(a|aa)+$(?#starve-{i})", {"max-length": 1}, priority=10)
    b.set_policy("/", "legit", "^legit\\.", {"max-length": 2}, priority=0)
    for i in range(50):
        assert b.declare_queue(v, f"legit.{i}").policy == "legit"
        t0 = time.perf_counter()
        assert b.declare_queue(v, "a" * 250 + f"!{i}").policy is None
        assert time.perf_counter() - t0 < 0.5          # generous: the lookup's budget is 5 ms
