"""The knobs of the Models Genesis corruptions (``GenesisConfig``, ``PRESETS``) and the yes/no
decisions their rates drive (``CorruptionDecisions``).

Defaults follow Zhou et al. (MICCAI 2019; Medical Image Analysis 2021). The config is plain
data (floats, ints) so it can be stored as JSON in checkpoint metadata and rebuilt exactly.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Mapping

from nnunet_genesis.blocks import check_known_keys

if TYPE_CHECKING:
    import numpy as np
    import torch


def _check_rate(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"GenesisConfig.{name} must be a probability in [0, 1], got {value!r}.")


def _check_fraction_range(name: str, value: tuple[float, float]) -> None:
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
            or not 0.0 < value[0] <= value[1] <= 1.0):
        raise ValueError(f"GenesisConfig.{name} must be a pair (low, high) with 0 < low <= high <= 1, got {value!r}.")


@dataclass(frozen=True)
class GenesisConfig:
    """Probabilities and sizes of the four Genesis corruptions.

    Rates:
        flip_rate: probability of flipping along EACH spatial axis (independently per axis);
            the flip is applied to the input and the restoration target alike.
        local_rate: probability of local pixel shuffling.
        nonlinear_rate: probability of the Bezier-curve intensity mapping.
        nonlinear_invert_rate: probability that the chosen mapping is decreasing (inverted).
        paint_rate: probability of painting (out- or in-painting).
        outpaint_rate: given painting, probability of out-painting (in-painting otherwise).
    Sizes:
        shuffle_blocks: number of blocks drawn for local shuffling (10,000 in the paper).
        shuffle_max_block_fraction: block edge along an axis is uniform in
            1..max(1, floor(dim * fraction)) voxels (paper: 1..dim/10).
        max_boxes: painting uses 1..max_boxes boxes (uniform).
        inpaint_box_fraction / outpaint_box_fraction: box edge as a fraction of the axis
            length, uniform in [low, high] (paper: 1/6..1/3 and 3/7..4/7).
        paint_border: boxes never touch this many voxels at each face of the volume.
        bezier_lut_size: entries of the lookup table that evaluates the Bezier mapping.
    """

    flip_rate: float = 0.4
    local_rate: float = 0.5
    nonlinear_rate: float = 0.9
    nonlinear_invert_rate: float = 0.5
    paint_rate: float = 0.9
    outpaint_rate: float = 0.8
    shuffle_blocks: int = 10_000
    shuffle_max_block_fraction: float = 0.1
    max_boxes: int = 5
    inpaint_box_fraction: tuple[float, float] = (1.0 / 6.0, 1.0 / 3.0)
    outpaint_box_fraction: tuple[float, float] = (3.0 / 7.0, 4.0 / 7.0)
    paint_border: int = 3
    bezier_lut_size: int = 1024

    def __post_init__(self) -> None:
        for name in ("flip_rate", "local_rate", "nonlinear_rate", "nonlinear_invert_rate",
                     "paint_rate", "outpaint_rate"):
            _check_rate(name, getattr(self, name))
        for name, low in (("shuffle_blocks", 0), ("max_boxes", 1), ("paint_border", 0), ("bezier_lut_size", 2)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"GenesisConfig.{name} must be an integer >= {low}, got {v!r}.")
        f = self.shuffle_max_block_fraction
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not math.isfinite(f) or not 0.0 < f <= 1.0:
            raise ValueError(f"GenesisConfig.shuffle_max_block_fraction must be in (0, 1], got {f!r}.")
        for name in ("inpaint_box_fraction", "outpaint_box_fraction"):
            v = getattr(self, name)
            _check_fraction_range(name, v)
            object.__setattr__(self, name, (float(v[0]), float(v[1])))

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "GenesisConfig":
        """A named set of rates (``PRESETS``), optionally with some fields overridden."""
        if name not in PRESETS:
            raise ValueError(f"unknown GenesisConfig preset {name!r}; known: {sorted(PRESETS)}.")
        return cls(**{**PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (lists for the pairs), for checkpoint metadata."""
        d = dataclasses.asdict(self)
        for name in ("inpaint_box_fraction", "outpaint_box_fraction"):
            d[name] = list(d[name])
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "GenesisConfig":
        """Inverse of to_dict; unknown keys are an error (they signal a version mismatch)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"GenesisConfig.from_dict expects a mapping, got {type(data).__name__}.")
        check_known_keys(cls, data, "GenesisConfig.from_dict: the mapping")
        kwargs = dict(data)
        for name in ("inpaint_box_fraction", "outpaint_box_fraction"):
            if name in kwargs and isinstance(kwargs[name], list):
                kwargs[name] = tuple(kwargs[name])
        return cls(**kwargs)


# Named corruption presets (``GenesisConfig.preset``); their measured effect is in docs/pretraining.md.
# "paper": the Models Genesis rates. "mild": for short runs: with the papers' rates half of the
# intensity mappings are inverted and 72 % of the patches are out-painted, and a few hundred CPU
# iterations learn little beyond the patch mean; without inverted mappings and with less painting
# the restoration loss falls within 100 iterations.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "mild": {"nonlinear_invert_rate": 0.0, "paint_rate": 0.5, "outpaint_rate": 0.3},
}


def _decided_by(rate: str) -> Any:
    return field(metadata={"rate": rate})


@dataclass(frozen=True)
class CorruptionDecisions:
    """Which corruptions a sample gets: field k is ``uniform[k] < config.<its rate>``.

    Defined once for both routes: the NumPy path draws ``count()`` uniforms per sample
    (``sample``, fields are bools), the torch path a (B, count()) tensor (``from_uniforms``,
    fields are bool (B,) tensors). The field order is the order of the draws, so it fixes the
    random streams: a new field goes last (and changes every seeded stream after it).
    """

    flip_x: bool | torch.Tensor = _decided_by("flip_rate")  # flip along spatial axis 1 of (C, X, Y, Z)
    flip_y: bool | torch.Tensor = _decided_by("flip_rate")
    flip_z: bool | torch.Tensor = _decided_by("flip_rate")
    shuffle: bool | torch.Tensor = _decided_by("local_rate")
    curve: bool | torch.Tensor = _decided_by("nonlinear_rate")
    paint: bool | torch.Tensor = _decided_by("paint_rate")
    outpaint: bool | torch.Tensor = _decided_by("outpaint_rate")  # given paint; in-painting otherwise

    @classmethod
    def count(cls) -> int:
        """Uniforms drawn per sample."""
        return len(fields(cls))

    @classmethod
    def from_uniforms(cls, uniforms: np.ndarray | torch.Tensor, config: GenesisConfig) -> "CorruptionDecisions":
        """Decisions from uniforms in [0, 1) of shape (..., count()) (NumPy or torch)."""
        return cls(*(uniforms[..., k] < getattr(config, f.metadata["rate"]) for k, f in enumerate(fields(cls))))

    @classmethod
    def sample(cls, rng: np.random.Generator, config: GenesisConfig) -> "CorruptionDecisions":
        """One sample's decisions, as bools, from ``count()`` uniforms of ``rng``."""
        drawn = cls.from_uniforms(rng.random(cls.count()), config)
        return cls(*(bool(getattr(drawn, f.name)) for f in fields(cls)))

    @property
    def flips(self) -> tuple:
        """(flip_x, flip_y, flip_z)."""
        return self.flip_x, self.flip_y, self.flip_z

    @property
    def flip_axes(self) -> tuple[int, ...]:
        """Axes of a (C, X, Y, Z) array to flip (one sample)."""
        return tuple(axis for axis, flip in zip((1, 2, 3), self.flips) if flip)
