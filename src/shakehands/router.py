"""Routing by path: ``/rooms/{name}`` and ``/items/{id:int}`` mapped to endpoints.

This module owns path patterns, their typed parameters, and matching a request's path against
them; the answer for a path nothing matches (404, before the handshake). It performs no I/O and
knows no server: each server front end (``serve``, ``serve_callbacks``, ``sync.serve``)
recognises a :class:`Router` given in place of its handler, runs :meth:`Router.process_request`
before any other hook, and calls the endpoint that matched. The endpoints are of the kind that
server takes: ``async def`` handlers, :class:`~shakehands.Listener` objects, or plain functions.

Theory of operation: a pattern is a list of segments, each a literal or a whole-segment
parameter. A request path is split on ``/`` *before* percent-decoding, so that ``%2F`` stays
inside a segment, then each segment is decoded (UTF-8); matching walks the segments once, in
linear time. Routes are tried in the order they were added: the first that matches wins.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, TypeVar, overload
from urllib.parse import unquote

from .protocol.handshake import Request, Response

__all__ = ["Router", "Route", "CONVERTERS", "ROUTE_KEY", "PARAMS_KEY", "path_params_of"]

#: The key of ``request.context`` (``ws.context``) holding the :class:`Route` that matched.
ROUTE_KEY = "route"
#: The key of ``request.context`` holding the converted path parameters (``ws.path_params``).
PARAMS_KEY = "path_params"

E = TypeVar("E")

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PARAMETER_RE = re.compile(r"\{([^{}:]*)(?::([^{}]*))?\}")
_DIGITS_RE = re.compile(r"[0-9]{1,18}")  # at most 18 digits: no giant ints from a path


def _convert_str(segment: str) -> str | None:
    return segment


def _convert_int(segment: str) -> int | None:
    return int(segment) if _DIGITS_RE.fullmatch(segment) else None


def _convert_uuid(segment: str) -> uuid.UUID | None:
    if len(segment) != 36:  # the canonical hyphenated form only: one URL per resource
        return None
    try:
        return uuid.UUID(segment)
    except ValueError:
        return None


#: The converters of ``{name:converter}``: each turns one decoded segment into a value, or
#: ``None`` when it does not fit. ``path`` is not here: it takes the rest of the path.
CONVERTERS: dict[str, Callable[[str], Any]] = {
    "str": _convert_str,
    "int": _convert_int,
    "uuid": _convert_uuid,
}


@dataclass(frozen=True)
class Route:
    """One pattern and its endpoint: what :meth:`Router.route` adds, and what a connection
    that matched it finds in ``ws.context["route"]``."""

    #: The pattern as written: ``"/rooms/{name}"``.
    pattern: str
    #: What runs for a connection on this route (a handler or a listener).
    endpoint: Any
    #: ``(literal, None, None)`` or ``(None, name, converter)``, one per segment.
    segments: tuple[tuple[str | None, str | None, str | None], ...]

    @property
    def parameters(self) -> tuple[str, ...]:
        """The names of the pattern's parameters, in order."""
        return tuple(name for _, name, _ in self.segments if name is not None)

    def match(self, segments: list[str]) -> dict[str, Any] | None:
        """The converted parameters if the decoded ``segments`` match this route, else ``None``."""
        own = self.segments
        params: dict[str, Any] = {}
        for index, (literal, name, converter) in enumerate(own):
            if converter == "path":  # always the last: takes one or more segments
                rest = segments[index:]
                if not rest or any(s in ("", ".", "..") for s in rest):
                    return None
                params[name] = "/".join(rest)  # type: ignore[index]
                return params
            if index >= len(segments):
                return None
            segment = segments[index]
            if literal is not None:
                if segment != literal:
                    return None
                continue
            if segment in ("", ".", ".."):
                return None
            value = CONVERTERS[converter](segment)  # type: ignore[index]
            if value is None:
                return None
            params[name] = value  # type: ignore[index]
        return params if len(segments) == len(own) else None


def parse_pattern(pattern: str) -> tuple[tuple[str | None, str | None, str | None], ...]:
    """Split a route pattern into segments, checking it.

    Raises:
        ValueError: the pattern does not start with ``/``, has a parameter that is not a whole
            segment, a bad or duplicate parameter name, an unknown converter, or a ``path``
            parameter that is not last.

    Example:
        >>> parse_pattern("/items/{id:int}")
        (('items', None, None), (None, 'id', 'int'))
    """
    if not isinstance(pattern, str):
        raise TypeError(f"a route pattern is a str, got {pattern!r}")
    if not pattern.startswith("/"):
        raise ValueError(f"route pattern {pattern!r} must start with '/'")
    if "?" in pattern or "#" in pattern:
        raise ValueError(
            f"route pattern {pattern!r}: a path has no '?' or '#' (queries are "
            "not matched: read request.params)"
        )
    raw = pattern[1:].split("/")
    segments: list[tuple[str | None, str | None, str | None]] = []
    seen: set[str] = set()
    for position, text in enumerate(raw):
        parameter = _PARAMETER_RE.fullmatch(text)
        if parameter is None:
            if "{" in text or "}" in text:
                raise ValueError(
                    f"route pattern {pattern!r}: {text!r} - a parameter must be a whole "
                    "segment, {name} or {name:converter}"
                )
            segments.append((text, None, None))
            continue
        name, converter = parameter.group(1), parameter.group(2)
        if converter is None:
            converter = "str"
        if not _NAME_RE.fullmatch(name):
            raise ValueError(f"route pattern {pattern!r}: {name!r} is not a parameter name")
        if name in seen:
            raise ValueError(f"route pattern {pattern!r}: duplicate parameter {name!r}")
        seen.add(name)
        if converter == "path":
            if position != len(raw) - 1:
                raise ValueError(
                    f"route pattern {pattern!r}: a {{{name}:path}} parameter must be last"
                )
        elif converter not in CONVERTERS:
            known = ", ".join([*CONVERTERS, "path"])
            raise ValueError(
                f"route pattern {pattern!r}: unknown converter {converter!r} (known: {known})"
            )
        segments.append((None, name, converter))
    return tuple(segments)


def split_path(path: str) -> list[str] | None:
    """The decoded segments of a request path (``None``: invalid percent-encoding or UTF-8).

    Example:
        >>> split_path("/files/a%2Fb/%C3%A9")
        ['files', 'a/b', 'é']
    """
    try:
        return [unquote(s, errors="strict") for s in path[1:].split("/")]
    except UnicodeDecodeError:
        return None


def path_params_of(request: Request | None) -> dict[str, Any]:
    """The path parameters a :class:`Router` found for ``request`` (``{}`` without one)."""
    if request is None:
        return {}
    params = request.context.get(PARAMS_KEY)
    return params if isinstance(params, dict) else {}


class Router:
    """Path patterns mapped to endpoints; give it to a server in place of its handler.

    Patterns are ``/``-separated segments, each literal or a whole-segment parameter
    ``{name}`` / ``{name:converter}``: ``str`` (the default: one non-empty segment), ``int``
    (decimal digits), ``uuid`` (the hyphenated form), ``path`` (the rest of the path, slashes
    included: the last segment only). Paths are matched percent-decoded segment by segment,
    exactly: ``/rooms/`` does not match ``/rooms`` (add both if both should work), the query
    string is ignored. ``.`` and ``..`` never match a parameter. A request no route matches is
    answered ``404 Not Found`` (with the path in the body) before the handshake; a path that
    is not valid percent-encoded UTF-8 gets 400.

    The handler finds the route's parameters in ``ws.path_params`` (also
    ``ws.context["path_params"]``) and the :class:`Route` in ``ws.context["route"]``.

    Example::

        router = Router()

        @router.route("/rooms/{name}")
        async def room(ws):
            await ws.send(f"welcome to {ws.path_params['name']}")

        router.route("/items/{id:int}", item_handler)

        async with serve(router, "127.0.0.1", 8765) as server:
            await server.serve_forever()
    """

    def __init__(self, routes: Iterable[tuple[str, Any]] = ()) -> None:
        self._routes: list[Route] = []
        for pattern, endpoint in routes:
            self.add(pattern, endpoint)

    @property
    def routes(self) -> tuple[Route, ...]:
        """The routes, in the order they are tried."""
        return tuple(self._routes)

    def add(self, pattern: str, endpoint: Any) -> Route:
        """Map ``pattern`` to ``endpoint``; returns the new :class:`Route`.

        Raises:
            ValueError: an invalid pattern (see :func:`parse_pattern`), or one already added
                (the same segments and converters, whatever the parameter names).
        """
        segments = parse_pattern(pattern)
        shape = [(literal, converter) for literal, _, converter in segments]
        for route in self._routes:
            if [(literal, converter) for literal, _, converter in route.segments] == shape:
                raise ValueError(
                    f"route pattern {pattern!r} is already routed (as {route.pattern!r})"
                )
        route = Route(pattern, endpoint, segments)
        self._routes.append(route)
        return route

    @overload
    def route(self, pattern: str) -> Callable[[E], E]: ...

    @overload
    def route(self, pattern: str, endpoint: E) -> E: ...

    def route(self, pattern: str, endpoint: Any = None) -> Any:
        """``router.route(pattern, endpoint)``, or ``@router.route(pattern)`` as a decorator
        (which returns the function unchanged, its type included).

        Raises:
            ValueError: as :meth:`add`.
        """
        if endpoint is not None:
            self.add(pattern, endpoint)
            return endpoint

        def decorate(function: E) -> E:
            self.add(pattern, function)
            return function

        return decorate

    def match(self, path: str) -> tuple[Route, dict[str, Any]] | None:
        """The first route matching ``path`` (no query) and its parameters, or ``None``."""
        segments = split_path(path)
        if segments is None:
            return None
        for route in self._routes:
            params = route.match(segments)
            if params is not None:
                return route, params
        return None

    def process_request(self, request: Request) -> Response | None:
        """Find the route of ``request``: store it in ``request.context`` and return ``None``
        (go on), or answer 404 (no route) or 400 (a path that does not decode)."""
        if split_path(request.path) is None:
            return Response(
                HTTPStatus.BAD_REQUEST, body="invalid percent-encoding in the request path\n"
            )
        found = self.match(request.path)
        if found is None:
            shown = request.path if len(request.path) <= 200 else request.path[:200] + "..."
            return Response(HTTPStatus.NOT_FOUND, body=f"no WebSocket endpoint at {shown}\n")
        request.context[ROUTE_KEY], request.context[PARAMS_KEY] = found
        return None

    def endpoint_for(self, request: Request | None) -> Any:
        """The endpoint of the route that :meth:`process_request` found for ``request``
        (matched again if that hook did not run: a router used as a plain handler).

        Raises:
            LookupError: no route matches.
        """
        if request is None:
            raise LookupError("no request")
        route = request.context.get(ROUTE_KEY)
        if not isinstance(route, Route):
            found = self.match(request.path)
            if found is None:
                raise LookupError(f"no route for {request.path!r}")
            route, request.context[PARAMS_KEY] = found
            request.context[ROUTE_KEY] = route
        return route.endpoint

    def with_process_request(self, process_request: Any) -> Callable[[Request], Any]:
        """A ``process_request`` hook: this router's, then ``process_request`` (if not ``None``)
        for the requests it routes; that hook may read ``request.context["route"]``."""
        if process_request is None:
            return self.process_request

        def routed(request: Request) -> Any:
            answer = self.process_request(request)
            if answer is not None:
                return answer
            return process_request(request)

        return routed

    def __repr__(self) -> str:
        return f"Router({[route.pattern for route in self._routes]!r})"
