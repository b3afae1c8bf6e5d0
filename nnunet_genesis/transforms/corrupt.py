"""The Models Genesis corruption of one sample (NumPy): flip -> shuffle -> curve -> paint.

``corrupt(image, rng, config)`` returns ``(input, target)``: the corrupted network input and
the restoration target (the original, flipped like the input). Order and semantics follow
Zhou et al. (MICCAI 2019; MedIA 2021); see docs/transforms.md.

It is two steps, which ``GenesisCorruptionTransform`` calls separately (batchgeneratorsv2's
``get_parameters`` / ``apply``): ``sample_parameters`` makes every random draw from the shape
alone, ``apply_corruption`` does the voxel work.

Work that cannot show in the output is skipped (same result, less time): with out-painting,
only blocks touching the kept boxes are shuffled and only the boxes are copied and
intensity-mapped; shuffle blocks entirely inside an in-painted box are dropped. Besides the two
returned arrays no volume-sized array is allocated, and the input is built in one pass per
step (copy, shuffle, mapping in place, noise) by compiled loops (``kernels.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnunet_genesis.transforms.config import CorruptionDecisions, GenesisConfig
from nnunet_genesis.transforms.flips import flipped_copies
from nnunet_genesis.transforms.kernels import draw_seed
from nnunet_genesis.transforms.local_shuffle import ShuffleBlocks, sample_blocks, shuffle_blocks_into
from nnunet_genesis.transforms.nonlinear import BezierCurves, sample_curves
from nnunet_genesis.transforms.painting import PaintBoxes, paint_noise, sample_paint_boxes
from nnunet_genesis.transforms.regions import Region


@dataclass(frozen=True)
class CorruptionParameters:
    """Everything random about one sample's corruption; None where that step does not run."""

    shape: tuple[int, int, int, int]  # (C, X, Y, Z) it was drawn for
    decisions: CorruptionDecisions
    boxes: PaintBoxes | None  # also None when painting was drawn but the volume is too thin
    blocks: ShuffleBlocks | None  # only those that can show after painting
    curves: BezierCurves | None
    shuffle_seed: np.uint64 | None
    noise_seed: np.uint64 | None


def sample_parameters(shape: tuple[int, ...], rng: np.random.Generator,
                      config: GenesisConfig = GenesisConfig()) -> CorruptionParameters:
    """Draw one sample's corruption for an image of ``shape`` (C, X, Y, Z).

    The draws come in a fixed order (decisions, boxes, blocks, curves, shuffle seed, noise
    seed): seeded results depend on it.
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}.")
    if not isinstance(config, GenesisConfig):
        raise ValueError(f"config must be a GenesisConfig, got {type(config).__name__}.")
    shape = tuple(int(n) for n in shape)
    spatial = shape[1:]
    decisions = CorruptionDecisions.sample(rng, config)
    boxes = sample_paint_boxes(spatial, decisions.outpaint, rng, config) if decisions.paint else None
    blocks = sample_blocks(spatial, rng, config) if decisions.shuffle else None
    if blocks is not None and boxes is not None:
        blocks = blocks.subset(boxes.visible_blocks(blocks))
    curves = sample_curves(shape[0], rng, config) if decisions.curve else None
    shuffle_seed = draw_seed(rng) if decisions.shuffle else None
    noise_seed = draw_seed(rng) if boxes is not None else None
    return CorruptionParameters(shape, decisions, boxes, blocks, curves, shuffle_seed, noise_seed)


def check_image(image: object) -> None:
    """ValueError unless ``image`` is a floating (C, X, Y, Z) NumPy array (finiteness is checked later)."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy.ndarray of shape (C, X, Y, Z), got {type(image).__name__}.")
    if image.ndim != 4:
        raise ValueError(f"image must have 4 dimensions (C, X, Y, Z), got shape {image.shape}.")
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"image must have a floating dtype (float32 expected), got {image.dtype}.")
    if image.size == 0:
        raise ValueError(f"image is empty (shape {image.shape}).")


def apply_corruption(image: np.ndarray, params: CorruptionParameters) -> tuple[np.ndarray, np.ndarray]:
    """(network input, restoration target) of ``image`` under ``params``; ``image`` is not modified.

    ValueError for an image that ``check_image`` refuses, one of another shape than ``params``
    was drawn for, or NaN/Inf voxels.
    """
    check_image(image)
    if image.shape != params.shape:
        raise ValueError(f"the corruption was drawn for shape {params.shape}, the image has {image.shape}.")
    spatial = image.shape[1:]
    boxes, blocks = params.boxes, params.blocks
    shuffle = blocks is not None
    outpaint = boxes is not None and boxes.outpaint
    # the target, its range, and (to shuffle into) the input's first version, in one pass; with
    # out-painting only the kept boxes of that copy matter, so they alone are copied below
    target, out, lo, hi = flipped_copies(image, params.decisions.flip_axes, twice=shuffle and not outpaint)
    mapping = params.curves.over(lo, hi) if params.curves is not None else None

    # The network input, built in one array: a copy of the target (made with it) that is
    # shuffled, then mapped in place; or, without shuffling, mapped (or copied) from the target
    # in one pass. Out-painting keeps only its boxes, so only their union is copied and mapped
    # (once per voxel where boxes overlap); the noise covers the rest.
    region = boxes.kept_region(spatial) if outpaint else Region.whole(spatial)
    if shuffle:
        if out is None:
            out = np.empty_like(target)
            region.copy(target, out)
        shuffle_blocks_into(out, target, blocks, params.shuffle_seed)
        if mapping is not None:
            mapping.apply_in(out, out, region)
    else:
        out = np.empty_like(target)
        if mapping is not None:
            mapping.apply_in(target, out, region)
        else:
            region.copy(target, out)
    if boxes is not None:
        paint_noise(out, boxes, lo, hi, params.noise_seed)
    return out, target


def corrupt(image: np.ndarray, rng: np.random.Generator,
            config: GenesisConfig = GenesisConfig()) -> tuple[np.ndarray, np.ndarray]:
    """Corrupt one sample: returns (network input, restoration target), float32 (C, X, Y, Z).

    ``rng`` is the only source of randomness (same seed, same result); ``image`` is not
    modified. Raises ValueError for non-array, non-4D, non-float or non-finite input, or a
    wrong ``rng``/``config`` type.
    """
    check_image(image)
    return apply_corruption(image, sample_parameters(image.shape, rng, config))
