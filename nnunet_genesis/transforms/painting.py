"""In-painting and out-painting with uniform noise in the image's own intensity range.

Zhou et al. (MedIA 2021, Sec. 3.2): out-painting keeps up to ``max_boxes`` large boxes
(3/7..4/7 of each axis) of the image and replaces everything else with noise; in-painting
fills up to ``max_boxes`` small boxes (1/6..1/3 of each axis) with noise. Boxes never touch
the ``paint_border``-voxel border of the volume. The noise is uniform in [lo, hi] of each
channel (range-aware, not [0, 1]).

Box sampling: the number of boxes is uniform in 1..max_boxes; each edge is a uniform integer
in [ceil(low * dim), floor(high * dim)] (the rounded middle when that interval is empty),
capped at dim - 2 * border; the position is uniform among those that keep the border free.
Volumes with an axis of at most 2 * border voxels are not painted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from nnunet_genesis.transforms.config import GenesisConfig
from nnunet_genesis.transforms.kernels import noise_intervals, visible_blocks
from nnunet_genesis.transforms.local_shuffle import ShuffleBlocks
from nnunet_genesis.transforms.regions import Region, flat_channels


@dataclass(frozen=True)
class PaintBoxes:
    outpaint: bool  # True: keep the boxes, noise outside; False: noise inside the boxes
    starts: np.ndarray  # (n, 3) int64
    sizes: np.ndarray  # (n, 3) int64

    def kept_region(self, spatial_shape: tuple[int, int, int]) -> Region:
        """The voxels the painting leaves as they are (out-painting: the boxes)."""
        return Region.of_boxes(spatial_shape, self.starts, self.sizes, inside=self.outpaint)

    def noise_region(self, spatial_shape: tuple[int, int, int]) -> Region:
        """The voxels replaced by noise (in-painting: the boxes)."""
        return Region.of_boxes(spatial_shape, self.starts, self.sizes, inside=not self.outpaint)

    def visible_blocks(self, blocks: ShuffleBlocks) -> np.ndarray:
        """Which shuffle blocks can still show in the output after painting.

        Out-painting: only blocks that intersect a kept box. In-painting: all blocks except
        those lying entirely inside a painted box. Skipping the others changes nothing.
        """
        return visible_blocks(blocks.starts, blocks.sizes, self.starts, self.starts + self.sizes, self.outpaint)


def box_edge_range(dim: int, fraction: tuple[float, float], border: int) -> tuple[int, int]:
    """Inclusive (min, max) box edge along an axis of length ``dim``."""
    low = max(1, math.ceil(fraction[0] * dim - 1e-9))
    high = math.floor(fraction[1] * dim + 1e-9)
    if high < low:
        low = high = max(1, round(0.5 * (fraction[0] + fraction[1]) * dim))
    avail = dim - 2 * border
    return min(low, avail), min(high, avail)


def sample_paint_boxes(spatial_shape: tuple[int, int, int], outpaint: bool, rng: np.random.Generator,
                       config: GenesisConfig) -> PaintBoxes | None:
    """Draw the boxes for one volume, or None when the volume is too thin to paint."""
    border = config.paint_border
    if min(spatial_shape) - 2 * border < 1:
        return None
    fraction = config.outpaint_box_fraction if outpaint else config.inpaint_box_fraction
    ranges = np.array([box_edge_range(d, fraction, border) for d in spatial_shape], dtype=np.int64)
    n = int(rng.integers(1, config.max_boxes + 1))
    u = rng.random((2, n, 3))
    sizes = ranges[:, 0] + (u[0] * (ranges[:, 1] - ranges[:, 0] + 1)).astype(np.int64)
    avail = np.asarray(spatial_shape, dtype=np.int64) - 2 * border
    starts = border + (u[1] * (avail - sizes + 1)).astype(np.int64)
    return PaintBoxes(outpaint, starts, sizes)


def noise_scale(lo: float, hi: float) -> tuple[np.float32, np.float32]:
    """(offset, scale) in float32 with offset + u * scale in [lo, hi] for every u in [0, 1)."""
    offset = np.float32(lo)
    scale = np.float32(max(hi - lo, 0.0))
    while scale > 0 and np.float32(offset + scale) > np.float32(hi):
        scale = np.nextafter(scale, np.float32(0))
    return offset, scale


def paint_noise(out: np.ndarray, boxes: PaintBoxes, lo: np.ndarray, hi: np.ndarray, seed: np.uint64) -> np.ndarray:
    """Noise uniform in [lo[c], hi[c]] into ``out`` (C, X, Y, Z), in place; returns ``out``.

    In-painting fills the boxes; out-painting fills everything outside them. 24 random bits per
    voxel (as ``Generator.random(dtype=float32)``), from the stream of ``seed``
    (``kernels.draw_seed``, ``kernels.noise_intervals``).
    """
    flat = flat_channels(out)
    scales = [noise_scale(float(a), float(b)) for a, b in zip(lo, hi)]
    offset = np.array([o for o, _ in scales], dtype=np.float32)
    step = np.array([s for _, s in scales], dtype=np.float32) * np.float32(2.0 ** -24)
    region = boxes.noise_region(out.shape[1:])
    noise_intervals(flat, region.first, region.stop, offset, step, seed)
    return out
