"""Build step of the package: compiles the hot path (usagi/core/fastpath.py) and the hot fields of
the model (usagi/model/hotstate.py) with Cython when it can.

Everything else is declared in pyproject.toml. The compiled modules are `usagi.core._fastpath` and
`usagi.model._hotstate`, each made from a copy of its source (with the C declarations of its .pxd)
that carries the hash of what it was built from, so that a tree whose source changed after the
build runs the source rather than a stale build (usagi/core/hot.py and usagi/model/state.py check
it). Without Cython or a C compiler, or with USAGI_PURE_PYTHON=1, nothing is compiled and the
install goes on with the pure-Python modules: a failed compilation is a warning, never a failed
install.
"""
import hashlib
import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
# (source, compiled module, further declarations its C code depends on): the hot fields of the
# model first, then the hot path, which reads them as C fields (its .pxd cimports hotstate's)
MODULES = (
    (os.path.join("usagi", "model", "hotstate.py"), "usagi.model._hotstate", ()),
    (os.path.join("usagi", "core", "fastpath.py"), "usagi.core._fastpath",
     (os.path.join("usagi", "model", "hotstate.pxd"),)),
)


def _warn(text):
    sys.stderr.write("WARNING: usagi: %s; the pure-Python hot path will run\n" % text)


def _read(path):
    with open(os.path.join(HERE, path), "rb") as f:
        return f.read()


def _write_if_changed(path, data):
    if os.path.exists(path):
        with open(path, "rb") as f:
            if f.read() == data:
                return
    with open(path, "wb") as f:
        f.write(data)


def _copy(root, source, module, deps):
    """The copy of `source` that Cython compiles as `module`, carrying the hash of the source, its
    .pxd and `deps` (as usagi/model/state.py, source_digest, computes it), in a package tree
    of its own (so that Cython names it `module` and finds the .pxd files beside it)."""
    src = _read(source)
    decl = _read(source[:-3] + ".pxd")
    digest = hashlib.sha256(src + decl + b"".join(_read(d) for d in deps)).hexdigest()
    parts = module.split(".")
    gen = os.path.join(root, *parts[:-1])
    os.makedirs(gen, exist_ok=True)
    for i in range(1, len(parts)):
        init = os.path.join(root, *parts[:i], "__init__.py")
        if not os.path.exists(init):
            open(init, "w").close()
    copy = os.path.join(gen, parts[-1] + ".py")
    _write_if_changed(copy, src + b'\nSOURCE_SHA256 = "%s"\n' % digest.encode())
    _write_if_changed(copy[:-3] + ".pxd", decl)
    return copy


def _extensions():
    if os.environ.get("USAGI_PURE_PYTHON", "") not in ("", "0"):
        return []
    try:
        from Cython.Build import cythonize
        from setuptools import Extension
    except ImportError:
        _warn("Cython is not installed")
        return []
    try:
        root = os.path.join(HERE, "build", "cython")
        exts = [Extension(module, [os.path.relpath(_copy(root, source, module, deps), HERE)])
                for source, module, deps in MODULES]
        return cythonize(exts, quiet=True, language_level=3, include_path=[root],
                         compiler_directives={"binding": True, "wraparound": False})
    except Exception as e:       # a Cython error must not fail the install
        _warn("the hot path could not be translated to C (%s)" % e)
        return []


class OptionalBuildExt(build_ext):
    """build_ext that warns instead of failing (no compiler, no Python headers, a compiler error)."""

    def run(self):
        try:
            super().run()
        except Exception as e:
            _warn("the C extension could not be built (%s)" % e)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as e:
            _warn("%s could not be compiled (%s)" % (ext.name, e))


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
