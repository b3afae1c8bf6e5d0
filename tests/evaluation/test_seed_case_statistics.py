"""Seeds x cases comparison of two arms: bootstrap CI and Wilcoxon p (evaluation.statistics)."""

from __future__ import annotations

import numpy as np
import pytest

from nnunet_genesis.evaluation.statistics import bootstrap_mean_ci, seed_case_comparison


def test_ci_covers_the_true_difference_and_narrows_with_more_cases():
    rng = np.random.default_rng(3)
    widths = []
    for n_cases in (10, 160):
        a = rng.uniform(0.4, 0.8, (3, n_cases))
        b = a + 0.05 + 0.05 * rng.standard_normal(a.shape)
        c = seed_case_comparison(a, b, n_boot=4000)
        assert c.ci95[0] < 0.05 < c.ci95[1]
        widths.append(c.ci95[1] - c.ci95[0])
    assert widths[1] < widths[0] / 2


def test_seed_spread_widens_the_interval():
    rng = np.random.default_rng(4)
    a = rng.uniform(0.4, 0.8, (4, 40))
    same_shift = a + 0.05
    seed_shift = a + np.array([[-0.15], [0.25], [-0.1], [0.2]])  # same mean shift, but differing by seed
    narrow = seed_case_comparison(a, same_shift, n_boot=4000)
    wide = seed_case_comparison(a, seed_shift, n_boot=4000)
    assert narrow.mean_diff == pytest.approx(wide.mean_diff)
    assert (wide.ci95[1] - wide.ci95[0]) > 10 * (narrow.ci95[1] - narrow.ci95[0])


def test_no_difference_has_no_p_and_undefined_cases_are_dropped():
    a = np.array([[0.5, np.nan, 0.7], [0.6, 0.2, 0.1]])
    c = seed_case_comparison(a, a.copy())
    assert c.n_cases == 2 and c.mean_diff == 0 and c.p_value is None and not c.significant
    assert "zero" in c.note
    with pytest.raises(ValueError, match="shape"):
        seed_case_comparison(a, a[:, :2])
    assert seed_case_comparison(np.full((2, 2), np.nan), np.zeros((2, 2))).mean_diff is None


def test_few_seeds_are_flagged_and_mean_ci_brackets_the_mean():
    rng = np.random.default_rng(5)
    a = rng.uniform(0, 1, (2, 30))
    assert "only 2 seed(s)" in seed_case_comparison(a, a + 0.1).note
    lo, hi = bootstrap_mean_ci(a)
    assert lo < a.mean() < hi
    assert bootstrap_mean_ci(np.full((2, 3), np.nan)) is None
