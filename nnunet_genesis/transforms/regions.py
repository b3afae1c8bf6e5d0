"""Voxel regions as runs of consecutive voxels: the whole volume, a union of boxes, or the rest.

Why runs: out-painting keeps a union of up to five boxes and fills everything else with noise.
Copying, mapping and filling only those voxels, run by run along z, does no work on voxels that
cannot show in the output and needs no volume-sized mask (``kernels.box_intervals``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnunet_genesis.transforms.kernels import box_intervals, copy_intervals


@dataclass(frozen=True)
class Region:
    """Disjoint runs [first, stop) of flat (C-order) voxel indices of one (X, Y, Z) volume."""

    first: np.ndarray  # (n,) int64
    stop: np.ndarray  # (n,) int64

    @classmethod
    def whole(cls, spatial_shape: tuple[int, ...]) -> "Region":
        return cls(np.zeros(1, np.int64), np.array([int(np.prod(spatial_shape))], np.int64))

    @classmethod
    def of_boxes(cls, spatial_shape: tuple[int, ...], starts: np.ndarray, sizes: np.ndarray,
                 inside: bool = True) -> "Region":
        """The union of the boxes (``inside``) or the rest of the volume."""
        starts = np.ascontiguousarray(starts, dtype=np.int64).reshape(-1, 3)
        ends = starts + np.asarray(sizes, dtype=np.int64).reshape(-1, 3)
        return cls(*box_intervals(np.asarray(spatial_shape, dtype=np.int64), starts, ends, inside))

    @property
    def size(self) -> int:
        """Number of voxels."""
        return int((self.stop - self.first).sum())

    def copy(self, image: np.ndarray, out: np.ndarray) -> np.ndarray:
        """out[:, region] = image[:, region] for C-contiguous float32 (C, X, Y, Z) arrays; returns ``out``."""
        src, dst = flat_channels(image), flat_channels(out)
        if len(self.first) == 1 and self.first[0] == 0 and self.stop[0] == src.shape[1]:
            np.copyto(dst, src)  # the whole volume: memcpy
        else:
            copy_intervals(src, dst, self.first, self.stop)
        return out


def flat_channels(volume: np.ndarray) -> np.ndarray:
    """(C, X*Y*Z) view of a C-contiguous float32 (C, X, Y, Z) array; ValueError otherwise."""
    if not volume.flags.c_contiguous or volume.dtype != np.float32:
        raise ValueError(f"expected a C-contiguous float32 array, got {volume.dtype} "
                         f"({'' if volume.flags.c_contiguous else 'not '}contiguous).")
    return volume.reshape(volume.shape[0], -1)
