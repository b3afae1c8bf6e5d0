"""``nnunet-genesis demo``'s options and entry point."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from nnunet_genesis.workflows.demo.folder import folder_lock, prepare_output, refuse_foreign_folder
from nnunet_genesis.workflows.demo.settings import QUICK, DemoSettings
from nnunet_genesis.workflows.demo.steps import Demo
from nnunet_genesis.workflows.demo.summary import print_summary
from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.workflows.msd_folders import check_msd_folder
from nnunet_genesis.workflows.pipeline import run_steps
from nnunet_genesis.transforms.config import PRESETS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = DemoSettings()
    parser.description = (
        "Run the whole pipeline end to end: make a dataset (the package's small SYNTHETIC one, or "
        "--msd-task), plan and preprocess it with nnU-Net, pretrain a Genesis network on its images "
        "(labels unused), attach it, fine-tune nnUNetTrainerGenesis and train from scratch with the same "
        "short schedule through nnUNetv2_train, predict the test set with nnUNetv2_predict, evaluate, "
        "compare and package a Decathlon-style zip. Re-running continues or reuses OUT.")
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    parser.add_argument("-o", "--output", type=Path, default=Path("demo_output"), metavar="DIR",
                        help="output folder (holds its own nnUNet_raw/preprocessed/results)")
    parser.add_argument("--msd-task", type=Path, metavar="DIR",
                        help="a Decathlon task folder in the MSD layout (e.g. Task04_Hippocampus) instead of "
                             "the synthetic dataset")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="device for nnU-Net and pretraining (default: cuda if available, else cpu)")
    parser.add_argument("--force", action="store_true",
                        help="delete an earlier demo in DIR that used other settings, and start again")
    parser.add_argument("--seed", type=int, default=d.seed, help="seeds the data, the split and both trainings")
    parser.add_argument("--labelled", type=int, default=d.labelled, metavar="K",
                        help="labelled cases the two models are trained on")
    parser.add_argument("--val-cases", type=int, default=d.val_cases,
                        help="labelled cases for nnU-Net's validation during training")
    parser.add_argument("--test-cases", type=int, default=d.test_cases,
                        help="--msd-task: labelled cases held out as the test set (imagesTs has no labels)")
    parser.add_argument("--max-cases", type=int, default=None,
                        help="--msd-task: use only the first N labelled cases (faster)")
    parser.add_argument("--max-test-images", type=int, default=None,
                        help="--msd-task: use only the first N imagesTs images (the zip then covers only those)")
    parser.add_argument("--synthetic-cases", type=int, nargs=2, default=(d.synthetic_train, d.synthetic_test),
                        metavar=("TRAIN", "TEST"), help="synthetic: number of imagesTr and imagesTs cases")
    parser.add_argument("--synthetic-size", type=int, default=d.synthetic_size,
                        help="synthetic: volume side in voxels")
    parser.add_argument("--pretrain-epochs", type=int, default=d.pretrain_epochs)
    parser.add_argument("--pretrain-iterations", type=int, default=d.pretrain_iterations,
                        help="pretraining iterations per epoch")
    parser.add_argument("--finetune-epochs", type=int, default=d.finetune_epochs,
                        help="epochs of both trainings (Genesis and scratch)")
    parser.add_argument("--finetune-iterations", type=int, default=d.finetune_iterations,
                        help="iterations per epoch of both trainings")
    parser.add_argument("--warmup-epochs", type=int, default=d.warmup_epochs,
                        help="linear learning-rate warm-up epochs of both trainings")
    parser.add_argument("--width", type=float, default=None,
                        help="feature maps per stage relative to nnU-Net's plan, for pretraining and both "
                             "trainings alike (default: 0.25 on cpu, 1 on cuda)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=d.preset,
                        help="the pretraining's corruption preset (as 'pretrain --preset'): 'paper' = the Models "
                             "Genesis rates; 'mild' = no inverted intensity mappings and less painting, which a "
                             "short CPU pretraining can learn")
    parser.add_argument("--transfer", choices=("encoder", "full"), default=d.transfer,
                        help="weights the Genesis arm takes from the checkpoint: 'full' (encoder and decoder, "
                             "as in the papers) or 'encoder' (the decoder starts as in the scratch arm; see "
                             "docs/demo.md for when each did better)")
    parser.add_argument("--da-workers", type=int, default=None,
                        help="nnU-Net data-augmentation processes (nnUNet_n_proc_DA); default: 0 on cpu (the "
                             "two trainings then see identical patch sequences), nnU-Net's choice on cuda")
    parser.add_argument("--jobs", type=int, choices=(1, 2), default=None,
                        help="2: the two arms' trainings and predictions run at the same time, each pinned to "
                             "half of the CPUs (needs taskset); 1: one after the other with all CPUs "
                             "(default: 2 on cpu, 1 on cuda)")
    parser.add_argument("--quick", action="store_true",
                        help="a few iterations of every step on a tiny dataset: checks the installation in a "
                             "few minutes; the scores mean nothing")


# A quarter of nnU-Net's feature maps on a CPU (8..64 for the synthetic plan): the demo's two
# trainings fit in its 10 minutes on 2 cores and still learn both labels (docs/demo.md).
CPU_WIDTH = 0.25
MAX_SYNTHETIC_SIZE = 256  # a CPU demo: larger volumes only exhaust memory (3000 raised MemoryError)


def settings_from_args(args: argparse.Namespace) -> DemoSettings:
    device = args.device
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise GenesisUserError("--device cuda: PyTorch sees no CUDA GPU here; use --device cpu.")
    values: dict[str, Any] = dict(
        device=device, seed=args.seed, labelled=args.labelled, val_cases=args.val_cases,
        test_cases=args.test_cases, max_cases=args.max_cases, max_test_images=args.max_test_images,
        synthetic_train=args.synthetic_cases[0], synthetic_test=args.synthetic_cases[1],
        synthetic_size=args.synthetic_size, pretrain_epochs=args.pretrain_epochs,
        pretrain_iterations=args.pretrain_iterations, finetune_epochs=args.finetune_epochs,
        finetune_iterations=args.finetune_iterations, warmup_epochs=args.warmup_epochs,
        width=args.width if args.width is not None else (CPU_WIDTH if device == "cpu" else 1.0),
        preset=args.preset, transfer=args.transfer,
        da_workers=args.da_workers if args.da_workers is not None else (0 if device == "cpu" else None))
    if args.quick:  # the smoke sizes, except where an option was given explicitly
        defaults = DemoSettings()
        values.update({k: v for k, v in QUICK.items() if values[k] == getattr(defaults, k)})
    for key in ("labelled", "val_cases", "pretrain_epochs", "pretrain_iterations", "finetune_epochs",
                "finetune_iterations", "synthetic_train", "synthetic_test", "max_cases", "max_test_images"):
        if values[key] is not None and values[key] < 1:
            raise GenesisUserError(f"--{key.replace('_', '-')} must be at least 1, got {values[key]}.")
    if values["seed"] < 0:
        raise GenesisUserError(f"--seed must be 0 or more (numpy and torch seeds are non-negative), got "
                               f"{values['seed']}.")
    if values["da_workers"] is not None and values["da_workers"] < 0:
        raise GenesisUserError(f"--da-workers must be 0 or more, got {values['da_workers']}.")
    if args.msd_task is not None:
        folder = args.msd_task.expanduser().resolve()
        check_msd_folder(folder, values["max_cases"])
        values["msd_task"] = str(folder)
    if values["test_cases"] < 1 and "msd_task" in values:
        raise GenesisUserError("--test-cases must be at least 1.")
    if not 0 < values["width"] <= 1:
        raise GenesisUserError(f"--width must be in (0, 1], got {values['width']}.")
    if not 24 <= values["synthetic_size"] <= MAX_SYNTHETIC_SIZE:
        raise GenesisUserError(f"--synthetic-size must be between 24 and {MAX_SYNTHETIC_SIZE} voxels, got "
                               f"{values['synthetic_size']} (the data is made in memory: {MAX_SYNTHETIC_SIZE}^3 "
                               f"float32 is {MAX_SYNTHETIC_SIZE ** 3 * 4 // 2 ** 20} MiB a case).")
    if not 0 <= values["warmup_epochs"] < values["finetune_epochs"]:
        raise GenesisUserError("--warmup-epochs must be at least 0 and less than --finetune-epochs.")
    if values["synthetic_train"] < values["labelled"] + values["val_cases"]:
        raise GenesisUserError(f"--synthetic-cases: {values['synthetic_train']} training cases cannot hold "
                               f"--labelled {values['labelled']} plus --val-cases {values['val_cases']}.")
    return DemoSettings(**values)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    out = args.output.expanduser().resolve()
    t0 = time.monotonic()
    refuse_foreign_folder(out)  # before the lock file is created in it
    out.mkdir(parents=True, exist_ok=True)
    with folder_lock(out):
        prepare_output(out, settings, args.force)
        jobs = args.jobs if args.jobs is not None else (2 if settings.device == "cpu" else 1)
        demo = Demo(out, settings, jobs)
        demo.ws.make()
        source = "synthetic dataset (nnunet_genesis.synthetic)" if settings.synthetic else settings.msd_task
        print(f"nnunet-genesis demo in {out}\n  data: {source}; device: {settings.device}; logs: {demo.ws.logs}")
        times = run_steps(demo.ws, demo.steps(), "demo")
        print_summary(demo, times, time.monotonic() - t0)
    return 0
