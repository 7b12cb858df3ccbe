"""The common main() of the atheris targets: libFuzzer's command line, with our seeds.

Run a target directly (``python fuzz/fuzz_frames.py CORPUS_DIR -max_total_time=60``) or all of
them through ``python fuzz/run.py``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

try:
    import atheris
except ImportError:  # pragma: no cover - reported by run.py
    sys.exit("atheris is not installed: pip install -e '.[dev]' (CPython 3.11-3.12 on Linux/macOS)")


def main(test_one_input: Callable[[bytes], None]) -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
