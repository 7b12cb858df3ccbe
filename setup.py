"""Build script for the optional C extensions ``shakehands._speedups`` and ``shakehands._fastpath``.

All project metadata lives in pyproject.toml; this file only declares the extension. The
extension is optional: if it cannot be compiled (no compiler, no Python headers, ...) a warning is
printed and the install goes on with the pure-Python masking code. Set
``SHAKEHANDS_NO_BUILD_EXT=1`` to skip building it altogether.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from typing import Any

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, ExecError, PlatformError

BUILD_ERRORS = (CCompilerError, ExecError, PlatformError, OSError, ValueError)


def _take_turns() -> None:
    """Wait until no other build of this source tree runs, then hold it until this one exits.

    Every build writes into the tree: ``src/shakehands.egg-info`` (the metadata, written then
    read back), ``build/`` (``pip wheel``, ``setup.py build_ext``) and the extensions copied into
    ``src/shakehands``. Two at once (``.ci/run`` installs the package into other virtualenvs
    while the tests build a wheel of it) could read each other's half-written files. Each build
    hook of pip runs this file in a process of its own: the lock (on this file) goes with it.
    """
    try:
        import fcntl
    except ImportError:  # Windows: builds do not take turns
        return
    handle = open(os.path.abspath(__file__), "rb")  # noqa: SIM115 - held until the process exits
    fcntl.flock(handle, fcntl.LOCK_EX)
    globals()["_TURN"] = handle


_take_turns()


def _warn(exc: BaseException) -> None:
    message = f"shakehands: C speedups not built, using pure Python: {exc}"
    bar = "*" * min(len(message), 79)
    print(f"\n{bar}\n{message}\n{bar}\n", file=sys.stderr, flush=True)


class OptionalBuildExt(build_ext):
    """A build_ext whose failures are warnings, never errors."""

    def initialize_options(self) -> None:
        super().initialize_options()
        self._failed: list[str] = []

    def run(self) -> None:
        try:
            super().run()
        except BUILD_ERRORS as exc:
            _warn(exc)
            self._failed.extend(ext.name for ext in self.extensions)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except BUILD_ERRORS as exc:
            _warn(exc)
            self._failed.append(ext.name)

    def _built(self) -> list[Extension]:
        return [ext for ext in self.extensions if ext.name not in self._failed]

    # The copy of a built extension into the source tree (editable installs, --inplace) goes to a
    # temporary file beside it, renamed over the old one. distutils writes over the old file in
    # place: a process that has that extension loaded maps the file, and truncating it under that
    # process kills it (SIGBUS) - e.g. a server of the Autobahn run or a test's subprocess while
    # CI reinstalls the package (.ci/run runs them at the same time). After a rename, running
    # processes keep the old file and new ones load the new one.
    def copy_file(  # type: ignore[override]
        self,
        infile: str,
        outfile: str,
        preserve_mode: bool = True,
        preserve_times: bool = True,
        link: str | None = None,
        level: int = 1,
    ) -> tuple[str, bool]:
        directory = os.path.dirname(os.path.abspath(outfile))
        fd, temporary = tempfile.mkstemp(
            dir=directory, prefix=f".{os.path.basename(outfile)}.", suffix=".tmp"
        )
        try:
            with os.fdopen(fd, "wb") as target, open(infile, "rb") as source:
                shutil.copyfileobj(source, target)
            if preserve_mode:
                shutil.copymode(infile, temporary)
            if preserve_times:
                st = os.stat(infile)
                os.utime(temporary, ns=(st.st_atime_ns, st.st_mtime_ns))
            os.replace(temporary, outfile)
        except BaseException:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise
        if self.verbose:
            print(f"copying {infile} -> {outfile}")
        return outfile, True

    # Extensions that failed to build have no output file: leave them out of what is copied
    # back into the source tree (editable installs) and of the outputs reported to installers.
    def copy_extensions_to_source(self) -> None:
        extensions, self.extensions = self.extensions, self._built()
        try:
            super().copy_extensions_to_source()
        finally:
            self.extensions = extensions

    def get_outputs(self) -> list[str]:
        extensions, self.extensions = self.extensions, self._built()
        try:
            return list(super().get_outputs())
        finally:
            self.extensions = extensions

    def get_output_mapping(self) -> dict[str, str]:
        extensions, self.extensions = self.extensions, self._built()
        try:
            return dict(super().get_output_mapping())
        finally:
            self.extensions = extensions


def _extensions() -> list[Extension]:
    if os.environ.get("SHAKEHANDS_NO_BUILD_EXT", "") not in ("", "0"):
        print(
            "shakehands: SHAKEHANDS_NO_BUILD_EXT is set, not building C speedups", file=sys.stderr
        )
        return []
    return [
        Extension(
            "shakehands._speedups",
            sources=["src/shakehands/_speedups.c"],
            depends=["src/shakehands/_frame.h", "src/shakehands/_mask.h"],
            optional=True,
        ),
        # The compiled data path of the callback API (shakehands.asyncio._fastpath).
        Extension(
            "shakehands._fastpath",
            sources=["src/shakehands/_fastpath.c"],
            depends=[
                "src/shakehands/_frame.h",
                "src/shakehands/_mask.h",
                "src/shakehands/_fastcoro.h",
                "src/shakehands/_fastasgi.h",
            ],
            optional=True,
        ),
    ]


setup_kwargs: dict[str, Any] = {
    "ext_modules": _extensions(),
    "cmdclass": {"build_ext": OptionalBuildExt},
}

setup(**setup_kwargs)
