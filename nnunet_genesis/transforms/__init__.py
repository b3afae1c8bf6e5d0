"""Models Genesis corruptions (Zhou et al., MICCAI 2019 / MedIA 2021), range-aware and vectorised.

Public API:
    GenesisConfig                 the probabilities and sizes (one dataclass)
    corrupt(image, rng, config)   NumPy, one sample (C, X, Y, Z) -> (input, target)
    corrupt_batch(images, generator, config)
                                  torch, a batch (B, C, X, Y, Z) on any device -> (input, target)
    GenesisCorruptionTransform    batchgeneratorsv2 transform for nnU-Net data pipelines
    RegressionTargetAsSegmentation
                                  moves its regression_target into segmentation (nnU-Net's loader)
"""

from nnunet_genesis.transforms.config import GenesisConfig
from nnunet_genesis.transforms.corrupt import corrupt
from nnunet_genesis.transforms.torch_ops import corrupt_batch
from nnunet_genesis.transforms.bgv2 import GenesisCorruptionTransform
from nnunet_genesis.transforms.regression_target import RegressionTargetAsSegmentation

__all__ = ["GenesisConfig", "corrupt", "corrupt_batch", "GenesisCorruptionTransform", "RegressionTargetAsSegmentation"]
