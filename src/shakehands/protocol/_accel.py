"""The one place that picks compiled code or pure Python for the core.

``shakehands._speedups`` (C, optional: built by ``pip install`` when a compiler is present)
provides masking, the reassembly of masked parts, frame building and a parser for runs of whole
data frames; ``shakehands._fastpath`` (C, optional, built alongside) the callback API's compiled
data path (:mod:`shakehands.asyncio._fastpath`). This module decides, once, at import time,
whether they are used:

* not when the environment variable ``SHAKEHANDS_NO_SPEEDUPS`` is set to a non-empty value
  other than ``"0"`` (CI runs the protocol tests again that way, so the fallback stays tested);
* not when the extension was not built or cannot be imported;
* otherwise yes.

Each module that has a fast path asks :func:`compiled` for its function and keeps its own
pure-Python version as the fallback: ``apply_mask = compiled("apply_mask") or
apply_mask_python``. A function missing from an older build of the extension falls back alone.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any

__all__ = ["USING_SPEEDUPS", "compiled", "speedups", "fastpath"]


def _disabled() -> bool:
    return os.environ.get("SHAKEHANDS_NO_SPEEDUPS", "") not in ("", "0")


def _load(name: str = "_speedups") -> ModuleType | None:
    if _disabled():
        return None
    try:
        return importlib.import_module(f"shakehands.{name}")
    except ImportError:
        return None


#: The C extension module in use, or ``None`` (pure Python).
speedups: ModuleType | None = _load()

#: The compiled data path of the callback API in use, or ``None`` (pure Python).
fastpath: ModuleType | None = _load("_fastpath")

#: Whether the core uses the C extension.
USING_SPEEDUPS: bool = speedups is not None


def compiled(name: str) -> Any:
    """The C function ``name`` if the core uses the extension and it has one, else ``None``."""
    return getattr(speedups, name, None)
