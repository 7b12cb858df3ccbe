"""permessage-deflate (RFC 7692): negotiation and the per-message codec.

This module owns the ``Sec-WebSocket-Extensions`` grammar (RFC 6455 §9.1), the negotiation of
permessage-deflate's four parameters on both sides, and :class:`PerMessageDeflate`, the codec the
connection wraps around its message path: it compresses outgoing messages and inflates incoming
ones under a size limit, so that a small message that inflates to gigabytes fails with 1009 after
allocating at most the limit. :class:`PerMessageDeflate` is an :class:`~.base.Extension`: the
connection reaches it through that interface only (RSV1, :meth:`~PerMessageDeflate.decode`,
:meth:`~PerMessageDeflate.encode`). It knows nothing about frames or I/O.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import InvalidPayload, NegotiationError, PayloadTooBig
from ..headers import TOKEN

__all__ = [
    "EXTENSION_NAME",
    "DeflateOptions",
    "PerMessageDeflate",
    "parse_extensions",
    "server_negotiate",
    "client_offer",
    "client_accept",
    "compression_options",
]

#: The extension's token in ``Sec-WebSocket-Extensions`` (RFC 7692 §7).
EXTENSION_NAME = "permessage-deflate"
_TAIL = b"\x00\x00\xff\xff"
_STEP = 64 * 1024

_PARAM_RE = re.compile(rf'\s*({TOKEN})\s*(?:=\s*({TOKEN}|"(?:[^"\\]|\\.)*"))?\s*')
_TOKEN_RE = re.compile(TOKEN)

Params = list[tuple[str, str | None]]


def parse_extensions(values: Sequence[str]) -> list[tuple[str, Params]]:
    """Parse ``Sec-WebSocket-Extensions`` header values into ``[(name, [(param, value)])]``.

    Raises:
        NegotiationError: the header does not follow RFC 6455 §9.1 (answered with 400).
    """
    extensions: list[tuple[str, Params]] = []
    for value in values:
        for item in _split_outside_quotes(value, ","):
            if not item.strip():
                continue
            name, *raw_params = _split_outside_quotes(item, ";")
            name = name.strip()
            if not _TOKEN_RE.fullmatch(name):
                raise NegotiationError(f"invalid Sec-WebSocket-Extensions header: {value!r}")
            params: Params = []
            for raw in raw_params:
                m = _PARAM_RE.fullmatch(raw)
                if m is None:
                    raise NegotiationError(f"invalid extension parameter: {raw.strip()!r}")
                param_value = m.group(2)
                if param_value is not None and param_value.startswith('"'):
                    param_value = re.sub(r"\\(.)", r"\1", param_value[1:-1])
                    if not _TOKEN_RE.fullmatch(param_value):
                        # RFC 6455 §9.1: a quoted value must still be a token.
                        raise NegotiationError(f"invalid extension parameter: {raw.strip()!r}")
                params.append((m.group(1).lower(), param_value))
            extensions.append((name.lower(), params))
    return extensions


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == sep and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


@dataclass(frozen=True)
class DeflateOptions:
    """Compression settings of one endpoint.

    Attributes:
        server_max_window_bits: the window the server compresses with (8-15). The server asks for
            no more than this; a client offer may lower it.
        client_max_window_bits: the window the server asks the client to compress with (8-15),
            if the client allows it (``None``: no request).
        server_no_context_takeover / client_no_context_takeover: reset the compressor of that
            side after every message (less memory between messages, worse compression).
        compress_level: zlib level, 1-9.
        memory_level: zlib memLevel, 1-9: the compressor's hash memory.

    The defaults (server window 12 bits, client window 12 bits when allowed, memLevel 5) follow
    the usual trade-off: most of the ratio of 15 bits at a fraction of the memory.
    """

    server_max_window_bits: int = 12
    client_max_window_bits: int | None = 12
    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    compress_level: int = 6
    memory_level: int = 5

    def __post_init__(self) -> None:
        for bits in (self.server_max_window_bits, self.client_max_window_bits):
            if bits is not None and not 8 <= bits <= 15:
                raise ValueError("window bits must be between 8 and 15")
        if not 1 <= self.memory_level <= 9:
            raise ValueError("memory_level must be between 1 and 9")
        if not 0 <= self.compress_level <= 9:
            raise ValueError("compress_level must be between 0 and 9")


class PerMessageDeflate:
    """The negotiated codec for one connection, seen from one end.

    ``local_*`` parameters govern what this end compresses, ``remote_*`` what it inflates.
    Compressor and decompressor are created on first use, and dropped after each message when
    their side has no context takeover, so an idle connection holds no zlib state.
    """

    def __init__(
        self,
        *,
        local_no_context_takeover: bool,
        remote_no_context_takeover: bool,
        local_max_window_bits: int,
        remote_max_window_bits: int,
        compress_level: int = 6,
        memory_level: int = 5,
    ) -> None:
        self.local_no_context_takeover = local_no_context_takeover
        self.remote_no_context_takeover = remote_no_context_takeover
        self.local_max_window_bits = local_max_window_bits
        self.remote_max_window_bits = remote_max_window_bits
        self.compress_level = compress_level
        self.memory_level = memory_level
        self._compressor: zlib._Compress | None = None
        self._decompressor: zlib._Decompress | None = None

    def __repr__(self) -> str:
        return (
            f"PerMessageDeflate(local_no_context_takeover={self.local_no_context_takeover}, "
            f"remote_no_context_takeover={self.remote_no_context_takeover}, "
            f"local_max_window_bits={self.local_max_window_bits}, "
            f"remote_max_window_bits={self.remote_max_window_bits})"
        )

    #: The Extension interface: permessage-deflate claims RSV1 (RFC 7692 §6).
    rsv_bits = 0x40

    def applies(self, rsv: int) -> bool:
        """Whether an incoming message with these RSV bits (of its first frame) is compressed."""
        return bool(rsv & 0x40)

    def compress(self, data: bytes | bytearray | memoryview, fin: bool) -> bytes:
        """Compress one message (or one fragment of it; ``fin`` on the last)."""
        compressor = self._compressor
        if compressor is None:
            if self.local_max_window_bits == 8:
                # zlib cannot compress with a 256-byte window; Huffman-only coding makes no
                # back-references at all, so it is valid for any window the peer set.
                compressor = zlib.compressobj(
                    self.compress_level, zlib.DEFLATED, -9, self.memory_level, zlib.Z_HUFFMAN_ONLY
                )
            else:
                compressor = zlib.compressobj(
                    self.compress_level,
                    zlib.DEFLATED,
                    -self.local_max_window_bits,
                    self.memory_level,
                )
            self._compressor = compressor
        out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
        if fin:
            # RFC 7692 §7.2.1: remove the 0x00 0x00 0xff 0xff of the final sync flush.
            if out.endswith(_TAIL):
                out = out[:-4]
            if self.local_no_context_takeover:
                self._compressor = None
        return out

    def decompress(
        self, data: bytes | bytearray | memoryview, fin: bool, limit: int | None
    ) -> bytes:
        """Inflate part of a message, producing at most ``limit`` bytes (``None``: no limit).

        Raises:
            PayloadTooBig: the output would exceed ``limit`` (1009); nothing more is allocated.
            InvalidPayload: the data is not valid deflate (1007).
        """
        decompressor = self._decompressor
        if decompressor is None:
            decompressor = zlib.decompressobj(-self.remote_max_window_bits)
            self._decompressor = decompressor
        if fin:
            data = bytes(data) + _TAIL
        # Inflate in steps of at most _STEP bytes: a bomb is caught after allocating at most
        # ``limit`` + _STEP bytes, whatever its ratio, and a valid message costs no transient
        # buffer larger than a step.
        parts: list[bytes] = []
        produced = 0
        try:
            while True:
                step = _STEP if limit is None else min(_STEP, limit - produced + 1)
                chunk = decompressor.decompress(data, step)
                produced += len(chunk)
                if limit is not None and produced > limit:
                    raise PayloadTooBig("decompressed message exceeds the size limit")
                parts.append(chunk)
                data = decompressor.unconsumed_tail
                # A full step may leave output pending inside zlib even with no input left.
                if not data and len(chunk) < step:
                    break
        except zlib.error as exc:
            raise InvalidPayload(f"invalid compressed data: {exc}") from exc
        out = parts[0] if len(parts) == 1 else b"".join(parts)
        if fin and self.remote_no_context_takeover:
            self._decompressor = None
        return out

    # The Extension interface (see :class:`~.base.Extension`): the same methods, by its names.
    encode = compress
    decode = decompress


def compression_options(value: object) -> DeflateOptions | None:
    """Resolve the public ``compression=`` option: ``"deflate"``, a :class:`DeflateOptions`,
    or ``None`` (no compression).

    Raises:
        ValueError: anything else (the message names the option and the value).
    """
    if value is None or isinstance(value, DeflateOptions):
        return value
    if value == "deflate":
        return DeflateOptions()
    raise ValueError(f'compression must be "deflate", a DeflateOptions or None, got {value!r}')


def _window_bits(value: str | None, *, optional: bool) -> int | None:
    if value is None:
        if optional:
            return None
        raise ValueError("missing value")
    if not re.fullmatch(r"[1-9][0-9]?", value) or not 8 <= int(value) <= 15:
        raise ValueError(f"invalid window bits {value!r}")
    return int(value)


@dataclass
class _Offer:
    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int | None = None
    client_max_window_bits: int | None = None
    client_max_window_bits_present: bool = False


def _parse_params(params: Params, *, response: bool) -> _Offer:
    """Validate permessage-deflate parameters (RFC 7692 §7.1); ValueError if invalid."""
    offer = _Offer()
    seen: set[str] = set()
    for name, value in params:
        if name in seen:
            raise ValueError(f"duplicate parameter {name}")
        seen.add(name)
        if name == "server_no_context_takeover":
            if value is not None:
                raise ValueError("server_no_context_takeover takes no value")
            offer.server_no_context_takeover = True
        elif name == "client_no_context_takeover":
            if value is not None:
                raise ValueError("client_no_context_takeover takes no value")
            offer.client_no_context_takeover = True
        elif name == "server_max_window_bits":
            offer.server_max_window_bits = _window_bits(value, optional=False)
        elif name == "client_max_window_bits":
            offer.client_max_window_bits = _window_bits(value, optional=not response)
            offer.client_max_window_bits_present = True
        else:
            raise ValueError(f"unknown parameter {name}")
    return offer


def server_negotiate(
    header_values: Sequence[str], options: DeflateOptions
) -> tuple[str, PerMessageDeflate] | None:
    """Pick the first acceptable permessage-deflate offer; return the response value and codec.

    Offers with unknown or malformed parameters are declined (RFC 7692 §5: "decline"), not
    treated as errors; ``None`` when nothing acceptable was offered.

    Raises:
        NegotiationError: the header itself is malformed.
    """
    for name, params in parse_extensions(header_values):
        if name != EXTENSION_NAME:
            continue
        try:
            offer = _parse_params(params, response=False)
        except ValueError:
            continue
        response = [EXTENSION_NAME]
        server_nct = offer.server_no_context_takeover or options.server_no_context_takeover
        client_nct = offer.client_no_context_takeover or options.client_no_context_takeover
        if server_nct:
            response.append("server_no_context_takeover")
        if client_nct:
            response.append("client_no_context_takeover")
        server_bits = options.server_max_window_bits
        if offer.server_max_window_bits is not None:
            server_bits = min(server_bits, offer.server_max_window_bits)
        if server_bits < 15 or offer.server_max_window_bits is not None:
            response.append(f"server_max_window_bits={server_bits}")
        client_bits = 15
        if offer.client_max_window_bits_present:
            client_bits = offer.client_max_window_bits or 15
            if options.client_max_window_bits is not None:
                client_bits = min(client_bits, options.client_max_window_bits)
            if client_bits < 15 or offer.client_max_window_bits is not None:
                response.append(f"client_max_window_bits={client_bits}")
        codec = PerMessageDeflate(
            local_no_context_takeover=server_nct,
            remote_no_context_takeover=client_nct,
            local_max_window_bits=server_bits,
            remote_max_window_bits=client_bits,
            compress_level=options.compress_level,
            memory_level=options.memory_level,
        )
        return "; ".join(response), codec
    return None


def client_offer(options: DeflateOptions) -> str:
    """The ``Sec-WebSocket-Extensions`` value a client sends to offer permessage-deflate."""
    offer = [EXTENSION_NAME]
    if options.server_no_context_takeover:
        offer.append("server_no_context_takeover")
    if options.client_no_context_takeover:
        offer.append("client_no_context_takeover")
    if options.server_max_window_bits < 15:
        offer.append(f"server_max_window_bits={options.server_max_window_bits}")
    if options.client_max_window_bits is None:
        offer.append("client_max_window_bits")
    elif options.client_max_window_bits < 15:
        offer.append(f"client_max_window_bits={options.client_max_window_bits}")
    return "; ".join(offer)


def client_accept(
    header_values: Sequence[str], options: DeflateOptions
) -> PerMessageDeflate | None:
    """Check the server's ``Sec-WebSocket-Extensions`` answer against our offer.

    Raises:
        NegotiationError: the server answered with something we did not offer, or invalid
            parameters (RFC 7692 §5: the client must fail the connection).
    """
    extensions = parse_extensions(header_values)
    if not extensions:
        return None
    if len(extensions) > 1 or extensions[0][0] != EXTENSION_NAME:
        raise NegotiationError(
            f"server accepted extensions that were not offered: {', '.join(header_values)}"
        )
    try:
        answer = _parse_params(extensions[0][1], response=True)
    except ValueError as exc:
        raise NegotiationError(f"invalid permessage-deflate response: {exc}") from None
    if options.server_no_context_takeover and not answer.server_no_context_takeover:
        raise NegotiationError("server ignored server_no_context_takeover")
    server_bits = answer.server_max_window_bits or 15
    if server_bits > options.server_max_window_bits:
        raise NegotiationError("server_max_window_bits larger than offered")
    client_bits = 15
    offered_client_bits = options.client_max_window_bits is None or (
        options.client_max_window_bits < 15
    )
    if answer.client_max_window_bits_present and not offered_client_bits:
        # RFC 7692 §7.1.2.2: the client MUST fail the connection.
        raise NegotiationError("server sent client_max_window_bits, which was not offered")
    if answer.client_max_window_bits_present:
        # The server's value caps our window; a value above what we offered changes nothing,
        # since we never compress with more than we offered (RFC 7692 §7.1.2.2: the offer's
        # value already limits the client). The response must carry a value (checked above).
        client_bits = answer.client_max_window_bits or 15
        if options.client_max_window_bits is not None:
            client_bits = min(client_bits, options.client_max_window_bits)
    elif options.client_max_window_bits is not None and options.client_max_window_bits < 15:
        client_bits = options.client_max_window_bits
    return PerMessageDeflate(
        local_no_context_takeover=(
            answer.client_no_context_takeover or options.client_no_context_takeover
        ),
        remote_no_context_takeover=answer.server_no_context_takeover,
        local_max_window_bits=client_bits,
        remote_max_window_bits=server_bits,
        compress_level=options.compress_level,
        memory_level=options.memory_level,
    )
