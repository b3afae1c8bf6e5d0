"""The plans' short schedule: mirroring augmentation, the CPU memory layout and CPU bfloat16."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from nnunet_genesis import cpu_speed
from nnunet_genesis.trainers import short_schedule, variants


def _scratch(env, plans: dict, first_features: int | None = None, **schedule) -> variants.nnUNetTrainerScratch_demo:
    plans = copy.deepcopy(plans)
    plans["plans_name"] = "nnUNetPlans_scheduleTest"
    plans[short_schedule.PLANS_KEY] = short_schedule.ShortSchedule(epochs=2, iterations_per_epoch=1, **schedule).to_dict()
    plans["continue_training"] = False  # what nnUNetv2_train adds before building the trainer
    if first_features is not None:
        arch = plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
        arch["features_per_stage"] = [first_features * 2 ** i for i in range(len(arch["features_per_stage"]))]
    return variants.nnUNetTrainerScratch_demo(plans=plans, configuration="3d_fullres", fold=0,
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
    assert cpu_speed.channels_last_pays({"features_per_stage": [8, 16, 32, 64]})
    assert not cpu_speed.channels_last_pays({"features_per_stage": [16, 32, 64, 128]})
    assert not cpu_speed.channels_last_pays({})
    for first, expected in ((8, True), (32, False)):
        trainer = _scratch(env, hippocampus_plans, first_features=first)
        trainer.initialize()
        # the second conv: with one input channel both layouts of the first are contiguous
        weight = trainer.network.encoder.stages[0][0].convs[1].conv.weight  # no torch.compile on a CPU
        assert weight.is_contiguous(memory_format=torch.channels_last_3d) == expected
        assert weight.is_contiguous() != expected


@pytest.mark.parametrize("bf16", [False, True])
def test_cpu_bf16_runs_the_forward_pass_in_bfloat16_and_returns_float32(env, hippocampus_plans, bf16):
    trainer = _scratch(env, hippocampus_plans, cpu_bf16=bf16)
    trainer.initialize()
    keys = set(trainer.network.state_dict())
    seen = []
    conv = trainer.network.encoder.stages[0][0].convs[0].conv
    conv.register_forward_hook(lambda module, args, output: seen.append(output.dtype))
    patch = trainer.configuration_manager.patch_size
    x = torch.randn(1, 1, *patch)
    outputs = trainer.network(x)  # deep supervision: one output per resolution
    assert seen == [torch.bfloat16 if bf16 else torch.float32]
    assert all(o.dtype == torch.float32 for o in outputs)
    sum(o.square().mean() for o in outputs).backward()
    assert conv.weight.grad is not None and conv.weight.grad.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in trainer.network.parameters())
    assert set(trainer.network.state_dict()) == keys  # checkpoints load as before


def test_bf16_forward_keeps_a_single_output_and_non_float_outputs():
    net = torch.nn.Conv3d(1, 2, 3, padding=1)
    wrapped = cpu_speed.bf16_forward(net.forward)
    assert wrapped(torch.randn(1, 1, 4, 4, 4)).dtype == torch.float32
    pair = cpu_speed.bf16_forward(lambda x: (net(x), torch.ones(2, dtype=torch.long)))(torch.randn(1, 1, 4, 4, 4))
    assert isinstance(pair, tuple) and pair[0].dtype == torch.float32 and pair[1].dtype == torch.long


def test_native_bf16_detection_agrees_with_the_cpu_flags():
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo to compare with (not Linux)")
    flags = set(cpuinfo.read_text().split())
    if "avx512_bf16" in flags:
        assert cpu_speed.cpu_has_native_bf16()
    elif not {"amx_bf16", "amx_tile"} & flags:
        assert not cpu_speed.cpu_has_native_bf16()
    # AMX alone: usable only where the kernel grants it to the process, so either answer can be right
