"""A small PromQL evaluator for the tests: enough of the language to run the queries of RabbitMQ's
Grafana dashboards against scrapes of a broker's /metrics, as Prometheus would.

Supported: instant and range selectors with label matchers (=, !=, =~, !~), rate / irate /
increase over two scrapes, sum / count / min / max / avg with `by (...)` or `without (...)`
before or after the argument, sort / sort_desc, binary + - * / between vectors and scalars with
`on (...)` / `ignoring (...)` and `group_left (...)` / `group_right (...)`, parentheses, numbers.

`Scrapes` holds the scrapes (exposition text parsed, each series given the target labels
`instance` and `job` as Prometheus adds them); `evaluate(expr, scrapes)` answers at the time of
the last scrape. Range functions see the scrapes taken within their range (all of them here).
"""
from __future__ import annotations

import math
import re

_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$')
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def _unescape(v: str) -> str:
    return v.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")


def parse_exposition(text: str) -> tuple[dict, list]:
    """({family: (type, help)}, [(labels dict with __name__, value)]) of a text exposition."""
    families = {}
    samples = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            families.setdefault(name, [None, None])[0] = kind
            continue
        if line.startswith("# HELP "):
            parts = line.split(" ", 3)
            families.setdefault(parts[2], [None, None])[1] = parts[3] if len(parts) > 3 else ""
            continue
        if line.startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            raise ValueError(f"bad exposition line: {line!r}")
        name, lab, value = m.groups()
        labels = {"__name__": name}
        if lab:
            pos = 0
            while pos < len(lab):
                lm = _LABEL.match(lab, pos)
                if not lm:
                    raise ValueError(f"bad labels in line: {line!r}")
                labels[lm.group(1)] = _unescape(lm.group(2))
                pos = lm.end()
        samples.append((labels, float(value)))
    return {k: tuple(v) for k, v in families.items()}, samples


class Scrapes:
    """Scrapes of one target: [(time, {series key: (labels, value)})]."""

    def __init__(self, instance: str = "usagi:15692", job: str = "rabbitmq"):
        self.target = {"instance": instance, "job": job}
        self.points: list = []
        self.families: dict = {}

    def add(self, t: float, text: str):
        fams, samples = parse_exposition(text)
        self.families.update(fams)
        series = {}
        for labels, value in samples:
            labels = {**labels, **self.target}
            series[_key(labels)] = (labels, value)
        self.points.append((t, series))


def _key(labels: dict) -> tuple:
    return tuple(sorted(labels.items()))


# ---------------------------------------------------------------------------------------- parsing

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<num>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<str>"(?:[^"\\]|\\.)*")
  | (?P<op>=~|!~|!=|==|[-+*/(){}\[\],=])
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
""", re.VERBOSE)
_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d|w|y)$")
AGGREGATIONS = {"sum", "count", "min", "max", "avg"}
RANGE_FUNCTIONS = {"rate", "irate", "increase"}
FUNCTIONS = RANGE_FUNCTIONS | {"sort", "sort_desc"}


def tokens(text: str) -> list:
    out = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise SyntaxError(f"unexpected {text[pos:pos + 20]!r}")
        pos = m.end()
        kind = m.lastgroup
        if kind != "ws":
            out.append((kind, m.group()))
    return out


class Parser:
    def __init__(self, text: str):
        self.toks = tokens(text)
        self.i = 0

    def peek(self, k: int = 0):
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else (None, None)

    def take(self, value: str | None = None):
        tok = self.peek()
        if value is not None and tok[1] != value:
            raise SyntaxError(f"expected {value!r}, got {tok[1]!r}")
        self.i += 1
        return tok

    def parse(self):
        node = self.expr()
        if self.i != len(self.toks):
            raise SyntaxError(f"trailing {self.peek()[1]!r}")
        return node

    def expr(self):
        node = self.term()
        while self.peek()[1] in ("+", "-"):
            op = self.take()[1]
            node = ("bin", op, node, *self.matching(), self.term())
        return node

    def term(self):
        node = self.unary()
        while self.peek()[1] in ("*", "/"):
            op = self.take()[1]
            node = ("bin", op, node, *self.matching(), self.unary())
        return node

    def matching(self):
        """on(...) / ignoring(...) and group_left(...) / group_right(...) after an operator."""
        on = ignoring = group = None
        extra = ()
        if self.peek()[1] in ("on", "ignoring"):
            which = self.take()[1]
            labels = self.label_list()
            if which == "on":
                on = labels
            else:
                ignoring = labels
            if self.peek()[1] in ("group_left", "group_right"):
                group = self.take()[1]
                extra = self.label_list() if self.peek()[1] == "(" else ()
        return (on, ignoring, group, extra)

    def label_list(self) -> tuple:
        self.take("(")
        out = []
        while self.peek()[1] != ")":
            out.append(self.take()[1])
            if self.peek()[1] == ",":
                self.take()
        self.take(")")
        return tuple(out)

    def unary(self):
        if self.peek()[1] == "-":
            self.take()
            return ("bin", "*", ("num", -1.0), None, None, None, (), self.unary())
        return self.primary()

    def primary(self):
        kind, val = self.peek()
        if val == "(":
            self.take()
            node = self.expr()
            self.take(")")
            return node
        if kind == "num":
            self.take()
            return ("num", float(val))
        if kind != "ident":
            raise SyntaxError(f"unexpected {val!r}")
        if val in AGGREGATIONS:
            self.take()
            grouping = None
            if self.peek()[1] in ("by", "without"):
                grouping = (self.take()[1], self.label_list())
            self.take("(")
            arg = self.expr()
            self.take(")")
            if self.peek()[1] in ("by", "without"):
                grouping = (self.take()[1], self.label_list())
            return ("agg", val, grouping, arg)
        if val in FUNCTIONS and self.peek(1)[1] == "(":
            self.take()
            self.take("(")
            arg = self.expr()
            self.take(")")
            return ("fn", val, arg)
        return self.selector()

    def selector(self):
        name = self.take()[1]
        matchers = [("__name__", "=", name)]
        if self.peek()[1] == "{":
            self.take()
            while self.peek()[1] != "}":
                label = self.take()[1]
                op = self.take()[1]
                kind, value = self.take()
                if kind != "str":
                    raise SyntaxError(f"label value for {label} is not a string")
                matchers.append((label, op, _unescape(value[1:-1])))
                if self.peek()[1] == ",":
                    self.take()
            self.take("}")
        rng = None
        if self.peek()[1] == "[":
            self.take()
            parts = []
            while self.peek()[1] != "]":
                parts.append(self.take()[1])
            self.take("]")
            rng = _seconds("".join(parts))
        return ("sel", tuple(matchers), rng)


def _seconds(text: str) -> float:
    m = _DURATION.match(text)
    if not m:
        raise SyntaxError(f"bad duration {text!r}")
    n = int(m.group(1))
    return n * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}[m.group(2)]


def names(node) -> set:
    """The metric names a parsed expression selects."""
    if node[0] == "sel":
        return {node[1][0][2]}
    if node[0] == "num":
        return set()
    if node[0] == "bin":
        return names(node[2]) | names(node[7])
    return names(node[-1])


# ---------------------------------------------------------------------------------------- evaluation

def _matches(labels: dict, matchers) -> bool:
    for label, op, value in matchers:
        v = labels.get(label, "")
        if op == "=" and v != value:
            return False
        if op == "!=" and v == value:
            return False
        if op == "=~" and not re.fullmatch(value, v):
            return False
        if op == "!~" and re.fullmatch(value, v):
            return False
    return True


def _drop_name(labels: dict) -> dict:
    return {k: v for k, v in labels.items() if k != "__name__"}


def evaluate(expr: str, scrapes: Scrapes):
    """A float (scalar) or a list of (labels, value) (instant vector) at the last scrape."""
    return _eval(Parser(expr).parse(), scrapes)


def _eval(node, s: Scrapes):
    kind = node[0]
    if kind == "num":
        return node[1]
    if kind == "sel":
        _k, matchers, rng = node
        if rng is not None:
            raise ValueError("a range vector must be the argument of a range function")
        t, series = s.points[-1]
        return [(dict(lab), v) for lab, v in series.values() if _matches(lab, matchers)]
    if kind == "fn":
        _k, fn, arg = node
        if fn in RANGE_FUNCTIONS:
            return _range_fn(fn, arg, s)
        v = _eval(arg, s)
        return sorted(v, key=lambda lv: lv[1], reverse=(fn == "sort_desc"))
    if kind == "agg":
        return _aggregate(node, s)
    if kind == "bin":
        return _binary(node, s)
    raise ValueError(f"unknown node {kind}")


def _range_fn(fn: str, arg, s: Scrapes):
    if arg[0] != "sel" or arg[2] is None:
        raise ValueError(f"{fn} needs a range selector")
    matchers = arg[1]
    if len(s.points) < 2:
        return []
    (t0, first), (t1, last) = s.points[0], s.points[-1]
    out = []
    for key, (lab, v1) in last.items():
        if not _matches(lab, matchers) or key not in first:
            continue
        v0 = first[key][1]
        delta = v1 - v0 if v1 >= v0 else v1       # a counter reset starts again from 0
        value = delta if fn == "increase" else delta / (t1 - t0)
        out.append((_drop_name(lab), value))
    return out


def _aggregate(node, s: Scrapes):
    _k, op, grouping, arg = node
    v = _eval(arg, s)
    if not isinstance(v, list):
        raise ValueError(f"{op} of a scalar")
    groups: dict = {}
    for lab, value in v:
        if grouping is None:
            glab = {}
        elif grouping[0] == "by":
            glab = {k: lab[k] for k in grouping[1] if k in lab}
        else:
            glab = {k: x for k, x in _drop_name(lab).items() if k not in grouping[1]}
        groups.setdefault(_key(glab), (glab, []))[1].append(value)
    out = []
    for glab, values in groups.values():
        if op == "sum":
            r = sum(values)
        elif op == "count":
            r = float(len(values))
        elif op == "min":
            r = min(values)
        elif op == "max":
            r = max(values)
        else:
            r = sum(values) / len(values)
        out.append((glab, r))
    return out


def _apply(op: str, a: float, b: float) -> float:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if b == 0:
        return math.nan if a == 0 else math.copysign(math.inf, a)
    return a / b


def _binary(node, s: Scrapes):
    _k, op, left, on, ignoring, group, extra, right = node
    lv, rv = _eval(left, s), _eval(right, s)
    if not isinstance(lv, list) and not isinstance(rv, list):
        return _apply(op, lv, rv)
    if not isinstance(lv, list):
        return [(_drop_name(lab), _apply(op, lv, v)) for lab, v in rv]
    if not isinstance(rv, list):
        return [(_drop_name(lab), _apply(op, v, rv)) for lab, v in lv]

    def signature(lab):
        lab = _drop_name(lab)
        if on is not None:
            return tuple((k, lab.get(k, "")) for k in on)
        ign = set(ignoring or ())
        return tuple(sorted((k, v) for k, v in lab.items() if k not in ign))

    many, one = (lv, rv) if group != "group_right" else (rv, lv)
    index: dict = {}
    for lab, v in one:
        sig = signature(lab)
        if sig in index:
            raise ValueError(f"many-to-many matching: more than one series for {sig} on one side")
        index[sig] = (lab, v)
    out = []
    seen = set()
    for lab, v in many:
        sig = signature(lab)
        hit = index.get(sig)
        if hit is None:
            continue
        if group is None:
            if sig in seen:
                raise ValueError(f"many-to-one matching without group_left/group_right for {sig}")
            seen.add(sig)
        olab, ov = hit
        res = _drop_name(lab)
        if group is None and on is not None:
            res = {k: res[k] for k in on if k in res}
        for k in extra:
            if k in olab:
                res[k] = olab[k]
        value = _apply(op, v, ov) if group != "group_right" else _apply(op, ov, v)
        out.append((res, value))
    return out
