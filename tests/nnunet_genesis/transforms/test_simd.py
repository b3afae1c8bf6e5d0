"""The eight-lane gathers: exact results, and inactive lanes neither read nor written."""

import numpy as np
import pytest
from numba import njit

from nnunet_genesis.transforms.simd import LANES, gather_copy, gather_piecewise_linear


@njit
def _copy(src, dst, index, i, at, n):
    gather_copy(src, dst, index, i, at, n)


@njit
def _map(src, dst, at, n, lo, hi, scale, a, b, last):
    gather_piecewise_linear(src, dst, at, n, lo, hi, scale, a, b, last)


@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("n", [0, 1, 3, 7, 8, 9, 20])
def test_gather_copy_writes_the_first_n_lanes_only(index_dtype, n):
    rng = np.random.default_rng(n)
    src = rng.standard_normal(50).astype(np.float32)
    index = np.empty(12 + LANES, index_dtype)
    index[:12] = rng.integers(0, 50, 12)
    index[12:] = np.iinfo(index_dtype).max  # beyond the row: must never be dereferenced
    dst = np.full(40, -7.0, np.float32)
    _copy(src, dst, index, 4, 30, n)
    k = min(n, LANES)
    expected = np.full(40, -7.0, np.float32)
    expected[30:30 + k] = src[index[4:4 + k]]
    assert np.array_equal(dst, expected)


def test_gather_copy_at_the_very_end_of_dst():
    src = np.arange(10, dtype=np.float32)
    index = np.array([9, 8, 7] + [10 ** 9] * LANES, np.int64)
    dst = np.zeros(3, np.float32)  # a full 8-lane store would run past the end
    _copy(src, dst, index, 0, 0, 3)
    assert dst.tolist() == [9.0, 8.0, 7.0]


def scalar_map(x, lo, hi, scale, a, b):
    u = x - lo
    k = np.clip((u * scale).astype(np.int64), 0, len(a) - 1)
    return np.clip(a[k] + b[k] * u, lo, hi)


@pytest.mark.parametrize("n", [0, 2, 8, 11])
def test_gather_piecewise_linear_matches_the_scalar_formula(n):
    rng = np.random.default_rng(3)
    lo, hi = np.float32(-1.5), np.float32(2.0)
    scale = np.float32(15 / 3.5)
    a = rng.uniform(-1, 1, 16).astype(np.float32)
    b = rng.uniform(-1, 1, 16).astype(np.float32)
    src = rng.uniform(-2.5, 3.0, 30).astype(np.float32)  # some below lo / above hi: end bins, clipped
    dst = np.full(30, 99.0, np.float32)
    _map(src, dst, 5, n, lo, hi, scale, a, b, 15)
    k = min(n, LANES)
    expected = np.full(30, 99.0, np.float32)
    expected[5:5 + k] = scalar_map(src[5:5 + k], lo, hi, scale, a, b)
    np.testing.assert_allclose(dst, expected, rtol=1e-6, atol=1e-6)
    assert np.array_equal(dst[:5], expected[:5]) and np.array_equal(dst[5 + k:], expected[5 + k:])


def test_gather_piecewise_linear_in_place():
    src = np.linspace(0, 1, 8, dtype=np.float32)
    a, b = np.zeros(4, np.float32), np.full(4, 2.0, np.float32)
    out = src.copy()
    _map(out, out, 0, 8, np.float32(0), np.float32(1), np.float32(3), a, b, 3)
    np.testing.assert_allclose(out, np.minimum(2 * src, 1))


def test_wrong_types_are_refused_at_compile_time():
    from numba.core.errors import TypingError

    with pytest.raises(TypingError):
        _copy(np.zeros(4), np.zeros(4), np.zeros(LANES, np.int64), 0, 0, 1)  # float64 arrays
    with pytest.raises(TypingError):
        _copy(np.zeros(4, np.float32), np.zeros(4, np.float32), np.zeros(LANES, np.int64), 0, 0.0, 1)  # float position
    with pytest.raises(TypingError):
        table = np.zeros(4, np.float32)
        _map(table, table, 0, 4, 0.0, 1.0, 3.0, table, table, 3.5)  # float table end
