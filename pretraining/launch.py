"""Running the pretraining trainer: one process, DDP processes on one machine, or torchrun.

* one process: the trainer runs in the calling process;
* ``--num-gpus N``: N processes started with ``torch.multiprocessing.spawn``, joined in a
  ``torch.distributed`` group: NCCL on GPUs (one GPU per process), gloo on the CPU (N CPU
  processes; nnU-Net's own ``-num_gpus`` only supports CUDA);
* several machines: prepare once with ``nnunet-genesis pretrain ... --prepare-only`` on a shared
  file system, then on every machine
  ``torchrun --nnodes M --nproc-per-node G ... -m nnunet_genesis.pretraining.launch OUT``.

Every route builds the trainer the way ``nnUNetv2_train`` does (plans + dataset.json from
nnUNet_preprocessed) and resumes with nnU-Net's ``maybe_load_checkpoint``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch

from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.outputs import write_json_atomic
from nnunet_genesis.pretraining.folders import NnunetFolders, nnunet_environment

STATE_FILE = "pretrain_state.json"


@dataclass(frozen=True)
class RunState:
    """Where a prepared pretraining run lives (OUT/pretrain_state.json)."""

    dataset_name: str
    plans_identifier: str
    configuration: str
    fold: int
    folders: dict[str, str]

    def save(self, out: Path) -> None:
        write_json_atomic(asdict(self), Path(out) / STATE_FILE)

    @classmethod
    def load(cls, out: Path) -> "RunState":
        """The state of a prepared run; a damaged state file is a GenesisUserError."""
        path = Path(out) / STATE_FILE
        hint = (f"It is not a run this version prepared or it was damaged; start a new run into another -o "
                f"folder (or delete {out}).")
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise GenesisUserError(f"{path}: cannot be read ({e}). {hint}") from None
        types = {"dataset_name": str, "plans_identifier": str, "configuration": str, "fold": int, "folders": dict}
        bad = [k for k, t in types.items() if not isinstance(data.get(k) if isinstance(data, dict) else None, t)]
        if bad:
            raise GenesisUserError(f"{path}: lacks valid {', '.join(bad)}. {hint}")
        state = cls(**{k: data[k] for k in types})
        try:
            plans = state.nnunet_folders.preprocessed / state.dataset_name / f"{state.plans_identifier}.json"
        except (KeyError, TypeError):
            raise GenesisUserError(f"{path}: its 'folders' entry lacks the nnU-Net folders. {hint}") from None
        if not plans.is_file():
            raise GenesisUserError(f"{path}: the prepared dataset it names is gone ({plans} does not exist), so "
                                   f"the run cannot be resumed. Start a new run into another -o folder (or "
                                   f"delete {out}).")
        return state

    @property
    def nnunet_folders(self) -> NnunetFolders:
        return NnunetFolders.from_dict(self.folders)

    def output_folder(self) -> Path:
        from nnunetv2.utilities.file_path_utilities import convert_trainer_plans_config_to_identifier

        from nnunet_genesis.pretraining.trainer import nnUNetTrainerGenesisPretrain

        # nnU-Net's get_output_folder reads this process's nnUNet_results; the run's own may differ
        identifier = convert_trainer_plans_config_to_identifier(nnUNetTrainerGenesisPretrain.__name__,
                                                                self.plans_identifier, self.configuration)
        return self.nnunet_folders.results / self.dataset_name / identifier / f"fold_{self.fold}"


def build_trainer(state: RunState, device: torch.device, resume: bool):
    """The trainer as ``nnUNetv2_train`` builds it (call with the nnU-Net folders set)."""
    from batchgenerators.utilities.file_and_folder_operations import load_json

    from nnunet_genesis.pretraining.trainer import nnUNetTrainerGenesisPretrain

    base = state.nnunet_folders.preprocessed / state.dataset_name
    plans = load_json(str(base / f"{state.plans_identifier}.json"))
    plans["continue_training"] = resume
    dataset_json = load_json(str(base / "dataset.json"))
    return nnUNetTrainerGenesisPretrain(plans=plans, configuration=state.configuration, fold=state.fold,
                                        dataset_json=dataset_json, device=device)


def run_trainer(state: RunState, device: torch.device, resume: bool) -> None:
    from nnunetv2.run.run_training import maybe_load_checkpoint

    trainer = build_trainer(state, device, resume)
    maybe_load_checkpoint(trainer, resume, False, None)
    trainer.run_training()
    trainer.perform_actual_validation(False)


def _ddp_worker(rank: int, world_size: int, port: int, state: RunState, device_type: str, resume: bool) -> None:
    import torch.distributed as dist

    backend = "nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        if device_type == "cuda":
            torch.cuda.set_device(rank)
            device = torch.device("cuda", rank)
        else:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
            device = torch.device(device_type)
        run_trainer(state, device, resume)
    finally:
        dist.destroy_process_group()


def train(state: RunState, device: torch.device, num_processes: int, resume: bool) -> None:
    """Run (or resume) the prepared pretraining in 1 or ``num_processes`` processes.

    Call inside ``nnunet_environment(state.nnunet_folders)``: nnU-Net reads its folders from the
    environment, and the spawned ranks inherit it.
    """
    if num_processes <= 1:
        run_trainer(state, device, resume)
        return
    import torch.multiprocessing as mp
    from nnunetv2.run.run_training import find_free_network_port

    mp.spawn(_ddp_worker, args=(num_processes, find_free_network_port(), state, device.type, resume),
             nprocs=num_processes, join=True)


def main(argv: Sequence[str] | None = None) -> int:
    """torchrun entry point: every rank joins the group from torchrun's environment."""
    import torch.distributed as dist

    parser = argparse.ArgumentParser(prog="python -m nnunet_genesis.pretraining.launch",
                                     description="Run a prepared Genesis pretraining under torchrun.")
    parser.add_argument("out", type=Path, help="the OUT folder of 'nnunet-genesis pretrain --prepare-only'")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    state = RunState.load(args.out)
    dist.init_process_group("nccl" if args.device == "cuda" else "gloo")
    try:
        if args.device == "cuda":
            local = int(os.environ.get("LOCAL_RANK", 0))
            torch.cuda.set_device(local)
            device = torch.device("cuda", local)
        else:
            device = torch.device("cpu")
        with nnunet_environment(state.nnunet_folders):
            run_trainer(state, device, args.resume)
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
