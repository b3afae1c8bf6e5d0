"""Non-linear intensity mapping along a random monotone cubic Bezier curve.

Zhou et al. (MedIA 2021, Sec. 3.2) map every intensity through a smooth, monotone curve so
the network must learn organ appearance (intensity relationships), not absolute values. The
curve is a cubic Bezier with end points (lo, lo) and (hi, hi) and two random inner control
points; half of the time it is mirrored into a decreasing curve (intensity inversion).

Range-aware: ``lo``/``hi`` are the image's own per-channel minimum and maximum, so z-scored
or CT-normalised inputs keep their range (nothing is clamped to [0, 1]). Inner control points
have both coordinates sorted, which makes x(t) and y(t) non-decreasing in t, so the curve is
the graph of a monotone function y(x).

Evaluation is a lookup table of ``bezier_lut_size`` entries over [lo, hi] with linear
interpolation, written as ``A[i] + B[i] * (x - lo)`` so a voxel costs two table reads and one
multiply-add (no per-voxel root finding), in a compiled loop (``kernels.map_intervals``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from nnunet_genesis.transforms.config import GenesisConfig
from nnunet_genesis.transforms.kernels import bezier_table, map_intervals
from nnunet_genesis.transforms.regions import Region, flat_channels


def bezier_lookup_table(control: np.ndarray, size: int, decreasing: bool) -> np.ndarray:
    """Normalised curve y(u) on ``size`` equally spaced u in [0, 1].

    ``control`` = (x1, x2, y1, y2), inner control point coordinates in [0, 1] (sorted here);
    end points are (0, 0) and (1, 1). ``decreasing`` mirrors the curve to 1 - y.
    """
    x1, x2 = sorted(float(v) for v in control[:2])
    y1, y2 = sorted(float(v) for v in control[2:])
    # the curve sampled at 8 * size + 1 values of t, interpolated at the table's u (a compiled loop:
    # NumPy's per-call overhead showed at small patches)
    table = bezier_table(x1, x2, y1, y2, size, 8 * size + 1)
    table[0], table[-1] = 0.0, 1.0
    return 1.0 - table if decreasing else table


@dataclass(frozen=True)
class IntensityMapping:
    """Per-channel monotone mapping of [lo, hi] onto itself (identity for constant channels)."""

    lo: np.ndarray  # (C,) float64
    hi: np.ndarray  # (C,) float64
    tables: np.ndarray  # (C, K) normalised curve values in [0, 1]
    decreasing: np.ndarray  # (C,) bool

    @cached_property
    def kernel_tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(lo, hi, scale, A, B) float32 with f(x) = A[c, i] + B[c, i] * (x - lo[c]) on bin i.

        Bin i = floor((x - lo) * scale) of K = table size; working relative to ``lo`` keeps
        float32 exact enough when |lo| >> hi - lo. A constant channel maps to itself (scale 0,
        A = lo, B = 0).
        """
        C, K = self.tables.shape
        i = np.arange(K)
        scale = np.zeros(C)
        A = np.repeat(self.lo[:, None], K, axis=1)
        B = np.zeros((C, K))
        for c in range(C):
            lo, hi = float(self.lo[c]), float(self.hi[c])
            if not hi > lo:
                continue
            table = self.tables[c]
            slope = np.append(np.diff(table), table[-1] - table[-2])  # bin K-1 only holds x == hi
            scale[c] = (K - 1) / (hi - lo)
            # y = lo + (hi-lo) * (table[i] + (u - i) * slope[i]),  u = (x - lo) * scale
            A[c] = lo + (hi - lo) * (table - i * slope)
            B[c] = (K - 1) * slope
        f32 = lambda v: np.ascontiguousarray(v, dtype=np.float32)  # noqa: E731
        return f32(self.lo), f32(self.hi), f32(scale), f32(A), f32(B)

    def apply_in(self, image: np.ndarray, out: np.ndarray, region: Region) -> np.ndarray:
        """out[:, region] = mapping(image[:, region]) for C-contiguous float32 (C, X, Y, Z) arrays.

        ``out`` may be ``image`` itself; voxels outside ``region`` are left alone. Returns ``out``.
        """
        map_intervals(flat_channels(image), flat_channels(out), region.first, region.stop, *self.kernel_tables)
        return out


@dataclass(frozen=True)
class BezierCurves:
    """One random monotone curve per channel on [0, 1], drawn before the channels' range is known."""

    tables: np.ndarray  # (C, K) normalised curve values in [0, 1]
    decreasing: np.ndarray  # (C,) bool

    def over(self, lo: np.ndarray, hi: np.ndarray) -> IntensityMapping:
        """The curves stretched over each channel's [lo, hi]."""
        return IntensityMapping(np.asarray(lo, np.float64), np.asarray(hi, np.float64), self.tables, self.decreasing)


def sample_curves(channels: int, rng: np.random.Generator, config: GenesisConfig) -> BezierCurves:
    """Draw one curve per channel (4 control coordinates + the inversion coin each)."""
    u = rng.random((channels, 5))
    decreasing = u[:, 4] < config.nonlinear_invert_rate
    tables = np.stack([bezier_lookup_table(u[c, :4], config.bezier_lut_size, bool(decreasing[c]))
                       for c in range(channels)])
    return BezierCurves(tables, decreasing)
