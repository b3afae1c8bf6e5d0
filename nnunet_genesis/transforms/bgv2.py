"""The Genesis corruption as a batchgeneratorsv2 transform for nnU-Net data pipelines.

nnU-Net 2.x augments one sample at a time: ``data_dict['image']`` is a torch tensor
(C, X, Y, Z). This transform replaces it with the corrupted network input and puts the
restoration target (the original, flipped like the input) in batchgeneratorsv2's
``regression_target`` slot. Put it after the spatial augmentations the target should include.

nnU-Net 2.8's ``nnUNetDataLoader`` keeps only ``image`` and ``segmentation`` of each
transformed sample (and returns the latter as ``batch['target']``). For a stock loader, append
``RegressionTargetAsSegmentation`` (``regression_target.py``), or build this transform with
``target_key='segmentation'`` to write the target there directly: ``batch['data']`` are then
the corrupted inputs and ``batch['target']`` the float32 restoration targets.
``target_key='target'`` is the key earlier versions wrote. The segmentation is otherwise never
flipped or changed.

Randomness: the transform owns a ``numpy.random.Generator`` (no global RNG). nnU-Net runs
transforms in several worker processes, each holding a copy of this object; a copied
generator would repeat its parent's stream. So the generator is created lazily in the
process that uses it, from ``SeedSequence((seed or fresh OS entropy), pid)`` when that
process is not the one that built the transform: different workers get different streams.
With an explicit ``seed`` and no worker processes, the stream is reproducible (the same as
``corrupt(image, np.random.default_rng(seed), config)`` call after call); inside worker
processes it is not (process ids change from run to run).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform

from nnunet_genesis.transforms.config import GenesisConfig
from nnunet_genesis.transforms.corrupt import apply_corruption, check_image, sample_parameters
from nnunet_genesis.transforms.kernels import compile_kernels

TARGET_KEYS = ("regression_target", "segmentation", "target")


def _as_array(image: object) -> np.ndarray:
    """The (C, X, Y, Z) image as a floating NumPy array (a view of a CPU float tensor)."""
    if image is None:
        raise ValueError("GenesisCorruptionTransform needs data_dict['image'].")
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
    check_image(array)
    return array


class GenesisCorruptionTransform(BasicTransform):
    """``image`` -> corrupted input, ``target_key`` -> restoration target (float32 tensors).

    ``get_parameters`` draws the corruption (``sample_parameters``), ``apply`` applies it.
    ``apply`` is overridden rather than left to ``BasicTransform.apply``, whose
    ``_apply_to_image`` / ``_apply_to_regr_target`` would each make a flipped copy of the
    image: the input and the target come out of one pass here (``apply_corruption``), and
    ``BasicTransform.apply`` would also hand the segmentation to ``_apply_to_segmentation``,
    which has nothing to do.
    """

    def __init__(self, config: GenesisConfig = GenesisConfig(), seed: int | None = None,
                 target_key: str = "regression_target"):
        super().__init__()
        if target_key not in TARGET_KEYS:
            raise ValueError(f"target_key must be one of {TARGET_KEYS}, got {target_key!r}.")
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

    def get_parameters(self, **data_dict) -> dict:
        shape = _as_array(data_dict.get("image")).shape
        return {"corruption": sample_parameters(shape, self.generator(), self.config)}

    def apply(self, data_dict: dict, **params) -> dict:
        corrupted, target = apply_corruption(_as_array(data_dict.get("image")), params["corruption"])
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
