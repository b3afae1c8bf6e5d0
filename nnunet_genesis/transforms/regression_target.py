"""Hand batchgeneratorsv2's ``regression_target`` to nnU-Net's data loader as the segmentation.

nnU-Net 2.8's ``nnUNetDataLoader`` keeps only ``image`` and ``segmentation`` of each transformed
sample and batches them as ``batch['data']`` and ``batch['target']``; a ``regression_target``
(where ``GenesisCorruptionTransform`` and other restoration corruptions put the uncorrupted
patch) would be dropped. Appended last to a training pipeline, this transform moves it into
``segmentation``, so a stock loader delivers the restoration targets as ``batch['target']``.
"""

from __future__ import annotations

from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform


class RegressionTargetAsSegmentation(BasicTransform):
    """``segmentation`` <- ``regression_target`` (removed); ValueError when there is none."""

    def apply(self, data_dict: dict, **params) -> dict:
        if data_dict.get("regression_target") is None:
            raise ValueError("RegressionTargetAsSegmentation needs data_dict['regression_target'] "
                             "(put it after the transform that makes the restoration target).")
        data_dict["segmentation"] = data_dict.pop("regression_target")
        return data_dict
