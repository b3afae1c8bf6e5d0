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


@dataclass
class SeedCaseComparison:
    """Arm B against baseline A over seeds x held-out cases (differences B - A).

    ``ci95``: a percentile bootstrap that resamples seeds and cases independently (the same
    cases are scored for every seed, so both are sources of spread). ``p_value``: Wilcoxon
    signed-rank, two-sided, over the cases of the seed-averaged differences (cases are the
    independent units; seeds share them).
    """

    n_seeds: int
    n_cases: int
    mean_a: float | None
    mean_b: float | None
    mean_diff: float | None
    ci95: tuple[float, float] | None
    p_value: float | None
    note: str

    @property
    def significant(self) -> bool:
        return self.p_value is not None and self.p_value < SIGNIFICANCE

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ci95"] = list(self.ci95) if self.ci95 is not None else None
        return d


def _grid_bootstrap_ci(values: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    """95 % percentile interval of the mean of a (seeds, cases) grid, seeds and cases resampled.

    A resample is a pair of multinomial count vectors (per seed, per case); the mean of the
    resampled grid is ``w_seed^T V w_case / (S C)``, computed for all replicates at once.
    """
    n_seeds, n_cases = values.shape
    rng = np.random.default_rng(seed)
    w_s = rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=n_boot).astype(float)
    w_c = rng.multinomial(n_cases, np.full(n_cases, 1.0 / n_cases), size=n_boot).astype(float)
    boot = np.einsum("bs,sc,bc->b", w_s, values, w_c) / (n_seeds * n_cases)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return float(lo), float(hi)


def bootstrap_mean_ci(values: np.ndarray, n_boot: int = 10_000, seed: int = 0) -> list[float] | None:
    """95 % CI of the mean of a (seeds, cases) grid (cases undefined in any seed left out)."""
    values = np.asarray(values, dtype=float)
    values = values[:, np.isfinite(values).all(axis=0)]
    if values.size == 0:
        return None
    return list(_grid_bootstrap_ci(values, n_boot, seed))


def seed_case_comparison(a: np.ndarray, b: np.ndarray, n_boot: int = 10_000, seed: int = 0) -> SeedCaseComparison:
    """Compare ``b`` with ``a``: arrays (seeds, cases) of one metric; NaN = undefined.

    Cases with an undefined value for any seed in either arm are left out.
    """
    from scipy.stats import wilcoxon

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"need two (seeds, cases) arrays of one shape, got {a.shape} and {b.shape}")
    keep = np.isfinite(a).all(axis=0) & np.isfinite(b).all(axis=0)
    a, b = a[:, keep], b[:, keep]
    n_seeds, n_cases = a.shape
    if n_seeds == 0 or n_cases == 0:
        return SeedCaseComparison(n_seeds, n_cases, None, None, None, None, None, "no defined paired value")
    diff = b - a
    lo, hi = _grid_bootstrap_ci(diff, n_boot, seed)
    per_case = diff.mean(axis=0)
    p_value = None
    nonzero = int(np.count_nonzero(per_case))
    if nonzero == 0:
        note = "all seed-averaged differences are zero"
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p_value = float(wilcoxon(per_case, zero_method="wilcox", alternative="two-sided").pvalue)
        note = (f"bootstrap over {n_seeds} seed(s) x {n_cases} case(s) ({n_boot} replicates); Wilcoxon over "
                f"{nonzero} non-zero seed-averaged case differences")
        if n_seeds < 3:
            note += f"; only {n_seeds} seed(s): the interval does not reflect training-run spread well"
    return SeedCaseComparison(n_seeds, n_cases, float(a.mean()), float(b.mean()), float(diff.mean()),
                              (lo, hi), p_value, note)
