"""CPU speed options of a training process: bfloat16 autocast of the forward pass, channels-last
weights for narrow networks, and torch's threads capped at the CPUs the process may use.

Each is measured with ``benchmarks/cpu_step.py`` (figures in docs/benchmark_transfer.md); the
short-schedule trainers (``trainers/schedule_variants.py``) apply them from the plans, so every
arm of a comparison decides alike.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Mapping

import torch

CHANNELS_LAST_MAX_FEATURES = 8


def channels_last_pays(arch_kwargs: Mapping[str, Any]) -> bool:
    """Whether a CPU training step runs faster with channels-last 3D weights: only for the narrowest
    networks (first stage at most 8 feature maps, a quarter of nnU-Net's width); slower at half and
    full width."""
    features = arch_kwargs.get("features_per_stage") or arch_kwargs.get("n_stages_features") or []
    return bool(features) and int(features[0]) <= CHANNELS_LAST_MAX_FEATURES


def bf16_forward(forward):
    """``forward`` under CPU bfloat16 autocast, its floating outputs returned as float32.

    Wrapping the forward (as Hugging Face Accelerate does for mixed precision) rather than the
    whole ``train_step`` keeps nnU-Net's loss (softmax, Dice sums over every voxel) and the
    backward pass out of autocast, and leaves ``train_step`` nnU-Net's own.
    """

    @functools.wraps(forward)
    def run(*args, **kwargs):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outputs = forward(*args, **kwargs)
        if isinstance(outputs, (list, tuple)):  # deep supervision: one output per resolution
            return type(outputs)(o.float() if torch.is_floating_point(o) else o for o in outputs)
        return outputs.float() if torch.is_floating_point(outputs) else outputs

    return run


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bfloat16 instructions (AVX512-BF16 or AMX); without them bfloat16 is
    emulated and autocast is slower than float32."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(probe() for probe in probes if probe is not None)


def use_allowed_cpus() -> None:
    """Cap torch's threads at the CPUs this process may run on.

    ``nnUNetv2_train -device cpu`` sets one thread per CPU of the machine; under ``taskset``
    or a CPU-limited container (the benchmark runs two trainings side by side, one core each)
    the extra threads only contend for the allowed cores.
    """
    if hasattr(os, "sched_getaffinity"):
        allowed = len(os.sched_getaffinity(0))
        if 0 < allowed < torch.get_num_threads():
            torch.set_num_threads(allowed)
