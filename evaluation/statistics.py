"""Paired per-case comparison of two runs with the Wilcoxon signed-rank test.

Cases are paired by name; a case counts only if both runs have a defined value (cases where
reference and prediction are both empty have none). The test is SciPy's two-sided
``wilcoxon`` on the paired values; zero differences are dropped (``zero_method='wilcox'``),
so with m non-zero differences the smallest two-sided p-value an exact test can give is
2 / 2**m (0.0625 for m = 5): too few cases cannot show significance, and the report says so.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np

SIGNIFICANCE = 0.05


@dataclass
class PairedComparison:
    """Run B against run A (the baseline) for one metric and label; differences are B - A."""

    metric: str
    label: str
    n_pairs: int
    mean_a: float | None
    mean_b: float | None
    mean_difference: float | None
    median_difference: float | None
    n_b_better: int
    n_a_better: int
    n_ties: int
    p_value: float | None
    test_note: str
    cases: list[str]
    differences: list[float]

    @property
    def significant(self) -> bool:
        return self.p_value is not None and self.p_value < SIGNIFICANCE

    def to_dict(self) -> dict:
        return asdict(self)


def paired_comparison(metric: str, label: str, a: dict[str, float | None],
                      b: dict[str, float | None]) -> PairedComparison:
    """Compare per-case values ``b`` against ``a`` (case -> value, None = undefined)."""
    from scipy.stats import wilcoxon

    cases = sorted(c for c in set(a) & set(b) if a[c] is not None and b[c] is not None)
    va = np.asarray([a[c] for c in cases], dtype=float)
    vb = np.asarray([b[c] for c in cases], dtype=float)
    diff = vb - va
    n = len(cases)
    nonzero = int(np.count_nonzero(diff))
    p_value = None
    if n == 0:
        note = "no case has a defined value in both runs"
    elif nonzero == 0:
        note = f"all {n} paired differences are exactly zero: no difference to test"
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # small-sample and ties warnings: stated in the note instead
            p_value = float(wilcoxon(vb, va, zero_method="wilcox", alternative="two-sided").pvalue)
        note = f"Wilcoxon signed-rank, two-sided, {nonzero} non-zero of {n} paired differences"
        smallest = 2.0 / 2 ** nonzero
        if smallest >= SIGNIFICANCE:
            note += (f"; too few to reach p < {SIGNIFICANCE:g} (the smallest possible p with "
                     f"{nonzero} differences is {smallest:.3g})")
    return PairedComparison(
        metric=metric, label=label, n_pairs=n,
        mean_a=float(va.mean()) if n else None, mean_b=float(vb.mean()) if n else None,
        mean_difference=float(diff.mean()) if n else None,
        median_difference=float(np.median(diff)) if n else None,
        n_b_better=int(np.count_nonzero(diff > 0)), n_a_better=int(np.count_nonzero(diff < 0)),
        n_ties=int(n - nonzero), p_value=p_value, test_note=note, cases=cases,
        differences=[float(d) for d in diff],
    )
