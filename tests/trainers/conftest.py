"""Fixtures of the trainer tests: Genesis checkpoints built from the hippocampus plans."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import pytest
import torch

from nnunet_genesis.checkpoint import save_checkpoint
from nnunet_genesis.network import arch_from_plans, build_network


@pytest.fixture(scope="session")
def make_genesis_checkpoint(hippocampus_preprocessed) -> Callable[..., Path]:
    """``make(path, features=None, seed=0)``: a Genesis checkpoint of the dataset's 3d_fullres
    network (same architecture) with random weights; ``features`` replaces the feature counts
    per stage to make an incompatible checkpoint."""
    plans_file = (hippocampus_preprocessed["nnUNet_preprocessed"] / hippocampus_preprocessed["dataset_name"]
                  / "nnUNetPlans.json")
    plans = json.loads(plans_file.read_text())

    def make(path: Path, features: list[int] | None = None, seed: int = 0) -> Path:
        meta = arch_from_plans(plans, "3d_fullres", input_channels=1, output_channels=1)
        if features is not None:
            meta["network_kwargs"]["features_per_stage"] = list(features)
        # nnU-Net's initialisers draw from torch's global generator: seed a forked copy only.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            network = build_network(meta, deep_supervision=False)
        meta["source"] = "pretrain"
        return save_checkpoint(path, network.state_dict(), meta)

    return make


def _cpu_nnunet_env(root: Path) -> dict[str, str]:
    """The environment of nnU-Net subprocesses in small CPU runs: nnU-Net folders under ``root``, no
    augmentation workers, no torch.compile, one worker per export pool."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
    env.update({name: str(root / name) for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")})
    env.update(nnUNet_n_proc_DA="0", nnUNet_compile="false", nnUNet_def_n_proc="1", nnUNet_npp="1", nnUNet_nps="1",
               PYTHONUNBUFFERED="1")
    return env


@pytest.fixture(scope="session")
def cpu_nnunet_env() -> Callable[[Path], dict[str, str]]:
    """``env(root)``: the environment of nnU-Net subprocesses in small CPU runs under ``root``."""
    return _cpu_nnunet_env


@pytest.fixture(scope="session")
def hippocampus_plans(hippocampus_preprocessed) -> dict:
    folder = hippocampus_preprocessed["nnUNet_preprocessed"] / hippocampus_preprocessed["dataset_name"]
    return json.loads((folder / "nnUNetPlans.json").read_text())


@pytest.fixture()
def env(hippocampus_preprocessed, monkeypatch, tmp_path) -> dict:
    """The fixture's raw/preprocessed folders in the environment, a private results folder."""
    for name in ("nnUNet_raw", "nnUNet_preprocessed"):
        monkeypatch.setenv(name, str(hippocampus_preprocessed[name]))
    results = tmp_path / "results"
    results.mkdir()
    monkeypatch.setenv("nnUNet_results", str(results))
    preprocessed = hippocampus_preprocessed["nnUNet_preprocessed"] / hippocampus_preprocessed["dataset_name"]
    return {"preprocessed": preprocessed, "results": results,
            "dataset_json": json.loads((preprocessed / "dataset.json").read_text())}
