"""Tests for WebSocket masking: the pure-Python and the C implementations must agree."""

from __future__ import annotations

import array
import importlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shakehands.protocol import masking
from shakehands.protocol.masking import apply_mask_python

MaskFunc = Callable[[bytes | bytearray | memoryview, bytes | bytearray | memoryview], bytes]


def _import_speedups() -> tuple[ModuleType | None, str]:
    try:
        return importlib.import_module("shakehands._speedups"), ""
    except ImportError as exc:
        return None, f"{type(exc).__name__}: {exc}"


speedups, SPEEDUPS_IMPORT_ERROR = _import_speedups()
SKIP_REASON = (
    "C extension shakehands._speedups is not importable "
    f"({SPEEDUPS_IMPORT_ERROR}); testing the pure-Python masking only"
)
requires_speedups = pytest.mark.skipif(speedups is None, reason=SKIP_REASON)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def reference_mask(data: bytes, mask: bytes) -> bytes:
    """The obvious, slow definition from RFC 6455 section 5.3."""
    return bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def c_apply_mask() -> MaskFunc:
    assert speedups is not None
    func: MaskFunc = speedups.apply_mask
    return func


@pytest.fixture(
    params=[
        pytest.param("python", id="python"),
        pytest.param("c", id="c", marks=requires_speedups),
    ]
)
def impl(request: pytest.FixtureRequest) -> MaskFunc:
    if request.param == "python":
        return apply_mask_python
    return c_apply_mask()


MASK = bytes([0x37, 0xFA, 0x21, 0x3D])


# -- RFC 6455 and basic behaviour ----------------------------------------------------------------


def test_rfc6455_section_5_7_example(impl: MaskFunc) -> None:
    # "A single-frame masked text message": 0x81 0x85 0x37 0xfa 0x21 0x3d 0x7f 0x9f 0x4d 0x51 0x58
    masked = impl(b"Hello", MASK)
    assert masked == bytes([0x7F, 0x9F, 0x4D, 0x51, 0x58])
    assert impl(masked, MASK) == b"Hello"


def test_round_trip(impl: MaskFunc) -> None:
    data = os.urandom(1000)
    mask = os.urandom(4)
    masked = impl(data, mask)
    assert masked != data or mask == b"\x00\x00\x00\x00"
    assert impl(masked, mask) == data


@pytest.mark.parametrize("n", range(41))
def test_every_small_length(impl: MaskFunc, n: int) -> None:
    data = bytes((i * 7 + 3) & 0xFF for i in range(n))
    mask = b"\x01\x80\xfe\x5a"
    assert impl(data, mask) == reference_mask(data, mask)


@pytest.mark.parametrize(
    "n", [127, 128, 4093, 65535, 65536, 65537, 65536 + 7, 1 << 20, (1 << 20) + 3]
)
def test_big_sizes(impl: MaskFunc, n: int) -> None:
    # 65536 is the C extension's threshold for releasing the GIL: test on both sides of it.
    data = os.urandom(n)
    mask = os.urandom(4)
    result = impl(data, mask)
    assert len(result) == n
    assert result == reference_mask(data, mask)


def test_empty(impl: MaskFunc) -> None:
    assert impl(b"", MASK) == b""
    assert type(impl(b"", MASK)) is bytes


def test_zero_mask_is_identity(impl: MaskFunc) -> None:
    data = os.urandom(100)
    assert impl(data, b"\x00\x00\x00\x00") == data


def test_returns_bytes_and_leaves_input_alone(impl: MaskFunc) -> None:
    data = bytearray(b"some payload bytes")
    before = bytes(data)
    result = impl(data, MASK)
    assert type(result) is bytes
    assert data == before


# -- bytes-like inputs ---------------------------------------------------------------------------


def test_bytearray_and_memoryview_inputs(impl: MaskFunc) -> None:
    data = os.urandom(77)
    expected = reference_mask(data, MASK)
    assert impl(bytearray(data), MASK) == expected
    assert impl(memoryview(data), MASK) == expected
    assert impl(data, bytearray(MASK)) == expected
    assert impl(data, memoryview(MASK)) == expected
    assert impl(memoryview(bytearray(data)), memoryview(bytearray(MASK))) == expected


@pytest.mark.parametrize("offset", range(1, 9))
def test_unaligned_memoryview_slices(impl: MaskFunc, offset: int) -> None:
    buffer = os.urandom(300)
    view = memoryview(buffer)[offset : offset + 200]
    assert impl(view, MASK) == reference_mask(bytes(view), MASK)


def test_multibyte_format_memoryview_counts_bytes(impl: MaskFunc) -> None:
    # A memoryview of 32-bit items: masking works on the underlying bytes, not on items.
    items = array.array("I", range(10))
    raw = items.tobytes()
    assert impl(memoryview(items), MASK) == reference_mask(raw, MASK)
    assert impl(items, MASK) == reference_mask(raw, MASK)  # type: ignore[arg-type]


def test_non_contiguous_memoryview_is_rejected(impl: MaskFunc) -> None:
    view = memoryview(bytes(range(20)))[::2]
    with pytest.raises(BufferError):
        impl(view, MASK)


@pytest.mark.parametrize("bad", ["text", 4, None, [1, 2, 3, 4]])
def test_non_bytes_like_data_is_a_type_error(impl: MaskFunc, bad: object) -> None:
    with pytest.raises(TypeError):
        impl(bad, MASK)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        impl(b"data", bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("mask", [b"", b"\x01", b"\x01\x02\x03", b"\x01\x02\x03\x04\x05", b"x" * 8])
def test_bad_mask_length_is_a_value_error(impl: MaskFunc, mask: bytes) -> None:
    with pytest.raises(ValueError, match="4 bytes"):
        impl(b"hello world", mask)
    with pytest.raises(ValueError, match="4 bytes"):
        impl(b"", mask)
    with pytest.raises(ValueError, match="4 bytes"):
        impl(b"hello world", bytearray(mask))


# -- C and Python agree --------------------------------------------------------------------------


@requires_speedups
@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=3000), mask=st.binary(min_size=4, max_size=4))
def test_c_and_python_agree(data: bytes, mask: bytes) -> None:
    c_result = c_apply_mask()(data, mask)
    assert c_result == apply_mask_python(data, mask)
    assert c_result == reference_mask(data, mask)


@requires_speedups
@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(max_size=500),
    mask=st.binary(min_size=4, max_size=4),
    start=st.integers(min_value=0, max_value=16),
)
def test_c_and_python_agree_on_unaligned_views(data: bytes, mask: bytes, start: int) -> None:
    view = memoryview(bytearray(data))[start:]
    assert c_apply_mask()(view, mask) == apply_mask_python(view, mask)


def test_c_extension_has_docstrings() -> None:
    if speedups is None:
        pytest.skip(SKIP_REASON)
    assert speedups.__doc__
    assert speedups.apply_mask.__doc__


# -- choosing an implementation ------------------------------------------------------------------


def test_speedups_required_in_ci() -> None:
    """CI sets SHAKEHANDS_REQUIRE_SPEEDUPS=1: this proves the C extension was really built."""
    if not _env_flag("SHAKEHANDS_REQUIRE_SPEEDUPS"):
        pytest.skip("SHAKEHANDS_REQUIRE_SPEEDUPS is not set")
    assert speedups is not None, (
        "SHAKEHANDS_REQUIRE_SPEEDUPS=1 but the C extension is missing: " + SPEEDUPS_IMPORT_ERROR
    )
    if not _env_flag("SHAKEHANDS_NO_SPEEDUPS"):
        assert masking.USING_SPEEDUPS
        assert masking.apply_mask is speedups.apply_mask


def test_chosen_implementation_matches_flag() -> None:
    if _env_flag("SHAKEHANDS_NO_SPEEDUPS") or speedups is None:
        assert masking.USING_SPEEDUPS is False
        assert masking.apply_mask is apply_mask_python
    else:
        assert masking.USING_SPEEDUPS is True
        assert masking.apply_mask is speedups.apply_mask
    assert masking.apply_mask(b"Hello", MASK) == bytes([0x7F, 0x9F, 0x4D, 0x51, 0x58])


def _run_in_subprocess(code: str, no_speedups: str | None) -> str:
    env = dict(os.environ)
    env.pop("SHAKEHANDS_NO_SPEEDUPS", None)
    if no_speedups is not None:
        env["SHAKEHANDS_NO_SPEEDUPS"] = no_speedups
    # Import the very copy of shakehands that this test process uses.
    package_root = str(Path(masking.__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    completed = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout.strip()


CHOICE_PROBE = (
    "import shakehands.protocol.masking as m; "
    "print(m.USING_SPEEDUPS, m.apply_mask is m.apply_mask_python, "
    "m.apply_mask(b'Hello', bytes([0x37, 0xfa, 0x21, 0x3d])).hex())"
)


def test_env_var_forces_pure_python_in_subprocess() -> None:
    assert _run_in_subprocess(CHOICE_PROBE, "1") == "False True 7f9f4d5158"


def test_env_var_zero_does_not_disable_speedups_in_subprocess() -> None:
    using = speedups is not None
    assert _run_in_subprocess(CHOICE_PROBE, "0") == f"{using} {not using} 7f9f4d5158"
    assert _run_in_subprocess(CHOICE_PROBE, "") == f"{using} {not using} 7f9f4d5158"


@requires_speedups
def test_c_extension_from_many_threads() -> None:
    # Large inputs are masked with the GIL released: run several at once.
    from concurrent.futures import ThreadPoolExecutor

    jobs = [(os.urandom((1 << 18) + i), os.urandom(4)) for i in range(8)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda job: c_apply_mask()(*job), jobs))
    for (data, mask), result in zip(jobs, results, strict=True):
        assert result == apply_mask_python(data, mask)
