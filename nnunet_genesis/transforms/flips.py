"""Random flips along the spatial axes (never the channel axis).

The flip is applied to the network input and the restoration target alike, so the network
never has to undo it: it only adds orientation variety (Zhou et al., MedIA 2021, Sec. 3.2).
"""

from __future__ import annotations

import numpy as np

from nnunet_genesis.transforms.config import GenesisConfig

SPATIAL_AXES = (1, 2, 3)


def choose_flip_axes(uniforms: np.ndarray, config: GenesisConfig) -> tuple[int, ...]:
    """Axes (of a (C, X, Y, Z) array) to flip: each spatial axis independently with flip_rate."""
    return tuple(ax for ax, u in zip(SPATIAL_AXES, uniforms) if u < config.flip_rate)


def flipped_copy(image: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """A new C-contiguous float32 array equal to ``image`` flipped along ``axes``."""
    if any(ax not in SPATIAL_AXES for ax in axes):
        raise ValueError(f"flip axes must be spatial axes {SPATIAL_AXES} of a (C, X, Y, Z) array, got {axes}.")
    view = np.flip(image, axes) if axes else image
    return np.array(view, dtype=np.float32, order="C", copy=True)
