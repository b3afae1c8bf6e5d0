"""The universal Genesis plan, patch-size checks, the split and dataset ids (no training)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.network import universal_genesis_arch
from nnunet_genesis.pretraining.folders import NnunetFolders, reserve_dataset_name
from nnunet_genesis.pretraining.plans import (CT_WINDOW, check_patch_size, total_strides, universal_plans,
                                              write_split)


def test_universal_plan_is_the_genesis_network_with_documented_normalisation():
    plans = universal_plans("Dataset999_GenesisPretrain", ["CT", "MRI"], [(40, 100, 100), (50, 80, 90)],
                            [(2.0, 1.0, 1.0), (3.0, 0.8, 0.8)], None, None, None)
    config = plans["configurations"]["3d_fullres"]
    arch = universal_genesis_arch(2, 2)
    assert config["architecture"]["arch_kwargs"] == arch["network_kwargs"]
    assert config["architecture"]["network_class_name"] == arch["network_class"]
    assert config["patch_size"] == [64, 128, 128] and config["spacing"] == [1.0, 1.0, 1.0]
    assert config["normalization_schemes"] == ["CTNormalization", "ZScoreNormalization"]
    ct = plans["foreground_intensity_properties_per_channel"]["0"]
    assert (ct["percentile_00_5"], ct["percentile_99_5"]) == CT_WINDOW
    # nnU-Net's CTNormalization with these properties maps the Genesis HU window to [-1, 1]
    from nnunetv2.preprocessing.normalization.default_normalization_schemes import CTNormalization

    hu = np.array([-3000.0, -1000.0, 0.0, 500.0, 1000.0, 3000.0], dtype=np.float32)
    out = CTNormalization(use_mask_for_norm=False, intensityproperties=ct).run(hu.copy())
    np.testing.assert_allclose(out, [-1, -1, 0, 0.5, 1, 1], atol=1e-6)
    json.dumps(plans)  # plain JSON


def test_patch_size_must_fit_the_network_downsampling():
    kwargs = universal_genesis_arch()["network_kwargs"]
    assert total_strides(kwargs) == [16, 32, 32]
    check_patch_size([32, 64, 64], kwargs)
    with pytest.raises(GenesisUserError, match="multiple"):
        check_patch_size([30, 64, 64], kwargs)
    with pytest.raises(GenesisUserError, match="single voxel"):
        check_patch_size([16, 32, 32], kwargs)


def test_split_is_seeded_and_disjoint(tmp_path):
    ids = [f"case_{i:05d}" for i in range(20)]
    a = write_split(tmp_path, ids, 0.1, seed=3)
    b = write_split(tmp_path / "b", ids, 0.1, seed=3)
    assert a == b and len(a["val"]) == 2 and not set(a["val"]) & set(a["train"])
    assert sorted(a["val"] + a["train"]) == ids
    assert any(write_split(tmp_path / "c", ids, 0.1, seed=s)["val"] != a["val"] for s in range(4, 10))
    one = write_split(tmp_path / "d", ids[:1], 0.1, seed=3)
    assert one == {"train": ids[:1], "val": ids[:1]}
    assert json.loads((tmp_path / "splits_final.json").read_text()) == [a]


def test_dataset_id_is_the_highest_free_one_or_the_requested_one(tmp_path, monkeypatch):
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.delenv(name, raising=False)
    folders = NnunetFolders.resolve(tmp_path)
    folders.make()
    (folders.raw / "Dataset999_Other").mkdir()
    (folders.results / "Dataset998_Other").mkdir()
    assert reserve_dataset_name(folders, None, "run-a", tmp_path) == "Dataset997_GenesisPretrain"
    assert reserve_dataset_name(folders, 5, "run-b", tmp_path) == "Dataset005_GenesisPretrain"
    with pytest.raises(GenesisUserError, match="already exists"):
        reserve_dataset_name(folders, 999, "run-c", tmp_path)


def test_restoration_warning_needs_a_20_percent_margin(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from nnunet_genesis.pretraining import cli

    def fake(final):
        meta = {"final_val_loss": final, "val_baselines": {"mean": 0.74, "identity": 4.3}}
        monkeypatch.setattr(cli, "load_checkpoint", lambda path: SimpleNamespace(metadata=meta))

    fake(0.70)
    warning = cli.restoration_warning(tmp_path / "x.pth")
    assert warning.startswith("WARNING") and "mean: 0.7400" in warning
    fake(0.50)
    assert cli.restoration_warning(tmp_path / "x.pth") is None


def test_options_default_to_adamw_and_old_blocks_keep_sgd():
    from nnunet_genesis.pretraining.options import PLANS_KEY, PretrainOptions

    assert (PretrainOptions().optimizer, PretrainOptions().learning_rate) == ("adamw", 1e-3)
    assert PretrainOptions.from_plans({}).optimizer == "adamw"
    old = PretrainOptions.from_plans({PLANS_KEY: {"epochs": 3}})
    assert (old.optimizer, old.learning_rate, old.epochs) == ("sgd", 1e-2, 3)
    with pytest.raises(ValueError, match="optimizer"):
        PretrainOptions(optimizer="adam")
