"""Running the pretraining trainer: one process, DDP processes on one machine, or torchrun.

* one process: the trainer runs in the calling process;
* ``--num-gpus N``: N processes started with ``torch.multiprocessing.spawn``, joined in a
  ``torch.distributed`` group: NCCL on GPUs (one GPU per process), gloo on the CPU (N CPU
  processes; nnU-Net's own ``-num_gpus`` only supports CUDA);
* several machines: prepare once with ``nnunet-genesis pretrain ... --prepare-only`` on a shared
  file system, then on every machine
  ``torchrun --nnodes M --nproc-per-node G ... -m nnunet_genesis.pretraining.launch OUT``
  (``pretrain --slurm FILE`` writes that as a SLURM job: ``slurm_script``; with ``--parts N``, a
  script that submits the preparation parts first: ``slurm_parts_script``). The launchers check
  each other at the start, and a rank stops with its launcher (docs/reliability.md, "Several
  machines: torchrun on failure", has the failure modes this handles).

Every route builds the trainer the way ``nnUNetv2_train`` does (plans + dataset.json from
nnUNet_preprocessed) and resumes with nnU-Net's ``maybe_load_checkpoint``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch

from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.outputs import remove_stale_temps, write_json_atomic
from nnunet_genesis.pretraining.folders import NnunetFolders, nnunet_environment
from nnunet_genesis.pretraining.trainer import nnUNetTrainerGenesisPretrain

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

        # nnU-Net's get_output_folder reads this process's nnUNet_results; the run's own may differ
        identifier = convert_trainer_plans_config_to_identifier(nnUNetTrainerGenesisPretrain.__name__,
                                                                self.plans_identifier, self.configuration)
        return self.nnunet_folders.results / self.dataset_name / identifier / f"fold_{self.fold}"


def resume_checkpoint(state: RunState) -> Path | None:
    """The checkpoint a resumed run continues from, in the order nnU-Net's ``maybe_load_checkpoint``
    looks (final, latest, best), or None when there is none yet."""
    folder = state.output_folder()
    return next((folder / n for n in ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth")
                 if (folder / n).is_file()), None)


def build_trainer(state: RunState, device: torch.device, resume: bool):
    """The trainer as ``nnUNetv2_train`` builds it (call with the nnU-Net folders set)."""
    from batchgenerators.utilities.file_and_folder_operations import load_json

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

    context = mp.spawn(_ddp_worker, args=(num_processes, find_free_network_port(), state, device.type, resume),
                       nprocs=num_processes, join=False)
    try:
        while not context.join():
            pass
    except BaseException:  # Ctrl-C, SIGTERM (raised as KeyboardInterrupt) or a failed rank: stop every rank
        stop_processes(context.processes)
        raise


def stop_processes(processes, grace: float = 20.0) -> None:
    """SIGTERM to every live process, SIGKILL to those still alive after ``grace`` seconds; a stopped
    command leaves no rank training on (multiprocessing would otherwise wait for them at exit)."""
    for p in processes:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + grace
    for p in processes:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join()


def slurm_script(state: RunState | None, out: Path, nodes: int, gpus_per_node: int, device: str,
                 workers: int | None = None, sbatch: Sequence[str] = (), python: str | None = None,
                 prepare: Sequence[str] = ()) -> str:
    """A SLURM batch script that runs the prepared run in ``out`` with one torchrun launcher per node.

    Every submission resumes when the run has a checkpoint, so the same script continues a run
    after a time limit or a failure; the rendezvous id is the job id, so stray launchers of other
    jobs on the same port cannot join. ``prepare``: shell lines run first, on the first node (the
    merge of a preparation in parts); ``state`` is then None, and nnU-Net's run folder is read from
    the state file the merge writes.
    """
    import shlex

    q = shlex.quote
    py = python or sys.executable
    per_node = gpus_per_node if device == "cuda" else 1
    what = state.dataset_name if state is not None else "its dataset merged from the prepared parts first"
    head = ["#!/bin/bash",
            f"# Genesis pretraining of {out} ({what}) on {nodes} node(s) x {per_node} "
            f"{'GPU(s)' if device == 'cuda' else 'CPU process'}, one torchrun launcher per node.",
            "# Written by 'nnunet-genesis pretrain --slurm'. " + (
                "Submit with: sbatch THIS_FILE. Submitting it again" if not prepare else
                "Submitted by the script of --parts, after the parts. Again"),
            "# continues the run from its last checkpoint. OUT and the nnU-Net folders must be on a file",
            "# system that every node sees (docs/pretraining.md, 'Several machines').",
            "#SBATCH --job-name=genesis-pretrain",
            f"#SBATCH --nodes={nodes}",
            "#SBATCH --ntasks-per-node=1"]
    head += [f"#SBATCH --gpus-per-node={gpus_per_node}"] if device == "cuda" else []
    head += [f"#SBATCH {q(f'--output={out}/slurm-%j.out')}"]
    head += [f"#SBATCH {q(opt)}" for opt in sbatch]  # sbatch reads quotes in #SBATCH lines
    launch = [py, "-m", "torch.distributed.run", "--nnodes", '"$SLURM_NNODES"',
              "--nproc-per-node", str(per_node), "--rdzv-id", '"$SLURM_JOB_ID"', "--rdzv-backend", "c10d",
              "--rdzv-endpoint", '"$MASTER:$PORT"', "-m", "nnunet_genesis.pretraining.launch", str(out),
              "--device", device]
    launch += ["--workers", str(workers)] if workers is not None else []
    quoted = [a if a.startswith('"$') else q(a) for a in launch]
    if state is not None:
        fold = f"FOLD={q(str(state.output_folder()))}  # nnU-Net's run folder: its checkpoints"
    else:
        read = ("import sys; from nnunet_genesis.pretraining.launch import RunState; "
                "print(RunState.load(sys.argv[1]).output_folder())")
        fold = f"FOLD=$({q(py)} -c {q(read)} {q(str(out))})  # nnU-Net's run folder: its checkpoints"
    body = ["set -eu", *prepare,
            'MASTER=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
            "PORT=$((20000 + SLURM_JOB_ID % 20000))  # the rendezvous store on the first node",
            fold,
            'RESUME=',
            'if [ -e "$FOLD/checkpoint_latest.pth" ] || [ -e "$FOLD/checkpoint_final.pth" ]; then RESUME=--resume; fi',
            "srun --kill-on-bad-exit=1 \\",
            f"    {' '.join(quoted[:13])} \\",
            f"    {' '.join(quoted[13:])} $RESUME"]
    return "\n".join(head + [""] + body) + "\n"


SLURM_PARTS_HEADER = "# Genesis pretraining with its preparation split into"


def slurm_parts_script(out: Path, options: Sequence[str], parts: int, nodes: int, gpus_per_node: int, device: str,
                       workers: int | None = None, sbatch: Sequence[str] = (), python: str | None = None) -> str:
    """A bash script that submits, with ``sbatch``, a job array of ``parts`` preparation parts and, after
    all of them succeeded (``afterok``), the job that merges them and trains (``slurm_script``'s job
    with the merge first). ``options``: the ``pretrain`` options both commands repeat (one-line
    values; quoted here). Running it again continues: the parts and the merge are skipped once OUT is
    prepared, and the training resumes from its checkpoint."""
    import shlex

    q = shlex.quote
    py = python or sys.executable
    command = [q(py), "-m", "nnunet_genesis.cli", "pretrain", *(q(o) for o in options)]
    state_file = q(str(Path(out) / STATE_FILE))
    part = [*command, "--prepare-only", "--part", '"$SLURM_ARRAY_TASK_ID"', "--parts", str(parts)]
    merge = [*command, "--parts", str(parts), "--prepare-only"]
    array = ["#!/bin/bash",
             "#SBATCH --job-name=genesis-prepare",
             f"#SBATCH --array=0-{parts - 1}",
             "#SBATCH --ntasks=1",
             f"#SBATCH {q(f'--output={out}/slurm-prepare-%A_%a.out')}",
             *(f"#SBATCH {q(opt)}" for opt in sbatch),
             "set -eu",
             f"if [ -e {state_file} ]; then echo 'OUT is prepared already: nothing to do for this part.'; exit 0; fi",
             " ".join(part)]
    merge_lines = [f"if [ ! -e {state_file} ]; then  # the merge of the {parts} parts, here on the first node",
                   f"    {' '.join(merge)}", "fi"]
    train = slurm_script(None, out, nodes, gpus_per_node, device, workers, sbatch, py, prepare=merge_lines)
    per_node = gpus_per_node if device == "cuda" else 1
    lines = ["#!/bin/bash",
             f"{SLURM_PARTS_HEADER} {parts} parts: {out}",
             f"# A job array prepares the parts (one task each); when all succeeded, one job merges them and trains",
             f"# on {nodes} node(s) x {per_node} {'GPU(s)' if device == 'cuda' else 'CPU process'}. Written by "
             f"'nnunet-genesis pretrain --slurm FILE --parts {parts}'.",
             "# Run it on a login node: bash THIS_FILE. Running it again continues: finished parts are skipped, the",
             "# merge is skipped once OUT is prepared, the training resumes from its last checkpoint.",
             "set -eu",
             f"mkdir -p {q(str(out))}  # the jobs' logs go there",
             "PARTS=$(sbatch --parsable <<'GENESIS_PARTS'", *array, "GENESIS_PARTS", ")",
             'PARTS=${PARTS%%;*}  # --parsable prints JOBID[;CLUSTER]',
             "TRAIN=$(sbatch --parsable --dependency=afterok:\"$PARTS\" <<'GENESIS_TRAIN'", *train.splitlines(),
             "GENESIS_TRAIN", ")",
             'TRAIN=${TRAIN%%;*}',
             f'echo "preparation: job array $PARTS ({parts} parts); merge and training: job $TRAIN (after the array)"']
    return "\n".join(lines) + "\n"


def _exit_with_launcher() -> None:
    """Under torchrun, end this rank when its launcher dies: torchrun starts each rank in a session
    of its own, so a SIGKILLed (or OOM-killed) launcher otherwise leaves it training unsupervised,
    and a restart with --resume would race it for the checkpoints."""
    import signal
    import threading
    import time

    parent = os.getppid()
    if "TORCHELASTIC_RUN_ID" not in os.environ or os.getsid(0) != os.getpid():
        return  # not a torchrun rank: whoever started it owns its lifetime

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        print(f"nnunet-genesis: the torchrun launcher of rank {os.environ.get('RANK', '?')} (pid {parent}) is "
              f"gone; stopping this rank and its data workers.", file=sys.stderr, flush=True)
        os.killpg(os.getpid(), signal.SIGKILL)  # the rank's session: itself and its data workers

    threading.Thread(target=watch, name="genesis-launcher-watch", daemon=True).start()


def _check_launchers(state: RunState, out: Path, resume: bool) -> None:
    """All ranks check together that every launcher runs the same run with the same --resume, and that
    a run with a checkpoint is not started over (every rank raises the same GenesisUserError)."""
    import torch.distributed as dist

    fold = state.output_folder()
    mine = {"run": [state.dataset_name, state.plans_identifier, state.configuration, state.fold],
            "resume": resume, "out": str(out), "host": os.uname().nodename,
            "checkpoints": sorted(n for n in ("checkpoint_latest.pth", "checkpoint_final.pth")
                                  if (fold / n).is_file())}
    ranks: list = [None] * dist.get_world_size()
    dist.all_gather_object(ranks, mine)
    first = ranks[0]

    def how(info: dict, key: str) -> str:
        if key == "run":
            return f"OUT {info['out']} ({info['run'][0]})"
        return "with --resume" if info["resume"] else "without --resume"

    for rank, other in enumerate(ranks):
        for key in ("run", "resume"):
            if other[key] != first[key]:
                raise GenesisUserError(
                    f"The torchrun launchers were started differently: rank 0 (on {first['host']}) runs "
                    f"{how(first, key)}, rank {rank} (on {other['host']}) {how(other, key)}. Start every "
                    f"launcher with the same OUT (on a shared file system) and the same options.")
    if first["checkpoints"] and not resume:
        raise GenesisUserError(
            f"{out}: the run already has {' and '.join(first['checkpoints'])} in {fold}; starting it without "
            f"--resume would train from epoch 0 over it. Start every launcher with --resume to continue (or "
            f"delete {fold} to start over).")


def main(argv: Sequence[str] | None = None) -> int:
    """torchrun entry point: every rank joins the group from torchrun's environment."""
    parser = argparse.ArgumentParser(prog="python -m nnunet_genesis.pretraining.launch",
                                     description="Run a prepared Genesis pretraining under torchrun "
                                                 "(docs/pretraining.md, 'Several machines').")
    parser.add_argument("out", type=Path, help="the OUT folder of 'nnunet-genesis pretrain --prepare-only'")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the run's last checkpoint (starts a run that has none)")
    parser.add_argument("--workers", type=int, help="nnU-Net data-augmentation processes per rank "
                                                    "(nnUNet_n_proc_DA; default: nnU-Net's choice)")
    args = parser.parse_args(argv)
    try:
        return _launch(args)
    except GenesisUserError as e:
        if os.environ.get("LOCAL_RANK", "0") == "0":  # once per launcher
            print(f"nnunet-genesis: error: {e}", file=sys.stderr, flush=True)
        return e.exit_code


def _launch(args: argparse.Namespace) -> int:
    import torch.distributed as dist

    if args.workers is not None and args.workers < 0:
        raise GenesisUserError(f"--workers {args.workers}: must be 0 or more.")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise GenesisUserError("--device cuda: PyTorch sees no CUDA GPU on this machine (use --device cpu).")
    if "RANK" not in os.environ or "MASTER_ADDR" not in os.environ:
        raise GenesisUserError("This is the torchrun entry point: start it with 'torchrun ... -m "
                               "nnunet_genesis.pretraining.launch OUT' (one machine: 'nnunet-genesis pretrain "
                               "-o OUT --resume --num-gpus N').")
    out = args.out.resolve()
    state = RunState.load(out)
    _exit_with_launcher()
    dist.init_process_group("nccl" if args.device == "cuda" else "gloo")
    try:
        if args.device == "cuda":
            local = int(os.environ.get("LOCAL_RANK", 0))
            torch.cuda.set_device(local)
            device = torch.device("cuda", local)
        else:
            device = torch.device("cpu")
        _check_launchers(state, out, args.resume)
        if args.resume and dist.get_rank() == 0:
            remove_stale_temps(out, state.output_folder())
        extra = {"nnUNet_n_proc_DA": str(args.workers)} if args.workers is not None else {}
        with nnunet_environment(state.nnunet_folders, extra):
            try:
                run_trainer(state, device, args.resume)
            except RuntimeError as e:
                if not _lost_a_peer(e):
                    raise
                raise GenesisUserError(
                    f"Rank {dist.get_rank()} of {dist.get_world_size()} lost the other ranks (usually a launcher, "
                    f"rank or machine stopped; the first failure is in the logs of the other launchers): "
                    f"{str(e).splitlines()[0][:300]} The run continues from its last checkpoint "
                    f"({state.output_folder() / 'checkpoint_latest.pth'}, written every --save-every epochs) when "
                    f"every launcher is started again with --resume.", exit_code=1) from None
    finally:
        dist.destroy_process_group()
    return 0


def _lost_a_peer(error: RuntimeError) -> bool:
    """A collective failed because another rank went away (gloo raises a plain RuntimeError then)."""
    import torch.distributed as dist

    text = str(error)
    return isinstance(error, dist.DistError) or any(s in text for s in ("Connection closed by peer",
                                                                       "Connection reset by peer"))


if __name__ == "__main__":
    sys.exit(main())
