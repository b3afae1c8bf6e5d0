import math

import numpy as np
import pytest

from nnunet_genesis.transforms import GenesisConfig
from nnunet_genesis.transforms.kernels import (bezier_table, box_intervals, compile_kernels, copy_intervals,
                                               map_intervals, noise_intervals, shuffle_blocks_flat)
from nnunet_genesis.transforms.nonlinear import sample_curves


def test_compile_kernels_runs_twice():
    compile_kernels()
    compile_kernels()


def test_every_position_is_equally_likely_in_a_larger_block():
    # one block of 5 voxels (odd: exercises both halves of each 64-bit draw)
    src = np.arange(5, dtype=np.float32).reshape(1, 5)
    starts, sizes, yz = np.zeros((1, 3), np.int64), np.array([[1, 1, 5]], np.int64), np.array([1, 5], np.int64)
    n = 4000
    counts = np.zeros((5, 5))  # value x position
    state = np.uint64(7)
    for _ in range(n):
        dst = src.copy()
        state = np.uint64(shuffle_blocks_flat(src, dst, starts, sizes, yz, state))
        counts[dst[0].astype(int), np.arange(5)] += 1
    sd = math.sqrt(n * 0.2 * 0.8)
    assert np.all(np.abs(counts - n / 5) < 4.5 * sd), counts


def test_shuffle_kernel_is_deterministic_and_seed_dependent():
    src = np.random.default_rng(0).standard_normal((2, 10 * 12 * 14)).astype(np.float32)
    starts = np.array([[0, 0, 0], [4, 5, 6], [1, 2, 3]], np.int64)
    sizes = np.array([[5, 6, 7], [6, 7, 8], [3, 3, 3]], np.int64)
    yz = np.array([12, 14], np.int64)
    runs = []
    for seed in (1, 1, 2):
        dst = src.copy()
        shuffle_blocks_flat(src, dst, starts, sizes, yz, np.uint64(seed))
        runs.append(dst)
    assert np.array_equal(runs[0], runs[1]) and not np.array_equal(runs[0], runs[2])
    # both channels moved by the same permutation (channel 0 values are distinct)
    pos = {v: i for i, v in enumerate(src[0].tolist())}
    where = np.array([pos[v] for v in runs[0][0].tolist()])
    assert np.array_equal(runs[0][1], src[1][where])
    assert not np.array_equal(where, np.arange(where.size))


def box_mask(shape, starts, ends):
    m = np.zeros(shape, bool)
    for a, b in zip(starts, ends):
        m[a[0]:b[0], a[1]:b[1], a[2]:b[2]] = True
    return m


def runs_mask(shape, first, stop):
    flat = np.zeros(int(np.prod(shape)), bool)
    for a, b in zip(first, stop):
        assert not flat[a:b].any(), "runs overlap"
        flat[a:b] = True
    return flat.reshape(shape)


def test_box_intervals_are_the_union_or_its_complement_as_ordered_runs():
    rng = np.random.default_rng(0)
    shape = np.array([9, 11, 13], np.int64)
    for trial in range(200):
        n = int(rng.integers(1, 6))
        starts = rng.integers(0, shape - 1, (n, 3))
        ends = np.minimum(starts + rng.integers(1, 8, (n, 3)), shape)
        expected = box_mask(tuple(shape), starts, ends)
        for inside in (True, False):
            first, stop = box_intervals(shape, starts, ends, inside)
            assert np.all(stop > first) and np.all(first[1:] >= stop[:-1])  # ordered, disjoint, non-empty
            assert np.array_equal(runs_mask(tuple(shape), first, stop), expected if inside else ~expected)
            z_end = stop % shape[2]
            assert np.all((z_end == 0) | (first // shape[2] == (stop - 1) // shape[2]))  # runs stay in one row
        # touching boxes merge into one run per row
    first, _ = box_intervals(shape, np.array([[0, 0, 0], [0, 0, 4]]), np.array([[1, 1, 4], [1, 1, 9]]), True)
    assert first.tolist() == [0]


def test_copy_map_and_noise_touch_only_the_runs():
    rng = np.random.default_rng(1)
    shape = (8, 9, 10)
    image = np.linspace(-3, 5, 2 * 720, dtype=np.float32).reshape(2, 720)
    starts, ends = np.array([[2, 1, 0], [4, 5, 6]]), np.array([[5, 9, 4], [7, 8, 10]])
    first, stop = box_intervals(np.array(shape, np.int64), starts, ends, True)
    inside = box_mask(shape, starts, ends).reshape(-1)
    out = np.full_like(image, 99.0)
    copy_intervals(image, out, first, stop)
    assert np.array_equal(out[:, inside], image[:, inside]) and np.all(out[:, ~inside] == 99.0)

    lo, hi = image.min(1), image.max(1)
    m = sample_curves(2, rng, GenesisConfig()).over(lo, hi)
    out = image.copy()
    map_intervals(image, out, first, stop, *m.kernel_tables)
    assert np.array_equal(out[:, ~inside], image[:, ~inside])
    for c in range(2):
        u = (image[c][inside] - lo[c]) / (hi[c] - lo[c])
        expected = lo[c] + (hi[c] - lo[c]) * np.interp(u, np.linspace(0, 1, m.tables.shape[1]), m.tables[c])
        assert np.allclose(out[c][inside], expected, atol=1e-5 * (hi[c] - lo[c]))


def test_noise_is_uniform_in_range_and_a_function_of_seed_and_voxel():
    n = 200_000
    first, stop = np.arange(0, n, 3, dtype=np.int64), np.arange(0, n, 3, dtype=np.int64) + 1
    where = np.zeros(n, bool)
    where[::3] = True
    offset = np.array([-2.0, 10.0], np.float32)
    step = np.array([4.0, 1.0], np.float32) * np.float32(2.0 ** -24)
    dst = np.full((2, n), 99.0, np.float32)
    noise_intervals(dst, first, stop, offset, step, np.uint64(5))
    assert np.all(dst[:, ~where] == 99.0)
    a, b = dst[0, where], dst[1, where]
    assert a.min() >= -2.0 and a.max() < 2.0 and b.min() >= 10.0 and b.max() < 11.0
    counts, _ = np.histogram(a, bins=10, range=(-2, 2))
    expected = where.sum() / 10
    assert np.all(np.abs(counts - expected) < 5 * math.sqrt(expected)), counts
    assert abs(np.corrcoef(a[:-1], a[1:])[0, 1]) < 0.01 and abs(np.corrcoef(a, b)[0, 1]) < 0.01
    # the value at a voxel does not depend on which runs are filled, but on the seed
    again = np.full((2, n), 99.0, np.float32)
    noise_intervals(again, first[::2].copy(), stop[::2].copy(), offset, step, np.uint64(5))
    assert np.array_equal(again[:, first[::2]], dst[:, first[::2]])
    noise_intervals(again, first, stop, offset, step, np.uint64(6))
    assert not np.array_equal(again[:, where], dst[:, where])


@pytest.mark.parametrize("control", [(0.2, 0.7, 0.1, 0.9), (0.0, 0.0, 0.3, 0.6), (1.0, 1.0, 0.0, 1.0),
                                     (0.4, 0.4, 0.5, 0.5), (0.0, 1.0, 1.0, 1.0)])
def test_bezier_table_is_np_interp_of_the_sampled_curve(control):
    x1, x2, y1, y2 = control
    t = np.linspace(0, 1, 8 * 64 + 1)
    w1, w2, w3 = 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t ** 2, t ** 3
    expected = np.interp(np.linspace(0, 1, 64), w1 * x1 + w2 * x2 + w3, w1 * y1 + w2 * y2 + w3)
    np.testing.assert_allclose(bezier_table(x1, x2, y1, y2, 64, t.size), expected, atol=1e-12)
