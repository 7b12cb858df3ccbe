"""Optional C accelerator for shakehands (see shakehands.protocol.masking)."""

def apply_mask(
    data: bytes | bytearray | memoryview, mask: bytes | bytearray | memoryview, /
) -> bytes: ...
def parse_data_frames(
    buffer: bytes | bytearray | memoryview,
    pos: int,
    mask_bit: int,
    limit: int,
    events: list[object],
    /,
) -> int: ...
def build_frame(first_byte: int, payload: bytes | bytearray | memoryview, /) -> bytes: ...
def join_masked(parts: list[tuple[bytes | bytearray | memoryview, bytes | None]], /) -> bytes: ...
def parse_request_head(
    buffer: bytes | bytearray | memoryview,
    end: int,
    max_line: int,
    max_headers: int,
    max_header_bytes: int,
    /,
) -> tuple[str, str, str | None, list[tuple[str, str]], dict[str, list[str]]]: ...
