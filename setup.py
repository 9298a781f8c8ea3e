"""Build step of the package: compiles the hot path (usagi/core/fastpath.py) with Cython when it can.

Everything else is declared in pyproject.toml. The compiled module is `usagi.core._fastpath`, made
from a copy of fastpath.py (with the C declarations of fastpath.pxd) that carries the source's hash, so that a tree whose fastpath.py changed
after the build runs the source rather than a stale build (usagi/core/hot.py checks it). Without
Cython or a C compiler, or with USAGI_PURE_PYTHON=1, nothing is compiled and the install goes on
with the pure-Python module: a failed compilation is a warning, never a failed install.
"""
import hashlib
import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join("usagi", "core", "fastpath.py")
MODULE = "usagi.core._fastpath"


def _warn(text):
    sys.stderr.write("WARNING: usagi: %s; the pure-Python hot path will run\n" % text)


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
        with open(os.path.join(HERE, SOURCE), "rb") as f:
            src = f.read()
        with open(os.path.join(HERE, SOURCE[:-3] + ".pxd"), "rb") as f:
            decl = f.read()
        digest = hashlib.sha256(src + decl).hexdigest()      # as usagi/core/hot.py computes it
        # the copy sits in a package tree of its own, so that Cython names it usagi.core._fastpath
        # and finds its .pxd beside it
        root = os.path.join(HERE, "build", "cython")
        gen = os.path.join(root, "usagi", "core")
        os.makedirs(gen, exist_ok=True)
        for d in (os.path.join(root, "usagi"), gen):
            init = os.path.join(d, "__init__.py")
            if not os.path.exists(init):
                open(init, "w").close()
        copy = os.path.join(gen, "_fastpath.py")
        text = src + b'\nSOURCE_SHA256 = "%s"\n' % digest.encode()
        old = None
        if os.path.exists(copy):
            with open(copy, "rb") as f:
                old = f.read()
        if old != text:
            with open(copy, "wb") as f:
                f.write(text)
        pxd = os.path.join(gen, "_fastpath.pxd")
        if not os.path.exists(pxd) or open(pxd, "rb").read() != decl:
            with open(pxd, "wb") as f:
                f.write(decl)
        ext = Extension(MODULE, [os.path.relpath(copy, HERE)])
        return cythonize([ext], quiet=True, language_level=3,
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
