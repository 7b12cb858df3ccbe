"""The extension seam: the reader and the connection reach extensions through the Extension
interface only, so a second extension (a test-only XOR codec claiming RSV2) plugs in with
``use_extension`` and round-trips messages, alone or chained with permessage-deflate."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import shakehands.protocol.connection as connection_module
import shakehands.protocol.reader as reader_module
from shakehands.protocol import deflate as deflate_alias
from shakehands.protocol.connection import Connection, Role
from shakehands.protocol.errors import PayloadTooBig
from shakehands.protocol.extensions import Extension, PerMessageDeflate, permessage_deflate
from shakehands.protocol.frames import serialize_frame


class Xor:
    """A reversible codec on RSV2: every byte XORed with a key; at most ``max_size`` out."""

    rsv_bits = 0x20

    def __init__(self, key: int = 0x5A) -> None:
        self.key = key
        self.decoded: list[bool] = []

    def applies(self, rsv: int, /) -> bool:
        return bool(rsv & 0x20)

    def decode(
        self, data: bytes | bytearray | memoryview, final: bool, max_size: int | None, /
    ) -> bytes:
        if max_size is not None and len(data) > max_size:
            raise PayloadTooBig("decoded message exceeds the size limit")
        self.decoded.append(final)
        return bytes(b ^ self.key for b in bytes(data))

    def encode(self, data: bytes | bytearray | memoryview, fin: bool, /) -> bytes:
        return bytes(b ^ self.key for b in bytes(data))


def deflate_codec() -> PerMessageDeflate:
    return PerMessageDeflate(
        local_no_context_takeover=False,
        remote_no_context_takeover=False,
        local_max_window_bits=15,
        remote_max_window_bits=15,
    )


def pair(*factories: Callable[[], Extension]) -> tuple[Connection, Connection]:
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER)
    for conn in (client, server):
        for factory in factories:
            conn.use_extension(factory())
    return client, server


def relay(sender: Connection, receiver: Connection) -> bytes:
    wire = b"".join(sender.data_to_send())
    # One byte at a time: the general, incremental path.
    for i in range(len(wire)):
        receiver.receive_data(wire[i : i + 1])
    return wire


def test_reader_and_connection_never_name_an_extension() -> None:
    for module in (connection_module, reader_module):
        source = Path(str(module.__file__)).read_text("utf-8")
        assert "deflate" not in source.lower(), module.__name__


def test_test_codec_is_an_extension() -> None:
    ext: Extension = Xor()
    codec: Extension = deflate_codec()
    assert ext.rsv_bits == 0x20 and codec.rsv_bits == 0x40


@pytest.mark.parametrize("factories", [(Xor,), (deflate_codec, Xor), (Xor, deflate_codec)])
def test_round_trip(factories: tuple[Callable[[], Extension], ...]) -> None:
    client, server = pair(*factories)
    rsv = 0x20 | (0x40 if len(factories) == 2 else 0)
    client.send_text("héllo " * 50)
    client.send_binary(bytes(range(256)) * 4)
    wire = relay(client, server)
    assert wire[0] & 0x70 == rsv
    assert server.events_received() == ["héllo " * 50, bytes(range(256)) * 4]
    server.send_text("whole")
    server.send_fragment("frag", fin=False)
    server.send_fragment("ments", fin=True)
    server.send_binary(b"raw", compress=False)
    wire = relay(server, client)
    assert client.events_received() == ["whole", "fragments", b"raw"]
    # RSV bits on each message's first frame only; none on the message sent uncompressed.
    assert wire.endswith(serialize_frame(2, b"raw"))
    assert client.failure is None and server.failure is None


def test_xor_changes_the_wire_and_decodes_with_final() -> None:
    xor = Xor()
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER)
    client.use_extension(Xor())
    server.use_extension(xor)
    client.send_fragment(b"ab", fin=False)
    client.send_fragment(b"cd", fin=True)
    wire = b"".join(client.data_to_send())
    assert wire[0] == 0x22 and wire[8] == 0x80  # RSV2 on the first frame, not the second
    server.receive_data(wire)
    assert server.events_received() == [b"abcd"]
    assert xor.decoded == [False, True]


def test_claimed_rsv_bit_on_a_continuation_frame_fails() -> None:
    server = Connection(Role.SERVER)
    server.use_extension(Xor())
    key = b"\x00\x00\x00\x00"
    server.receive_data(
        serialize_frame(1, b"a", fin=False, rsv=0x20, mask=True, mask_key=key)
        + serialize_frame(0, b"b", rsv=0x20, mask=True, mask_key=key)
    )
    assert server.failure is not None and server.failure.code == 1002
    assert str(server.failure) == "RSV2 set on a continuation frame"


def test_decoded_size_counts_against_the_limit() -> None:
    client = Connection(Role.CLIENT)
    server = Connection(Role.SERVER, max_message_size=10)
    client.use_extension(Xor())
    server.use_extension(Xor())
    client.send_binary(b"x" * 11)
    server.receive_data(b"".join(client.data_to_send()))
    assert server.failure is not None and server.failure.code == 1009


def test_unclaimed_or_taken_bits_are_refused() -> None:
    conn = Connection(Role.SERVER)
    conn.use_deflate(deflate_codec())
    with pytest.raises(ValueError):
        conn.use_extension(deflate_codec())  # RSV1 is taken
    bad = Xor()
    bad.rsv_bits = 0x80
    with pytest.raises(ValueError):
        conn.use_extension(bad)
    assert conn.rsv_allowed == 0x40


def test_deflate_names_still_work() -> None:
    conn = Connection(Role.SERVER)
    assert conn.deflate is None
    conn.use_extension(Xor())
    assert conn.deflate is None
    codec = deflate_codec()
    conn.use_deflate(codec)
    assert conn.deflate is codec and conn.extensions[-1] is codec
    # Every name protocol/deflate.py had, public or not, from the same objects.
    for name in DEFLATE_NAMES:
        assert getattr(deflate_alias, name) is getattr(permessage_deflate, name), name
    assert set(deflate_alias.__all__) == set(permessage_deflate.__all__)


DEFLATE_NAMES = [
    "EXTENSION_NAME",
    "DeflateOptions",
    "PerMessageDeflate",
    "parse_extensions",
    "server_negotiate",
    "client_offer",
    "client_accept",
    "compression_options",
    "Params",
    "_TAIL",
    "_STEP",
    "_PARAM_RE",
    "_TOKEN_RE",
    "_split_outside_quotes",
    "_window_bits",
    "_Offer",
    "_parse_params",
]
