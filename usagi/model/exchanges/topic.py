"""Topic exchange: dot-separated words, '*' matches one word, '#' zero or more.

Binding keys are kept in a trie of words; a routing key is matched by walking it, never by a
regular expression. Results are cached per routing key until the bindings change.

The cost of one publish must not depend on how cleverly a user crafted the bindings (the event
loop is shared by every client), so:

* Binding keys are normalised for matching: in a run of wildcard words, '#' and '*' commute and
  '#.#' is '#', so every run becomes its '*' words followed by at most one '#' ('#.#' -> '#',
  '#.*' -> '*.#', '*.#.*.#' -> '*.*.#'). The binding itself keeps the key as given. A '#' is then
  never followed by '#' or '*'.
* The trie is path-compressed: a chain of words with no branch and no binding ending inside it is
  one segment. Within a segment the positions matched so far are the bits of an integer, advanced
  for a routing word by a few integer operations (shift-and, with '#' as a position that loops on
  any word), whatever the segment's length (at most 128 words: a key is a shortstr).
* Matching runs each segment reached once over the routing words, parents before children (no
  recursion, no backtracking): one publish costs O(S x W) steps of a few integer operations, S the
  segments reached (at most twice the bindings, plus one) and W the words of the routing key (at
  most 256: 255 bytes), plus the size of the result. One binding, however crafted, is one or two
  segments: a few hundred steps.
* The routing cache holds at most CACHE_MAX keys and CACHE_DESTS destination references in all,
  so its memory is bounded whatever the number of bindings or keys.
"""
from __future__ import annotations

from .base import Exchange

CACHE_MAX = 4096        # routing keys remembered
CACHE_DESTS = 262144    # destination references held by the cache in all (results can be large)


def _words(key: str) -> list:
    """An empty key has no words at all (not one empty word), as in RabbitMQ."""
    return key.split(".") if key else []


def pattern(key: str) -> list:
    """The words a binding key matches with: each run of '*' and '#' words becomes its '*' words
    followed by one '#' if the run had any (it matches the same routing keys)."""
    out = []
    stars = 0
    hashed = False
    for w in _words(key):
        if w == "*":
            stars += 1
        elif w == "#":
            hashed = True
        else:
            if stars or hashed:
                out += ["*"] * stars
                if hashed:
                    out.append("#")
                stars, hashed = 0, False
            out.append(w)
    if stars or hashed:
        out += ["*"] * stars
        if hashed:
            out.append("#")
    return out


class _Seg:
    """A run of pattern words with no branch inside, and what hangs off its end.

    Bit i of a segment's state means "the first i words of the segment are matched"; bit n (its
    `end`) that all are. For a routing word w the state advances as
        next = ((state & lit.get(w, star)) << 1) | (state & loop)
        next |= (next & hashes) << 1
    where lit[w] and star mark the positions whose word takes w (lit[w] includes star), `loop` the
    positions just after a '#' (a '#' goes on taking words), and the second line lets a '#' match no
    word at all."""

    __slots__ = ("words", "lit", "star", "hashes", "loop", "end", "enter", "children", "hchild", "dests")

    def __init__(self, words: list):
        self.children: dict = {}     # first word of the child segment -> child
        self.hchild = None           # children.get("#")
        self.dests: dict = {}        # id(destination) -> [destination, binding count], at the end
        self.set_words(words)

    def set_words(self, words: list):
        self.words = words
        lit: dict = {}
        star = hashes = 0
        for i, w in enumerate(words):
            if w == "*":
                star |= 1 << i
            elif w == "#":
                hashes |= 1 << i
            else:
                lit[w] = lit.get(w, 0) | (1 << i)
        for w in lit:
            lit[w] |= star           # lit[w]: the positions that take w (a '*' takes any word)
        self.lit = lit
        self.star = star
        self.hashes = hashes
        self.loop = hashes << 1
        self.end = 1 << len(words)
        # the state of the segment once its first word has taken a routing word
        self.enter = 6 if hashes & 2 else 2

    def put_child(self, child: "_Seg"):
        first = child.words[0]
        self.children[first] = child
        if first == "#":
            self.hchild = child

    def drop_child(self, first: str):
        del self.children[first]
        if first == "#":
            self.hchild = None


class TopicExchange(Exchange):
    TYPE = "topic"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.root = _Seg([])
        self.cache: dict = {}
        self.cached_dests = 0

    # -- the trie
    def _index_add(self, b):
        p = pattern(b.routing_key)
        seg = self.root
        i = 0
        while i < len(p):
            child = seg.children.get(p[i])
            if child is None:
                child = _Seg(p[i:])
                seg.put_child(child)
                seg = child
                break
            words = child.words
            k = 1
            while k < len(words) and i + k < len(p) and words[k] == p[i + k]:
                k += 1
            if k < len(words):
                # the new key leaves (or ends inside) this segment: split it there
                head = _Seg(words[:k])
                child.set_words(words[k:])
                head.put_child(child)
                seg.put_child(head)
                child = head
            seg = child
            i += k
        entry = seg.dests.get(id(b.destination))
        if entry is None:
            seg.dests[id(b.destination)] = [b.destination, 1]
        else:
            entry[1] += 1
        self._forget()

    def _index_remove(self, b):
        p = pattern(b.routing_key)
        path = [self.root]
        seg = self.root
        i = 0
        while i < len(p):
            seg = seg.children.get(p[i])
            if seg is None or seg.words != p[i:i + len(seg.words)]:
                return
            path.append(seg)
            i += len(seg.words)
        entry = seg.dests.get(id(b.destination))
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] > 0:
            return
        del seg.dests[id(b.destination)]
        self._forget()
        # prune segments left with nothing, then merge a segment with its only child when no
        # binding ends between them, so that segments stay as long as they can
        j = len(path) - 1
        while j > 0 and not path[j].dests and not path[j].children:
            path[j - 1].drop_child(path[j].words[0])
            j -= 1
        seg = path[j]
        if j > 0 and not seg.dests and len(seg.children) == 1:
            (child,) = seg.children.values()
            seg.set_words(seg.words + child.words)
            seg.children, seg.hchild, seg.dests = child.children, child.hchild, child.dests

    def _forget(self):
        self.cache.clear()
        self.cached_dests = 0

    # -- routing
    def route(self, routing_key, msg):
        cached = self.cache.get(routing_key)
        if cached is not None:
            return cached
        result = self.match(routing_key)
        n = len(result) + 1
        if len(self.cache) >= CACHE_MAX or self.cached_dests + n > CACHE_DESTS:
            self._forget()
        if n <= CACHE_DESTS:
            self.cache[routing_key] = result
            self.cached_dests += n
        return result

    def match(self, routing_key: str) -> list:
        """The destinations whose binding keys match, each once (no cache).

        Each segment reached is run once over the routing words from where it is first entered,
        its state advanced word by word (see _Seg), with the states it is entered with at later
        positions OR-ed in; wherever it is matched to its end, the children whose first word takes
        the next word are entered at the next position, and a '#' child at the same one (a '#'
        may match no word). Segments are run parents first (a breadth-first order of the tree),
        so each is run once: O(segments reached x words) steps, each a few integer operations.
        A segment is entered only by its parent, at rising positions, so its entries are a flat
        list [position, state, position, state, ...] in order."""
        words = _words(routing_key)
        n = len(words)
        entries = {self.root: [0, 1]}
        order = [self.root]
        found: dict = {}
        i = 0
        while i < len(order):
            seg = order[i]
            i += 1
            ent = entries.pop(seg)
            k, ne = 2, len(ent)
            t, bits = ent[0], ent[1]
            lit_get, star, loop, hashes, end = seg.lit.get, seg.star, seg.loop, seg.hashes, seg.end
            children, hchild = seg.children, seg.hchild
            while True:
                if bits & end:
                    if hchild is not None:
                        e = entries.get(hchild)
                        if e is None:
                            entries[hchild] = [t, 2]
                            order.append(hchild)
                        elif e[-2] == t:
                            e[-1] |= 2
                        else:
                            e += (t, 2)
                    if t == n:
                        if seg.dests:
                            found.update(seg.dests)
                        break
                    if children:
                        w = words[t]
                        c = children.get(w)
                        if c is not None:
                            e = entries.get(c)
                            if e is None:
                                entries[c] = [t + 1, c.enter]
                                order.append(c)
                            else:
                                e += (t + 1, c.enter)
                        c = children.get("*")
                        if c is not None and w != "*":
                            e = entries.get(c)
                            if e is None:
                                entries[c] = [t + 1, c.enter]
                                order.append(c)
                            else:
                                e += (t + 1, c.enter)
                elif t == n:
                    break
                if bits:
                    bits = ((bits & lit_get(words[t], star)) << 1) | (bits & loop)
                    if bits:
                        bits |= (bits & hashes) << 1
                    t += 1
                elif k < ne:
                    t = ent[k]              # nothing matched here: on to where it is entered next
                else:
                    break
                if k < ne and ent[k] == t:
                    bits |= ent[k + 1]
                    k += 2
        return [d for d, _ in found.values()]
