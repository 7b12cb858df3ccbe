"""atheris target: the frame parser, ``Connection.receive_data``, on an open connection.

Flags: bit 0 picks the role (0: server, expects masked frames; 1: client); bits 1-2 pick
permessage-deflate (0: off, 1: context takeover, 2: no context takeover, 3: 512-byte windows).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import atheris, main  # noqa: E402

with atheris.instrument_imports(include=["shakehands", "targets"]):
    import targets

    from shakehands.protocol.connection import Role


def test_one_input(data: bytes) -> None:
    flags, cuts, payload = targets.decode(data)
    role = Role.CLIENT if flags & 1 else Role.SERVER
    targets.check_connection(payload, cuts, role, (flags >> 1) & 3)


if __name__ == "__main__":
    main(test_one_input)
