"""Unix domain socket files for the servers: bind safely, remove on close.

Shared by :func:`shakehands.asyncio.server.unix_serve`, ``unix_serve_callbacks`` and
:func:`shakehands.sync.server.unix_serve`. It owns the life of the socket *file*: what to do
with one left behind by a crashed run (removed when nothing listens there any more; an error
when a server still answers there, or when the path is not a socket at all), and removing it
when the server closes, unless another server has replaced it meanwhile. It knows nothing
about WebSocket.

Linux abstract sockets (a path starting with a NUL byte) have no file: nothing to check or
remove.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat

__all__ = ["UnixSocketFile", "bind_unix_socket"]


class UnixSocketFile:
    """The socket file a server created: removed by :meth:`remove` if it is still that file."""

    __slots__ = ("path", "_identity")

    def __init__(self, path: str) -> None:
        #: The filesystem path of the socket.
        self.path = path
        st = os.stat(path)
        self._identity = (st.st_dev, st.st_ino)

    def remove(self) -> None:
        """Unlink the socket file, unless it is gone or another server has bound the path."""
        with contextlib.suppress(OSError):
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == self._identity:
                os.unlink(self.path)


def _clear_stale(path: str) -> None:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(
            errno.EEXIST, f"{path} exists and is not a socket: refusing to replace it"
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        # Nothing listens: the socket file of a server that did not close (a crash, kill -9).
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    except OSError:
        pass  # busy (backlog full, EAGAIN) or a timeout: a live server, most likely
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"{path}: a server is already listening on this socket")


def bind_unix_socket(
    path: str | os.PathLike[str], backlog: int = 128
) -> tuple[socket.socket, UnixSocketFile | None]:
    """A listening ``AF_UNIX`` stream socket bound to ``path``, and the file to remove on close.

    A socket file left by a server that no longer runs is replaced; a path where a server
    still listens raises ``OSError`` (``EADDRINUSE``), and a path that exists but is not a
    socket raises ``FileExistsError``: neither is ever removed.

    Returns:
        ``(sock, file)``: ``file`` is ``None`` for a Linux abstract socket (``"\\0name"``).
    """
    name = os.fspath(path)
    if not isinstance(name, str):
        raise TypeError(f"path must be a str or os.PathLike[str], got {path!r}")
    if not name:
        raise ValueError("path must not be empty")
    abstract = name.startswith("\0")
    if not abstract:
        _clear_stale(name)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(name)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock, None if abstract else UnixSocketFile(name)
