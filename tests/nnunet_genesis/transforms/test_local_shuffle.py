import math

import numpy as np

from nnunet_genesis.transforms import GenesisConfig, corrupt
from nnunet_genesis.transforms.kernels import draw_seed
from nnunet_genesis.transforms.local_shuffle import ShuffleBlocks, max_block_edges, sample_blocks, shuffle_blocks_into

SHUFFLE_ONLY = GenesisConfig(flip_rate=0.0, local_rate=1.0, nonlinear_rate=0.0, paint_rate=0.0)


def shuffle_blocks(image, blocks, rng):
    """New array: ``image`` (C, X, Y, Z) with each block's voxels permuted (same for all channels)."""
    out = np.array(image, dtype=np.float32, order="C", copy=True)
    return shuffle_blocks_into(out, image, blocks, draw_seed(rng))


def block_voxel_indices(blocks, spatial_shape):
    """(flat, first): the flat voxel index of every voxel of every block (blocks in drawing order,
    row-major inside a block); block b owns flat[first[b]:first[b] + volume[b]]. Independent of
    the shuffle kernel, which walks the blocks itself."""
    volume = blocks.sizes.prod(axis=1)
    first = np.cumsum(volume) - volume
    block = np.repeat(np.arange(len(blocks)), volume)
    local = np.arange(int(volume.sum())) - first[block]
    sy, sz = blocks.sizes[block, 1], blocks.sizes[block, 2]
    dx, rest = np.divmod(local, sy * sz)
    dy, dz = np.divmod(rest, sz)
    grid = (blocks.starts[block, 0] + dx, blocks.starts[block, 1] + dy, blocks.starts[block, 2] + dz)
    return np.ravel_multi_index(grid, spatial_shape).astype(np.int64), first


def blocks(starts, sizes):
    return ShuffleBlocks(np.array(starts, dtype=np.int64), np.array(sizes, dtype=np.int64))


def test_disjoint_blocks_keep_their_multiset_and_nothing_else_changes(ct_hu):
    image = ct_hu[:, :16, :20, :20].copy()
    b = blocks([[0, 0, 0], [5, 5, 5], [10, 2, 12], [3, 14, 1]], [[4, 5, 3], [3, 3, 3], [6, 4, 8], [2, 6, 2]])
    out = shuffle_blocks(image, b, np.random.default_rng(0))
    inside = np.zeros(image.shape[1:], bool)
    for st, sz in zip(b.starts, b.sizes):
        sl = tuple(slice(s, s + e) for s, e in zip(st, sz))
        inside[sl] = True
        assert np.array_equal(np.sort(out[0][sl], axis=None), np.sort(image[0][sl], axis=None))
    assert np.array_equal(out[0][~inside], image[0][~inside])
    assert not np.array_equal(out, image)


def test_same_permutation_for_all_channels(unique_volume):
    one = unique_volume((1, 10, 10, 10))
    image = np.concatenate([one, 2 * one + 7])
    out = shuffle_blocks(image, sample_blocks((10, 10, 10), np.random.default_rng(1), SHUFFLE_ONLY),
                         np.random.default_rng(2))
    assert np.array_equal(out[1], 2 * out[0] + 7)


def test_later_block_wins_and_reads_the_original(unique_volume):
    image = unique_volume((1, 8, 8, 8))
    # block 1 lies inside block 0: its voxels must hold values of block 1's own region
    b = blocks([[0, 0, 0], [2, 2, 2]], [[6, 6, 6], [3, 3, 3]])
    for seed in range(5):
        out = shuffle_blocks(image, b, np.random.default_rng(seed))
        inner = (slice(2, 5),) * 3
        assert np.array_equal(np.sort(out[0][inner], axis=None), np.sort(image[0][inner], axis=None))
        outer = np.zeros((8, 8, 8), bool)
        outer[:6, :6, :6] = True
        outer[inner] = False
        assert set(out[0][outer].tolist()) <= set(image[0][:6, :6, :6].ravel().tolist())


def test_permutations_are_uniform():
    # one block of 3 voxels: each of the 6 orders should appear with frequency 1/6
    image = np.array([0.0, 1.0, 2.0], dtype=np.float32).reshape(1, 1, 1, 3)
    b = blocks([[0, 0, 0]], [[1, 1, 3]])
    rng = np.random.default_rng(3)
    n = 3000
    counts = {}
    for _ in range(n):
        key = tuple(shuffle_blocks(image, b, rng).ravel().tolist())
        counts[key] = counts.get(key, 0) + 1
    assert len(counts) == 6
    sd = math.sqrt(n * (1 / 6) * (5 / 6))
    assert all(abs(c - n / 6) < 4.5 * sd for c in counts.values()), counts


def test_block_sampling_follows_the_paper():
    shape = (64, 64, 32)
    b = sample_blocks(shape, np.random.default_rng(0), GenesisConfig())
    assert len(b) == 10_000
    assert list(max_block_edges(shape, GenesisConfig())) == [6, 6, 3]
    assert b.sizes.min() == 1 and list(b.sizes.max(axis=0)) == [6, 6, 3]
    assert np.all(b.starts >= 0) and np.all(b.starts + b.sizes <= np.array(shape))
    for axis, top in enumerate([6, 6, 3]):  # edges uniform on 1..top, starts uniform on 0..dim - edge
        counts = np.bincount(b.sizes[:, axis], minlength=top + 1)[1:]
        assert np.all(np.abs(counts - 10_000 / top) < 5 * math.sqrt(10_000 / top)), counts
        room = shape[axis] - b.sizes[:, axis]
        rel = b.starts[:, axis] / room
        assert abs(rel.mean() - 0.5) < 0.02 and (b.starts[:, axis] == room).any() and (b.starts[:, axis] == 0).any()
    flat, first = block_voxel_indices(b, shape)
    vol = b.sizes.prod(axis=1)
    assert flat.size == vol.sum() and first[-1] == vol[:-1].sum()
    i = 1234  # block i's voxels, in row-major order
    st, sz = b.starts[i], b.sizes[i]
    grid = np.indices(sz).reshape(3, -1).T + st
    expected = np.ravel_multi_index(grid.T, shape)
    assert np.array_equal(flat[first[i]:first[i] + vol[i]], expected)


def test_values_only_move_within_block_reach(unique_volume):
    shape = (1, 30, 30, 20)
    image = unique_volume(shape, seed=4)
    position = {v: np.unravel_index(i, shape[1:]) for i, v in enumerate(image.ravel().tolist())}
    reach = max_block_edges(shape[1:], SHUFFLE_ONLY)  # a value moves less than one block edge
    for seed in range(3):
        out, target = corrupt(image, np.random.default_rng(seed), SHUFFLE_ONLY)
        assert np.array_equal(target, image)
        moved = np.argwhere(out[0] != image[0])
        assert len(moved) > 0.3 * out[0].size
        for p in moved[::50]:
            q = position[float(out[0][tuple(p)])]
            assert np.all(np.abs(np.array(q) - p) < reach)


def test_real_ct_values_are_only_rearranged(ct_hu):
    out, target = corrupt(ct_hu, np.random.default_rng(5), SHUFFLE_ONLY)
    assert np.isin(out, target).all()
    changed = (out != target).mean()
    assert 0.05 < changed < 0.95
    assert out.min() >= target.min() and out.max() <= target.max()
