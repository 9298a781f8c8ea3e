"""The hot fields held as C fields when compiled (model/hotstate.pxd, core/fastpath.pxd).

Compiled, a field listed in a .pxd is a C field of the base class, which the compiled hot path
reads at its offset. A subclass that defined the same name again (a property, a class attribute)
would hide the C field from Python code but not from the compiled code, and the two would see
different values: nothing may do that. The field lists are read from the .pxd files, so these
tests check the same thing whichever form runs.
"""
from __future__ import annotations

import importlib
import os
import pkgutil
import re
import types

import usagi
from usagi.core import fastpath as fastpath_source
from usagi.core import hot
from usagi.core.broker import Broker
from usagi.core.channel import Channel
from usagi.core.connection import Connection
from usagi.model import hotstate, state
from usagi.model.exchanges.base import Exchange
from usagi.model.message import Message
from usagi.model.queue import Consumer, PriorityQueue, Queue

_CLASS = re.compile(r"^cdef class (\w+):")
_FIELDS = re.compile(r"^\s+cdef public object (.+)$")


def pxd_fields(module) -> dict:
    """{class name: set of field names} of the .pxd beside a module's source."""
    out: dict = {}
    name = None
    with open(module.__file__[:-3] + ".pxd") as f:
        for line in f:
            m = _CLASS.match(line)
            if m:
                name = m.group(1)
                out[name] = set()
                continue
            m = _FIELDS.match(line)
            if m and name:
                out[name] |= {n.strip() for n in m.group(1).split(",")}
    return out


def all_subclasses(cls) -> list:
    out, todo = [], [cls]
    while todo:
        for sub in todo.pop().__subclasses__():
            out.append(sub)
            todo.append(sub)
    return out


def _import_everything():
    for info in pkgutil.walk_packages(usagi.__path__, "usagi."):
        if info.name.endswith(("__main__", "._fastpath", "._hotstate")):
            continue
        importlib.import_module(info.name)


BASES = {
    "MessageState": (state.MessageState, hotstate),
    "QueueState": (state.QueueState, hotstate),
    "ConsumerState": (state.ConsumerState, hotstate),
    "ExchangeState": (state.ExchangeState, hotstate),
    "BrokerState": (hot.fastpath.BrokerState, fastpath_source),
    "ConnectionState": (hot.fastpath.ConnectionState, fastpath_source),
    "ChannelState": (hot.fastpath.ChannelState, fastpath_source),
}


def test_the_pxd_files_declare_every_base():
    assert set(pxd_fields(hotstate)) == {"MessageState", "QueueState", "ConsumerState", "ExchangeState"}
    assert {"BrokerState", "ConnectionState", "ChannelState", "Unacked"} <= set(pxd_fields(fastpath_source))
    # the classes the engine and the model are built on
    assert issubclass(Message, state.MessageState) and issubclass(Consumer, state.ConsumerState)
    assert issubclass(Queue, state.QueueState) and issubclass(Broker, hot.fastpath.BrokerState)
    assert issubclass(Exchange, state.ExchangeState)
    assert issubclass(Connection, hot.fastpath.ConnectionState)
    assert issubclass(Channel, hot.fastpath.ChannelState)


def test_no_subclass_defines_a_c_field_again():
    _import_everything()
    decl = {**pxd_fields(hotstate), **pxd_fields(fastpath_source)}
    found = []
    for name, (base, _) in BASES.items():
        subs = all_subclasses(base)
        assert subs, name
        for sub in subs:
            for klass in sub.__mro__:
                if klass is base:
                    break
                for field in decl[name] & set(vars(klass)):
                    if isinstance(vars(klass)[field], types.MemberDescriptorType) and not hasattr(base, field):
                        continue       # pure Python: the field is a slot of the subclass, as intended
                    found.append(f"{klass.__qualname__}.{field} hides {name}.{field}")
    assert not found, found


def test_a_field_hidden_by_a_subclass_is_found():
    # the check above would see it: a queue class with a property named like a C field
    class Hiding(Queue):
        @property
        def seq(self):
            return 0
    decl = pxd_fields(hotstate)["QueueState"]
    assert "seq" in decl and "seq" in vars(Hiding)
    del Hiding


def test_the_fields_are_c_fields_exactly_when_compiled():
    decl = pxd_fields(hotstate)
    for name in ("MessageState", "QueueState", "ConsumerState", "ExchangeState"):
        base = getattr(state, name)
        held = {f for f in decl[name] if hasattr(base, f)}
        assert held == (decl[name] if state.COMPILED else set()), name
    # the slot classes keep the rest in slots of their own, and no dictionary in either form
    assert not set(Message.__slots__) & decl["MessageState"] if state.COMPILED else \
        decl["MessageState"] <= set(Message.__slots__)
    for obj in (Message("x", "k", b"\x00\x00", b"body"), Consumer("t", None, None, False, False, 0, {})):
        assert not hasattr(obj, "__dict__"), type(obj)
    # a queue keeps its other fields in its dictionary, the hot ones not (compiled)
    q = Queue("/", "q")
    assert ("seq" in vars(q)) is not state.COMPILED
    assert "vhost" in vars(q)


def test_the_compiled_hot_path_runs_only_on_the_compiled_fields():
    assert not hot.COMPILED or state.COMPILED
    if os.environ.get("USAGI_PURE_PYTHON", "") not in ("", "0"):
        assert not hot.COMPILED and not state.COMPILED


def test_every_subclass_reads_and_writes_the_same_value():
    # the general path (Python) and the compiled hot path see one value per field
    for q in (Queue("/", "a"), PriorityQueue("/", "b", arguments={"x-max-priority": 3})):
        q.seq = 7
        q.push(Message("", "k", b"\x00\x00", b"x"))
        assert q.seq == 8 and q.published == 1 and q.message_count == 1


def test_both_forms_take_the_same_arguments():
    # compiled, an annotated argument would be type-checked: the constructor and the append take
    # what the pure-Python form takes
    m = Message("", "k", bytearray(b"\x00\x00"), memoryview(b"ab"), None, None)
    assert bytes(m.body) == b"ab" and m.id is None and m.route == b"\x00\x01k"
    m = Message(b"", b"k", b"\x00\x00", b"x", None, 3, bytearray(b"\x00\x01k"))
    assert m.exchange == b"" and m.route == b"\x00\x01k"
    q = Queue("/", "q")
    assert q.push(Message("", "k", b"\x00\x00", b"x"), None) == 1
    assert q.push(Message("", "k", b"\x00\x00", b"y"), 0.0) == 2
    assert [msg.body for _, msg in q.ready] == [b"x", b"y"]
