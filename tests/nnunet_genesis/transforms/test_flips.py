import dataclasses

import numpy as np
import pytest

from nnunet_genesis.transforms import GenesisConfig, corrupt
from nnunet_genesis.transforms.config import CorruptionDecisions
from nnunet_genesis.transforms.flips import flipped_copies

FLIP_ONLY = GenesisConfig(flip_rate=0.4, local_rate=0.0, nonlinear_rate=0.0, paint_rate=0.0)


def which_axes(image, flipped):
    for axes in [(), (1,), (2,), (3,), (1, 2), (1, 3), (2, 3), (1, 2, 3)]:
        if np.array_equal(np.flip(image, axes) if axes else image, flipped):
            return axes
    raise AssertionError("output is not a flip of the input along spatial axes")


def test_flip_is_identical_on_input_and_target_and_never_on_channels(unique_volume):
    image = unique_volume((3, 6, 7, 8))
    seen = set()
    for seed in range(40):
        x, y = corrupt(image, np.random.default_rng(seed), FLIP_ONLY)
        assert np.array_equal(x, y)
        seen.add(which_axes(image, y))  # fails if the channel axis were flipped: channels differ
    assert len(seen) >= 6  # several axis combinations occur


def test_each_axis_flips_with_flip_rate(smooth_small):
    n = 400
    counts = np.zeros(3)
    for seed in range(n):
        _, y = corrupt(smooth_small, np.random.default_rng(seed), FLIP_ONLY)
        for ax in which_axes(smooth_small, y):
            counts[ax - 1] += 1
    sd = np.sqrt(0.4 * 0.6 / n)
    assert np.all(np.abs(counts / n - 0.4) < 4.5 * sd), counts / n


def test_choose_axes_and_copy():
    cfg = dataclasses.replace(GenesisConfig(), flip_rate=0.5)
    assert CorruptionDecisions.from_uniforms(np.array([0.1, 0.9, 0.2, 1, 1, 1, 1]), cfg).flip_axes == (1, 3)
    a = np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4)
    b = flipped_copies(a, ())[0]
    assert np.array_equal(a, b) and not np.shares_memory(a, b)
    with pytest.raises(ValueError, match="spatial"):
        flipped_copies(a, (0,))


@pytest.mark.parametrize("shape", [(2, 5, 6, 7), (2, 3, 4, 67)])  # rows shorter and longer than a vector
@pytest.mark.parametrize("axes", [(), (1,), (2,), (3,), (1, 2), (1, 3), (2, 3), (1, 2, 3)])
def test_flipped_copies_match_numpy_with_the_range_of_each_channel(axes, shape):
    rng = np.random.default_rng(len(axes))
    image = rng.standard_normal(shape).astype(np.float32) * np.float32(300)
    image[1] = np.abs(image[1]) + 5  # an all-positive channel
    image[0, 0, 0, 0] = -0.0
    image[0, -1, -1, -2] = np.float32(-3e38)  # extremes near a row's end, where vector and tail meet
    image[1, -1, 0, -1] = np.float32(3e38)
    view = image[:, ::-1].copy()[:, ::-1]  # a non-contiguous input is accepted too
    for src in (image, view, image.astype(np.float64)):
        target, second, lo, hi = flipped_copies(src, axes, twice=True)
        assert np.array_equal(target, np.flip(image, axes)) and target.dtype == np.float32
        assert np.array_equal(second, target) and not np.shares_memory(second, target)
        assert np.array_equal(lo, image.reshape(2, -1).min(1)) and np.array_equal(hi, image.reshape(2, -1).max(1))
    assert flipped_copies(image, axes)[1] is None


@pytest.mark.parametrize("value", [np.nan, -np.nan, np.inf, -np.inf])
def test_flipped_copies_reject_non_finite_voxels(value):
    image = np.zeros((2, 4, 4, 4), np.float32)
    image[1, 2, 3, 1] = value
    with pytest.raises(ValueError, match="1 NaN/Inf"):
        flipped_copies(image, (2,))
