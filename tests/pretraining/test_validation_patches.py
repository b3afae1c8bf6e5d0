import numpy as np
import pytest
import torch

from nnunet_genesis.pretraining.validation_patches import FixedValidationSet
from nnunet_genesis.transforms import GenesisConfig


def test_trivial_baselines_are_the_mse_of_input_and_of_the_patch_mean():
    rng = np.random.default_rng(0)
    clean = torch.from_numpy(rng.standard_normal((3, 2, 8, 8, 8)).astype(np.float32)) + torch.arange(3.0).view(3, 1, 1, 1, 1)
    vs = FixedValidationSet(clean, GenesisConfig(), seed=1, batch_size=2)
    base = vs.trivial_baselines()
    t = vs.target.double()
    per_patch_var = ((t - t.mean(dim=(2, 3, 4), keepdim=True)) ** 2).mean()
    assert base["mean"] == pytest.approx(float(per_patch_var))
    assert base["identity"] == pytest.approx(float(((vs.corrupted.double() - t) ** 2).mean()))
    # unit-variance noise around shifted means: the best constant per patch leaves the variance
    assert 0.8 < base["mean"] < 1.2
    # the restoration target is the clean patch, flipped like the input
    assert torch.allclose(vs.target.flatten(1).sort(dim=1).values, clean.flatten(1).sort(dim=1).values)
