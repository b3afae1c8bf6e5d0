"""A fixed, seeded set of corrupted validation patches, scored every epoch.

The patches are cut once from the validation cases of nnU-Net's preprocessed data (read per
patch from blosc2, so memory holds only the patches) and corrupted once with a seeded
generator (NumPy ``corrupt``). Every epoch sees the same inputs, so the restoration loss is comparable between
epochs and between runs with the same seed.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch

from nnunet_genesis.transforms import GenesisConfig, corrupt


def _patch_bbox(shape: Sequence[int], patch: Sequence[int], rng: np.random.Generator) -> list[list[int]]:
    """A random patch inside the volume; centred (and padded) along axes shorter than the patch."""
    bbox = []
    for s, p in zip(shape, patch):
        start = int(rng.integers(0, s - p + 1)) if s >= p else -((p - s) // 2)
        bbox.append([start, start + p])
    return bbox


def sample_patches(dataset, identifiers: Sequence[str], patch_size: Sequence[int], count: int,
                   rng: np.random.Generator) -> torch.Tensor:
    """``count`` patches (round-robin over the cases), shape (count, C, *patch_size), float32."""
    from acvl_utils.cropping_and_padding.bounding_boxes import crop_and_pad_nd

    out = []
    ids = sorted(identifiers)
    for i in range(count):
        data = dataset.load_case(ids[i % len(ids)])[0]
        bbox = _patch_bbox(data.shape[1:], patch_size, rng)
        out.append(torch.from_numpy(np.asarray(crop_and_pad_nd(data, bbox, 0), dtype=np.float32)))
    return torch.stack(out)


class FixedValidationSet:
    """Clean patches, their corruptions, and this rank's share of them in batches.

    ``rank``/``world_size`` split the patches between DDP processes; the epoch's loss is the
    sum of squared errors over all ranks divided by the number of voxels, so it does not
    depend on how they were split.
    """

    def __init__(self, clean: torch.Tensor, config: GenesisConfig, seed: int, batch_size: int,
                 rank: int = 0, world_size: int = 1):
        rng = np.random.default_rng(int(seed))
        pairs = [corrupt(patch.numpy(), rng, config) for patch in clean]  # NumPy path: fast on the CPU
        self.clean = clean
        self.corrupted = torch.stack([torch.from_numpy(np.ascontiguousarray(p[0])) for p in pairs])
        self.target = torch.stack([torch.from_numpy(np.ascontiguousarray(p[1])) for p in pairs])
        mine = list(range(rank, len(clean), world_size))
        self.batches = [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]
        self._next = 0

    def trivial_baselines(self) -> dict[str, float]:
        """Restoration MSE of two predictors that learnt nothing, on these patches.

        ``identity`` returns the corrupted input; ``mean`` returns each patch's per-channel mean
        (the best constant). A pretraining whose validation loss is not below ``mean`` has not
        learnt to restore: its weights carry little for fine-tuning.
        """
        target = self.target.double()
        mean = target.mean(dim=tuple(range(2, target.ndim)), keepdim=True)
        return {"identity": float((self.corrupted.double() - target).pow(2).mean()),
                "mean": float((target - mean).pow(2).mean())}

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.batches[self._next % len(self.batches)]
        self._next += 1
        return self.corrupted[idx], self.target[idx]
