"""Learning-rate schedule for fine-tuning: linear warm-up, then nnU-Net's poly decay.

Why a warm-up: nnU-Net trains with SGD, Nesterov momentum 0.99 and an initial learning rate
of 1e-2. On a freshly transferred network the segmentation head (and, for the encoder-only
variant, the decoder) is random, so the first gradients are large and, at full learning
rate, would wash out the pretrained features before the new layers have adapted. Ramping
the learning rate up over the first epochs avoids that.

The schedule, per epoch ``e`` (0-based), with ``W`` warm-up epochs out of ``N``::

    e <  W:  lr = initial_lr * (e + 1) / W
    e >= W:  lr = initial_lr * (1 - (e - W) / (N - W)) ** exponent

The warm-up reaches ``initial_lr`` at epoch ``W - 1``; the poly part then runs over the
remaining ``N - W`` epochs exactly like nnU-Net's ``PolyLRScheduler`` runs over all ``N``.
This is the convention of nnU-Net's own ``nnUNetTrainer_warmup`` (``Lin_incr_LRScheduler``
followed by ``PolyLRScheduler_offset``), folded into one stateless scheduler so that
``nnUNetv2_train --c`` resumes at the right value.
"""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import _LRScheduler


def warmup_poly_lr(epoch: int, initial_lr: float, num_epochs: int, warmup_epochs: int,
                   exponent: float = 0.9) -> float:
    """Learning rate of ``epoch`` under the warm-up + poly schedule (see module docstring)."""
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    if warmup_epochs > 0 and epoch < warmup_epochs:
        return initial_lr * (epoch + 1) / warmup_epochs
    decay_epochs = max(num_epochs - warmup_epochs, 1)
    progress = min((epoch - warmup_epochs) / decay_epochs, 1.0)
    return initial_lr * (1 - progress) ** exponent


class WarmupPolyLRScheduler(_LRScheduler):
    """Linear warm-up over ``warmup_steps`` steps, then poly decay to ``max_steps``.

    Same interface as ``nnunetv2.training.lr_scheduler.polylr.PolyLRScheduler``: nnU-Net calls
    ``step(current_epoch)`` at the start of every epoch; ``step()`` without an argument counts
    calls instead.
    """

    def __init__(self, optimizer: Optimizer, initial_lr: float, max_steps: int, warmup_steps: int,
                 exponent: float = 0.9, current_step: int | None = None):
        if warmup_steps < 0 or max_steps < 1:
            raise ValueError(f"need warmup_steps >= 0 and max_steps >= 1, got {warmup_steps}, {max_steps}")
        self.optimizer = optimizer
        self.initial_lr = initial_lr
        self.max_steps = max_steps
        self.warmup_steps = warmup_steps
        self.exponent = exponent
        self.ctr = 0
        super().__init__(optimizer, current_step if current_step is not None else -1)

    def step(self, current_step: int | None = None) -> None:
        if current_step is None or current_step == -1:
            current_step = self.ctr
            self.ctr += 1
        new_lr = warmup_poly_lr(current_step, self.initial_lr, self.max_steps, self.warmup_steps,
                                self.exponent)
        for param_group in self.optimizer.param_groups:  # "lr_scale": a group's share of the schedule
            param_group["lr"] = new_lr * param_group.get("lr_scale", 1.0)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self) -> list[float]:
        return self._last_lr
