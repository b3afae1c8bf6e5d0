import numpy as np
import pytest
import torch
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms

from nnunet_genesis.transforms import GenesisCorruptionTransform, RegressionTargetAsSegmentation, corrupt


def test_moves_the_regression_target_into_the_segmentation():
    target = torch.rand(1, 4, 5, 6)
    d = RegressionTargetAsSegmentation()(image=torch.zeros(1, 4, 5, 6), regression_target=target,
                                         segmentation=torch.zeros(1, 4, 5, 6, dtype=torch.int16))
    assert set(d) == {"image", "segmentation"} and d["segmentation"] is target


def test_after_the_corruption_a_stock_nnunet_loader_gets_the_restoration_target(ct_z):
    pipeline = ComposeTransforms([GenesisCorruptionTransform(seed=2), RegressionTargetAsSegmentation()])
    d = pipeline(image=torch.from_numpy(ct_z.copy()), segmentation=torch.zeros(ct_z.shape, dtype=torch.int16))
    x, y = corrupt(ct_z, np.random.default_rng(2))
    assert set(d) == {"image", "segmentation"}  # all nnUNetDataLoader keeps
    assert np.array_equal(d["image"].numpy(), x) and np.array_equal(d["segmentation"].numpy(), y)


def test_without_a_regression_target_it_is_an_error():
    with pytest.raises(ValueError, match="regression_target"):
        RegressionTargetAsSegmentation()(image=torch.zeros(1, 4, 4, 4), segmentation=torch.zeros(1, 4, 4, 4))
