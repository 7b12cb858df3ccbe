"""The compiled data path of the callback API (see shakehands.asyncio._fastpath)."""

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

_C = TypeVar("_C")

class ReadBuffer:
    size: int
    def __init__(self, size: int = 262144) -> None: ...

class FastPath:
    active: bool
    buffered: int
    backlogged: bool
    queued: bool
    def __init__(self, read_buffer: ReadBuffer, batch_limit: int) -> None: ...
    def enable(
        self,
        listener: Any,
        limit: int,
        extension: Any = None,
        message_limit: int = -1,
        /,
    ) -> None: ...
    def disable(self) -> None: ...
    def attach(self, transport: Any, /) -> None: ...
    def flush(self) -> None: ...
    def resume(self, ws: Any, all: bool, /) -> None: ...

class CallbackFastPathMixin:
    def get_buffer(self, sizehint: int, /) -> memoryview: ...
    def buffer_updated(self, nbytes: int, /) -> None: ...
    def data_received(self, data: bytes, /) -> None: ...
    def send(
        self, message: str | bytes | bytearray | memoryview, *, compress: bool = True
    ) -> None: ...

def fan_out(
    data: bytes | memoryview, connections: Iterable[_C], direct: Callable[[_C], bool], /
) -> tuple[int, list[_C]]: ...
