"""The options, defined once in :mod:`shakehands.protocol.config`: defaults, validation, typing."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import pytest

from shakehands import DeflateOptions
from shakehands.protocol import config
from shakehands.protocol.client import Backoff
from shakehands.protocol.config import (
    ClientConfig,
    ClientOptions,
    ServerConfig,
    ServerOptions,
    client_config,
    server_config,
    unix_client_config,
)


def field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


@pytest.mark.parametrize(
    ("typed_dict", "dataclass"), [(ServerOptions, ServerConfig), (ClientOptions, ClientConfig)]
)
def test_keyword_arguments_and_dataclass_name_the_same_options(
    typed_dict: type, dataclass: type
) -> None:
    assert set(typing.get_type_hints(typed_dict)) == field_names(dataclass)


@pytest.mark.parametrize(
    ("typed_dict", "dataclass"), [(ServerOptions, ServerConfig), (ClientOptions, ClientConfig)]
)
def test_keyword_arguments_and_dataclass_agree_on_types(typed_dict: type, dataclass: type) -> None:
    hints = typing.get_type_hints(typed_dict)
    fields = typing.get_type_hints(dataclass)
    # Two documented differences: the keyword argument accepts "deflate" (stored resolved to
    # DeflateOptions) and None for subprotocols (stored as ()).
    widened = {"compression", "subprotocols"}
    for name in set(hints) - widened:
        assert hints[name] == fields[name], name
    assert typing.get_args(fields["compression"]) == (DeflateOptions, type(None))
    assert set(typing.get_args(hints["compression"])) >= {DeflateOptions, type(None)}


def test_defaults() -> None:
    server = ServerConfig()
    assert server.max_message_size == 2**20
    assert server.max_frame_size is None
    assert server.max_queue == 32
    assert server.write_limit == 2**16
    assert (server.ping_interval, server.ping_timeout) == (20.0, 20.0)
    assert (server.open_timeout, server.close_timeout) == (10.0, 10.0)
    assert server.compression == DeflateOptions()
    assert (server.max_line, server.max_headers, server.max_header_bytes) == (8192, 128, 8192)
    assert server.origins is None and server.subprotocols == ()
    assert server.max_connections is None and server.legacy_hixie76 is False
    client = ClientConfig()
    assert client.origin is None and client.extra_headers is None
    assert client.compression == DeflateOptions()


def test_compression_is_resolved() -> None:
    assert server_config(compression="deflate").compression == DeflateOptions()
    assert server_config(compression=None).compression is None
    small = DeflateOptions(server_max_window_bits=10)
    assert client_config(compression=small).compression is small
    with pytest.raises(ValueError, match="compression must be .* got 'gzip'"):
        server_config(compression="gzip")  # type: ignore[typeddict-item]


def test_sequences_are_stored_as_tuples() -> None:
    server = server_config(origins=["https://a.test", None], subprotocols=["chat"])
    assert server.origins == ("https://a.test", None)
    assert server.subprotocols == ("chat",)
    assert server_config(subprotocols=None).subprotocols == ()


def test_frozen() -> None:
    server = ServerConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        server.max_queue = 1  # type: ignore[misc]
    assert server.replace(max_queue=1).max_queue == 1
    with pytest.raises(ValueError, match="max_queue"):
        server.replace(max_queue=0)


def test_unknown_options_are_named() -> None:
    with pytest.raises(TypeError, match="unknown server option: max_mesage_size"):
        server_config(max_mesage_size=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unknown client options: origins, process_request"):
        client_config(origins=[], process_request=None)  # type: ignore[call-arg]


BAD_VALUES: list[tuple[str, Any, type[Exception], str]] = [
    ("max_message_size", 0, ValueError, "max_message_size must be at least 1, got 0"),
    ("max_message_size", "1", TypeError, "max_message_size must be an int or None, got '1'"),
    ("max_message_size", True, TypeError, "max_message_size must be an int or None, got True"),
    ("max_frame_size", -5, ValueError, "max_frame_size must be at least 1, got -5"),
    ("max_queue", 0, ValueError, "max_queue must be at least 1, got 0"),
    ("max_queue", None, TypeError, "max_queue must be an int, got None"),
    ("write_limit", 0, ValueError, "write_limit must be at least 1, got 0"),
    ("ping_interval", 0, ValueError, "ping_interval must be a positive, finite number"),
    ("ping_timeout", float("inf"), ValueError, "ping_timeout must be a positive, finite"),
    ("open_timeout", "10", TypeError, "open_timeout must be a number of seconds or None"),
    ("close_timeout", -1.0, ValueError, "close_timeout must be a positive, finite number"),
    ("close_timeout", float("nan"), ValueError, "close_timeout must be a positive, finite"),
]
SERVER_BAD_VALUES: list[tuple[str, Any, type[Exception], str]] = [
    ("origins", "https://a.test", TypeError, "origins must be a list of strings, got 'https"),
    ("origins", [1], TypeError, "origins must hold strings or None, got 1"),
    ("subprotocols", "chat", TypeError, "subprotocols must be a list of strings, got 'chat'"),
    ("subprotocols", [None], TypeError, "subprotocols must hold strings, got None"),
    ("process_request", "yes", TypeError, "process_request must be callable, got 'yes'"),
    ("select_subprotocol", 1, TypeError, "select_subprotocol must be callable, got 1"),
    ("max_line", 8, ValueError, "max_line must be at least 16, got 8"),
    ("max_headers", 0, ValueError, "max_headers must be at least 1, got 0"),
    ("max_header_bytes", 0, ValueError, "max_header_bytes must be at least 1, got 0"),
    ("max_connections", 0, ValueError, "max_connections must be at least 1, got 0"),
    ("legacy_hixie76", 1, TypeError, "legacy_hixie76 must be a bool, got 1"),
]
CLIENT_BAD_VALUES: list[tuple[str, Any, type[Exception], str]] = [
    ("origin", 5, TypeError, "origin must be a string or None, got 5"),
    ("subprotocols", "chat", TypeError, "subprotocols must be a list of strings, got 'chat'"),
    ("max_redirects", -1, ValueError, "max_redirects must be at least 0, got -1"),
    ("max_redirects", 1.5, TypeError, "max_redirects must be an int, got 1.5"),
    ("max_redirects", True, TypeError, "max_redirects must be an int, got True"),
    ("max_redirects", None, TypeError, "max_redirects must be an int, got None"),
    ("backoff_initial_delay", 0, ValueError, "backoff initial_delay must be > 0, got 0"),
    ("backoff_initial_delay", float("nan"), ValueError, "backoff initial_delay must be > 0"),
    ("backoff_factor", 0.9, ValueError, "backoff factor must be >= 1, got 0.9"),
    ("backoff_factor", "2", TypeError, "backoff factor must be a number, got '2'"),
    ("backoff_max_delay", 0.5, ValueError, "backoff max_delay (0.5) must be >= initial_delay"),
    ("backoff_max_delay", True, TypeError, "backoff max_delay must be a number, got True"),
    ("proxy", 3128, TypeError, "proxy must be a URL string, True or None, got 3128"),
    ("proxy", False, TypeError, "proxy must be a URL string, True or None, got False"),
    ("proxy", "ftp://h:21", ValueError, "unsupported proxy scheme 'ftp'"),
    ("proxy", "http://h:1/path", ValueError, "a proxy URL has no path, query or fragment"),
]


@pytest.mark.parametrize(("name", "value", "error", "message"), BAD_VALUES + SERVER_BAD_VALUES)
def test_bad_server_values_name_option_and_value(
    name: str, value: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as excinfo:
        server_config(**{name: value})
    assert str(excinfo.value).startswith(message)


@pytest.mark.parametrize(("name", "value", "error", "message"), BAD_VALUES + CLIENT_BAD_VALUES)
def test_bad_client_values_name_option_and_value(
    name: str, value: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as excinfo:
        client_config(**{name: value})
    assert str(excinfo.value).startswith(message)


def test_client_connect_time_options() -> None:
    client = ClientConfig()
    assert client.max_redirects == 10 and client.proxy is True
    assert (client.backoff_initial_delay, client.backoff_factor, client.backoff_max_delay) == (
        1.0,
        1.618,
        60.0,
    )
    assert client_config(max_redirects=0, proxy="socks5h://127.0.0.1:9050").max_redirects == 0
    backoff = Backoff.from_config(client_config(backoff_initial_delay=2, backoff_max_delay=3))
    assert backoff == Backoff(initial_delay=2, factor=1.618, max_delay=3)


def test_backoff_and_its_options_share_one_validation() -> None:
    # The same values, the same errors: Backoff and ClientConfig call check_backoff.
    for kwargs in ({"factor": 0.5}, {"initial_delay": -1}, {"max_delay": "x"}):
        with pytest.raises((TypeError, ValueError)) as direct:
            Backoff(**kwargs)  # type: ignore[arg-type]
        with pytest.raises(type(direct.value)) as through_config:
            client_config(**{f"backoff_{k}": v for k, v in kwargs.items()})  # type: ignore[misc]
        assert str(through_config.value) == str(direct.value)


def test_unix_client_config_has_no_proxy() -> None:
    assert unix_client_config().proxy is None
    assert unix_client_config(max_redirects=2).max_redirects == 2
    with pytest.raises(TypeError, match="proxy does not apply to a Unix domain socket"):
        unix_client_config(proxy="http://h:1")  # type: ignore[typeddict-unknown-key]
    with pytest.raises(TypeError, match="unknown client option: origins"):
        unix_client_config(origins=[])  # type: ignore[call-arg]


def test_every_field_has_a_doc_comment() -> None:
    # Each option is documented where it is defined: a "#:" comment right above it.
    source = config.__loader__.get_source(config.__name__)  # type: ignore[union-attr]
    assert source is not None
    lines = source.splitlines()
    for cls in (config.Config, ServerConfig, ClientConfig):
        top = next(i for i, line in enumerate(lines) if line.startswith(f"class {cls.__name__}"))
        for name in cls.__annotations__:
            index = next(i for i in range(top, len(lines)) if lines[i].startswith(f"    {name}: "))
            assert lines[index - 1].strip().startswith("#:"), name
