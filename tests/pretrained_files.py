"""Pretrained files of the foreign kinds ``pretrained_sources`` reads, written as their tools write them, for
the tests of several folders (tests/conftest.py puts this folder on the path).

``nnunet_training_checkpoint``: the dict nnU-Net 2.8.1's ``nnUNetTrainer.save_checkpoint`` writes (numpy
float32 scalars in its loss curves, ``torch.device`` in ``init_args``). ``nnssl_checkpoint``: the dict
nnssl's trainers write, with an ``nnssl_adaptation_plan`` as ``AdaptationPlan.serialize()`` gives it (tuples
kept, ops as dotted names). The schema follows the facts noted for issue 32; no nnssl code is used.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

RESENC_KEYS = ("encoder.stages", "encoder.stem", ("encoder.stem.convs.0.conv", "encoder.stem.convs.0.all_modules.0"))
PRIMUS_KEYS = ("eva", "down_projection", ("down_projection.proj",))
IMPORTED_OPS = ("conv_op", "norm_op", "dropout_op", "nonlin")


def resenc_arch(features: list[int], input_channels: int = 1, output_channels: int = 1) -> dict[str, Any]:
    """The Genesis network block of a small ResidualEncoderUNet (one stride-2 stage after another)."""
    return {
        "network_class": "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
        "network_kwargs": {
            "n_stages": len(features), "features_per_stage": list(features),
            "conv_op": "torch.nn.modules.conv.Conv3d", "kernel_sizes": [[3, 3, 3]] * len(features),
            "strides": [[1, 1, 1]] + [[2, 2, 2]] * (len(features) - 1),
            "n_blocks_per_stage": [1, 2, 2, 2][:len(features)], "n_conv_per_stage_decoder": [1] * (len(features) - 1),
            "conv_bias": True, "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}},
        "network_kwargs_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
        "input_channels": input_channels, "output_channels": output_channels,
    }


def nnunet_training_checkpoint(path: Path, weights: Mapping[str, torch.Tensor], plans: Mapping[str, Any] | None,
                               configuration: str | None = "3d_fullres", trainer: str = "nnUNetTrainer",
                               dataset_json: Mapping[str, Any] | None = None) -> Path:
    """An nnU-Net v2 training checkpoint; ``plans=None`` / ``configuration=None`` leave them out of init_args."""
    init_args: dict[str, Any] = {"fold": 0, "device": torch.device("cpu"),
                                 "dataset_json": dict(dataset_json or {"channel_names": {"0": "MRI"},
                                                                       "labels": {"background": 0, "a": 1, "b": 2}})}
    if plans is not None:
        init_args["plans"] = copy.deepcopy(dict(plans))
    if configuration is not None:
        init_args["configuration"] = configuration
    obj = {
        "network_weights": dict(weights),
        "optimizer_state": {"state": {}, "param_groups": [{"lr": 0.01, "momentum": 0.99, "nesterov": True,
                                                           "weight_decay": 3e-05, "params": [0, 1]}]},
        "grad_scaler_state": None,
        "logging": {"mean_fg_dice": [np.float32(0.5)], "ema_fg_dice": [np.float32(0.5)],
                    "dice_per_class_or_region": [[np.float32(0.4), np.float32("nan")]],
                    "train_losses": [np.float32(-0.1)], "val_losses": [np.float32(-0.2)], "lrs": [0.01],
                    "epoch_start_timestamps": [1.0], "epoch_end_timestamps": [2.0]},
        "_best_ema": np.float32(0.5),
        "current_epoch": 1,
        "init_args": init_args,
        "trainer_name": trainer,
        "inference_allowed_mirroring_axes": (0, 1, 2),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return path


def nnssl_plan(arch_class_name: str, arch_kwargs: Mapping[str, Any] | None, keys=RESENC_KEYS,
               input_channels: int = 1) -> dict[str, Any]:
    """An ``nnssl_adaptation_plan`` as nnssl serialises it."""
    encoder, stem, in_proj = keys
    requiring_import = [k for k in IMPORTED_OPS if arch_kwargs and isinstance(arch_kwargs.get(k), str)] \
        if arch_kwargs else None
    return {
        "architecture_plans": {"arch_class_name": arch_class_name,
                               "arch_kwargs": copy.deepcopy(dict(arch_kwargs)) if arch_kwargs else None,
                               "arch_kwargs_requiring_import": requiring_import},
        "pretrain_plan": {
            "dataset_name": "Dataset745_OpenMind", "plans_name": "nnsslPlans",
            "original_median_spacing_after_transp": [1.0, 1.0, 1.0], "image_reader_writer": "SimpleITKIO",
            "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
            "configurations": {"onemmiso": {
                "data_identifier": "nnsslPlans_onemmiso", "preprocessor_name": "DefaultPreprocessor",
                "spacing_style": "onemmiso", "normalization_schemes": ["ZScoreNormalization"],
                "use_mask_for_norm": [False], "resampling_fn_data": "resample_data_or_seg_to_shape",
                "resampling_fn_data_kwargs": {"is_seg": False, "order": 3}, "resampling_fn_mask":
                "resample_data_or_seg_to_shape", "resampling_fn_mask_kwargs": {"is_seg": True, "order": 1},
                "spacing": [1.0, 1.0, 1.0], "patch_size": [160, 160, 160]}},
            "experiment_planner_used": "ExperimentPlanner"},
        "pretrain_num_input_channels": input_channels,
        "recommended_downstream_patchsize": (160, 160, 160),
        "key_to_encoder": encoder,
        "key_to_stem": stem,
        "keys_to_in_proj": tuple(in_proj),
        "key_to_lpe": "eva.pos_embed" if keys == PRIMUS_KEYS else None,
    }


def nnssl_checkpoint(path: Path, weights: Mapping[str, torch.Tensor], plan: Mapping[str, Any],
                     trainer: str = "BaseMAETrainer", **extra: Any) -> Path:
    """An nnssl checkpoint (released form: weights, init_args, trainer name, adaptation plan); ``extra``: more
    top-level keys (e.g. a contradicting ``genesis`` block)."""
    obj = {"network_weights": {k: v.detach().cpu() for k, v in weights.items()},
           "init_args": {"fold": 0, "configuration": "onemmiso", "device": torch.device("cpu")},
           "trainer_name": trainer, "nnssl_adaptation_plan": copy.deepcopy(dict(plan)), **extra}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return path


def primus_like_weights() -> dict[str, torch.Tensor]:
    """A few tensors under Primus's names (a transformer; no CNN plan takes them)."""
    return {"down_projection.proj.weight": torch.full((8, 1, 8, 8, 8), 0.01),
            "down_projection.proj.bias": torch.zeros(8),
            "eva.pos_embed": torch.zeros(1, 8, 8),
            "eva.blocks.0.attn.qkv.weight": torch.full((24, 8), 0.01),
            "up_projection.decode.0.weight": torch.full((8, 1, 8, 8, 8), 0.01)}
