"""atheris target: the client side of the opening handshake.

Flags: bit 0 feeds the bare ``ResponseParser``; otherwise a ``ClientProtocol`` reads the input
as the server's answer (bit 1: after a valid 101 that it accepts, so the rest is frames; bit 2:
permessage-deflate offered and, with bit 1, accepted).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import atheris, main  # noqa: E402

with atheris.instrument_imports(include=["shakehands", "targets"]):
    import targets


def test_one_input(data: bytes) -> None:
    flags, cuts, payload = targets.decode(data)
    if flags & 1:
        targets.check_response_parser(payload, cuts)
    else:
        targets.check_client_protocol(
            payload, cuts, accepted=bool(flags & 2), compression=bool(flags & 4)
        )


if __name__ == "__main__":
    main(test_one_input)
