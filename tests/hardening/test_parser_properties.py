"""Property tests of every parser with arbitrary bytes in arbitrary chunks (hypothesis), using
the same checks as the atheris fuzz targets (fuzz/targets.py). tests/protocol/test_properties.py
covers the frame parser without compression and the server/client protocols end to end; these
add the bare request and response parsers, permessage-deflate on both roles, and inputs built
from valid seeds with a few bytes changed."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from targets import (
    check_client_protocol,
    check_connection,
    check_request_parser,
    check_response_parser,
    check_server_protocol,
    seeds,
)

from shakehands.protocol.connection import Role

SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SEEDS = seeds()
cuts = st.lists(st.integers(0, 100_000), max_size=12)


@st.composite
def mutated(draw: st.DrawFn, *names: str) -> bytes:
    """A seed with a few bytes replaced, inserted or deleted, then maybe noise appended."""
    data = bytearray(SEEDS[draw(st.sampled_from(names))])
    for _ in range(draw(st.integers(0, 4))):
        i = draw(st.integers(0, max(0, len(data) - 1)))
        op = draw(st.sampled_from(["replace", "insert", "delete"]))
        if op == "replace" and data:
            data[i] = draw(st.integers(0, 255))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif data:
            del data[i]
    return bytes(data) + draw(st.binary(max_size=64))


anything = st.binary(max_size=600)


@SETTINGS
@given(st.one_of(anything, mutated("request", "request_and_frames")), cuts)
def test_request_parser(data: bytes, cut: list[int]) -> None:
    check_request_parser(data, cut)


@SETTINGS
@given(st.one_of(anything, mutated("request", "request_and_frames")), cuts, st.booleans())
def test_server_protocol_with_and_without_deflate(
    data: bytes, cut: list[int], compression: bool
) -> None:
    check_server_protocol(data, cut, compression)


@SETTINGS
@given(st.one_of(anything, mutated("response_101", "response_404")), cuts)
def test_response_parser(data: bytes, cut: list[int]) -> None:
    check_response_parser(data, cut)


@SETTINGS
@given(st.one_of(anything, mutated("server_frames")), cuts, st.booleans(), st.booleans())
def test_client_protocol_with_and_without_deflate(
    data: bytes, cut: list[int], accepted: bool, compression: bool
) -> None:
    check_client_protocol(data, cut, accepted, compression)


@SETTINGS
@given(st.one_of(anything, mutated("client_frames")), cuts, st.integers(0, 3))
def test_server_frames_with_deflate_variants(data: bytes, cut: list[int], deflate: int) -> None:
    check_connection(data, cut, Role.SERVER, deflate)


@SETTINGS
@given(st.one_of(anything, mutated("server_frames")), cuts, st.integers(0, 3))
def test_client_frames_with_deflate_variants(data: bytes, cut: list[int], deflate: int) -> None:
    check_connection(data, cut, Role.CLIENT, deflate)
