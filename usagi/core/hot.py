"""Which form of the hot path runs: the compiled module or its pure-Python source.

core/fastpath.py is the one source of the hot path. `pip install` compiles it (setup.py) into
`usagi.core._fastpath` when Cython and a C compiler are at hand. This module picks that one when
it is there, it was built from the fastpath.py and fastpath.pxd beside it (the hash it carries
matches), the model runs on the compiled form of its hot fields (usagi.model.state), and
USAGI_PURE_PYTHON is not set; else the pure-Python module, with a warning when a build exists but
cannot be used. The server logs `DESCRIPTION` at start.
"""
from __future__ import annotations

import os

from ..model import state as model_state
from . import fastpath as _source

fastpath = _source
COMPILED = False
DESCRIPTION = "pure Python"
WARNING = None           # why a compiled hot path exists but is not used (logged by the server)


def _pick():
    global fastpath, COMPILED, DESCRIPTION, WARNING
    if os.environ.get("USAGI_PURE_PYTHON", "") not in ("", "0"):
        DESCRIPTION = "pure Python (USAGI_PURE_PYTHON is set)"
        return
    WARNING = model_state.WARNING
    if not model_state.COMPILED:
        # the compiled hot path reads the model's hot fields as C fields: it needs their compiled form
        DESCRIPTION = "pure Python (the model's hot fields are not compiled)"
        return
    try:
        from . import _fastpath as built
    except ImportError:
        DESCRIPTION = "pure Python (no compiled module: it is built by pip install with Cython and a C compiler)"
        return
    # its C code reads the model's fields as hotstate.pxd lays them out: that file is in its hash
    current = model_state.source_digest(_source.__file__, model_state.HOTSTATE_PXD)
    if current is not None and getattr(built, "SOURCE_SHA256", None) != current:
        WARNING = ("the compiled hot path was built from another version of core/fastpath.py; running the "
                   "source instead (reinstall to rebuild it)")
        DESCRIPTION = "pure Python (the compiled module is stale)"
        return
    fastpath = built
    COMPILED = True
    DESCRIPTION = "compiled (Cython): the hot path and the model's hot fields"


_pick()
