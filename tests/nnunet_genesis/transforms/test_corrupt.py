import numpy as np
import pytest

from nnunet_genesis.transforms import GenesisConfig, corrupt

ALL_ON = GenesisConfig(flip_rate=0.5, local_rate=1.0, nonlinear_rate=1.0, paint_rate=1.0, outpaint_rate=0.5)


def test_outputs_are_new_float32_arrays_and_input_is_untouched(ct_hu):
    image = ct_hu.copy()
    for seed in range(4):
        x, y = corrupt(image, np.random.default_rng(seed))
        assert x.dtype == y.dtype == np.float32 and x.shape == y.shape == image.shape
        assert x.flags.c_contiguous and y.flags.c_contiguous
        assert not np.shares_memory(x, image) and not np.shares_memory(y, image) and not np.shares_memory(x, y)
    assert np.array_equal(image, ct_hu)


def test_float64_input_is_accepted():
    image = np.random.default_rng(0).standard_normal((2, 12, 12, 12))
    x, y = corrupt(image, np.random.default_rng(0), ALL_ON)
    assert x.dtype == y.dtype == np.float32


def test_same_seed_same_result_different_seed_different_result(ct_z):
    a = corrupt(ct_z, np.random.default_rng(42), ALL_ON)
    b = corrupt(ct_z, np.random.default_rng(42), ALL_ON)
    c = corrupt(ct_z, np.random.default_rng(43), ALL_ON)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_target_is_the_original_flipped_like_the_input(ct_z):
    for seed in range(6):
        x, y = corrupt(ct_z, np.random.default_rng(seed), ALL_ON)
        assert any(np.array_equal(np.flip(ct_z, axes), y)
                   for axes in [(), (1,), (2,), (3,), (1, 2), (1, 3), (2, 3), (1, 2, 3)])


def test_z_scored_ct_is_not_collapsed_by_the_full_pipeline(ct_z):
    lo, hi = ct_z.min(), ct_z.max()
    for seed in range(8):
        x, _ = corrupt(ct_z, np.random.default_rng(seed), ALL_ON)
        assert x.min() >= lo and x.max() <= hi
        assert x.min() < -1  # negative intensities survive
        assert np.unique(x[x < 0]).size > 1000
        assert (x == x.min()).mean() < 0.01 and (x == x.max()).mean() < 0.01


def test_every_corruption_off_returns_the_original(ct_hu):
    off = GenesisConfig(flip_rate=0, local_rate=0, nonlinear_rate=0, paint_rate=0)
    x, y = corrupt(ct_hu, np.random.default_rng(0), off)
    assert np.array_equal(x, ct_hu) and np.array_equal(y, ct_hu)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((8, 8, 8), np.float32), "4 dimensions"),
    (np.zeros((1, 1, 8, 8, 8), np.float32), "4 dimensions"),
    (np.zeros((1, 8, 8, 8), np.int16), "floating"),
    (np.zeros((1, 8, 8, 8), bool), "floating"),
    (np.zeros((0, 8, 8, 8), np.float32), "empty"),
    ([[[[0.0]]]], "numpy.ndarray"),
])
def test_bad_images_raise_value_error(bad, message):
    with pytest.raises(ValueError, match=message):
        corrupt(bad, np.random.default_rng(0))


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_values_raise_value_error(value):
    image = np.zeros((1, 8, 8, 8), np.float32)
    image[0, 3, 4, 5] = value
    with pytest.raises(ValueError, match="NaN/Inf"):
        corrupt(image, np.random.default_rng(0))


@pytest.mark.parametrize("rng", [None, 0, np.random.RandomState(0), np.random.PCG64(0)])
def test_rng_must_be_a_generator(rng):
    with pytest.raises(ValueError, match="Generator"):
        corrupt(np.zeros((1, 8, 8, 8), np.float32), rng)


def test_config_must_be_a_genesis_config():
    with pytest.raises(ValueError, match="GenesisConfig"):
        corrupt(np.zeros((1, 8, 8, 8), np.float32), np.random.default_rng(0), {"flip_rate": 0.4})


def test_tiny_and_odd_shapes_work():
    rng = np.random.default_rng(0)
    for shape in [(1, 1, 1, 1), (2, 3, 1, 5), (1, 7, 9, 11), (3, 16, 10, 4)]:
        image = rng.standard_normal(shape).astype(np.float32)
        for seed in range(3):
            x, y = corrupt(image, np.random.default_rng(seed), ALL_ON)
            assert x.shape == shape and np.isfinite(x).all()
            assert x.min() >= image.min() - 1e-6 and x.max() <= image.max() + 1e-6
