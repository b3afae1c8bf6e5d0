"""A new pretraining method is a small subclass of ``nnUNetTrainerRestoration``.

A denoising method (identity plus Gaussian noise) fills in the base's four hooks and trains one
tiny epoch on CPU through nnU-Net's loop, on each corruption route; its checkpoint resumes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform

from nnunet_genesis.cli import main
from nnunet_genesis.transforms import GenesisConfig
from nnunet_genesis.pretraining.restoration_trainer import nnUNetTrainerRestoration
from nnunet_genesis.pretraining.validation_patches import FixedValidationSet

pytestmark = pytest.mark.slow

NOISE = 0.1
NO_GENESIS = GenesisConfig(flip_rate=0, local_rate=0, nonlinear_rate=0, paint_rate=0)  # identity


class _AddNoise(BasicTransform):
    def apply(self, data_dict: dict, **params) -> dict:
        data_dict["regression_target"] = data_dict["image"].clone()
        data_dict["image"] = data_dict["image"] + NOISE * torch.randn_like(data_dict["image"])
        return data_dict


class DenoisingTrainer(nnUNetTrainerRestoration):
    method_name = "Denoising"

    def corruption_transforms(self):
        return [_AddNoise()]

    def corrupt_device_batch(self, clean):
        noise = torch.randn(clean.shape, generator=self.batch_generator(clean.device), device=clean.device)
        return clean + NOISE * noise, clean

    def make_validation_set(self, clean):
        patches = FixedValidationSet(clean, NO_GENESIS, 0, self.batch_size, self.local_rank, self.world_size)
        patches.corrupted = patches.corrupted + NOISE * torch.randn(
            patches.corrupted.shape, generator=torch.Generator().manual_seed(self.derived_seed(1)))
        return patches

    def on_export(self, epochs_done, final, checkpoint_saved):
        self.exports = [*getattr(self, "exports", []), (epochs_done, final, checkpoint_saved)]


def _trainer(state, corruption: str) -> DenoisingTrainer:
    base = state.nnunet_folders.preprocessed / state.dataset_name
    plans = json.loads((base / f"{state.plans_identifier}.json").read_text())
    plans["genesis_pretraining"].update(corruption=corruption, epochs=1, iterations_per_epoch=2)
    plans["continue_training"] = False
    return DenoisingTrainer(plans, state.configuration, state.fold, json.loads((base / "dataset.json").read_text()),
                            device=torch.device("cpu"))


@pytest.fixture(scope="module")
def prepared(hippocampus_preprocessed, tmp_path_factory):
    """A pretraining dataset prepared once (16^3 patches, batch 2) for both routes."""
    from nnunet_genesis.pretraining.launch import RunState

    out = tmp_path_factory.mktemp("restoration") / "out"
    with pytest.MonkeyPatch.context() as mp:
        for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
            mp.setenv(name, str(hippocampus_preprocessed[name]))
        assert main(["pretrain", "-d", "4", "--plans-from", "4", "-o", str(out), "--device", "cpu",
                     "--workers", "0", "--patch-size", "16", "16", "16", "--batch-size", "2",
                     "--val-patches", "2", "--prepare-only"]) == 0
    return RunState.load(out)


@pytest.mark.parametrize("corruption", ["device", "workers"])
def test_a_denoising_subclass_trains_one_epoch_through_the_base_hooks(corruption, prepared):
    from nnunet_genesis.pretraining.folders import nnunet_environment

    state = prepared
    with nnunet_environment(state.nnunet_folders, {"nnUNet_n_proc_DA": "0"}):
        trainer = _trainer(state, corruption)
        assert trainer.corrupt_on_device == (corruption == "device")
        trainer.run_training()
        trainer.perform_actual_validation()
        log = trainer.logger
        assert len(log.get_value("train_losses", None)) == len(log.get_value("val_losses", None)) == 1
        assert all(torch.isfinite(torch.tensor(log.get_value(k, None))).all() for k in ("train_losses", "val_losses"))
        assert log.get_value("mean_fg_dice", None) == []  # no Dice values, not even fake ones
        assert trainer.exports == [(1, False, False), (1, True, True)]
        assert set(trainer.val_baselines) == {"identity", "mean"}
        fold = Path(trainer.output_folder)
        assert (fold / "progress.png").stat().st_size > 1000
        text = Path(trainer.log_file).read_text()
        assert "Denoising pretraining: 1 epochs x 2 iterations" in text and "no segmentation validation" in text
        assert not (fold / "checkpoint_best.pth").exists()
        x = trainer.validation_set.corrupted[:1]
        assert trainer.restore(x).shape == tuple(x.shape)  # one output per input channel

        # plain types only: the checkpoint loads without allowing any global
        assert torch.load(fold / "checkpoint_final.pth", weights_only=True)["current_epoch"] == 1
        resumed = _trainer(state, corruption)
        resumed.load_checkpoint(str(fold / "checkpoint_final.pth"))  # weights_only=True
        assert resumed.current_epoch == 1
        assert all(torch.equal(a, b) for a, b in zip(resumed.network.state_dict().values(),
                                                       trainer.network.state_dict().values()))
