import math

import numpy as np

from nnunet_genesis.transforms import GenesisConfig, corrupt
from nnunet_genesis.transforms.nonlinear import bezier_lookup_table, sample_curves
from nnunet_genesis.transforms.regions import Region

CURVE_ONLY = GenesisConfig(flip_rate=0.0, local_rate=0.0, nonlinear_rate=1.0, paint_rate=0.0)


def test_mapping_is_a_monotone_function_of_intensity_within_range(ct_hu):
    x = ct_hu.ravel()
    order = np.argsort(x, kind="stable")
    tol = 1e-5 * (x.max() - x.min())
    directions = set()
    for seed in range(12):
        out, target = corrupt(ct_hu, np.random.default_rng(seed), CURVE_ONLY)
        y = out.ravel()
        assert y.min() >= x.min() and y.max() <= x.max()
        # equal inputs -> equal outputs (CT holds integer HU: many repeats)
        u, inv = np.unique(x, return_inverse=True)
        per_value_min = np.full(u.size, np.inf)
        per_value_max = np.full(u.size, -np.inf)
        np.minimum.at(per_value_min, inv, y)
        np.maximum.at(per_value_max, inv, y)
        assert np.array_equal(per_value_min, per_value_max)
        d = np.diff(y[order])
        if y[x.argmax()] > y[x.argmin()]:
            directions.add("up")
            assert d.min() >= -tol
            assert math.isclose(y.min(), x.min(), abs_tol=tol) and math.isclose(y.max(), x.max(), abs_tol=tol)
        else:
            directions.add("down")
            assert d.max() <= tol
        assert len(np.unique(y)) > 0.9 * len(u)  # (nearly) one-to-one: no collapse of levels
    assert directions == {"up", "down"}


def test_inverted_half_of_the_time(smooth_small):
    n = 300
    down = 0
    x = smooth_small.ravel()
    for seed in range(n):
        y = corrupt(smooth_small, np.random.default_rng(seed), CURVE_ONLY)[0].ravel()
        down += y[x.argmax()] < y[x.argmin()]
    assert abs(down / n - 0.5) < 4.5 * math.sqrt(0.25 / n)


def test_lookup_table_follows_the_bezier_curve():
    control = np.array([0.7, 0.2, 0.1, 0.9])  # x1, x2 (unsorted on purpose), y1, y2
    table = bezier_lookup_table(control, 1024, decreasing=False)
    t = np.linspace(0, 1, 57)
    x1, x2, y1, y2 = 0.2, 0.7, 0.1, 0.9
    bx = 3 * (1 - t) ** 2 * t * x1 + 3 * (1 - t) * t ** 2 * x2 + t ** 3
    by = 3 * (1 - t) ** 2 * t * y1 + 3 * (1 - t) * t ** 2 * y2 + t ** 3
    assert np.allclose(np.interp(bx, np.linspace(0, 1, 1024), table), by, atol=2e-3)
    assert table[0] == 0 and table[-1] == 1 and np.all(np.diff(table) >= 0)
    assert np.allclose(bezier_lookup_table(control, 1024, decreasing=True), 1 - table)


def test_z_scored_ct_keeps_its_negative_range(ct_z):
    lo, hi = float(ct_z.min()), float(ct_z.max())
    assert lo < -1
    for seed in range(6):
        y = corrupt(ct_z, np.random.default_rng(seed), CURVE_ONLY)[0]
        assert math.isclose(y.min(), lo, rel_tol=1e-5) and math.isclose(y.max(), hi, rel_tol=1e-5)
        negative = y[y < 0]
        assert np.unique(negative).size > 200  # many distinct negative levels survive
        assert (y == y.min()).mean() < 0.2  # not clamped to one value


def test_constant_channel_is_left_alone():
    image = np.stack([np.full((6, 6, 6), 3.0), np.linspace(-2, 2, 216).reshape(6, 6, 6)]).astype(np.float32)
    m = sample_curves(2, np.random.default_rng(0), GenesisConfig()).over(image.reshape(2, -1).min(1),
                                                                         image.reshape(2, -1).max(1))
    y = m.apply_in(image, np.empty_like(image), Region.whole(image.shape[1:]))
    assert np.all(y[0] == 3.0) and y[1].min() >= -2 and y[1].max() <= 2 and not np.array_equal(y[1], image[1])
