"""What a message is, for every front end: what ``recv`` returns and what ``send`` takes.

``send`` takes a ``str`` (a text message), a bytes-like object (a binary message), or the
fragments of one message: a sequence, an iterator or an async iterable of ``str`` or of
bytes-like pieces. *Not* any iterable: a ``dict`` or a ``set`` iterates over its keys, and
``ws.send({"type": "alert"})`` would send the text ``"type"``; both are refused, at run time
with :class:`TypeError` (:func:`unsendable`) and by the type checker (:data:`Fragments` is no
supertype of them).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import TypeAlias, TypeVar

__all__ = [
    "Data",
    "Fragment",
    "Fragments",
    "Message",
    "is_fragments",
    "unsendable",
    "with_fin",
    "awith_fin",
]

_T = TypeVar("_T")

#: A message received: ``str`` for text, ``bytes`` for binary.
Data: TypeAlias = str | bytes

#: One piece of a message: text, or bytes-like.
Fragment: TypeAlias = str | bytes | bytearray | memoryview

#: The fragments of one message (a frame each): a sequence or an iterator of pieces (sync), or
#: an async iterable too (asyncio). Mappings and sets are iterables, but not of fragments.
Fragments: TypeAlias = Sequence[Fragment] | Iterator[Fragment]

#: Everything ``send`` takes, in every API (the asyncio coroutine API also an async iterable).
Message: TypeAlias = str | bytes | bytearray | memoryview | Fragments


def is_fragments(message: object) -> bool:
    """Whether ``message`` (neither ``str`` nor bytes-like) is taken as a message's fragments:
    any iterable but a mapping or a set."""
    return isinstance(message, Iterable | AsyncIterable) and not isinstance(
        message, Mapping | AbstractSet
    )


def unsendable(message: object, *, fragments: bool = True) -> TypeError:
    """The error for a ``send`` of something that is no message, naming its type
    (``fragments``: whether this ``send`` also takes a message's fragments)."""
    hint = ""
    if isinstance(message, Mapping):
        hint = " (serialise it first, e.g. with json.dumps)"
    what = "str, bytes-like, or an iterable of str or bytes-like fragments"
    return TypeError(
        f"cannot send {type(message).__name__}{hint}: a message is "
        + (what if fragments else "str or bytes-like")
    )


def with_fin(fragments: Iterable[_T]) -> Iterator[tuple[_T, bool]]:
    """Each of a message's ``fragments`` with whether it is the last (its frame's FIN bit),
    taken one ahead, as the front ends' ``send`` sends them; nothing for no fragment."""
    iterator = iter(fragments)
    try:
        previous = next(iterator)
    except StopIteration:
        return
    for fragment in iterator:
        yield previous, False
        previous = fragment
    yield previous, True


async def awith_fin(fragments: Iterable[_T] | AsyncIterable[_T]) -> AsyncGenerator[tuple[_T, bool]]:
    """:func:`with_fin` for the asyncio API, whose ``send`` also takes an async iterable."""
    if not isinstance(fragments, AsyncIterable):
        for item in with_fin(fragments):
            yield item
        return
    iterator = aiter(fragments)
    try:
        previous = await anext(iterator)
    except StopAsyncIteration:
        return
    async for fragment in iterator:
        yield previous, False
        previous = fragment
    yield previous, True
