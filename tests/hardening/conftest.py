"""Set-up of the hardening tests: hostile and broken peers against real servers on 127.0.0.1.

The raw-socket clients and echo servers of ``tests/asyncio/asyncio_helpers.py`` and
``tests/helpers.py`` are reused (package imports), so these tests add attacks, not plumbing; so
are the parser checks of ``fuzz/targets.py``, which the property tests drive with hypothesis
(``fuzz/`` is put on ``sys.path`` here). The ``api`` fixture is the one of ``tests/conftest.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(_ROOT / "fuzz"))  # the checks shared with the atheris targets
