import math

import numpy as np

from nnunet_genesis.transforms import GenesisConfig
from nnunet_genesis.transforms.kernels import compile_kernels, fill_noise_flat, map_box, shuffle_blocks_flat
from nnunet_genesis.transforms.nonlinear import sample_intensity_mapping


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


def test_map_box_changes_only_the_box_and_matches_interpolation():
    image = np.linspace(-3, 5, 2 * 8 * 9 * 10, dtype=np.float32).reshape(2, 8, 9, 10)
    lo, hi = image.reshape(2, -1).min(1), image.reshape(2, -1).max(1)
    m = sample_intensity_mapping(lo, hi, np.random.default_rng(3), GenesisConfig())
    out = image.copy()
    box = np.array([2, 5, 1, 9, 0, 4], np.int64)
    map_box(image.reshape(2, -1), out.reshape(2, -1), np.array([9, 10], np.int64), box, *m.kernel_tables)
    inside = np.zeros(image.shape[1:], bool)
    inside[2:5, 1:9, 0:4] = True
    assert np.array_equal(out[:, ~inside], image[:, ~inside])
    for c in range(2):
        u = (image[c][inside] - lo[c]) / (hi[c] - lo[c])
        expected = lo[c] + (hi[c] - lo[c]) * np.interp(u, np.linspace(0, 1, m.tables.shape[1]), m.tables[c])
        assert np.allclose(out[c][inside], expected, atol=1e-5 * (hi[c] - lo[c]))


def test_fill_noise_fills_only_the_selected_voxels_uniformly():
    n = 200_000
    dst = np.full((2, n), 99.0, np.float32)
    mask = np.zeros(n, bool)
    mask[::3] = True
    offset = np.array([-2.0, 10.0], np.float32)
    step = np.array([4.0, 1.0], np.float32) * np.float32(2.0 ** -24)
    fill_noise_flat(dst, mask, True, offset, step, np.uint64(5))
    assert np.all(dst[:, ~mask] == 99.0)
    a, b = dst[0, mask], dst[1, mask]
    assert a.min() >= -2.0 and a.max() < 2.0 and b.min() >= 10.0 and b.max() < 11.0
    counts, _ = np.histogram(a, bins=10, range=(-2, 2))
    expected = mask.sum() / 10
    assert np.all(np.abs(counts - expected) < 5 * math.sqrt(expected)), counts
