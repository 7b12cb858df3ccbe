"""Build script for the optional C extensions ``shakehands._speedups`` and ``shakehands._fastpath``.

All project metadata lives in pyproject.toml; this file only declares the extension. The
extension is optional: if it cannot be compiled (no compiler, no Python headers, ...) a warning is
printed and the install goes on with the pure-Python masking code. Set
``SHAKEHANDS_NO_BUILD_EXT=1`` to skip building it altogether.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, ExecError, PlatformError

BUILD_ERRORS = (CCompilerError, ExecError, PlatformError, OSError, ValueError)


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
