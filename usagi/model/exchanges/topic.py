"""Topic exchange: dot-separated words, '*' matches one word, '#' zero or more.

Binding keys are kept in a trie of words; a routing key is matched by walking it, never by a
regular expression. Results are cached per routing key until the bindings change.
"""
from __future__ import annotations

from .base import Exchange

CACHE_MAX = 4096


def _words(key: str) -> list:
    """An empty key has no words at all (not one empty word), as in RabbitMQ."""
    return key.split(".") if key else []


class _Node:
    __slots__ = ("children", "dests")

    def __init__(self):
        self.children: dict = {}
        self.dests: dict = {}   # id(destination) -> [destination, binding count]


class TopicExchange(Exchange):
    TYPE = "topic"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.root = _Node()
        self.cache: dict = {}

    def _index_add(self, b):
        node = self.root
        for word in _words(b.routing_key):
            nxt = node.children.get(word)
            if nxt is None:
                nxt = node.children[word] = _Node()
            node = nxt
        entry = node.dests.get(id(b.destination))
        if entry is None:
            node.dests[id(b.destination)] = [b.destination, 1]
        else:
            entry[1] += 1
        self.cache.clear()

    def _index_remove(self, b):
        path = [self.root]
        node = self.root
        words = _words(b.routing_key)
        for word in words:
            node = node.children.get(word)
            if node is None:
                return
            path.append(node)
        entry = node.dests.get(id(b.destination))
        if entry is not None:
            entry[1] -= 1
            if entry[1] <= 0:
                del node.dests[id(b.destination)]
        # prune empty nodes
        for i in range(len(words), 0, -1):
            n = path[i]
            if n.dests or n.children:
                break
            del path[i - 1].children[words[i - 1]]
        self.cache.clear()

    def route(self, routing_key, msg):
        cached = self.cache.get(routing_key)
        if cached is not None:
            return cached
        found: dict = {}
        words = _words(routing_key)
        self._match(self.root, words, 0, found, set())
        result = [d for d, _ in found.values()]
        if len(self.cache) >= CACHE_MAX:
            self.cache.clear()
        self.cache[routing_key] = result
        return result

    def _match(self, node, words, i, found, seen):
        # `seen` stops revisiting a (node, position) pair, which bounds the work for keys with
        # many '#' words.
        key = (id(node), i)
        if key in seen:
            return
        seen.add(key)
        children = node.children
        if i == len(words):
            for k, entry in node.dests.items():
                found[k] = entry
            h = children.get("#")
            if h is not None:
                self._match(h, words, i, found, seen)
            return
        w = words[i]
        c = children.get(w)
        if c is not None:
            self._match(c, words, i + 1, found, seen)
        c = children.get("*")
        if c is not None:
            self._match(c, words, i + 1, found, seen)
        h = children.get("#")
        if h is not None:
            # '#' consumes zero or more words
            for j in range(i, len(words) + 1):
                self._match(h, words, j, found, seen)
