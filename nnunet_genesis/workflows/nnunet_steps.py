"""The pipeline's commands on one dataset of a workspace: the steps the demo and the benchmark compose.

Each method runs (through a step's ``StepContext``) or returns one command of the pipeline:
``nnUNetv2_convert_MSD_dataset``, ``nnUNetv2_plan_and_preprocess``, ``nnunet-genesis pretrain``
(or ``--resume`` of an interrupted one), ``attach``, ``nnUNetv2_train``, ``nnUNetv2_predict``
and ``evaluate``. The callers decide which cases, schedules and trainers; the command lines
are written once, here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from nnunet_genesis.checkpoint import CHECKPOINT_FILE_NAME
from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.workflows.pipeline import StepContext, Workspace, command_path, dataset_name_for, genesis_command, results_folder
from nnunet_genesis.pretraining.launch import STATE_FILE

PRETRAIN_DATASET_ID = 999  # the pretraining dataset's id inside a workspace


@dataclass(frozen=True)
class NnunetSteps:
    """Commands on dataset ``dataset_id`` of ``workspace`` for one configuration and device."""

    workspace: Workspace
    dataset_id: int
    configuration: str = "3d_fullres"
    device: str = "cpu"

    @property
    def dataset_name(self) -> str:
        return dataset_name_for(self.workspace.raw, self.dataset_id)

    def _dataset_folders(self, *bases: Path, dataset_id: int | None = None) -> list[Path]:
        pattern = f"Dataset{self.dataset_id if dataset_id is None else dataset_id:03d}_*"
        return [p for base in bases for p in base.glob(pattern)]

    def raw_partial(self) -> list[Path]:
        return self._dataset_folders(self.workspace.raw)

    def preprocessed_partial(self) -> list[Path]:
        return self._dataset_folders(self.workspace.preprocessed)

    # -- shared steps (run inside a pipeline step)
    def convert_msd(self, ctx: StepContext, msd_folder: Path) -> str:
        ctx.command([command_path("nnUNetv2_convert_MSD_dataset"), "-i", str(msd_folder), "-np", "1"])
        return self.dataset_name

    def plan_and_preprocess(self, ctx: StepContext) -> Path:
        """Plan and preprocess the configuration; returns the raw dataset folder.

        The fingerprint gets the workspace's process count (``nnUNet_def_n_proc``), not nnU-Net's
        default of 8 spawned processes, each importing torch: most of the step on 2 cores."""
        processes = self.workspace.env()["nnUNet_def_n_proc"]
        ctx.command([command_path("nnUNetv2_plan_and_preprocess"), "-d", str(self.dataset_id), "-c",
                     self.configuration, "-np", "1", "-npfp", processes, "--verify_dataset_integrity"])
        return self.workspace.raw / self.dataset_name

    def pretrain_partial(self, folder: Path) -> list[Path]:
        """What an unfinished pretraining step leaves to remove; nothing once the run was prepared
        (it is then continued with ``--resume``)."""

        if (folder / STATE_FILE).is_file():
            return []
        ws = self.workspace
        return [folder, *self._dataset_folders(ws.raw, ws.preprocessed, ws.results, dataset_id=PRETRAIN_DATASET_ID)]

    def pretrain(self, ctx: StepContext, folder: Path, plans: str, options: Sequence[str],
                 common: Sequence[str] = ()) -> Path:
        """Pretrain on all images of the dataset with the plans' network (or resume an interrupted
        run); ``options`` are the run's own (length, seed, preset), ``common`` those a resume takes
        too (workers). Returns the checkpoint."""

        common = ["--device", self.device, *common]
        if (folder / STATE_FILE).is_file():
            ctx.command(genesis_command("pretrain", "-o", str(folder), "--resume", *common))
        else:
            ctx.command(genesis_command(
                "pretrain", "-d", str(self.dataset_id), "-o", str(folder), "--plans-from", str(self.dataset_id),
                "-p", plans, "-c", self.configuration, "--dataset-id", str(PRETRAIN_DATASET_ID), *options, *common))
        checkpoint = folder / CHECKPOINT_FILE_NAME
        if not checkpoint.is_file():
            raise GenesisUserError(f"pretrain finished without writing {checkpoint}; see {ctx.log}.", exit_code=1)
        return checkpoint

    def attach(self, ctx: StepContext, checkpoint: Path, plans: str, variant: str) -> None:
        ctx.command(genesis_command("attach", "-d", str(self.dataset_id), "-c", str(checkpoint), "-p", plans,
                                    "-n", variant, "--force"))

    # -- per-model commands (run by a step or by a benchmark unit)
    def run_folder(self, trainer: str, plans: str) -> Path:
        return results_folder(self.workspace.results, self.dataset_name, trainer, plans, self.configuration)

    def train_command(self, fold: int, trainer: str, plans: str) -> list[str]:
        return [command_path("nnUNetv2_train"), str(self.dataset_id), self.configuration, str(fold),
                "-tr", trainer, "-p", plans, "-device", self.device]

    def predict_command(self, images: Path, out: Path, fold: int, trainer: str, plans: str) -> list[str]:
        return [command_path("nnUNetv2_predict"), "-i", str(images), "-o", str(out), "-d", str(self.dataset_id),
                "-c", self.configuration, "-tr", trainer, "-p", plans, "-f", str(fold), "-device", self.device,
                "-npp", "1", "-nps", "1", "--disable_progress_bar"]

    @staticmethod
    def evaluate_command(predictions: Path, references: Path, task: str, out: Path) -> list[str]:
        return genesis_command("evaluate", "--pred", str(predictions), "--ref", str(references), "--task", task,
                               "-o", str(out))
