"""Flipped copies along the spatial axes (never the channel axis); which axes is drawn in
``CorruptionDecisions`` (config.py).

The flip is applied to the network input and the restoration target alike, so the network
never has to undo it: it only adds orientation variety (Zhou et al., MedIA 2021, Sec. 3.2).
"""

from __future__ import annotations

import numpy as np

from nnunet_genesis.transforms import kernels

SPATIAL_AXES = (1, 2, 3)


def flipped_copies(image: np.ndarray, axes: tuple[int, ...], twice: bool = False
                   ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    """(flipped copy, a second copy if ``twice``, per-channel min, max) in one pass over ``image``.

    Why one pass: ``corrupt`` needs the flipped target, the intensity range (for the curve
    and the noise) and, when it shuffles, a second copy to shuffle into. The min and max are
    float64 (C,); ValueError if any voxel is NaN or infinite.
    """
    if any(ax not in SPATIAL_AXES for ax in axes):
        raise ValueError(f"flip axes must be spatial axes {SPATIAL_AXES} of a (C, X, Y, Z) array, got {axes}.")
    src = np.ascontiguousarray(image, dtype=np.float32)
    C = src.shape[0]
    target = np.empty_like(src)
    second = np.empty_like(src) if twice else target
    flip = np.array([ax in axes for ax in SPATIAL_AXES])
    keys = kernels.flipped_copies(src.reshape(C, -1).view(np.int32), np.asarray(src.shape[1:], dtype=np.int64), flip,
                                  target.reshape(C, -1).view(np.int32), second.reshape(C, -1).view(np.int32), twice)
    lo, hi = (bits.view(np.float32).astype(np.float64) for bits in keys)
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        bad = int((~np.isfinite(src)).sum())
        raise ValueError(f"image contains {bad} NaN/Inf voxels; corruptions need finite intensities.")
    return target, (second if twice else None), lo, hi
