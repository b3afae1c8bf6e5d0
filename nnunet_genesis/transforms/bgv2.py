"""The Genesis corruption as a batchgeneratorsv2 transform for nnU-Net data pipelines.

nnU-Net 2.x augments one sample at a time: ``data_dict['image']`` is a torch tensor
(C, X, Y, Z). This transform replaces it with the corrupted network input and adds
``data_dict['target']``, the restoration target (the original, flipped like the input).
Put it after the spatial/intensity augmentations you want the target to include.

nnU-Net 2.8's ``nnUNetDataLoader`` keeps only ``image`` and ``segmentation`` of each
transformed sample (and returns the latter as ``batch['target']``). With
``target_key='segmentation'`` the restoration target replaces the segmentation, so a stock
loader delivers ``batch['data']`` = corrupted inputs and ``batch['target']`` = float32
restoration targets. The segmentation itself is never flipped or otherwise changed.

Randomness: the transform owns a ``numpy.random.Generator`` (no global RNG). nnU-Net runs
transforms in several worker processes, each holding a copy of this object; a copied
generator would repeat its parent's stream. So the generator is created lazily in the
process that uses it, from ``SeedSequence((seed or fresh OS entropy), pid)`` when that
process is not the one that built the transform: different workers get different streams.
With an explicit ``seed`` and no worker processes, the stream is reproducible; inside
worker processes it is not (process ids change from run to run).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform

from nnunet_genesis.transforms.config import GenesisConfig
from nnunet_genesis.transforms.kernels import compile_kernels
from nnunet_genesis.transforms.corrupt import corrupt


class GenesisCorruptionTransform(BasicTransform):
    """``image`` -> corrupted input, ``target`` -> restoration target (both float32 tensors)."""

    def __init__(self, config: GenesisConfig = GenesisConfig(), seed: int | None = None,
                 target_key: str = "target"):
        super().__init__()
        if target_key not in ("target", "segmentation"):
            raise ValueError(f"target_key must be 'target' or 'segmentation', got {target_key!r}.")
        self.target_key = target_key
        if not isinstance(config, GenesisConfig):
            raise ValueError(f"config must be a GenesisConfig, got {type(config).__name__}.")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError(f"seed must be a non-negative int or None, got {seed!r}.")
        self.config = config
        self.seed = seed
        self._entropy = seed if seed is not None else np.random.SeedSequence().entropy
        compile_kernels()  # here, in the main process: nnU-Net's forked workers inherit the machine code
        self._owner_pid = os.getpid()
        self._rng: np.random.Generator | None = None
        self._rng_pid: int | None = None

    def generator(self) -> np.random.Generator:
        """This process's generator (created on first use in each process)."""
        pid = os.getpid()
        if self._rng is None or self._rng_pid != pid:
            if pid == self._owner_pid:
                seq = np.random.SeedSequence(self._entropy)
            else:
                seq = np.random.SeedSequence([self._entropy, pid])
            self._rng, self._rng_pid = np.random.default_rng(seq), pid
        return self._rng

    def apply(self, data_dict: dict, **params) -> dict:
        image = data_dict.get("image")
        if image is None:
            raise ValueError("GenesisCorruptionTransform needs data_dict['image'].")
        if isinstance(image, torch.Tensor):
            array = image.detach().cpu().numpy()
        else:
            array = np.asarray(image)
        if not np.issubdtype(array.dtype, np.floating):
            array = array.astype(np.float32)
        corrupted, target = corrupt(array, self.generator(), self.config)
        data_dict["image"] = torch.from_numpy(corrupted)
        data_dict[self.target_key] = torch.from_numpy(target)
        return data_dict

    def __repr__(self) -> str:
        return f"{type(self).__name__}(config={self.config!r}, seed={self.seed!r}, target_key={self.target_key!r})"

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_rng"] = None  # never ship a generator state to another process
        state["_rng_pid"] = None
        return state
