"""atheris target: the server side of the opening handshake.

Flags (byte 0 of the input, see ``targets.decode``): bit 0 feeds the bare ``RequestParser``
(whole and chunked, same verdict), otherwise a ``ServerProtocol`` answers the request and then
parses what follows as frames; bit 1 turns permessage-deflate on.
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
        targets.check_request_parser(payload, cuts)
    else:
        targets.check_server_protocol(payload, cuts, compression=bool(flags & 2))


if __name__ == "__main__":
    main(test_one_input)
