"""Local pixel shuffling: voxels permuted inside many small random blocks.

Semantics (Zhou et al., MICCAI 2019 / MedIA 2021): ``shuffle_blocks`` blocks are drawn
one after another; block edges are uniform in 1..max(1, floor(dim * fraction)) voxels per
axis and positions uniform inside the volume. Each block's voxels are permuted uniformly at
random (the same permutation for every channel, so a voxel moves with all its channels).
Values are always read from the unshuffled image, so overlapping blocks do not compound;
where blocks overlap, the block drawn later wins, exactly as in the sequential algorithm.

No per-block Python loop: the blocks are drawn by one compiled loop (``kernels.draw_blocks``)
and moved by another (``kernels.shuffle_blocks_flat``) that permutes each block with inside-out
Fisher-Yates while walking its voxels, then copies them row by row, with no index arrays; see
docs/transforms.md, "Speed".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnunet_genesis.transforms.config import GenesisConfig
from nnunet_genesis.transforms.kernels import draw_blocks, draw_seed, shuffle_blocks_flat


@dataclass(frozen=True)
class ShuffleBlocks:
    """Blocks in drawing order (later blocks win where they overlap)."""

    starts: np.ndarray  # (n, 3) int64, first voxel of each block
    sizes: np.ndarray  # (n, 3) int64, edge lengths (>= 1)

    def __len__(self) -> int:
        return int(self.starts.shape[0])

    def subset(self, keep: np.ndarray) -> "ShuffleBlocks":
        """Blocks where ``keep`` is true, drawing order preserved."""
        rows = np.flatnonzero(keep)  # take() on row numbers: cheaper than a boolean index of (n, 3) arrays
        return ShuffleBlocks(self.starts.take(rows, axis=0), self.sizes.take(rows, axis=0))


def max_block_edges(spatial_shape: tuple[int, int, int], config: GenesisConfig) -> np.ndarray:
    """Largest block edge per axis: max(1, floor(dim * shuffle_max_block_fraction))."""
    dims = np.asarray(spatial_shape, dtype=np.int64)
    return np.maximum(1, np.floor(dims * config.shuffle_max_block_fraction + 1e-9).astype(np.int64))


def sample_blocks(spatial_shape: tuple[int, int, int], rng: np.random.Generator,
                  config: GenesisConfig) -> ShuffleBlocks:
    """Draw ``config.shuffle_blocks`` blocks (edges, then positions) for one volume.

    One 64-bit seed is drawn from ``rng``; the 6 n integers come from a compiled loop
    (``kernels.draw_blocks``), much cheaper than NumPy calls with per-element bounds.
    """
    seed = draw_seed(rng)
    dims = np.asarray(spatial_shape, dtype=np.int64)
    return ShuffleBlocks(*draw_blocks(dims, max_block_edges(spatial_shape, config), config.shuffle_blocks, seed))


def shuffle_blocks_into(out: np.ndarray, image: np.ndarray, blocks: ShuffleBlocks, seed: np.uint64) -> np.ndarray:
    """Write the shuffled block voxels of ``image`` (C, X, Y, Z) into ``out``; returns ``out``.

    ``out`` (float32, C-contiguous, same shape, not sharing memory with ``image``) should already
    hold ``image``'s values: only voxels inside blocks are written. Values are read from
    ``image`` (the unshuffled original) and written in drawing order, so later blocks win. The
    permutations come from ``seed`` (``kernels.draw_seed``).
    """
    if len(blocks) == 0:
        return out
    if not out.flags.c_contiguous or out.dtype != np.float32 or out.shape != image.shape:
        raise ValueError("out must be a C-contiguous float32 array of the image's shape.")
    C = image.shape[0]
    src = np.ascontiguousarray(image, dtype=np.float32).reshape(C, -1)
    shuffle_blocks_flat(src, out.reshape(C, -1), np.ascontiguousarray(blocks.starts, dtype=np.int64),
                        np.ascontiguousarray(blocks.sizes, dtype=np.int64),
                        np.asarray(image.shape[2:], dtype=np.int64), seed)
    return out
