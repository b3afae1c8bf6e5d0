"""Per-label Dice and normalised surface Dice (NSD), with empty masks made explicit.

Dice uses nnU-Net's own label-mask and TP/FP/FN counting (``nnunetv2.evaluation.
evaluate_predictions``), so it matches the numbers in nnU-Net's ``summary.json``.

NSD (Nikolov et al., arXiv:1809.04430; the Decathlon's second metric) is the fraction of the
two segmentation surfaces that lies within a tolerance of the other surface::

    NSD = (|S_pred within tau of S_ref| + |S_ref within tau of S_pred|) / (|S_pred| + |S_ref|)

Surfaces are voxel sets here: the voxels of a mask with at least one 6-neighbour outside it
(the image border counts as outside). Distances are Euclidean, in millimetres, from SciPy's
exact distance transform with the image spacing. This is the common voxel-based form (as in
MONAI's default); the DeepMind ``surface-distance`` package instead weights surface elements
by their area, which gives close but not identical values.

Empty masks are never turned into NaN and silently averaged:

====================  ======  ======  ==========================================
reference / pred      Dice    NSD     status
====================  ======  ======  ==========================================
both non-empty        value   value   ``ok``
both empty            None    None    ``both_empty`` (left out of means, counted)
reference empty       0       0       ``ref_empty`` (all predicted voxels are FP)
prediction empty      0       0       ``pred_empty`` (all reference voxels missed)
====================  ======  ======  ==========================================
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from nnunetv2.evaluation.evaluate_predictions import compute_tp_fp_fn_tn, region_or_label_to_mask
from scipy import ndimage

# Slack for floating-point rounding of distances that equal the tolerance exactly.
_DISTANCE_SLACK_MM = 1e-6
_SIX_NEIGHBOURS = ndimage.generate_binary_structure(3, 1)

STATUS_OK = "ok"
STATUS_BOTH_EMPTY = "both_empty"
STATUS_REF_EMPTY = "ref_empty"
STATUS_PRED_EMPTY = "pred_empty"


@dataclass
class LabelScore:
    """Scores of one label in one case; None where the metric is undefined (both empty)."""

    dice: float | None
    nsd: float | None
    status: str
    n_ref: int  # reference voxels of this label
    n_pred: int  # predicted voxels of this label

    def to_dict(self) -> dict:
        return asdict(self)


def dice_score(ref_mask: np.ndarray, pred_mask: np.ndarray) -> float | None:
    """Dice of two boolean masks via nnU-Net's TP/FP/FN counts; None when both are empty."""
    tp, fp, fn, _ = compute_tp_fp_fn_tn(ref_mask, pred_mask)
    if tp + fp + fn == 0:
        return None
    return float(2 * tp / (2 * tp + fp + fn))


def surface_voxels(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a 6-neighbour outside it (outside the image counts as outside)."""
    mask = np.asarray(mask, dtype=bool)
    interior = ndimage.binary_erosion(mask, structure=_SIX_NEIGHBOURS, border_value=0)
    return mask & ~interior


def _crop_to_union(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop both masks to the bounding box of their union plus one voxel of padding.

    All surface voxels lie inside that box, so distances between surfaces are unchanged;
    the padding keeps the 'image border is outside' rule identical to the uncropped case.
    """
    union = a | b
    lo, hi = [], []
    for axis in range(union.ndim):
        other = tuple(i for i in range(union.ndim) if i != axis)
        idx = np.flatnonzero(union.any(axis=other))
        lo.append(idx[0])
        hi.append(idx[-1] + 1)
    box = tuple(slice(l, h) for l, h in zip(lo, hi))
    return np.pad(a[box], 1), np.pad(b[box], 1)


def normalized_surface_dice(ref_mask: np.ndarray, pred_mask: np.ndarray,
                            spacing: Sequence[float], tolerance_mm: float) -> float | None:
    """NSD of two boolean masks at ``tolerance_mm``; ``spacing`` in the arrays' axis order.

    Returns None when both masks are empty and 0.0 when exactly one is empty.
    """
    ref_mask = np.asarray(ref_mask, dtype=bool)
    pred_mask = np.asarray(pred_mask, dtype=bool)
    if ref_mask.shape != pred_mask.shape:
        raise ValueError(f"mask shapes differ: {ref_mask.shape} vs {pred_mask.shape}")
    if len(spacing) != ref_mask.ndim:
        raise ValueError(f"spacing {tuple(spacing)} does not match a {ref_mask.ndim}D mask")
    if tolerance_mm < 0:
        raise ValueError(f"NSD tolerance must be >= 0 mm, got {tolerance_mm}")
    has_ref, has_pred = ref_mask.any(), pred_mask.any()
    if not has_ref and not has_pred:
        return None
    if not has_ref or not has_pred:
        return 0.0
    ref_mask, pred_mask = _crop_to_union(ref_mask, pred_mask)
    ref_surface, pred_surface = surface_voxels(ref_mask), surface_voxels(pred_mask)
    sampling = [float(s) for s in spacing]
    dist_to_ref = ndimage.distance_transform_edt(~ref_surface, sampling=sampling)
    dist_to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=sampling)
    limit = tolerance_mm + _DISTANCE_SLACK_MM
    pred_close = np.count_nonzero(dist_to_ref[pred_surface] <= limit)
    ref_close = np.count_nonzero(dist_to_pred[ref_surface] <= limit)
    total = np.count_nonzero(pred_surface) + np.count_nonzero(ref_surface)
    return float((pred_close + ref_close) / total)


def score_label(ref_seg: np.ndarray, pred_seg: np.ndarray, label: int,
                spacing: Sequence[float], tolerance_mm: float) -> LabelScore:
    """Dice and NSD of one label of two label maps, with the empty-mask status."""
    ref_mask = region_or_label_to_mask(ref_seg, label)
    pred_mask = region_or_label_to_mask(pred_seg, label)
    n_ref, n_pred = int(np.count_nonzero(ref_mask)), int(np.count_nonzero(pred_mask))
    if n_ref == 0 and n_pred == 0:
        return LabelScore(None, None, STATUS_BOTH_EMPTY, 0, 0)
    if n_ref == 0:
        return LabelScore(0.0, 0.0, STATUS_REF_EMPTY, 0, n_pred)
    if n_pred == 0:
        return LabelScore(0.0, 0.0, STATUS_PRED_EMPTY, n_ref, 0)
    return LabelScore(dice_score(ref_mask, pred_mask),
                      normalized_surface_dice(ref_mask, pred_mask, spacing, tolerance_mm),
                      STATUS_OK, n_ref, n_pred)


def summarize(values: Sequence[float | None]) -> dict:
    """Mean, median and sample standard deviation of the defined values (None left out).

    ``n`` is the number of values used; statistics are None when there are none
    (``std`` needs two).
    """
    used = np.asarray([v for v in values if v is not None], dtype=float)
    n = int(used.size)
    return {
        "mean": float(used.mean()) if n else None,
        "median": float(np.median(used)) if n else None,
        "std": float(used.std(ddof=1)) if n > 1 else None,
        "n": n,
    }
