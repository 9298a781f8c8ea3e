"""Regular expressions that users supply, compiled once and matched at a bounded cost.

Users write patterns that the broker matches against names: policy and operator-policy patterns
(queue and exchange names), permission patterns (resource names), topic-permission patterns
(routing keys) and the management API's `use_regex` name filter. All of it runs on the one event
loop every client shares, so a backtracking pattern must not be able to hold that loop. RabbitMQ
matches these with Erlang's `re` (PCRE) under a match limit (`rabbit_re`: 50,000 steps, patterns of
at most 1,024 bytes); a match that reaches the limit is *no match* (`re:run` answers `nomatch`
unless asked to report errors), and RabbitMQ then applies no policy, refuses the permission, and
leaves the name out of a filtered listing. Usagi does the same, with time as the measure.

How the cost is bounded (the figures are from benchmarks/abuse_regex.py and from timing the
`regex` module and Erlang's `re` on the development machine):

1. A pattern is at most MAX_PATTERN_LENGTH (1,024) bytes and compiles to a bounded program: nested
   counted repeats that the matcher would unroll past MAX_UNROLLED (20,000 units, ~5 ms to compile;
   `(?:\\w{1000}){1000}` would take 0.8 s) are refused as "regular expression is too large", and so
   is nesting deeper than MAX_DEPTH. A pattern is compiled once and kept in a bounded cache.
2. Each match has MATCH_BUDGET (1 ms) of time: the `regex` module's timeout, kept to within
   ~0.05 ms. Ordinary patterns take 0.3-2 us on names of up to 255 bytes; the heaviest legitimate
   one measured (`^(\\w+\\s?)*$` on a 255-byte name) 0.2 ms. Erlang spends 65-100 ms on PCRE's
   default limit of 10,000,000 steps, so RabbitMQ 4.x's 50,000 are 0.3-0.5 ms: what RabbitMQ
   completes, Usagi completes too. A match out of its budget is no match, logged once per
   pattern. As the clock may be another process's fault, a match slower than EXPENSIVE is run
   twice more and judged by the least CPU time taken (a new slow pattern costs up to ~3 ms,
   once), and an answer out of budget is never remembered.
3. A pattern seen to be expensive (three matches over EXPENSIVE, 20 us, or one out of budget) is
   matched from then on out of a shared allowance of ALLOWANCE_RATE (10 ms) per second, at most
   ALLOWANCE_BURST (10 ms) at once; its runs under EXPENSIVE are free. When less than
   MIN_ALLOWANCE (0.5 ms) is left, an expensive pattern gets a QUICK_TRY (20 us, tried again when
   the process was preempted meanwhile): easy subjects still get their answer, on a busy machine
   too, the others no match. Cheap
   patterns are never throttled (and one that stays cheap for CHEAP_RUN matches in a row is
   ordinary again; a pattern's strikes are forgotten after CHEAP_RUN cheap matches in a row, so
   that on a busy machine the odd slow match of a cheap pattern does not add up over thousands). So however many slow patterns users write, together they take at most ~1% of
   the loop, plus ~3 ms for each new one.
4. An operation that matches many patterns or many names (a policy lookup, a filtered listing)
   passes a Budget, a deadline for all its matches; a match it cuts short is *skipped*, which the
   caller sees and decides about (it is not remembered as a result).

Syntax: PCRE's, as Erlang's `re` takes it without the `unicode` option (which RabbitMQ does not
set): a pattern and a name are both seen as bytes (UTF-8), each byte one Latin-1 character, so `.`
is one byte, `\\w` and caseless matching know Latin-1 letters. The pattern is rewritten where the
`regex` module reads it differently: `\\Z` (end or before a final newline), `\\h`, `\\v`, `\\R`, `\\e`,
`\\cX`, `\\x{..}`, `\\o{..}`, `\\Q..\\E`, `\\N`, `\\C`, `\\g{..}`/`\\k<..>` references, unknown letter
escapes (a literal letter in PCRE), braces that are not a quantifier (literal in PCRE). Named
groups `(?<n>..)`, possessive quantifiers, atomic groups, `\\z`, `\\K` and inline flags (scoped as in
PCRE) are read natively. Not supported (refused): the `(?J)`, `(?U)` and `(?X)` options, `\\H`/`\\V`
inside a class, `(*UTF8)`-style start options. Accepted though PCRE refuses: variable-length
lookbehind.
"""
from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict

import regex

log = logging.getLogger("usagi.patterns")

MAX_PATTERN_LENGTH = 1024        # bytes (UTF-8), as RabbitMQ 4.x (rabbit_re)
MAX_UNROLLED = 20_000            # units of compiled program after counted repeats are unrolled
MAX_DEPTH = 200                  # nested groups
MAX_REPEAT = 65535               # PCRE's largest {n,m}
MATCH_BUDGET = 0.001             # seconds per match, see 2. above
EXPENSIVE = 0.00002              # a match slower than this (10x an ordinary one) is expensive
ALLOWANCE_RATE = 0.010           # seconds of matching per second for expensive patterns
ALLOWANCE_BURST = 0.010          # at most this much at once
MIN_ALLOWANCE = 0.0005           # what must be left of it for an expensive pattern to run in full
QUICK_TRY = 0.00002              # else the time it gets: enough for an easy subject on a busy machine
QUICK_TRIES = 5                  # ... tried again when preempted, this many times at most
STRIKES = 3                      # slow matches (or one out of budget) that make a pattern expensive
CHEAP_RUN = 100                  # cheap matches in a row that make it ordinary again

MATCH, NOMATCH, SKIPPED = 1, 0, -1

_perf = time.perf_counter
_cpu = time.thread_time


class PatternError(ValueError):
    """A pattern that does not compile: `reason` in PCRE's words, `offset` into the pattern."""

    def __init__(self, reason: str, offset: int, too_long: bool = False):
        super().__init__(f"{reason} at offset {offset}")
        self.reason = reason
        self.offset = offset
        self.too_long = too_long

    def erlang(self) -> str:
        """The error as Erlang prints `re:compile`'s: {"missing )",2}."""
        text = self.reason.replace("\\", "\\\\").replace('"', '\\"')
        return f'{{"{text}",{self.offset}}}'


class Budget:
    """A deadline shared by the matches of one operation."""
    __slots__ = ("deadline", "seconds")

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.deadline = _perf() + seconds

    @property
    def remaining(self) -> float:
        return self.deadline - _perf()

    @property
    def exhausted(self) -> bool:
        return _perf() >= self.deadline


class BoundedCache(OrderedDict):
    """A dict holding at most `size` entries: the oldest entry goes when a new one comes."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def put(self, key, value):
        if len(self) >= self.size and key not in self:
            self.popitem(last=False)
        self[key] = value


class _Allowance:
    """A token bucket of matching time for expensive patterns (see 3. in the module docstring)."""

    def __init__(self, rate: float, burst: float):
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.at = _perf()

    def available(self) -> float:
        now = _perf()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        return self.tokens

    def spend(self, seconds: float):
        self.tokens -= seconds


allowance = _Allowance(ALLOWANCE_RATE, ALLOWANCE_BURST)


class Pattern:
    """A compiled user pattern. `test` answers MATCH, NOMATCH or SKIPPED (no answer within the
    budget, which callers count as no match but do not remember); `search` a bool."""
    __slots__ = ("source", "caseless", "_search", "expensive", "strikes", "cheap_run", "logged", "linear")

    def __init__(self, source: str, caseless: bool, compiled):
        self.source = source
        self.caseless = caseless
        self._search = compiled.search
        # literal text, anchored or not, or `.*`: nothing to backtrack over, the cost is linear in
        # the subject; such a pattern is answered without a clock, so that a starved process
        # never refuses what `.*` grants
        self.linear = _LINEAR.fullmatch(source) is not None
        self.expensive = False
        self.strikes = 0        # slow matches seen; STRIKES of them make the pattern expensive
        self.cheap_run = 0      # cheap matches in a row since it became expensive
        self.logged = False

    def search(self, subject: str, budget: Budget | None = None) -> bool:
        return self.test(subject, budget) == MATCH

    def test(self, subject: str, budget: Budget | None = None) -> int:
        if not subject.isascii():
            subject = subject.encode("utf-8", "surrogateescape").decode("latin-1")
        if self.linear:
            return MATCH if self._search(subject) is not None else NOMATCH
        limit = MATCH_BUDGET
        if budget is not None:
            left = budget.deadline - _perf()
            if left <= 0:
                return SKIPPED
            if left < limit:
                limit = left
        expensive = self.expensive
        if expensive:
            left = allowance.available()
            if left < MIN_ALLOWANCE:
                # the allowance is spent: a quick try, enough for easy subjects and cheap for the rest.
                # A try that timed out without using its time on the CPU (another process or thread
                # ran meanwhile) is tried again, at most QUICK_TRIES times in all: an easy subject
                # must not be refused because the machine is busy.
                for _attempt in range(QUICK_TRIES):
                    c0 = _cpu()
                    result = self._run(subject, QUICK_TRY)[0]
                    if result != SKIPPED or _cpu() - c0 >= QUICK_TRY:
                        break
                if result == SKIPPED:
                    self._note("the shared allowance for expensive patterns is spent")
                return result
            if left < limit:
                limit = left
        result, spent = self._run(subject, limit)
        if expensive:
            if spent > EXPENSIVE:
                allowance.spend(min(spent, 2 * limit))  # (a pause past that is not matching)
                self.cheap_run = 0
            else:                                   # cheap runs do not draw on the allowance
                self.cheap_run += 1
                if self.cheap_run >= CHEAP_RUN:     # it was the subjects: trust it again
                    self.expensive = False
                    self.strikes = 0
        elif spent <= EXPENSIVE:
            if self.strikes:                        # strikes are forgotten after a run of cheap
                self.cheap_run += 1                 # matches: a busy machine's occasional slow
                if self.cheap_run >= CHEAP_RUN:     # match must not add up, over thousands of
                    self.strikes = 0                # matches, to a cheap pattern throttled
                    self.cheap_run = 0
        else:
            # slow, or paused: another process had the CPU (this machine's clocks, the CPU-time
            # one too, jump by tens of microseconds under load), or a garbage collection ran as
            # the match object was made. Neither may turn an answer into no match or make a
            # pattern expensive: run it twice more and judge by the least CPU time taken.
            least = 1.0
            for _attempt in range(2):
                c0 = _cpu()
                again = self._run(subject, limit)[0]
                least = min(least, _cpu() - c0)
                if again != SKIPPED or result == SKIPPED:
                    result = again                  # an answer rather than a timeout
                if least <= EXPENSIVE and result != SKIPPED:
                    break
            if least > EXPENSIVE:
                self.cheap_run = 0
                self.strikes += STRIKES if result == SKIPPED else 1
                if self.strikes >= STRIKES:
                    self.expensive = True
                    self.cheap_run = 0
        if result == SKIPPED and limit >= MATCH_BUDGET:
            self._note(f"a match ran out of its {MATCH_BUDGET * 1000:g} ms budget")
        return result

    def _run(self, subject: str, limit: float):
        t0 = _perf()
        try:
            result = MATCH if self._search(subject, timeout=limit) is not None else NOMATCH
        except TimeoutError:
            result = SKIPPED
        return result, _perf() - t0

    def _note(self, why: str):
        if not self.logged:
            self.logged = True
            log.warning("pattern '%s': %s; such matches count as no match (said once per pattern)",
                        self.source, why)


# ---------------------------------------------------------------------------------------- compiling

_LINEAR = re.compile(r"\^?(?:\.\*|(?:[^\\.^$|?*+()\[\]{}]|\\[^A-Za-z0-9])*)\$?")
_compiled = BoundedCache(8192)      # (source, caseless) -> Pattern | PatternError


def compile_pattern(source: str, caseless: bool = False) -> Pattern:
    """The compiled pattern (cached), or PatternError with PCRE's reason."""
    key = (source, caseless)
    p = _compiled.get(key)
    if p is None:
        try:
            p = Pattern(source, caseless, _compile(source, caseless))
        except PatternError as e:
            p = e
        _compiled.put(key, p)
    if isinstance(p, PatternError):
        raise p
    return p


def validate(source: str) -> None:
    """Raise PatternError unless `source` is a pattern users may set."""
    compile_pattern(source)


_results = BoundedCache(16384)      # (source, subject) -> bool, definitive answers only (<~6 MB)


def matches(source: str, subject: str) -> bool:
    """Whether `source` matches somewhere in `subject`; a pattern that does not compile matches
    nothing (RabbitMQ denies on a regex error). Definitive answers are remembered: the answer for a
    (pattern, subject) pair never changes, so nothing needs invalidating when patterns change."""
    key = (source, subject)
    r = _results.get(key)
    if r is not None:
        return r
    try:
        p = compile_pattern(source)
    except PatternError:
        return False
    t = p.test(subject)
    if t == SKIPPED:
        return False
    r = t == MATCH
    _results.put(key, r)
    return r


def escape(text: str) -> str:
    """`text` as a pattern matching it literally (for values put into a pattern, such as the
    {username} and {vhost} of topic permissions)."""
    out = []
    for ch in text:
        if ch in "\\^$.|?*+()[]{}-":
            out.append("\\")
        out.append(ch)
    return "".join(out)


def _compile(source: str, caseless: bool):
    try:
        raw = source.encode("utf-8")
    except UnicodeEncodeError as e:
        raise PatternError("invalid UTF-8 string", e.start) from None
    if len(raw) > MAX_PATTERN_LENGTH:
        raise PatternError("pattern_too_long", MAX_PATTERN_LENGTH, too_long=True)
    text = _translate(raw.decode("latin-1"))
    flags = regex.V0 | (regex.IGNORECASE if caseless else 0)
    try:
        return regex.compile(text, flags)
    except regex.error as e:
        raise PatternError(_pcre_reason(e.msg), _offset(e.pos, raw)) from None
    except (RecursionError, MemoryError, OverflowError):
        raise PatternError("regular expression is too large", len(raw)) from None
    except Exception as e:  # noqa: BLE001 - any failure to compile is the pattern's
        raise PatternError(str(e) or type(e).__name__, 0) from None


def _offset(pos, raw: bytes) -> int:
    return min(pos, len(raw)) if isinstance(pos, int) else len(raw)


_REASONS = {
    "missing )": "missing )",
    "unbalanced parenthesis": "unmatched parentheses",
    "nothing to repeat": "nothing to repeat",
    "multiple repeat": "nothing to repeat",
    "unterminated character set": "missing terminating ] for character class",
    "bad escape (end of pattern)": "\\ at end of pattern",
    "bad character range": "range out of order in character class",
    "min repeat greater than max repeat": "numbers out of order in {} quantifier",
    "invalid group reference": "reference to non-existent subpattern",
    "unknown group": "reference to non-existent subpattern",
    "unknown extension": "unrecognized character after (? or (?-",
    "unknown property": "unknown property name after \\P or \\p",
    "missing >": "syntax error in subpattern name (missing terminator)",
}


def _pcre_reason(msg: str) -> str:
    return _REASONS.get(msg, msg)


# ---------------------------------------------------------------------------------------- PCRE -> regex

_HEX = "0123456789abcdefABCDEF"
_OCT = "01234567"
# escapes that mean the same in PCRE and in `regex` (outside a class)
_SAME = set("AbBdDfnrtwWsSGKXzpPa")
_SAME_IN_CLASS = set("bdDfnrtwWsSpPa")
_VSPACE = "\\n\\x0b\\x0c\\r\\x85"
_HSPACE = "\\t \\xa0"
_UNSUPPORTED = set("LlUu")
_FLAG_LETTERS = set("imsx-")


def _lit(ch: str) -> str:
    return regex.escape(ch) if not ch.isalnum() else ch


def _char(code: int) -> str:
    return f"\\x{code:02x}"


def _quantifier(p: str, i: int):
    """If p[i] opens a PCRE {n}, {n,} or {n,m} quantifier: (end, n, m); else None."""
    j = i + 1
    n = len(p)
    k = j
    while k < n and p[k].isdigit():
        k += 1
    if k == j:
        return None
    lo = int(p[j:k])
    hi = lo
    if k < n and p[k] == ",":
        k += 1
        s = k
        while k < n and p[k].isdigit():
            k += 1
        hi = int(p[s:k]) if k > s else None
    if k < n and p[k] == "}":
        return k + 1, lo, hi
    return None


def _escape(p: str, i: int, ncap: int, in_class: bool):
    """Translate the escape at p[i] == '\\'. Returns (next index, text)."""
    n = len(p)
    if i + 1 >= n:
        raise PatternError("\\ at end of pattern", n)
    c = p[i + 1]
    j = i + 2
    if c == "x":
        if j < n and p[j] == "{":
            k = p.find("}", j)
            digits = p[j + 1:k] if k > 0 else ""
            if k < 0 or not digits or any(d not in _HEX for d in digits):
                raise PatternError("\\x{ is not followed by hex digits and }", j)
            v = int(digits, 16)
            if v > 0xFF:
                raise PatternError("character value in \\x{} or \\o{} is too large", k)
            return k + 1, _char(v)
        k = j
        while k < n and k < j + 2 and p[k] in _HEX:
            k += 1
        return k, _char(int(p[j:k], 16) if k > j else 0)
    if c == "o" and j < n and p[j] == "{":
        k = p.find("}", j)
        digits = p[j + 1:k] if k > 0 else ""
        if k < 0 or not digits or any(d not in _OCT for d in digits):
            raise PatternError("missing } after \\o{", j)
        v = int(digits, 8)
        if v > 0xFF:
            raise PatternError("character value in \\x{} or \\o{} is too large", k)
        return k + 1, _char(v)
    if c.isdigit():
        return _digits(p, i, ncap, in_class)
    if c == "e":
        return j, "\\x1b"
    if c == "c":
        if j >= n:
            raise PatternError("\\c at end of pattern", j)
        ch = p[j]
        if ord(ch) > 127:
            raise PatternError("\\c must be followed by an ASCII character", j)
        return j + 1, _char(ord(ch.upper()) ^ 0x40)
    if c in _UNSUPPORTED or (c == "N" and j < n and p[j] == "{"):
        raise PatternError("PCRE does not support \\L, \\l, \\N{name}, \\U, or \\u", i + 1)
    if c == "Q":
        k = p.find("\\E", j)
        text = p[j:] if k < 0 else p[j:k]
        end = n if k < 0 else k + 2
        return end, "".join(_lit(ch) for ch in text) if not in_class else "".join(
            "\\" + ch if ch in "\\]^-[" else ch for ch in text)
    if c == "E":
        return j, ""
    if c == "h":
        return j, _HSPACE if in_class else f"[{_HSPACE}]"
    if c == "v":
        return j, _VSPACE if in_class else f"[{_VSPACE}]"
    if in_class:
        if c in "HV":
            raise PatternError(f"\\{c} inside a character class is not supported", i + 1)
        if c in "NRX":
            raise PatternError(f"\\{c} is not supported in a class", i + 1)
        if c in _SAME_IN_CLASS:
            return _pass_escape(p, i)
        if c.isalpha():
            return j, c          # an unknown letter escape is the letter itself in PCRE
        return j, "\\" + c
    if c == "H":
        return j, f"[^{_HSPACE}]"
    if c == "V":
        return j, f"[^{_VSPACE}]"
    if c == "Z":
        return j, "(?=\\n?\\Z)"
    if c == "R":
        return j, f"(?:\\r\\n|[{_VSPACE}])"
    if c == "N":
        return j, "[^\\n]"
    if c == "C":
        return j, "(?s:.)"
    if c in "gk":
        return _reference(p, i, ncap)
    if c in _SAME:
        return _pass_escape(p, i)
    if c.isalpha():
        return j, c
    return j, "\\" + c


def _digits(p: str, i: int, ncap: int, in_class: bool):
    """\\digits as PCRE reads them: a back reference if under 8 or if that many groups were opened
    before; else up to three octal digits; \\8 and \\9 are then the digits themselves."""
    n = len(p)
    j = i + 1
    if p[j] != "0" and not in_class:
        k = j
        while k < n and p[k].isdigit():
            k += 1
        num = int(p[j:k])
        if num < 8 or num <= ncap:
            return k, f"(?:\\g<{num}>)"
    if p[j] in "89":
        return j + 1, p[j]
    k = j
    while k < n and k < j + 3 and p[k] in _OCT:
        k += 1
    return k, _char(int(p[j:k], 8) & 0xFF)


def _pass_escape(p: str, i: int):
    """An escape `regex` reads as PCRE does; \\p{..} and \\P{..} keep their braces."""
    c = p[i + 1]
    j = i + 2
    if c in "pP" and j < len(p) and p[j] == "{":
        k = p.find("}", j)
        if k < 0:
            raise PatternError("malformed \\P or \\p sequence", j)
        return k + 1, p[i:k + 1]
    return j, p[i:j]


def _reference(p: str, i: int, ncap: int):
    """\\g{n}, \\gn, \\g{-n}, \\g{name}, \\k<name>, \\k'name', \\k{name}: back references."""
    n = len(p)
    c = p[i + 1]
    j = i + 2
    closers = {"{": "}", "<": ">", "'": "'"}
    if j < n and p[j] in closers:
        k = p.find(closers[p[j]], j + 1)
        if k < 0:
            raise PatternError("\\g is not followed by a braced, angle-bracketed, or quoted name/number "
                               "or by a plain number", j)
        ref, end = p[j + 1:k], k + 1
        if c == "g" and p[j] != "{":
            # \g<..> and \g'..' are subroutine calls in PCRE
            return end, f"(?{ref})" if ref.lstrip("+-").isdigit() else f"(?&{ref})"
    elif c == "g":
        k = j + (1 if j < n and p[j] in "+-" else 0)
        while k < n and p[k].isdigit():
            k += 1
        ref, end = p[j:k], k
    else:
        raise PatternError("\\k is not followed by a braced, angle-bracketed, or quoted name", j)
    if ref.startswith("-") and ref[1:].isdigit():
        num = ncap + 1 - int(ref[1:])
        if num < 1:
            raise PatternError("reference to non-existent subpattern", end)
        return end, f"(?:\\g<{num}>)"
    if ref.isdigit() and c == "g":
        return end, f"(?:\\g<{int(ref)}>)"
    if not ref or not (ref[0].isalpha() or ref[0] == "_") or not all(ch.isalnum() or ch == "_" for ch in ref):
        raise PatternError("syntax error in subpattern name (missing terminator)", end)
    return end, f"(?P={ref})"


def _class(p: str, i: int, ncap: int):
    """Translate the character class opening at p[i] == '['. Returns (next index, text)."""
    n = len(p)
    out = ["["]
    j = i + 1
    if j < n and p[j] == "^":
        out.append("^")
        j += 1
    first = True
    while True:
        if j >= n:
            raise PatternError("missing terminating ] for character class", n)
        c = p[j]
        if c == "]" and not first:
            out.append("]")
            return j + 1, "".join(out)
        first = False
        if c == "\\":
            j, text = _escape(p, j, ncap, True)
            out.append(text)
            continue
        if c == "[":
            if j + 1 < n and p[j + 1] in ".=":
                raise PatternError("POSIX collating elements are not supported", j)
            if j + 1 < n and p[j + 1] == ":":
                k = p.find(":]", j + 2)
                if k > 0:
                    out.append(p[j:k + 2])
                    j = k + 2
                    continue
            out.append("\\[")
            j += 1
            continue
        if c == "]":
            out.append("\\]")
        elif c in "&|~" and j + 1 < n and p[j + 1] == c:
            out.append("\\" + c)       # `regex` may read doubled operators as set operations
        else:
            out.append(c)
        j += 1


def _translate(p: str) -> str:
    """PCRE syntax to `regex` syntax (module docstring), refusing programs too large to compile."""
    out = []
    n = len(p)
    i = 0
    ncap = 0
    names = set()
    # per open group: [size so far, size of the last atom, extended mode]
    stack = [[0, 0, False]]
    total = 0

    def atom(size: int):
        top = stack[-1]
        top[0] += size
        top[1] = size

    while i < n:
        c = p[i]
        top = stack[-1]
        if top[2] and c == "#":                 # (?x) comment up to the end of the line
            k = p.find("\n", i)
            k = n if k < 0 else k
            out.append(p[i:k])
            i = k
            continue
        if top[2] and c in " \t\n\r\f\v":
            out.append(c)
            i += 1
            continue
        if c == "\\":
            i, text = _escape(p, i, ncap, False)
            out.append(text)
            if text:
                atom(1)
            continue
        if c == "[":
            i, text = _class(p, i, ncap)
            out.append(text)
            atom(1)
            continue
        if c == "(":
            if p.startswith("(?#", i):
                k = p.find(")", i)
                if k < 0:
                    raise PatternError("missing ) after comment", n)
                out.append(p[i:k + 1])
                i = k + 1
                continue
            if p.startswith("(*", i):
                k = p.find(")", i)
                verb = p[i + 2:k] if k > 0 else ""
                if verb not in ("FAIL", "F", "ACCEPT", "COMMIT", "PRUNE", "SKIP", "THEN"):
                    raise PatternError(f"(*{verb}) is not supported", i + 1)
                out.append(p[i:k + 1])
                i = k + 1
                atom(1)
                continue
            if len(stack) > MAX_DEPTH:
                raise PatternError("parentheses are too deeply nested", i)
            extended = top[2]
            j = i + 1
            head = "("
            if j < n and p[j] == "?":
                j, head, extended, name, closes = _group_head(p, j, extended, top)
                if name is not None:
                    if name in names:
                        raise PatternError("two named subpatterns have the same name", j)
                    names.add(name)
                    ncap += 1
                if closes:                       # (?i) sets options for the rest of the group
                    out.append(head)
                    i = j
                    continue
            else:
                ncap += 1
            out.append(head)
            stack.append([0, 0, extended])
            i = j
            continue
        if c == ")":
            if len(stack) == 1:
                raise PatternError("unmatched parentheses", i)
            size = stack.pop()[0]
            atom(max(size, 1))
            out.append(")")
            i += 1
            continue
        if c in "*+?":
            out.append(c)
            i += 1
            if i < n and p[i] in "+?":
                out.append(p[i])
                i += 1
            continue
        if c == "{":
            q = _quantifier(p, i)
            if q is None:
                out.append("\\{")
                i += 1
                atom(1)
                continue
            end, lo, hi = q
            if lo > MAX_REPEAT or (hi is not None and hi > MAX_REPEAT):
                raise PatternError("number too big in {} quantifier", end - 1)
            if hi is not None and hi < lo:
                raise PatternError("numbers out of order in {} quantifier", end - 1)
            if lo > 1:
                grow = top[1] * (lo - 1)
                top[0] += grow
                top[1] *= lo
                total += grow
                if total > MAX_UNROLLED:
                    raise PatternError("regular expression is too large", end)
            out.append(p[i:end])
            i = end
            if i < n and p[i] in "+?":
                out.append(p[i])
                i += 1
            continue
        if c == "}":
            out.append("\\}")
            i += 1
            atom(1)
            continue
        out.append(c)
        i += 1
        atom(1)
    if len(stack) > 1:
        raise PatternError("missing )", n)
    return "".join(out)


def _group_head(p: str, j: int, extended: bool, top: list):
    """Read the head of a group opened with '(?' (p[j] == '?'). Returns (index after the head, the
    head as `regex` reads it, extended mode inside, the capture name or None, whether it is an
    option setting such as (?i) that closes at once)."""
    n = len(p)
    k = j + 1
    if k < n and p[k] in ":=!>|":
        return k + 1, p[j - 1:k + 1], extended, None, False
    if p.startswith("<=", k) or p.startswith("<!", k):
        return k + 2, p[j - 1:k + 2], extended, None, False
    if k < n and p[k] in "<'" or p.startswith("P<", k):
        start = k + (2 if p[k] == "P" else 1)
        closer = "'" if p[k] == "'" else ">"
        e = p.find(closer, start)
        if e < 0:
            raise PatternError("syntax error in subpattern name (missing terminator)", n)
        name = p[start:e]
        if not name or not (name[0].isalpha() or name[0] == "_") or \
                not all(ch.isalnum() or ch == "_" for ch in name):
            raise PatternError("syntax error in subpattern name (missing terminator)", e)
        return e + 1, f"(?P<{name}>", extended, name, False
    if k < n and p[k] == "(" or p.startswith("P=", k) or p.startswith("P>", k) or (
            k < n and p[k] in "&R+-0123456789" and not _is_flags(p, k)):
        # a condition, a reference or a recursion: the rest is read as usual
        return k, "(?", extended, None, False
    # option letters: (?imsx-imsx) or (?imsx-imsx:...)
    e = k
    on = True
    ext = extended
    while e < n and p[e] not in ":)":
        ch = p[e]
        if ch in "JUX":
            raise PatternError(f"the (?{ch}) option is not supported", e)
        if ch not in _FLAG_LETTERS:
            raise PatternError("unrecognized character after (? or (?-", e)
        if ch == "-":
            on = False
        elif ch == "x":
            ext = on
        e += 1
    if e >= n:
        raise PatternError("missing )", n)
    if p[e] == ")":
        top[2] = ext                            # for the rest of the enclosing group
        return e + 1, p[j - 1:e + 1], ext, None, True
    return e + 1, p[j - 1:e + 1], ext, None, False


def _is_flags(p: str, k: int) -> bool:
    """Whether p[k:] starts with option letters such as '-i)' (not a relative reference '-1)')."""
    return p[k] == "-" and k + 1 < len(p) and p[k + 1] in "imsxJUX"
