"""``nnunet-genesis pretrain``: Models Genesis pretraining with nnU-Net's own machinery.

See docs/pretraining.md for the full description.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shlex
import shutil
from pathlib import Path

from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.safe_text import one_line
from nnunet_genesis.outputs import (atomic_write_text, check_output_dir, check_output_file, remove_stale_temps,
                                    write_json_atomic)
from nnunet_genesis.transforms import GenesisConfig
from nnunet_genesis.transforms.config import PRESETS
from nnunet_genesis.pretraining.options import PLANS_KEY, PretrainOptions
from nnunet_genesis.pretraining.plans import DEFAULT_UNIVERSAL_BATCH, DEFAULT_UNIVERSAL_PATCH, DEFAULT_UNIVERSAL_SPACING
from nnunet_genesis.pretraining.folders import NnunetFolders, nnunet_environment
from nnunet_genesis.pretraining.sources import resolve_raw_dataset
from nnunet_genesis.checkpoint import CHECKPOINT_FILE_NAME, load_checkpoint, safe_torch_load

BUDGET_ITERATIONS = 25  # --iters-per-epoch default with --time-budget: epochs of a minute or two on a CPU
BUDGET_MAX_EPOCHS = 1000  # --epochs default with --time-budget: an upper bound only
# The corruption preset --time-budget chooses when no --preset is given (docs/pretraining.md).
BUDGET_PRESET = "mild"

# GenesisConfig fields offered as options (same names, dashes for underscores).
GENESIS_OPTION_FIELDS = tuple(f.name for f in dataclasses.fields(GenesisConfig)
                              if f.name.endswith("_rate") or f.name == "shuffle_blocks")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = PretrainOptions()
    src = parser.add_argument_group("sources (at least one of -i / -d)")
    src.add_argument("-i", "--input", dest="inputs", type=Path, nargs="+", action="extend", default=[],
                     metavar="DIR", help="folders (searched recursively) of NIfTI/NRRD/MetaImage volumes and "
                                         "DICOM series folders; a single volume file also works")
    src.add_argument("-d", "--dataset", dest="datasets", nargs="+", action="extend", default=[],
                     metavar="DATASET", help="nnU-Net raw dataset (name, id or folder): all images of imagesTr "
                                             "and imagesTs, labels ignored")
    parser.add_argument("-o", "--output", dest="out", type=Path, required=True, metavar="OUT",
                        help="output folder: genesis_final.pth, PNGs, pretrain_state.json (and nnunet_work/ "
                             "when the nnUNet_* variables are not set)")
    plan = parser.add_argument_group("network, spacing and normalisation")
    plan.add_argument("--plans-from", metavar="DATASET",
                      help="take plans (network, patch, spacing, normalisation) from this planned dataset "
                           "(nnUNet_preprocessed); default: the universal Genesis plan")
    plan.add_argument("-p", "--plans", dest="plans_identifier", default="nnUNetPlans",
                      help="plans identifier of --plans-from (default: %(default)s)")
    plan.add_argument("-c", "--configuration", default="3d_fullres", help="configuration of --plans-from (default: %(default)s)")
    plan.add_argument("--patch-size", type=int, nargs=3, metavar=("Z", "Y", "X"),
                      help=f"patch size (default: universal plan {list(DEFAULT_UNIVERSAL_PATCH)}; with "
                           f"--plans-from the plans' patch size unless given)")
    plan.add_argument("--spacing", type=float, nargs=3, metavar=("Z", "Y", "X"),
                      help=f"target spacing in mm, universal plan only (default: {list(DEFAULT_UNIVERSAL_SPACING)})")
    plan.add_argument("--modality", nargs="+", metavar="NAME",
                      help="channel name(s) for the universal plan: CT gets the fixed HU window "
                           "normalisation, anything else (e.g. MRI) per-image z-scoring (default: the -d "
                           "dataset's channel names, else CT); ignored with --plans-from")
    run = parser.add_argument_group("training")
    run.add_argument("--epochs", type=int, default=None,
                     help=f"epochs (default: {defaults.epochs}; with --resume: extend or shorten the run)")
    run.add_argument("--iters-per-epoch", type=int, default=None,
                     help=f"training iterations per epoch (default: {defaults.iterations_per_epoch}; "
                          f"{BUDGET_ITERATIONS} with --time-budget, so that the run stops close to the budget)")
    run.add_argument("--time-budget", type=float, metavar="MINUTES",
                     help="stop at the end of the epoch that crosses this much training time (preparation "
                          "not counted) and decay the learning rate over it; --epochs (default then 1000) "
                          f"stays an upper bound; without --preset it selects the '{BUDGET_PRESET}' preset")
    run.add_argument("--optimizer", choices=("adamw", "sgd"), default=defaults.optimizer,
                     help="adamw, or sgd = nnU-Net's SGD (Nesterov, momentum 0.99) (default: %(default)s)")
    run.add_argument("--lr", type=float, default=None,
                     help=f"initial learning rate (default: {defaults.learning_rate:g} for adamw, 0.01 for sgd)")
    run.add_argument("--batch-size", type=int,
                     help=f"global batch size (default: the plans'; universal plan: {DEFAULT_UNIVERSAL_BATCH})")
    run.add_argument("--device", choices=("cpu", "cuda", "mps"),
                     help="training device (default: cuda if available, else mps, else cpu)")
    run.add_argument("--num-gpus", type=int, default=1,
                     help="DDP processes: GPUs with --device cuda (NCCL), CPU processes with --device cpu (gloo) "
                          "(default: %(default)s)")
    run.add_argument("--seed", type=int, default=defaults.seed,
                     help="seeds corruptions, validation patches, split and initial weights (default: %(default)s)")
    run.add_argument("--resume", action="store_true",
                     help="continue the run prepared in OUT (weights, optimiser, epoch); also starts a "
                          "run prepared with --prepare-only")
    run.add_argument("--skip-bad", action="store_true", help="continue without unusable inputs (listed)")
    run.add_argument("--workers", type=int,
                     help="data-augmentation worker processes (0: in the main process) and processes for "
                          "conversion/preprocessing (default: nnU-Net's choice / 4)")
    run.add_argument("--corruption", choices=("auto", "device", "workers"), default=defaults.corruption,
                     help="where training batches are corrupted: on the training device in the training step "
                          "(torch, fast on GPUs) or in nnU-Net's data workers (NumPy, fast on CPUs); auto: "
                          "device on CUDA, workers otherwise (default: %(default)s)")
    run.add_argument("--val-patches", type=int, default=defaults.val_patches,
                     help="fixed validation patches scored every epoch (default: %(default)s)")
    run.add_argument("--val-fraction", type=float, default=0.1, help="share of volumes held out for validation (default: %(default)s)")
    run.add_argument("--png-every", type=int, default=defaults.png_every,
                     help="epochs between restoration PNGs (default: %(default)s)")
    run.add_argument("--save-every", type=int, default=defaults.save_every,
                     help="epochs between checkpoint_latest.pth / genesis_latest.pth (default: %(default)s)")
    run.add_argument("--dataset-id", type=int, help="nnU-Net id of the pretraining dataset (default: highest free)")
    run.add_argument("--prepare-only", action="store_true",
                     help="stop after preprocessing (start later with --resume, nnUNetv2_train or torchrun)")
    parts = parser.add_argument_group("preparing a large corpus on several machines")
    parts.add_argument("--parts", type=int, metavar="N",
                       help="split the preparation into N parts: with --part, prepare one part; without, merge the "
                            "N finished parts in OUT/parts into the dataset (then train, or stop with "
                            "--prepare-only); with --slurm, a job array of the N parts then the merge and training")
    parts.add_argument("--part", type=int, metavar="I",
                       help="with --parts N and --prepare-only: prepare part I (0..N-1), the I-th of N contiguous "
                            "chunks of the sorted volume list, into OUT/parts/part_I_of_N (any machine that sees the "
                            "inputs and OUT)")
    slurm = parser.add_argument_group("several machines (SLURM)")
    slurm.add_argument("--slurm", type=Path, metavar="FILE",
                       help="prepare OUT (as --prepare-only; with --resume: the run already there) and write a "
                            "SLURM batch script that trains it with one torchrun launcher per node; trains nothing "
                            "here. With --parts N: prepare nothing here and write a bash script that submits the N "
                            "parts as a job array and the merge and training after them. OUT must be on a file "
                            "system all nodes share")
    slurm.add_argument("--slurm-nodes", type=int, metavar="N", help="with --slurm: nodes (default: 2)")
    slurm.add_argument("--slurm-gpus-per-node", type=int, metavar="G",
                       help="with --slurm: GPUs (= training processes) per node (default: 1); with --device cpu "
                            "one process per node")
    slurm.add_argument("--sbatch", action="append", default=[], metavar="OPTION",
                       help="with --slurm: an extra '#SBATCH OPTION' line (repeatable), e.g. "
                            "--sbatch=--partition=gpu --sbatch=--time=24:00:00 --sbatch=--cpus-per-task=16")
    gen = parser.add_argument_group("Genesis corruptions (nnunet_genesis.transforms.GenesisConfig)")
    gen.add_argument("--preset", choices=sorted(PRESETS),
                     help=f"corruption rates: paper = the Models Genesis rates, mild = fewer inverted "
                          f"mappings and less painting (default: paper; {BUDGET_PRESET} with --time-budget); "
                          f"the options below override single rates")
    genesis_defaults = GenesisConfig()
    for name in GENESIS_OPTION_FIELDS:
        default = getattr(genesis_defaults, name)
        gen.add_argument(f"--{name.replace('_', '-')}", dest=name, type=type(default), default=None,
                         help=f"default: the preset's (paper: {default})")


def _device(name: str | None):
    import torch

    if name is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise GenesisUserError("--device cuda: PyTorch sees no CUDA GPU here (use --device cpu).")
    if name == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise GenesisUserError("--device mps: the Apple MPS backend is not available here.")
    return torch.device(name)


def _check_processes(device, num: int) -> None:
    import torch

    if num < 1:
        raise GenesisUserError(f"--num-gpus {num}: must be at least 1.")
    if num > 1 and device.type == "mps":
        raise GenesisUserError("--num-gpus > 1 is not supported with --device mps.")
    if num > 1 and device.type == "cuda" and num > torch.cuda.device_count():
        raise GenesisUserError(f"--num-gpus {num}: only {torch.cuda.device_count()} CUDA GPU(s) are visible.")


def preset_name(args) -> str:
    """--preset, else the budget preset with --time-budget, else the papers' rates."""
    if args.preset:
        return args.preset
    return BUDGET_PRESET if args.time_budget else "paper"


def _genesis_config(args) -> GenesisConfig:
    overrides = {n: getattr(args, n) for n in GENESIS_OPTION_FIELDS if getattr(args, n) is not None}
    try:
        return GenesisConfig.preset(preset_name(args), **overrides)
    except ValueError as e:
        raise GenesisUserError(f"Genesis corruption options: {e}") from None


@contextlib.contextmanager
def removed_on_failure(out: Path):
    """What a failed preparation created under (or as) ``out`` is removed: nothing is left that
    could neither be resumed nor re-run. What was there before stays."""
    created = [p for p in [out, *out.parents] if not p.exists()]
    existed = set(out.iterdir()) if out.is_dir() else set()
    try:
        yield
    except BaseException:
        if created:
            shutil.rmtree(created[-1], ignore_errors=True)  # the highest folder this run created
        else:
            for p in set(out.iterdir()) - existed:
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
        raise


def _positive(name: str, value) -> None:
    if value is not None and value < 1:
        raise GenesisUserError(f"{name} {value}: must be at least 1.")


def run(args) -> int:
    # lazy: these bring nnU-Net's trainer and planners (5 s of imports); `pretrain --help` needs neither
    from nnunet_genesis.pretraining.parts import merge_parts, plan_part, run_part
    from nnunet_genesis.pretraining.prepare import PrepareRequest, check_plans_request, prepare_run
    from nnunet_genesis.pretraining.launch import (STATE_FILE, RunState, resume_checkpoint, slurm_parts_script,
                                                   slurm_script, train)

    for name in ("--iters-per-epoch", "--val-patches", "--png-every", "--save-every", "--batch-size", "--epochs"):
        _positive(name, getattr(args, name[2:].replace("-", "_")))
    if args.workers is not None and args.workers < 0:
        raise GenesisUserError(f"--workers {args.workers}: must be 0 or more.")
    if args.time_budget is not None and not 0 < args.time_budget < 1e6:
        raise GenesisUserError(f"--time-budget {args.time_budget}: must be a positive number of minutes.")
    if args.lr is not None and not 0 < args.lr < 10:
        raise GenesisUserError(f"--lr {args.lr}: must be a positive learning rate below 10.")
    if not 0 < args.val_fraction < 1:
        raise GenesisUserError(f"--val-fraction {args.val_fraction}: must be between 0 and 1.")
    if args.seed < 0:
        raise GenesisUserError(f"--seed {args.seed}: must be 0 or more (numpy and torch seeds are non-negative).")
    _check_parts(args)
    slurm = _slurm_layout(args)
    world, who = (args.num_gpus, f"--num-gpus {args.num_gpus}") if slurm is None else slurm[2:]
    if args.batch_size is not None and args.batch_size < world:
        raise GenesisUserError(f"{who} needs a global batch size of at least {world}; "
                               f"--batch-size is {args.batch_size}.")
    if slurm is None and args.part is None:  # a part never trains
        device = _device(args.device)
        _check_processes(device, args.num_gpus)
    out: Path = check_output_dir(args.out.resolve(), "-o")
    if args.slurm is not None:
        check_output_file(args.slurm.resolve(), "--slurm")
    state_file = out / STATE_FILE
    extra_env = {"nnUNet_n_proc_DA": str(args.workers)} if args.workers is not None else {}

    if args.resume:
        if not state_file.is_file():
            raise GenesisUserError(f"--resume: {out} holds no prepared pretraining run ({STATE_FILE} is missing); "
                                   f"start one without --resume.")
        if args.inputs or args.datasets or args.plans_from:
            print(f"--resume: continuing the run recorded in {state_file}; the given sources/plans are not re-read.")
        state = RunState.load(out)
        checkpoint = resume_checkpoint(state)
        if checkpoint is not None:  # refused before anything of the run changes (temps, its plans below)
            safe_torch_load(checkpoint, "The checkpoint --resume continues from")
        remove_stale_temps(out, state.output_folder())
        # corrections that are safe mid-run: a longer or shorter schedule, another batch size
        if args.epochs is not None or args.batch_size is not None:
            plans_file = state.nnunet_folders.preprocessed / state.dataset_name / f"{state.plans_identifier}.json"
            plans = json.loads(plans_file.read_text())
            if args.epochs is not None:
                plans[PLANS_KEY]["epochs"] = args.epochs
            if args.batch_size is not None:
                plans["configurations"][state.configuration]["batch_size"] = args.batch_size
            write_json_atomic(plans, plans_file)
        _check_batch(state, world, who)
    else:
        if state_file.exists():
            raise GenesisUserError(f"{out} already holds a pretraining run ({STATE_FILE}); continue it with "
                                   f"--resume or choose another -o folder.")
        if not args.inputs and not args.datasets:
            raise GenesisUserError("No sources: give -i folders of volumes and/or -d nnU-Net raw datasets.")
        epochs = args.epochs or (BUDGET_MAX_EPOCHS if args.time_budget else PretrainOptions().epochs)
        options = PretrainOptions(
            epochs=epochs, iterations_per_epoch=args.iters_per_epoch or (
                BUDGET_ITERATIONS if args.time_budget else PretrainOptions().iterations_per_epoch),
            seed=args.seed, val_patches=args.val_patches, png_every=args.png_every, save_every=args.save_every,
            corruption=args.corruption, optimizer=args.optimizer,
            learning_rate=args.lr or (PretrainOptions().learning_rate if args.optimizer == "adamw" else 1e-2),
            time_budget_minutes=args.time_budget or 0.0, preset=preset_name(args),
            genesis=_genesis_config(args).to_dict())
        request = PrepareRequest(
            out=out, inputs=args.inputs, datasets=args.datasets, plans_from=args.plans_from,
            plans_identifier=args.plans_identifier, configuration=args.configuration,
            patch_size=args.patch_size, spacing=args.spacing, batch_size=args.batch_size,
            modality=args.modality, skip_bad=args.skip_bad,
            workers=args.workers if args.workers else min(4, os.cpu_count() or 1),
            dataset_id=args.dataset_id, val_fraction=args.val_fraction, options=options)
        folders = NnunetFolders.resolve(out)
        if args.part is not None or (args.parts is not None and args.slurm is not None):
            # -d names and ids are looked up in the user's nnUNet_raw, before OUT/nnunet_work stands in for it
            request.datasets = [str(resolve_raw_dataset(d)) for d in request.datasets]
        if args.part is not None:  # writes only its own folder under OUT/parts, and removes it when it fails
            with nnunet_environment(folders):
                job = plan_part(request, folders, args.part, args.parts)
            if job is not None:
                with nnunet_environment(job.folders):
                    record = run_part(job)
                print(f"Part {args.part} of {args.parts} done: {len(record['cases'])} of {len(job.cases)} volume(s) "
                      f"converted and preprocessed into {job.folder} ({len(record['bad'])} unusable, listed by the "
                      f"merge). When all {args.parts} parts are done, merge them (and train, or add --prepare-only):"
                      f"\n  {_pretrain_command(args, request.datasets, ['--parts', str(args.parts)])}")
            return 0
        if args.parts is not None and args.slurm is not None:
            with nnunet_environment(folders):
                source = check_plans_request(request, folders)
            if source.batch_size < world:
                raise GenesisUserError(f"{who} needs a global batch size of at least {world}; the plans will have "
                                       f"{source.batch_size} (set --batch-size).")
            options = [one_line(word, "an option written into the SLURM script")
                       for word in reproduced_options(args, request.datasets)]
            script = args.slurm.resolve()
            atomic_write_text(script, slurm_parts_script(out, options, args.parts, slurm[0], slurm[1],
                                                         args.device or "cuda", args.workers, args.sbatch))
            print(f"Nothing was prepared or trained here. Script that submits the {args.parts} preparation parts "
                  f"(a SLURM job array), then the merge and the training on {slurm[0]} node(s) ({who}): {script}\n"
                  f"Run it with: bash {script}  (again to continue the run)")
            return 0
        with removed_on_failure(out):
            # -d names and ids are looked up in the user's nnUNet_raw, before OUT/nnunet_work stands in for it
            request.datasets = [str(resolve_raw_dataset(d)) for d in request.datasets]
            with nnunet_environment(folders):
                if args.parts is None:
                    state = prepare_run(request, folders)
                else:
                    state = merge_parts(request, folders, args.parts, lambda i: _pretrain_command(
                        args, request.datasets, ["--prepare-only", "--part", str(i), "--parts", str(args.parts)]))
            _check_batch(state, world, who)
    if slurm is not None:

        script = args.slurm.resolve()
        atomic_write_text(script, slurm_script(state, out, slurm[0], slurm[1], args.device or "cuda",
                                               args.workers, args.sbatch))
        print(f"{state.dataset_name} is prepared in {out}; nothing was trained here.\nSLURM script for {slurm[0]} "
              f"node(s) ({who}): {script}\nSubmit it with: sbatch {script}  (again to continue the run)")
        return 0
    if args.prepare_only:
        print(_prepared_message(state, out))
        return 0
    with nnunet_environment(state.nnunet_folders, extra_env):
        train(state, device, args.num_gpus, resume=args.resume)
    final = out / CHECKPOINT_FILE_NAME
    if not final.is_file():
        raise GenesisUserError(f"Training ended without writing {final}; see the log in {state.output_folder()}.",
                               exit_code=1)
    warning = restoration_warning(final)
    if warning:
        print(warning)
    print(f"Genesis checkpoint: {final}\nLoss curve: {out / 'genesis_loss.png'}\n"
          f"nnU-Net run folder (log, progress.png, checkpoints): {state.output_folder()}\n"
          f"Inspect it with: nnunet-genesis inspect {final}")
    return 0


# The validation MSE should be this far below the better trivial predictor (docs/pretraining.md).
LEARNT_MARGIN = 0.2


def restoration_warning(checkpoint_path: Path) -> str | None:
    """A warning when the final validation MSE did not beat the trivial predictors recorded in
    the checkpoint (the per-patch mean and the corrupted input) by ``LEARNT_MARGIN``."""

    meta = load_checkpoint(checkpoint_path).metadata
    final, baselines = meta.get("final_val_loss"), meta.get("val_baselines") or {}
    if final is None or not baselines:
        return None
    best_name, best = min(baselines.items(), key=lambda kv: kv[1])
    if final <= (1 - LEARNT_MARGIN) * best:
        return None
    return (f"WARNING: the restoration validation MSE ended at {final:.4f}, not {100 * LEARNT_MARGIN:.0f} % below "
            f"the best trivial predictor ({best_name}: {best:.4f}): this pretraining has learnt little, and "
            f"fine-tuning from it may be no better than from scratch. Train longer (--epochs, --time-budget) or "
            f"with the 'mild' preset; see docs/pretraining.md.")


def _check_batch(state, num_processes: int, who: str) -> None:
    plans_file = state.nnunet_folders.preprocessed / state.dataset_name / f"{state.plans_identifier}.json"
    batch = json.loads(plans_file.read_text())["configurations"][state.configuration]["batch_size"]
    if batch < num_processes:
        raise GenesisUserError(f"{who} needs a global batch size of at least {num_processes}; the plans "
                               f"have {batch} (set --batch-size).")


def _check_parts(args) -> None:
    """--part / --parts mistakes, before any work."""
    if args.part is not None and args.parts is None:
        raise GenesisUserError(f"--part {args.part} needs --parts N (the number of parts the preparation is split "
                               f"into).")
    if args.parts is None:
        return
    if args.parts < 1:
        raise GenesisUserError(f"--parts {args.parts}: must be at least 1.")
    if args.resume:
        raise GenesisUserError(f"--parts {args.parts} with --resume: --parts prepares a new run; --resume continues "
                               f"the run already prepared in OUT (give one of them).")
    if args.part is None:
        return
    if not 0 <= args.part < args.parts:
        raise GenesisUserError(f"--part {args.part}: must be between 0 and {args.parts - 1} (--parts {args.parts}).")
    if not args.prepare_only:
        raise GenesisUserError(f"--part {args.part} needs --prepare-only: a part only prepares its share of the "
                               f"volumes; the merge (--parts {args.parts} without --part) trains.")
    if args.slurm is not None:
        raise GenesisUserError("--part with --slurm: the script of --slurm --parts N runs every part itself; leave "
                               "--part out.")


# options that say how and where a command runs rather than what it prepares: not repeated by the
# commands of the parts and the merge (--device: a preparation needs none, and the part jobs have no GPU)
_NOT_REPEATED = ("slurm", "slurm_nodes", "slurm_gpus_per_node", "sbatch", "part", "parts", "prepare_only", "resume",
                 "device", "num_gpus")


def reproduced_options(args, datasets) -> list[str]:
    """This command's options as words of the commands of its parts and merge: every option given
    (a value other than its default), paths absolute, ``-d`` datasets as the folders they were
    resolved to, and without the options of ``_NOT_REPEATED``."""
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    words: list[str] = []
    for action in parser._actions:
        if not action.option_strings or action.dest in _NOT_REPEATED:
            continue
        value = list(datasets) if action.dest == "datasets" else getattr(args, action.dest)
        if value is None or value is False or value == action.default:
            continue
        option = action.option_strings[-1]
        if value is True:
            words.append(option)
            continue
        values = value if isinstance(value, list) else [value]
        values = [str(v.resolve()) if isinstance(v, Path) else str(v) for v in values]
        if action.nargs is None:  # one value: as --option=VALUE, so a value starting with '-' stays a value
            words.append(f"{option}={values[0]}")
        else:
            words += [option, *values]
    return words


def _pretrain_command(args, datasets, extra: list[str]) -> str:
    """``nnunet-genesis pretrain`` with this command's options and ``extra``, for a message."""
    return "nnunet-genesis pretrain " + shlex.join(reproduced_options(args, datasets) + extra)


def _slurm_layout(args) -> tuple[int, int, int, str] | None:
    """(nodes, GPUs per node, processes, how they were asked for) with --slurm, else None; the
    SLURM options are refused without --slurm, and --num-gpus with it (it would mean two counts)."""
    given = [name for name, value in (("--slurm-nodes", args.slurm_nodes),
                                      ("--slurm-gpus-per-node", args.slurm_gpus_per_node),
                                      ("--sbatch", args.sbatch or None)) if value is not None]
    if args.slurm is None:
        if given:
            raise GenesisUserError(f"{', '.join(given)}: only used with --slurm FILE.")
        return None
    if args.num_gpus != 1:
        raise GenesisUserError(f"--num-gpus {args.num_gpus} with --slurm: the processes are --slurm-nodes x "
                               f"--slurm-gpus-per-node; --num-gpus is for training on this machine.")
    if args.device == "mps":
        raise GenesisUserError("--slurm with --device mps: a multi-node run uses cuda (NCCL) or cpu (gloo).")
    if args.device == "cpu" and args.slurm_gpus_per_node is not None:
        raise GenesisUserError("--slurm-gpus-per-node with --device cpu: a CPU run has one process per node "
                               "(drop --device cpu for a GPU run).")
    for value in args.sbatch or ():
        one_line(value, "--sbatch")
    one_line(str(args.out.resolve()), "-o (written into the SLURM script)")
    nodes = 2 if args.slurm_nodes is None else args.slurm_nodes
    gpus = 1 if args.slurm_gpus_per_node is None else args.slurm_gpus_per_node
    _positive("--slurm-nodes", nodes)
    _positive("--slurm-gpus-per-node", gpus)
    per_node = 1 if args.device == "cpu" else gpus
    return nodes, gpus, nodes * per_node, f"--slurm-nodes {nodes} x {per_node} process(es) per node"


def _prepared_message(state, out: Path) -> str:
    f = state.folders
    env = " ".join(f"{k}={v}" for k, v in f.items())
    dataset_id = int(state.dataset_name[7:10])
    return (f"Prepared {state.dataset_name} ({state.plans_identifier}, {state.configuration}). Start training with\n"
            f"  nnunet-genesis pretrain -o {out} --resume [--device cuda --num-gpus N]\n"
            f"or, with nnUNet_extTrainer set (nnunet-genesis env):\n"
            f"  {env} nnUNetv2_train {dataset_id} {state.configuration} {state.fold} "
            f"-tr nnUNetTrainerGenesisPretrain -p {state.plans_identifier} [-num_gpus N]\n"
            f"or on several machines sharing the folders, one launcher per machine (or see --slurm):\n"
            f"  torchrun --nnodes M --nproc-per-node G --rdzv-backend c10d --rdzv-endpoint HOST:PORT "
            f"-m nnunet_genesis.pretraining.launch {out} [--device cpu] [--resume]")
