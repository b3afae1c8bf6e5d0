"""Fixtures for the corruption tests: small crops of real CT, and synthetic volumes."""

from __future__ import annotations

import numpy as np
import pytest

CT_FILE = "ibsi_STS_002_CT_image.nii.gz"  # (48, 143, 161) voxels, HU in [-1000, 1156]


@pytest.fixture(scope="session")
def ct_hu(ct_dir) -> np.ndarray:
    """A (1, 32, 64, 64) crop of real CT in Hounsfield units, float32."""
    from nnunet_genesis.volumes import read_volume

    arr, _ = read_volume(ct_dir / CT_FILE)
    crop = np.ascontiguousarray(arr[:, 8:40, 40:104, 48:112])
    assert crop.min() < -500 and crop.max() > 200, "crop should hold air and tissue"
    return crop


@pytest.fixture(scope="session")
def ct_z(ct_hu) -> np.ndarray:
    """The same crop z-scored (mean 0, std 1), as nnU-Net's normalisation produces."""
    return ((ct_hu - ct_hu.mean()) / ct_hu.std()).astype(np.float32)


def smooth_volume(shape, seed=0) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    v = gaussian_filter(np.random.default_rng(seed).standard_normal(shape), 1.5)
    return ((v - v.mean()) / v.std()).astype(np.float32)[None]


@pytest.fixture(scope="session")
def smooth_small() -> np.ndarray:
    """Synthetic z-scored (1, 20, 20, 20) volume with continuous values."""
    return smooth_volume((20, 20, 20))


@pytest.fixture()
def unique_volume():
    """Factory: (C, X, Y, Z) volume whose every value is distinct (identifies its position)."""
    def make(shape, seed=0):
        n = int(np.prod(shape))
        return np.random.default_rng(seed).permutation(n).astype(np.float32).reshape(shape) - n / 2
    return make


def _boxes_mask(boxes, spatial_shape) -> np.ndarray:
    m = np.zeros(spatial_shape, dtype=bool)
    for start, size in zip(boxes.starts.tolist(), boxes.sizes.tolist()):
        m[tuple(slice(a, a + e) for a, e in zip(start, size))] = True
    return m


@pytest.fixture(scope="session")
def boxes_mask():
    """f(boxes, spatial_shape): boolean (X, Y, Z), true inside at least one of the PaintBoxes,
    by slicing: an independent check of the run-based regions the corruption uses."""
    return _boxes_mask
