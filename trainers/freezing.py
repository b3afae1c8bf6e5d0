"""Keep a set of parameters untouched by the optimizer while a condition holds.

Why not ``requires_grad = False``: under DistributedDataParallel the set of parameters that
need gradients is fixed when the DDP wrapper is built (gradient buckets), so switching
``requires_grad`` back on later leaves those parameters out of the all-reduce and the ranks
drift apart; under ``torch.compile`` every switch also forces a recompilation. Zeroing the
gradients is not enough either: SGD with weight decay and momentum still moves a parameter
whose gradient is zero.

Instead, an optimizer step pre-hook sets ``.grad = None`` on the frozen parameters right
before each step. ``torch.optim.SGD`` (and Adam, AdamW) skip parameters without a gradient
entirely: no gradient step, no weight decay, no momentum buffer. Backward still computes and
(under DDP) all-reduces their gradients, so the forward/backward graph never changes and all
ranks take identical decisions; freezing therefore saves no compute, it only protects the
pretrained weights. Gradient clipping in nnU-Net happens before the step, over all
parameters; it sees the encoder gradients too, which only makes clipping slightly more
conservative during the frozen epochs.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch


class ParameterFreezer:
    """Drops the gradients of ``parameters`` before every optimizer step while ``is_frozen()``."""

    def __init__(self, parameters: Iterable[torch.nn.Parameter], is_frozen: Callable[[], bool]):
        self.parameters = list(parameters)
        self.is_frozen = is_frozen
        self._handle = None

    def attach(self, optimizer: torch.optim.Optimizer) -> "ParameterFreezer":
        """Register the pre-step hook on ``optimizer`` (once)."""
        if self._handle is not None:
            self._handle.remove()
        self._handle = optimizer.register_step_pre_hook(self._drop_frozen_gradients)
        return self

    def _drop_frozen_gradients(self, optimizer, args, kwargs) -> None:
        if self.is_frozen():
            for p in self.parameters:
                p.grad = None
