"""The Models Genesis corruption of one sample (NumPy): flip -> shuffle -> curve -> paint.

``corrupt(image, rng, config)`` returns ``(input, target)``: the corrupted network input and
the restoration target (the original, flipped like the input). Order and semantics follow
Zhou et al. (MICCAI 2019; MedIA 2021); see docs/transforms.md.

Work that cannot show in the output is skipped (same result, less time): with out-painting,
only blocks touching the kept boxes are shuffled and only the boxes are copied and
intensity-mapped; shuffle blocks entirely inside an in-painted box are dropped. Besides the two
returned arrays no volume-sized array is allocated, and the input is built in one pass per
step (copy, shuffle, mapping in place, noise) by compiled loops (``kernels.py``).
"""

from __future__ import annotations

import numpy as np

from nnunet_genesis.transforms.config import GenesisConfig
from nnunet_genesis.transforms.flips import choose_flip_axes, flipped_copies
from nnunet_genesis.transforms.local_shuffle import sample_blocks, shuffle_blocks_into
from nnunet_genesis.transforms.nonlinear import sample_intensity_mapping
from nnunet_genesis.transforms.painting import paint_noise, sample_paint_boxes
from nnunet_genesis.transforms.regions import Region

# One uniform per decision, drawn together: flip X, flip Y, flip Z, shuffle, curve, paint, outpaint.
N_DECISIONS = 7


def check_image(image: object) -> None:
    """ValueError unless ``image`` is a finite floating (C, X, Y, Z) NumPy array."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy.ndarray of shape (C, X, Y, Z), got {type(image).__name__}.")
    if image.ndim != 4:
        raise ValueError(f"image must have 4 dimensions (C, X, Y, Z), got shape {image.shape}.")
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"image must have a floating dtype (float32 expected), got {image.dtype}.")
    if image.size == 0:
        raise ValueError(f"image is empty (shape {image.shape}).")


def corrupt(image: np.ndarray, rng: np.random.Generator,
            config: GenesisConfig = GenesisConfig()) -> tuple[np.ndarray, np.ndarray]:
    """Corrupt one sample: returns (network input, restoration target), float32 (C, X, Y, Z).

    ``rng`` is the only source of randomness (same seed, same result); ``image`` is not
    modified. Raises ValueError for non-array, non-4D, non-float or non-finite input, or a
    wrong ``rng``/``config`` type.
    """
    check_image(image)
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}.")
    if not isinstance(config, GenesisConfig):
        raise ValueError(f"config must be a GenesisConfig, got {type(config).__name__}.")

    u = rng.random(N_DECISIONS)
    shuffle = bool(u[3] < config.local_rate)
    spatial = image.shape[1:]
    boxes = sample_paint_boxes(spatial, bool(u[6] < config.outpaint_rate), rng, config) \
        if u[5] < config.paint_rate else None
    outpaint = boxes is not None and boxes.outpaint
    # the target, its range, and (to shuffle into) the input's first version, in one pass; with
    # out-painting only the kept boxes of that copy matter, so they alone are copied below
    target, out, lo, hi = flipped_copies(image, choose_flip_axes(u[:3], config), twice=shuffle and not outpaint)

    blocks = sample_blocks(spatial, rng, config) if shuffle else None
    if blocks is not None and boxes is not None:
        blocks = blocks.subset(boxes.visible_blocks(blocks))
    mapping = sample_intensity_mapping(lo, hi, rng, config) if u[4] < config.nonlinear_rate else None

    # The network input, built in one array: a copy of the target (made with it) that is
    # shuffled, then mapped in place; or, without shuffling, mapped (or copied) from the target
    # in one pass. Out-painting keeps only its boxes, so only their union is copied and mapped
    # (once per voxel where boxes overlap); the noise covers the rest.
    region = boxes.kept_region(spatial) if outpaint else Region.whole(spatial)
    if shuffle:
        if out is None:
            out = np.empty_like(target)
            region.copy(target, out)
        shuffle_blocks_into(out, target, blocks, rng)
        if mapping is not None:
            mapping.apply_in(out, out, region)
    else:
        out = np.empty_like(target)
        if mapping is not None:
            mapping.apply_in(target, out, region)
        else:
            region.copy(target, out)
    if boxes is not None:
        paint_noise(out, boxes, lo, hi, rng)
    return out, target
