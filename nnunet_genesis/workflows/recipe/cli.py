"""``nnunet-genesis recipe``: the Decathlon recipe of nnU-Net with a Genesis start, as one
resumable command.

attach -> ``nnUNetv2_train DATASET CONF FOLD --npz`` for every configuration and fold (3D from
the checkpoint, 2D with the plain partner; the cascade after every lowres fold) ->
``nnUNetv2_find_best_configuration`` -> ``nnUNetv2_predict`` / ``nnUNetv2_ensemble`` /
``nnUNetv2_apply_postprocessing`` as the selection says -> ``package-msd``; with
``--baseline`` the same trainings and selection from scratch and a ``compare`` report.

Modules: ``settings`` (settings, models, the plain-partner table), ``folders``
(plans, splits, fold progress, work folder), ``plan`` (the pure plan), ``state``
(recipe_state.json), ``runner``, ``render`` (--print-commands, --slurm),
``selection`` (selection over an explicit model list), ``report`` (per-fold table).
Every check below runs before anything does. See docs/recipe.md.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.workflows.recipe.folders import DatasetFacts, WorkDir, read_dataset_facts
from nnunet_genesis.trainers.starts import TRAINER_PREFIX, genesis_trainers, scratch_partner
from nnunet_genesis.workflows.recipe.settings import DEFAULT_TRAINER, OtherTask, RecipeSettings, plain_partner
from nnunet_genesis.workflows.recipe.plan import build_plan, ordered_configurations
from nnunet_genesis.evaluation.msd_tasks import get_task, task_for_dataset_name
from nnunet_genesis.evaluation.segmentations import DEFAULT_FILE_ENDING, file_ending_from_dataset_json
from nnunet_genesis.workflows.recipe.state import check_same_recipe, finished_recipe_of_task, owns_output
from nnunet_genesis.workflows.recipe.folders import trained_checkpoint_sha256
from nnunet_genesis.checkpoint import sha256_of
from nnunet_genesis.pretrained_sources import read_pretrained
from nnunet_genesis.outputs import check_output_dir, check_output_file
from nnunet_genesis.trainers.attach import resolve_dataset_folder
from nnunet_genesis.workflows.recipe.render import render_commands, write_slurm
from nnunet_genesis.workflows.recipe.runner import run_recipe

_PARTNER = "\0partner"  # --baseline without a name: the plain partner of --trainer
RESTORATION_TRAINER = "nnUNetTrainerGenesisPretrain"  # pretraining's trainer: it writes a checkpoint, loads none


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run nnU-Net's Decathlon recipe with a Genesis start as one resumable command: attach, train every "
        "configuration and fold (--npz), select the best model or ensemble, predict the test images, apply the "
        "post-processing and package the submission. Finished folds are skipped, interrupted ones continued. "
        "See docs/recipe.md.")
    parser.add_argument("-d", "--dataset", required=True, help="dataset id or name (e.g. 4 or Dataset004_Hippocampus)")
    parser.add_argument("-c", "--checkpoint", required=True, type=Path, help="Genesis checkpoint (.pth) to start from")
    parser.add_argument("--configurations", nargs="+", metavar="CONF",
                        help="configurations to train and select from (default: all in the plans)")
    parser.add_argument("--folds", nargs="+", type=int, default=[0, 1, 2, 3, 4], metavar="F",
                        help="cross-validation folds (default: 0 1 2 3 4)")
    parser.add_argument("--trainer", default=DEFAULT_TRAINER, help=f"Genesis trainer of the 3D configurations "
                        f"(default: {DEFAULT_TRAINER}; nnUNetTrainerGenesis_smoke for a quick test)")
    parser.add_argument("--plain-trainer", metavar="TRAINER",
                        help="trainer of the 2D configurations and default --baseline (default: the trainer of the "
                             "same schedule from random weights, e.g. nnUNetTrainerScratch)")
    parser.add_argument("--baseline", nargs="?", const=_PARTNER, metavar="TRAINER",
                        help="also train and select from scratch (default trainer: the plain partner) and write a "
                             "compare report of the two cross-validations")
    parser.add_argument("--images-ts", type=Path, metavar="DIR",
                        help="test images to predict (default: nnUNet_raw/DATASET/imagesTs)")
    parser.add_argument("--task", metavar="TaskXX_Name", action="append",
                        help="Decathlon task of the submission (default: from the dataset name). Repeat it to put "
                             "the predictions of other tasks' finished recipes into the same zip, e.g. --task "
                             "Task04_Hippocampus --task Task03_Liver after 'recipe -d 3' has finished")
    parser.add_argument("-o", "--output", type=Path, metavar="submission.zip",
                        help="submission zip (default: WORK_DIR/submission.zip)")
    parser.add_argument("--device", choices=("cuda", "cpu", "mps"), default="cuda",
                        help="device of nnUNetv2_train and nnUNetv2_predict (default: cuda)")
    parser.add_argument("--plans", default="nnUNetPlans", help="source plans (default: nnUNetPlans)")
    parser.add_argument("--variant", default="nnUNetPlans_genesis",
                        help="name of the plans variant attach writes (default: nnUNetPlans_genesis)")
    parser.add_argument("--work-dir", type=Path, metavar="DIR",
                        help="recipe_state.json, logs, selections, predictions (default: "
                             "nnUNet_results/DATASET/genesis_recipe)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--print-commands", action="store_true",
                      help="print the commands in dependency order and run nothing")
    mode.add_argument("--slurm", type=Path, metavar="FILE",
                      help="write a SLURM submission script (job arrays per configuration and fold, then a "
                           "dependent job for selection, prediction and packaging) and run nothing")
    mode.add_argument("--finish", action="store_true",
                      help="only selection, comparison, prediction and packaging (the final SLURM job); refused "
                           "while a training is unfinished")
    parser.add_argument("--sbatch", action="append", default=[], metavar="OPTION",
                        help="with --slurm: an extra '#SBATCH OPTION' line for every job (repeatable), "
                             "e.g. --sbatch=--partition=gpu --sbatch=--time=48:00:00")


def _nnunet_folder(name: str) -> Path:
    from nnunetv2 import paths as nnunet_paths

    value = getattr(nnunet_paths, name)
    if not value:
        raise GenesisUserError(f"{name} is not set; the recipe works in the nnU-Net folders (see "
                               f"'nnunet-genesis env' and nnU-Net's documentation/setting_up_paths.md).")
    return Path(value).resolve()


def _configurations(args: argparse.Namespace, facts: DatasetFacts, plans: str) -> tuple[str, ...]:
    wanted = list(dict.fromkeys(args.configurations or facts.configurations))
    unknown = [c for c in wanted if c not in facts.configurations]
    if unknown:
        raise GenesisUserError(f"Unknown configuration(s) {', '.join(unknown)}: the plans {plans} of {facts.name} "
                               f"have {', '.join(facts.configurations)}.")
    missing = [c for c in ordered_configurations(facts, wanted) if not facts.configuration(c).preprocessed]
    if missing:
        raise GenesisUserError(
            f"Configuration(s) {', '.join(missing)} of {facts.name} are planned but not preprocessed (no data in "
            f"{facts.preprocessed_dir}/<data_identifier>). Run nnUNetv2_preprocess -d {facts.name} -plans_name "
            f"{plans} -c {' '.join(missing)}, or leave them out with --configurations.")
    return tuple(wanted)


def _folds(args: argparse.Namespace, facts: DatasetFacts) -> tuple[int, ...]:
    folds = list(args.folds)
    where = "splits_final.json" if facts.splits_file else "nnU-Net's default 5-fold split (no splits_final.json yet)"
    bad = [f for f in folds if not 0 <= f < facts.n_splits]
    if bad:
        raise GenesisUserError(f"Fold(s) {', '.join(map(str, bad))} do not exist: {facts.name} has folds 0-"
                               f"{facts.n_splits - 1} ({where}).")
    if len(set(folds)) != len(folds):
        raise GenesisUserError(f"--folds {' '.join(map(str, folds))} names a fold twice.")
    return tuple(folds)


def _images_ts(args: argparse.Namespace, raw: Path | None, dataset: str, ending: str) -> Path:
    """The test images: an existing, readable folder holding readable images of the dataset's file
    ending (the images themselves are read in full by package-msd before the zip is written)."""
    folder = args.images_ts if args.images_ts is not None else (raw / dataset / "imagesTs" if raw else None)
    if folder is None:
        raise GenesisUserError("nnUNet_raw is not set and no --images-ts was given: the recipe needs the test images.")
    folder = Path(folder).expanduser().resolve()
    hint = "give the task's imagesTs with --images-ts."
    if not folder.exists():
        raise GenesisUserError(f"Test images folder {folder} does not exist; {hint}")
    if not folder.is_dir():
        raise GenesisUserError(f"Test images folder {folder} is a file, not a folder; {hint}")
    if not os.access(folder, os.R_OK | os.X_OK):
        raise GenesisUserError(f"Test images folder {folder} cannot be read (permission denied).")
    files = [p for p in folder.iterdir() if p.is_file()]
    images = [p for p in files if p.name.endswith(ending)]
    if not images:
        found = sorted({"".join(p.suffixes) or p.name for p in files})
        raise GenesisUserError(f"Test images folder {folder} holds no '*{ending}' images (the file ending of {dataset}'s "
                               f"dataset.json)" + (f"; it holds {', '.join(found[:5])} files" if found else "") + f"; {hint}")
    unreadable = sorted(p.name for p in images if not os.access(p, os.R_OK) or p.stat().st_size == 0)
    if unreadable:
        raise GenesisUserError(f"Test images folder {folder}: {', '.join(unreadable[:5])} cannot be read or are empty.")
    return folder


def _check_trainer(trainer: str) -> None:
    """Refuse a --trainer that does not load the Genesis checkpoint (the run would silently start from
    scratch). Accepted: the registry's trainers and, by name, the user's own subclasses of
    nnUNetTrainerGenesis, which must be named nnUNetTrainerGenesis* (the class is found by nnU-Net only
    when it trains, so the name is what can be checked now)."""
    if trainer in genesis_trainers():
        return
    if trainer.startswith(TRAINER_PREFIX) and not trainer.startswith(RESTORATION_TRAINER):
        return
    raise GenesisUserError(
        f"--trainer {trainer}: does not load the Genesis checkpoint, so the Genesis arm would train from random "
        f"weights. --trainer takes {TRAINER_PREFIX} or one of its variants (docs/trainers.md), or a subclass of "
        f"{TRAINER_PREFIX} of your own named {TRAINER_PREFIX}*; a trainer from scratch belongs in --baseline "
        f"{trainer}.")


def _tasks(args: argparse.Namespace, dataset: str, results: Path) -> tuple[str | None, tuple[OtherTask, ...]]:
    """This recipe's Decathlon task and the other tasks whose finished recipes go into the same zip.

    This recipe's task is the dataset's own (by its name) or else the first ``--task``; every
    other ``--task`` must name a task whose recipe has finished its post-processing."""

    names = [get_task(n).name for n in args.task or []]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise GenesisUserError(f"--task {', '.join(twice)} is given twice; name each task once.")
    own = task_for_dataset_name(dataset)
    if own is None:
        if not names:
            if args.output is not None:
                raise GenesisUserError(f"{dataset} is not named like a Decathlon task, so the submission's task is "
                                       f"unknown; give it with --task TaskXX_Name.")
            return None, ()
        mine = names[0]
    else:
        mine = own.name
        if names and mine not in names:
            raise GenesisUserError(f"{dataset} is {mine}, and --task {' '.join(names)} leaves it out: the zip would "
                                   f"not hold this recipe's predictions. Add --task {mine}.")
    return mine, tuple(finished_recipe_of_task(results, n) for n in names if n != mine)


def _attach_needed(settings: RecipeSettings, facts: DatasetFacts) -> bool:
    """Whether attach must (re)write the variant; refuses a variant that names another checkpoint."""
    import json

    if not any(facts.configuration(c).is_3d for c in settings.configurations):
        return False
    variant = facts.preprocessed_dir / f"{settings.variant}.json"
    if not variant.is_file():
        return True
    try:
        block = json.loads(variant.read_text()).get("genesis")
    except (OSError, ValueError, AttributeError) as e:
        raise GenesisUserError(f"Plans variant {variant} cannot be read ({e}).") from None
    if not isinstance(block, dict):
        raise GenesisUserError(f"Plans {variant} exist and name no Genesis checkpoint; choose another --variant.")
    if block.get("sha256") != settings.checkpoint_sha256:
        raise GenesisUserError(
            f"Plans variant {variant} names another checkpoint ({block.get('checkpoint')}, sha256 "
            f"{str(block.get('sha256'))[:12]}...) than {settings.checkpoint} (sha256 {settings.checkpoint_sha256[:12]}...); "
            f"models trained with it started from those weights. Give this checkpoint its own --variant.")
    return False


def _refuse_foreign_results(settings: RecipeSettings, facts: DatasetFacts, results: Path) -> None:
    for c in ordered_configurations(facts, settings.configurations):
        model = settings.model_for("genesis", c, facts.configuration(c).is_3d)
        folder = results / facts.name / model.identifier
        sha = trained_checkpoint_sha256(folder) if model.plans == settings.variant else None
        if sha is not None and sha != settings.checkpoint_sha256:
            raise GenesisUserError(
                f"Results folder {folder} holds models trained from another checkpoint (sha256 {sha[:12]}...), not "
                f"{settings.checkpoint} ({settings.checkpoint_sha256[:12]}...). Move it away or use another --variant.")


def resolve(args: argparse.Namespace):
    """Check everything and build the plan. Runs nothing."""

    from nnunetv2.paths import nnUNet_raw

    if args.sbatch and args.slurm is None:
        raise GenesisUserError("--sbatch adds lines to the SLURM script; it needs --slurm FILE.")
    _check_trainer(args.trainer)
    folder = resolve_dataset_folder(args.dataset)
    results = _nnunet_folder("nnUNet_results")
    raw = Path(nnUNet_raw).resolve() if nnUNet_raw else None
    facts = read_dataset_facts(folder, args.plans)
    configurations = _configurations(args, facts, args.plans)
    folds = _folds(args, facts)

    has_2d = any(not facts.configuration(c).is_3d for c in configurations)
    plain = args.plain_trainer or scratch_partner(args.trainer) or ""
    if (has_2d or args.baseline == _PARTNER) and not plain:
        plain_partner(args.trainer)  # raises, naming the table
    baseline = None if args.baseline is None else plain if args.baseline == _PARTNER else args.baseline
    if baseline == args.trainer:
        raise GenesisUserError(f"--baseline {baseline} is the Genesis trainer itself; the baseline trains from "
                               f"scratch (e.g. {plain or 'nnUNetTrainerScratch'}).")

    checkpoint = args.checkpoint.expanduser().resolve()
    if not checkpoint.is_file():
        raise GenesisUserError(f"Checkpoint {checkpoint} does not exist.")
    work = WorkDir((args.work_dir or results / facts.name / "genesis_recipe").expanduser().resolve())
    check_output_dir(work.root, "--work-dir")
    task, other_tasks = _tasks(args, facts.name, results)
    output = args.output.expanduser().resolve() if args.output is not None else None
    if task is not None:
        zip_path = check_output_file(output or work.default_zip, "-o")
        if zip_path.exists() and not owns_output(work, zip_path):
            raise GenesisUserError(f"-o {zip_path} already exists and was not written by this recipe; remove it "
                                   f"or choose another name.")
    settings = RecipeSettings(
        dataset=facts.name, checkpoint=checkpoint, checkpoint_sha256=sha256_of(checkpoint),
        configurations=configurations, folds=folds, trainer=args.trainer, plain_trainer=plain,
        baseline_trainer=baseline, source_plans=args.plans, variant=args.variant, device=args.device,
        images_ts=_images_ts(args, raw, facts.name, file_ending_from_dataset_json(folder) or DEFAULT_FILE_ENDING), task=task, other_tasks=other_tasks, output=output,
        work_dir=work.root)
    check_same_recipe(work, settings)
    read_pretrained(checkpoint)  # refuses a file of none of the accepted kinds (attach checks the transfer)
    attach_needed = _attach_needed(settings, facts)
    _refuse_foreign_results(settings, facts, results)
    return build_plan(settings, facts, results, attach_needed)


def run(args: argparse.Namespace) -> int:
    plan = resolve(args)
    if args.print_commands:

        print(render_commands(plan), end="")
        return 0
    if args.slurm is not None:

        path = write_slurm(plan, args.slurm, args.sbatch)
        print(f"wrote {path}: submit it from a login node with 'bash {path}'")
        return 0

    return run_recipe(plan, finish_only=args.finish)
