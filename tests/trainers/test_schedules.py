"""Warm-up + poly learning-rate schedule (docs/trainers.md, 'Learning-rate schedule')."""

from __future__ import annotations

import math

import pytest
import torch

from nnunet_genesis.trainers.schedules import WarmupPolyLRScheduler, warmup_poly_lr


def _optimizer(lr: float = 0.01) -> torch.optim.Optimizer:
    p = torch.nn.Parameter(torch.zeros(3))
    return torch.optim.SGD([p], lr=lr, momentum=0.99, nesterov=True)


def test_warmup_is_linear_and_reaches_initial_lr():
    lrs = [warmup_poly_lr(e, 0.01, num_epochs=100, warmup_epochs=10) for e in range(10)]
    assert lrs == pytest.approx([0.01 * (e + 1) / 10 for e in range(10)])
    steps = [b - a for a, b in zip(lrs, lrs[1:])]
    assert steps == pytest.approx([0.001] * 9)
    assert lrs[-1] == pytest.approx(0.01)


def test_poly_part_matches_nnunet_poly_over_remaining_epochs():
    from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler

    n, w = 100, 10
    reference = PolyLRScheduler(_optimizer(), 0.01, n - w)  # nnU-Net's own poly over N - W steps
    for e in range(w, n):
        reference.step(e - w)
        assert warmup_poly_lr(e, 0.01, n, w) == pytest.approx(reference.get_last_lr()[0], rel=1e-12)
    assert warmup_poly_lr(n - 1, 0.01, n, w) == pytest.approx(0.01 * (1 / (n - w)) ** 0.9)
    assert warmup_poly_lr(n - 1, 0.01, n, w) > 0


def test_no_warmup_is_nnunet_poly():
    for e in (0, 1, 37, 99):
        assert warmup_poly_lr(e, 0.01, 100, 0) == pytest.approx(0.01 * (1 - e / 100) ** 0.9)


def test_scheduler_sets_every_param_group_like_nnunet_calls_it():
    opt = _optimizer()
    opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))]})
    sched = WarmupPolyLRScheduler(opt, 0.02, max_steps=20, warmup_steps=4)
    seen = []
    for epoch in range(20):  # nnU-Net: lr_scheduler.step(current_epoch) at each epoch start
        sched.step(epoch)
        assert {g["lr"] for g in opt.param_groups} == {sched.get_last_lr()[0]}
        seen.append(opt.param_groups[0]["lr"])
    assert seen[:4] == pytest.approx([0.005, 0.01, 0.015, 0.02])
    assert seen[4] == pytest.approx(0.02)
    assert all(b < a for a, b in zip(seen[4:], seen[5:]))  # strictly decaying after warm-up
    assert seen[12] == pytest.approx(0.02 * (1 - 8 / 16) ** 0.9)


def test_scheduler_counts_calls_without_argument_and_resumes_statelessly():
    sched = WarmupPolyLRScheduler(_optimizer(), 0.01, max_steps=10, warmup_steps=2)
    # the constructor takes step 0, like PolyLRScheduler
    assert sched.get_last_lr()[0] == pytest.approx(0.005)
    got = []
    for _ in range(3):  # each call without argument advances one step
        sched.step()
        got.append(sched.get_last_lr()[0])
    assert got == pytest.approx([0.01, 0.01, 0.01 * (1 - 1 / 8) ** 0.9])
    resumed = WarmupPolyLRScheduler(_optimizer(), 0.01, max_steps=10, warmup_steps=2)
    resumed.step(7)  # as after nnUNetv2_train --c at epoch 7
    assert resumed.get_last_lr()[0] == pytest.approx(0.01 * (1 - 5 / 8) ** 0.9)


def test_invalid_arguments():
    with pytest.raises(ValueError):
        WarmupPolyLRScheduler(_optimizer(), 0.01, max_steps=0, warmup_steps=0)
    with pytest.raises(ValueError):
        warmup_poly_lr(-1, 0.01, 10, 2)
    assert math.isfinite(warmup_poly_lr(5, 0.01, 5, 5))  # warm-up as long as training: no division by 0
