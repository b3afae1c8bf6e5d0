"""Local pixel shuffling: voxels permuted inside many small random blocks.

Semantics (Zhou et al., MICCAI 2019 / MedIA 2021): ``shuffle_blocks`` blocks are drawn
one after another; block edges are uniform in 1..max(1, floor(dim * fraction)) voxels per
axis and positions uniform inside the volume. Each block's voxels are permuted uniformly at
random (the same permutation for every channel, so a voxel moves with all its channels).
Values are always read from the unshuffled image, so overlapping blocks do not compound;
where blocks overlap, the block drawn later wins, exactly as in the sequential algorithm.

Why it is fast (no per-block Python loop; see docs/transforms.md, "Speed"):
- permutations: blocks are grouped by voxel count; each group draws random keys with the slot
  number packed into the low bits and sorts them row-wise (one ``np.sort`` per group); the
  sorted keys stay in that grouped layout.
- the move: blocks are then walked in drawing order in chunks of about ``MOVE_CHUNK`` voxel
  slots; per chunk the flat voxel indices are rebuilt (a cumulative sum with a jump at each
  block row), the block's values are read row by row, permuted in the chunk, and written with
  one scatter (repeated targets: the later block wins). Only the sorted keys (4 bytes per
  block voxel, 2.7 million voxels at 128^3) span all blocks; the int64 index arrays exist per
  chunk only: on the machine this was tuned on, fresh multi-megabyte arrays (page faults) and
  passes over memory shared with other jobs cost more than the arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnunet_genesis.transforms.config import GenesisConfig


@dataclass(frozen=True)
class ShuffleBlocks:
    """Blocks in drawing order (later blocks win where they overlap)."""

    starts: np.ndarray  # (n, 3) int64, first voxel of each block
    sizes: np.ndarray  # (n, 3) int64, edge lengths (>= 1)

    def __len__(self) -> int:
        return int(self.starts.shape[0])

    def subset(self, keep: np.ndarray) -> "ShuffleBlocks":
        """Blocks where ``keep`` is true, drawing order preserved."""
        return ShuffleBlocks(self.starts[keep], self.sizes[keep])


# Voxel slots per step of the move (measured best of 2**13..2**22 at 128^3): the chunk's index
# arrays (about 1 MiB each) stay in the caches.
MOVE_CHUNK = 1 << 17


def max_block_edges(spatial_shape: tuple[int, int, int], config: GenesisConfig) -> np.ndarray:
    """Largest block edge per axis: max(1, floor(dim * shuffle_max_block_fraction))."""
    dims = np.asarray(spatial_shape, dtype=np.int64)
    return np.maximum(1, np.floor(dims * config.shuffle_max_block_fraction + 1e-9).astype(np.int64))


def sample_blocks(spatial_shape: tuple[int, int, int], rng: np.random.Generator,
                  config: GenesisConfig) -> ShuffleBlocks:
    """Draw ``config.shuffle_blocks`` blocks (sizes, then positions) for one volume."""
    n = config.shuffle_blocks
    dims = np.asarray(spatial_shape, dtype=np.int64)
    # floor(u * m) for u uniform in [0, 1) is uniform on 0..m-1 (up to 2**-53); one call
    # for all 6n integers is much cheaper than integers() with per-element bounds.
    u = rng.random((2, n, 3))
    sizes = np.minimum(1 + (u[0] * max_block_edges(spatial_shape, config)).astype(np.int64), dims)
    starts = (u[1] * (dims - sizes + 1)).astype(np.int64)
    return ShuffleBlocks(starts, sizes)


def block_flat_indices_into(out: np.ndarray, starts: np.ndarray, sizes: np.ndarray,
                            spatial_shape: tuple[int, int, int]) -> np.ndarray:
    """Write the flat (C-order) index of every voxel of the given blocks into ``out``; returns it.

    Blocks follow each other in the given order, each in row-major order inside the block;
    ``out`` must hold exactly ``sizes.prod(axis=1).sum()`` int64 elements. A block is
    ``bx * by`` rows of ``bz`` consecutive flat indices, so the indices are a cumulative sum of
    ones with a jump at each row start: only the rows (about 1/bz of the voxels) are built with
    index arithmetic.
    """
    _, Y, Z = spatial_shape
    bx, by, bz = sizes[:, 0], sizes[:, 1], sizes[:, 2]
    base = (starts[:, 0] * Y + starts[:, 1]) * Z + starts[:, 2]
    # planes (block, dx)
    plane_block = np.repeat(np.arange(len(bx)), bx)
    dx = np.arange(plane_block.size) - np.repeat(np.cumsum(bx) - bx, bx)
    plane_base = base[plane_block] + dx * (Y * Z)
    # rows (block, dx, dy): first flat index and length
    by_p = by[plane_block]
    row_plane = np.repeat(np.arange(plane_block.size), by_p)
    dy = np.arange(row_plane.size) - np.repeat(np.cumsum(by_p) - by_p, by_p)
    row_base = plane_base[row_plane] + dy * Z
    row_len = bz[plane_block][row_plane]
    row_slot = np.cumsum(row_len) - row_len
    out.fill(1)
    out[row_slot[1:]] = row_base[1:] - row_base[:-1] - row_len[:-1] + 1
    out[0] = row_base[0]
    return np.cumsum(out, out=out)


def block_voxel_indices(blocks: ShuffleBlocks, spatial_shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Flat (C-order) voxel index of every voxel of every block, blocks in drawing order.

    Returns ``(flat, first)``: ``flat`` (M,) int64; block ``b`` owns
    ``flat[first[b]:first[b] + volume[b]]`` in row-major order inside the block.
    (The shuffle builds the same indices chunk by chunk; this whole-array form is for tests.)
    """
    volume = blocks.sizes.prod(axis=1)
    flat = np.empty(int(volume.sum()), dtype=np.int64)
    if flat.size:
        block_flat_indices_into(flat, blocks.starts, blocks.sizes, spatial_shape)
    return flat, np.cumsum(volume) - volume


def random_bits(rng: np.random.Generator, n: int, dtype: type) -> np.ndarray:
    """``n`` uniformly random unsigned integers of ``dtype`` straight from the bit generator.

    ``random_raw`` is about twice as fast as ``Generator.integers``; it still advances the
    caller's generator, so results stay reproducible from the seed.
    """
    words = rng.bit_generator.random_raw(-(-n * np.dtype(dtype).itemsize // 8))
    return words.view(dtype)[:n]


def sorted_permutation_keys(volume: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """Uniformly random, independent permutations of every block, laid out by voxel count.

    Returns ``(keys, key_first, slot_bits)``: blocks are taken in order of voxel count (stable),
    block ``b`` owns ``keys[key_first[b]:key_first[b] + volume[b]]`` and, after masking with
    ``(1 << slot_bits) - 1``, these are a permutation of 0..volume[b]-1. They come from sorting
    rows of random keys with the slot number packed into the low bits; blocks with the same
    voxel count share one 2-D ``np.sort``. Keys carry at least 20 random bits; two equal keys in
    one block (probability below volume**2 / 2**21) keep their relative order.
    """
    n_slots = int(volume.sum())
    slot_bits = max(1, int(volume.max() - 1).bit_length())
    key_dtype = np.uint32 if slot_bits <= 12 else np.uint64  # >= 20 random bits either way
    low = key_dtype((1 << slot_bits) - 1)
    order = np.argsort(volume, kind="stable")
    sorted_vol = volume[order]
    key_first = np.empty_like(volume)
    key_first[order] = np.cumsum(sorted_vol) - sorted_vol
    keys = random_bits(rng, n_slots, key_dtype)
    cuts = np.flatnonzero(np.diff(sorted_vol)) + 1
    offset = 0
    for a, b in zip(np.concatenate(([0], cuts)).tolist(), np.concatenate((cuts, [len(order)])).tolist()):
        k = int(sorted_vol[a])
        rows = keys[offset:offset + (b - a) * k].reshape(b - a, k)
        offset += (b - a) * k
        rows &= ~low
        rows |= np.arange(k, dtype=key_dtype)
        rows.sort(axis=1)
    return keys, key_first, slot_bits


def shuffle_blocks_into(out: np.ndarray, image: np.ndarray, blocks: ShuffleBlocks,
                        rng: np.random.Generator) -> np.ndarray:
    """Write the shuffled block voxels of ``image`` (C, X, Y, Z) into ``out``; returns ``out``.

    ``out`` (float32, C-contiguous, same shape, not sharing memory with ``image``) should already
    hold ``image``'s values: only voxels inside blocks are written. Values are read from
    ``image`` (the unshuffled original) and written in drawing order, so later blocks win.
    """
    if len(blocks) == 0:
        return out
    C = image.shape[0]
    spatial = image.shape[1:]
    volume = blocks.sizes.prod(axis=1)
    first = np.cumsum(volume) - volume
    n_slots = int(volume.sum())
    keys, key_first, slot_bits = sorted_permutation_keys(volume, rng)
    low = keys.dtype.type((1 << slot_bits) - 1)
    src_img = np.ascontiguousarray(image, dtype=np.float32).reshape(C, -1)
    dst_img = out.reshape(C, -1)
    # chunks of whole blocks, in drawing order (so later blocks win where they overlap)
    bounds = np.unique(np.concatenate(([0], np.searchsorted(first, np.arange(MOVE_CHUNK, n_slots, MOVE_CHUNK)),
                                       [len(blocks)]))).tolist()
    first_l = first.tolist() + [n_slots]
    size = max(MOVE_CHUNK, int(volume.max())) * 2
    flat_buf = np.empty(size, dtype=np.int64)
    slots = np.arange(size, dtype=np.int64)
    for b0, b1 in zip(bounds[:-1], bounds[1:]):
        s0, s1 = first_l[b0], first_l[b1]
        m = s1 - s0
        vol = volume[b0:b1]
        flat = block_flat_indices_into(flat_buf[:m], blocks.starts[b0:b1], blocks.sizes[b0:b1], spatial)
        # slot j of block b reads slot first[b] + perm_b[j] (chunk-local numbering)
        key_slot = np.repeat(key_first[b0:b1] - (first[b0:b1] - s0), vol)
        key_slot += slots[:m]
        read = keys[key_slot]
        read &= low
        read_slot = np.repeat(first[b0:b1] - s0, vol)
        read_slot += read
        for c in range(C):
            values = src_img[c][flat]  # whole rows in order: kinder to the caches than permuted reads
            # NumPy assigns repeated indices in order, so the later block's value is stored
            # (tests/nnunet_genesis/transforms check this property).
            dst_img[c][flat] = values[read_slot]
    return out


def shuffle_blocks(image: np.ndarray, blocks: ShuffleBlocks, rng: np.random.Generator) -> np.ndarray:
    """New array: ``image`` (C, X, Y, Z) with each block's voxels permuted (same for all channels)."""
    out = np.array(image, dtype=np.float32, order="C", copy=True)
    return shuffle_blocks_into(out, image, blocks, rng)


def sample_and_shuffle(image: np.ndarray, rng: np.random.Generator, config: GenesisConfig) -> np.ndarray:
    """Convenience: draw blocks for ``image`` and shuffle (used by tests and the preview)."""
    return shuffle_blocks(image, sample_blocks(image.shape[1:], rng, config), rng)
