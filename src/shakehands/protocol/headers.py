"""HTTP fields: the :class:`Headers` multi-mapping and the RFC 9110 grammar, once.

This module owns what every HTTP message of the handshake shares: header names and values as
RFC 9110 §5 defines them (``token``, field values), the case-insensitive ordered
:class:`Headers`, and comma-separated token lists. The request/response parsers
(:mod:`.http11`), the handshake checks (:mod:`.handshake`) and the extension header grammar
(:mod:`.deflate`) use these patterns rather than writing their own. No I/O, no WebSocket rules.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import TypeAlias

__all__ = [
    "Headers",
    "HeadersLike",
    "TOKEN",
    "TOKEN_RE",
    "FIELD_VALUE_RE",
    "parse_token_list",
    "to_headers",
    "check_headers",
]

#: RFC 9110 §5.6.2: ``token = 1*tchar``, as a pattern to embed in other patterns (str).
TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
#: :data:`TOKEN` compiled for the bytes of a message head.
TOKEN_RE = re.compile(TOKEN.encode("ascii"))
#: Field values (RFC 9110 §5.5): visible ASCII, SP, HTAB and obs-text; never other control
#: characters (so never a line feed: :meth:`Headers._compact` relies on it).
FIELD_VALUE_RE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")


class Headers:
    """HTTP headers: an ordered multi-mapping with case-insensitive names.

    Example:
        >>> h = Headers([("Host", "example.com")])
        >>> h["host"]
        'example.com'
    """

    __slots__ = ("_items", "_index")

    # Memory: the pairs are the headers; the index of lower-cased names is built on the first
    # lookup only. Once the handshake is over, :meth:`_compact` drops the index and packs the
    # pairs into one string (an idle connection keeps its request for ``ws.request``: one
    # string is a fifth of the size of a list of tuples of strings); they are unpacked again on
    # the next access.

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        # The pairs as given (the parser's list of tuples is not copied pair by pair). When
        # compacted: one string, "name:value" lines joined by "\n" (names are tokens, without
        # ":"; parsed values never contain "\n", see FIELD_VALUE_RE; _compact checks the rest).
        self._items: list[tuple[str, str]] | str = list(items)
        self._index: dict[str, list[str]] | None = None

    @classmethod
    def _packed(cls, items: str) -> Headers:
        """Headers already compacted (see :meth:`_compact`): ``items`` is ``name:value`` lines
        joined by ``"\\n"``, names without ``":"``, values without a line feed (the caller's
        guarantee: the core's 101, made from a template)."""
        headers = cls.__new__(cls)
        headers._items = items
        headers._index = None
        return headers

    def _pairs(self) -> list[tuple[str, str]]:
        """The pairs (unpacked now if they were compacted)."""
        items = self._items
        if isinstance(items, str):
            unpacked: list[tuple[str, str]] = []
            if items:
                for line in items.split("\n"):
                    name, _, value = line.partition(":")
                    unpacked.append((name, value))
            self._items = items = unpacked
        return items

    def _lookup(self) -> dict[str, list[str]]:
        """The index of lower-cased names (built now if it is not there)."""
        index = self._index
        if index is None:
            index = {}
            for name, value in self._pairs():
                index.setdefault(name.lower(), []).append(value)
            self._index = index
        return index

    def _compact(self) -> None:
        """Drop the index and pack the pairs into one string: to keep idle connections small.

        Nothing is lost: the next access unpacks them. Pairs that could not be told apart
        once packed (a name with ":" or a value with a line feed, only possible for headers
        built by hand) are left as they are.
        """
        self._index = None
        items = self._items
        if isinstance(items, str):
            return
        for name, value in items:
            if ":" in name or "\n" in name or "\n" in value:
                return
        self._items = "\n".join([f"{name}:{value}" for name, value in items])

    def add(self, name: str, value: str) -> None:
        """Append a header, keeping any existing ones of the same name."""
        self._pairs().append((name, value))
        if self._index is not None:
            self._index.setdefault(name.lower(), []).append(value)

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name``, or ``default``."""
        values = (self._index or self._lookup()).get(name.lower())
        return values[0] if values else default

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``, in order (an empty list if absent)."""
        return list((self._index or self._lookup()).get(name.lower(), ()))

    def __getitem__(self, name: str) -> str:
        values = (self._index or self._lookup()).get(name.lower())
        if not values:
            raise KeyError(name)
        return values[0]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in (self._index or self._lookup())

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._pairs())

    def __len__(self) -> int:
        return len(self._pairs())

    def items(self) -> list[tuple[str, str]]:
        """All ``(name, value)`` pairs in order, names as received."""
        return list(self._pairs())

    def __repr__(self) -> str:
        return f"Headers({self._pairs()!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        mine, theirs = self._pairs(), other._pairs()
        return [(n.lower(), v) for n, v in mine] == [(n.lower(), v) for n, v in theirs]

    __hash__ = None  # type: ignore[assignment]


#: What every ``headers=`` / ``extra_headers=`` argument accepts: a :class:`Headers`, a mapping
#: of names to values (``{"Content-Type": "text/plain"}``), or ``(name, value)`` pairs (which
#: may repeat a name).
HeadersLike: TypeAlias = Headers | Mapping[str, str] | Iterable[tuple[str, str]]


def to_headers(headers: HeadersLike | None) -> Headers:
    """A :class:`Headers` from any accepted form (a ``Headers`` is returned as it is)."""
    if headers is None:
        return Headers()
    if isinstance(headers, Headers):
        return headers
    if isinstance(headers, Mapping):
        return Headers(headers.items())
    return Headers(headers)


def check_headers(headers: object, what: str = "headers") -> Headers:
    """``headers`` (any form of :data:`HeadersLike`) as :class:`Headers`, every name a token and
    every value a valid field value.

    Raises:
        TypeError: not one of the accepted forms, or a name or value that is not a ``str``.
        ValueError: a name that is not a token, or a value with a line break or another
            control character (which would let a value forge headers of its own).
    """
    if isinstance(headers, (str, bytes, bytearray, memoryview)) or not isinstance(
        headers, (Headers, Mapping, Iterable)
    ):
        raise TypeError(
            f"{what} must be a dict, a list of (name, value) pairs or Headers, got {headers!r}"
        )
    pairs = headers.items() if isinstance(headers, (Headers, Mapping)) else list(headers)
    for pair in pairs:
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise TypeError(f"{what} must hold (name, value) pairs, got {pair!r}")
        name, value = pair
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(f"{what}: names and values must be str, got {name!r}: {value!r}")
        if not name.isascii() or not TOKEN_RE.fullmatch(name.encode("ascii")):
            raise ValueError(f"{what}: invalid header name {name!r}")
        try:
            encoded = value.encode("latin-1")
        except UnicodeEncodeError:
            encoded = b"\x00"
        if not FIELD_VALUE_RE.fullmatch(encoded):
            raise ValueError(f"{what}: invalid value for {name}: {value!r}")
    return headers if isinstance(headers, Headers) else Headers(pairs)


def parse_token_list(values: list[str]) -> list[str]:
    """Split comma-separated header values into lower-cased tokens, dropping empty elements."""
    return [t.strip(" \t").lower() for v in values for t in v.split(",") if t.strip(" \t")]
