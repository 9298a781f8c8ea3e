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


def source_digest() -> str | None:
    """The hash setup.py gives the compiled module: of hotstate.py and hotstate.pxd."""
    try:
        with open(_source.__file__, "rb") as f:
            src = f.read()
        with open(_source.__file__[:-3] + ".pxd", "rb") as f:
            decl = f.read()
    except OSError:
        return None          # installed without its source: the build is all there is
    return hashlib.sha256(src + decl).hexdigest()


def _pick():
    global COMPILED, WARNING
    if os.environ.get("USAGI_PURE_PYTHON", "") not in ("", "0"):
        return _source
    try:
        from . import _hotstate as built
    except ImportError:
        return _source
    current = source_digest()
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
