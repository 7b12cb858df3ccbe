"""Optional C accelerator for shakehands (see shakehands.protocol.masking)."""

def apply_mask(
    data: bytes | bytearray | memoryview, mask: bytes | bytearray | memoryview, /
) -> bytes: ...
