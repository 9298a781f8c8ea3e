"""Which form of the hot fields' base classes (model/hotstate.py) the model runs on.

The compiled module `usagi.model._hotstate` is used when it is there, it was built from the
hotstate.py and hotstate.pxd beside it (the hash it carries matches), and USAGI_PURE_PYTHON is
not set; else the pure-Python classes. Message, Queue, Consumer and Exchange take their base from here at
import, so one process runs one form throughout. `usagi.core.hot` runs the compiled hot path only
on the compiled form (it reads these fields as C fields).
"""
from __future__ import annotations

import hashlib
import os

from . import hotstate as _source

COMPILED = False
WARNING = None           # why a compiled module exists but is not used (logged by the server)


HOTSTATE_PXD = _source.__file__[:-3] + ".pxd"


def source_digest(source: str, *deps: str) -> str | None:
    """The hash setup.py gives a compiled module (usagi.model._hotstate, usagi.core._fastpath): of
    its source, the .pxd beside it and the declarations `deps` its C code depends on; None when a
    file is missing (installed without its source: the build is all there is)."""
    parts = []
    try:
        for path in (source, source[:-3] + ".pxd") + deps:
            with open(path, "rb") as f:
                parts.append(f.read())
    except OSError:
        return None
    return hashlib.sha256(b"".join(parts)).hexdigest()


def _pick():
    global COMPILED, WARNING
    if os.environ.get("USAGI_PURE_PYTHON", "") not in ("", "0"):
        return _source
    try:
        from . import _hotstate as built
    except ImportError:
        return _source
    current = source_digest(_source.__file__)
    if current is not None and getattr(built, "SOURCE_SHA256", None) != current:
        WARNING = ("the compiled model state was built from another version of model/hotstate.py; running "
                   "the source instead (reinstall to rebuild it)")
        return _source
    COMPILED = True
    return built


_form = _pick()
MessageState = _form.MessageState
QueueState = _form.QueueState
ConsumerState = _form.ConsumerState
ExchangeState = _form.ExchangeState


def own_slots(base, names: tuple) -> tuple:
    """The names of `names` that a subclass of `base` keeps in slots of its own: those the base
    does not hold as C fields (all of them on the pure-Python form)."""
    return tuple(n for n in names if not hasattr(base, n))
