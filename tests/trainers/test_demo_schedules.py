"""The plans' short schedule: mirroring augmentation and the CPU memory layout it chooses."""

from __future__ import annotations

import copy

import pytest
import torch

from nnunet_genesis.trainers import demo_schedules as ds


def _scratch(env, plans: dict, first_features: int | None = None, **schedule) -> ds.nnUNetTrainerScratch_demo:
    plans = copy.deepcopy(plans)
    plans["plans_name"] = "nnUNetPlans_scheduleTest"
    plans[ds.PLANS_KEY] = ds.ShortSchedule(epochs=2, iterations_per_epoch=1, **schedule).to_dict()
    plans["continue_training"] = False  # what nnUNetv2_train adds before building the trainer
    if first_features is not None:
        arch = plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
        arch["features_per_stage"] = [first_features * 2 ** i for i in range(len(arch["features_per_stage"]))]
    return ds.nnUNetTrainerScratch_demo(plans=plans, configuration="3d_fullres", fold=0,
                                        dataset_json=env["dataset_json"], device=torch.device("cpu"))


def _has_mirroring(transforms) -> bool:
    from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform

    stack = [transforms]
    while stack:
        t = stack.pop()
        if isinstance(t, MirrorTransform):
            return True
        stack.extend(getattr(t, "transforms", []) or [])
    return False


@pytest.mark.parametrize("mirroring", [True, False])
def test_training_mirroring_follows_the_schedule(env, hippocampus_plans, mirroring):
    trainer = _scratch(env, hippocampus_plans, training_mirroring=mirroring, test_time_mirroring=True)
    rotation, dummy_2d, initial_patch, mirror_axes = trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    assert (mirror_axes is not None) == mirroring
    assert trainer.inference_allowed_mirroring_axes is not None  # test-time mirroring is its own switch
    transforms = trainer.get_training_transforms(
        trainer.configuration_manager.patch_size, rotation, None, mirror_axes, dummy_2d)
    assert _has_mirroring(transforms) == mirroring


def test_channels_last_only_where_it_was_measured_to_pay(env, hippocampus_plans):
    assert ds.channels_last_pays({"features_per_stage": [8, 16, 32, 64]})
    assert not ds.channels_last_pays({"features_per_stage": [16, 32, 64, 128]})
    assert not ds.channels_last_pays({})
    for first, expected in ((8, True), (32, False)):
        trainer = _scratch(env, hippocampus_plans, first_features=first)
        trainer.initialize()
        # the second conv: with one input channel both layouts of the first are contiguous
        weight = trainer.network.encoder.stages[0][0].convs[1].conv.weight  # no torch.compile on a CPU
        assert weight.is_contiguous(memory_format=torch.channels_last_3d) == expected
        assert weight.is_contiguous() != expected
