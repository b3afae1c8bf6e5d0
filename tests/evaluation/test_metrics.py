"""Dice and NSD against answers known in closed form or computed by brute force."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from nnunet_genesis.evaluation.metrics import (STATUS_BOTH_EMPTY, STATUS_OK, STATUS_PRED_EMPTY,
                                               STATUS_REF_EMPTY, dice_score, normalized_surface_dice,
                                               score_label, summarize)


def cube(shape=(30, 30, 30), start=(5, 5, 5), side=10, shift=(0, 0, 0)) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    lo = [s + d for s, d in zip(start, shift)]
    m[lo[0]:lo[0] + side, lo[1]:lo[1] + side, lo[2]:lo[2] + side] = True
    return m


def border_by_neighbours(mask: np.ndarray) -> np.ndarray:
    """Surface voxels by direct neighbour look-up (independent of scipy's erosion)."""
    p = np.pad(mask, 1)
    inner = p[1:-1, 1:-1, 1:-1]
    all_in = np.ones_like(inner)
    for axis in range(3):
        for step in (-1, 1):
            all_in &= np.roll(p, step, axis=axis)[1:-1, 1:-1, 1:-1]
    return inner & ~all_in


def nsd_brute_force(ref: np.ndarray, pred: np.ndarray, spacing, tol: float) -> float:
    """NSD from all pairwise surface-voxel distances."""
    sr = np.argwhere(border_by_neighbours(ref)) * np.asarray(spacing)
    sp = np.argwhere(border_by_neighbours(pred)) * np.asarray(spacing)
    d = cdist(sp, sr)
    close = (d.min(axis=1) <= tol + 1e-9).sum() + (d.min(axis=0) <= tol + 1e-9).sum()
    return close / (len(sp) + len(sr))


def shifted_cube_nsd_below_one_voxel(n: int, k: int) -> float:
    """Closed form for tolerance below one voxel: only coinciding surface voxels count.

    Both cubes have n^3 - (n-2)^3 surface voxels; they share the 4n-4 ring of each of the
    n-k overlapping layers (1 <= k <= n-2).
    """
    return (n - k) * (4 * n - 4) / (n ** 3 - (n - 2) ** 3)


def test_identical_masks_give_one():
    m = cube()
    assert normalized_surface_dice(m, m, (1, 1, 1), 0.0) == pytest.approx(1.0)
    assert dice_score(m, m) == pytest.approx(1.0)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_shifted_cube_tolerance_below_one_voxel_matches_closed_form(k):
    a, b = cube(), cube(shift=(k, 0, 0))
    got = normalized_surface_dice(a, b, (1, 1, 1), 0.5)
    assert got == pytest.approx(shifted_cube_nsd_below_one_voxel(10, k))
    assert got < 1


@pytest.mark.parametrize("k", [1, 2, 3])
def test_shifted_cube_tolerance_at_or_above_shift_gives_one(k):
    a, b = cube(), cube(shift=(0, k, 0))
    assert normalized_surface_dice(a, b, (1, 1, 1), float(k)) == pytest.approx(1.0)
    assert normalized_surface_dice(a, b, (1, 1, 1), k + 0.5) == pytest.approx(1.0)


def test_shifted_cube_tolerance_between_matches_brute_force():
    a, b = cube(), cube(shift=(0, 0, 3))
    got = normalized_surface_dice(a, b, (1, 1, 1), 1.5)
    assert got == pytest.approx(nsd_brute_force(a, b, (1, 1, 1), 1.5))
    assert shifted_cube_nsd_below_one_voxel(10, 3) < got < 1


def test_anisotropic_spacing_is_honoured():
    spacing = (3.0, 1.0, 1.0)  # numpy axis order: axis 0 is 3 mm
    a = cube()
    b_thick = cube(shift=(1, 0, 0))  # 3 mm away
    b_thin = cube(shift=(0, 0, 1))  # 1 mm away
    below = normalized_surface_dice(a, b_thick, spacing, 2.9)
    assert below < 1
    assert below == pytest.approx(nsd_brute_force(a, b_thick, spacing, 2.9))
    assert normalized_surface_dice(a, b_thick, spacing, 3.0) == pytest.approx(1.0)
    assert normalized_surface_dice(a, b_thin, spacing, 1.0) == pytest.approx(1.0)
    # the same voxel shift along the 1 mm axis is fully within 2.9 mm
    assert normalized_surface_dice(a, b_thin, spacing, 2.9) == pytest.approx(1.0)


def test_masks_touching_the_image_border_match_brute_force():
    a = cube(start=(0, 0, 0), side=8, shape=(12, 12, 12))
    b = cube(start=(0, 0, 0), side=8, shape=(12, 12, 12), shift=(0, 2, 1))
    for tol in (0.0, 1.0, 1.5, 2.5):
        assert normalized_surface_dice(a, b, (1.2, 0.7, 2.0), tol) == pytest.approx(
            nsd_brute_force(a, b, (1.2, 0.7, 2.0), tol))


def test_empty_cases_are_explicit():
    empty, full = np.zeros((8, 8, 8), bool), cube((8, 8, 8), (2, 2, 2), 3)
    assert normalized_surface_dice(empty, empty, (1, 1, 1), 1.0) is None
    assert dice_score(empty, empty) is None
    assert normalized_surface_dice(empty, full, (1, 1, 1), 1.0) == 0.0
    assert normalized_surface_dice(full, empty, (1, 1, 1), 1.0) == 0.0

    ref = full.astype(np.uint8)  # label 1 present in the reference only
    pred = np.zeros_like(ref)
    pred[0, 0, 0] = 2  # label 2 present in the prediction only
    both = score_label(ref, pred, 3, (1, 1, 1), 1.0)
    assert (both.status, both.dice, both.nsd) == (STATUS_BOTH_EMPTY, None, None)
    missed = score_label(ref, pred, 1, (1, 1, 1), 1.0)
    assert (missed.status, missed.dice, missed.nsd, missed.n_ref, missed.n_pred) == (STATUS_PRED_EMPTY, 0, 0, 27, 0)
    false_pos = score_label(ref, pred, 2, (1, 1, 1), 1.0)
    assert (false_pos.status, false_pos.dice, false_pos.nsd, false_pos.n_pred) == (STATUS_REF_EMPTY, 0, 0, 1)
    ok = score_label(ref, ref, 1, (1, 1, 1), 1.0)
    assert (ok.status, ok.dice, ok.nsd) == (STATUS_OK, 1.0, 1.0)


def test_dice_matches_overlap_formula():
    a, b = cube(), cube(shift=(2, 1, 0))
    expected = 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())
    assert dice_score(a, b) == pytest.approx(expected)


def test_summarize_leaves_out_undefined_values():
    s = summarize([0.5, None, 1.0, 0.0])
    assert s["n"] == 3
    assert s["mean"] == pytest.approx(0.5)
    assert s["median"] == pytest.approx(0.5)
    assert s["std"] == pytest.approx(np.std([0.5, 1.0, 0.0], ddof=1))
    assert summarize([None, None]) == {"mean": None, "median": None, "std": None, "n": 0}
