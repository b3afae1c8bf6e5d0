"""Seeding nnU-Net's process-global generators, for runs that repeat from their seed.

nnU-Net draws network initialisation, case and patch sampling and augmentation from the global
``random``/``numpy``/``torch`` generators of the training process. Our trainers seed them in
that process only (never at import). With nnU-Net's background augmentation workers the
workers are reseeded from the OS, so only runs with ``nnUNet_n_proc_DA=0`` / ``--workers 0``
repeat exactly.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_nnunet_process(seed: int) -> None:
    """Seed the global generators nnU-Net draws from (call it inside the training process)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
