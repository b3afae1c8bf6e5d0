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
interpolation, written as ``A[i] + B[i] * x`` so a voxel costs two table reads and one
multiply-add (no per-voxel root finding).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnunet_genesis.transforms.config import GenesisConfig

CHUNK = 1 << 15  # voxels per step of the table lookup


def bezier_lookup_table(control: np.ndarray, size: int, decreasing: bool) -> np.ndarray:
    """Normalised curve y(u) on ``size`` equally spaced u in [0, 1].

    ``control`` = (x1, x2, y1, y2), inner control point coordinates in [0, 1] (sorted here);
    end points are (0, 0) and (1, 1). ``decreasing`` mirrors the curve to 1 - y.
    """
    x1, x2 = np.sort(np.asarray(control[:2], dtype=np.float64))
    y1, y2 = np.sort(np.asarray(control[2:], dtype=np.float64))
    t = np.linspace(0.0, 1.0, 8 * size + 1)
    s = 1.0 - t
    w1, w2, w3 = 3 * s * s * t, 3 * s * t * t, t * t * t
    xs = w1 * x1 + w2 * x2 + w3
    ys = w1 * y1 + w2 * y2 + w3
    table = np.interp(np.linspace(0.0, 1.0, size), xs, ys)
    table[0], table[-1] = 0.0, 1.0
    return 1.0 - table if decreasing else table


@dataclass(frozen=True)
class IntensityMapping:
    """Per-channel monotone mapping of [lo, hi] onto itself (identity for constant channels)."""

    lo: np.ndarray  # (C,) float64
    hi: np.ndarray  # (C,) float64
    tables: np.ndarray  # (C, K) normalised curve values in [0, 1]
    decreasing: np.ndarray  # (C,) bool

    def _linear_pieces(self, c: int) -> tuple[np.ndarray, np.ndarray, float]:
        """Tables A, B (float32) with f(x) = A[i] + B[i] * (x - lo) on bin i, and the bin scale.

        Working relative to ``lo`` keeps float32 exact enough when |lo| >> hi - lo.
        """
        lo, hi = float(self.lo[c]), float(self.hi[c])
        table = self.tables[c]
        K = table.size
        slope = np.diff(table)
        slope = np.append(slope, slope[-1])  # bin K-1 only holds x == hi
        scale = (K - 1) / (hi - lo)
        i = np.arange(K)
        # y = lo + (hi-lo) * (table[i] + (u - i) * slope[i]),  u = (x - lo) * scale
        a = lo + (hi - lo) * (table - i * slope)
        b = (K - 1) * slope
        return a.astype(np.float32), b.astype(np.float32), scale

    def apply(self, image: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Every voxel of channel c mapped through curve c, float32; returns ``out``.

        ``out`` defaults to a new array; it may be ``image`` itself (in place: ``corrupt`` uses
        this to avoid another volume-sized allocation). Values are expected in [lo, hi] of
        their channel (the mapping is drawn from the image it is applied to); values outside
        are mapped by the nearest end segment and clipped.
        """
        image = np.asarray(image, dtype=np.float32)
        if out is None:
            out = np.empty(image.shape, dtype=np.float32)
        elif out.shape != image.shape or out.dtype != np.float32:
            raise ValueError(f"out must be float32 of shape {image.shape}, got {out.dtype} {out.shape}.")
        n = image[0].size
        chunk = min(n, CHUNK)
        d = np.empty(chunk, dtype=np.float32)
        u = np.empty(chunk, dtype=np.float32)
        idx = np.empty(chunk, dtype=np.intp)
        slope = np.empty(chunk, dtype=np.float32)
        for c in range(image.shape[0]):
            lo, hi = float(self.lo[c]), float(self.hi[c])
            if not hi > lo:
                if out is not image:
                    out[c] = image[c]
                continue
            a, b, scale = self._linear_pieces(c)
            x_all = image[c].reshape(-1)  # copies only if image[c] is not contiguous
            o_all = out[c].reshape(-1)
            if not np.shares_memory(o_all, out):
                raise ValueError("out must be C-contiguous.")
            s32, lo32, hi32 = np.float32(scale), np.float32(lo), np.float32(hi)
            # chunks keep the temporaries in cache; each chunk of x is fully read (into dd)
            # before o is written, so out may be the input itself
            for i in range(0, n, chunk):
                x, o = x_all[i:i + chunk], o_all[i:i + chunk]
                m = x.size
                dd, uu, ii, ss = d[:m], u[:m], idx[:m], slope[:m]
                np.subtract(x, lo32, out=dd)
                np.multiply(dd, s32, out=uu)
                np.copyto(ii, uu, casting="unsafe")  # truncation = floor for uu >= 0
                # mode="clip" clamps the bin to 0..K-1 (values outside [lo, hi] use the end
                # segments) and skips the bounds check: faster than a separate np.clip
                np.take(a, ii, out=o, mode="clip")
                np.take(b, ii, out=ss, mode="clip")
                ss *= dd
                o += ss
                np.clip(o, lo32, hi32, out=o)  # removes float rounding only
        return out


def sample_intensity_mapping(lo: np.ndarray, hi: np.ndarray, rng: np.random.Generator,
                             config: GenesisConfig) -> IntensityMapping:
    """Draw one curve per channel (4 control coordinates + the inversion coin each)."""
    C = len(lo)
    u = rng.random((C, 5))
    decreasing = u[:, 4] < config.nonlinear_invert_rate
    tables = np.stack([bezier_lookup_table(u[c, :4], config.bezier_lut_size, bool(decreasing[c]))
                       for c in range(C)])
    return IntensityMapping(np.asarray(lo, np.float64), np.asarray(hi, np.float64), tables, decreasing)
