"""The plan as text for clusters: ``--print-commands`` (a shell script of the commands in dependency
order) and ``--slurm`` (a script that submits SLURM jobs with ``sbatch``; no scheduler of our own).

SLURM layout: an attach job (when the variant must be written), one job array per group of
training tasks (one task per configuration and fold; a stage another builds on, ``3d_lowres``,
gets its own array and the cascade's array waits for it with ``--dependency=afterok``), and a
final job, after every array, that runs ``nnunet-genesis recipe ... --finish``: selection,
comparison, prediction and packaging. An array task skips a finished fold and continues an
interrupted one (``--c``), so the script can simply be submitted again after a failure.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Sequence

from nnunet_genesis.safe_text import one_line
from nnunet_genesis.environment import EXT_TRAINER_VAR, NNUNET_FOLDERS, ext_trainer_value, format_assignment
from nnunet_genesis.outputs import atomic_write_text, check_output_file, text_starting_with
from nnunet_genesis.workflows.recipe.folders import FINISHED, SELECTION_FILES
from nnunet_genesis.workflows.recipe.plan import (ATTACH, COMPARE, CV_TABLE, SELECT, TRAIN, RecipePlan, RecipeStep,
                                        prediction_steps)
from nnunet_genesis.workflows.recipe.settings import GENESIS_ARM, RecipeSettings
from nnunet_genesis.workflows.recipe.runner import training_status


SLURM_HEADER = "# SLURM jobs of the nnunet-genesis recipe for"


def _line(command: Sequence[str]) -> str:
    return shlex.join(command)


def check_script_values(plan: RecipePlan, sbatch: Sequence[str] = ()) -> None:
    """Refuse a value with a newline or another control character before it reaches a script: in a
    comment or an ``#SBATCH`` line the rest of the line would run as a shell command (values in
    commands are quoted as well)."""
    s = plan.settings
    named = [("--sbatch", v) for v in sbatch] + [("recipe setting", v) for v in recipe_argv(s)]
    named += [("nnUNet_results", str(plan.results_root))]
    named += [(f"--task {t.task}", str(p)) for t in s.other_tasks for p in (t.predictions, t.images)]
    for what, value in named:
        one_line(value, what)


def environment_lines() -> list[str]:
    """The variables every command needs, as this process sees them."""
    lines = [format_assignment(name, os.environ[name]) for name in NNUNET_FOLDERS if os.environ.get(name)]
    lines.append(format_assignment(EXT_TRAINER_VAR, ext_trainer_value(os.environ.get(EXT_TRAINER_VAR))))
    return lines


def recipe_argv(s: RecipeSettings) -> list[str]:
    """``nnunet-genesis recipe`` arguments that reproduce these settings (the final SLURM job's)."""
    argv = ["-d", s.dataset, "-c", str(s.checkpoint), "--configurations", *s.configurations,
            "--folds", *map(str, s.folds), "--trainer", s.trainer]
    argv += ["--plain-trainer", s.plain_trainer] if s.plain_trainer else []
    argv += ["--baseline", s.baseline_trainer] if s.baseline_trainer else []
    argv += ["--plans", s.source_plans, "--variant", s.variant, "--device", s.device, "--work-dir", str(s.work_dir)]
    argv += ["--images-ts", str(s.images_ts)] if s.images_ts else []
    argv += ["--task", s.task] if s.task else []
    argv += ["-o", str(s.output)] if s.output else []
    return argv


def _selection_copy(plan: RecipePlan, step: RecipeStep) -> list[str]:
    source = plan.results_root / plan.facts.name
    return [_line(["mkdir", "-p", str(step.output)]),
            _line(["cp", *(str(source / n) for n in SELECTION_FILES), str(step.output) + "/"])]


def _selection_info(plan: RecipePlan) -> dict | None:
    import json

    path = plan.work.selection(GENESIS_ARM) / SELECTION_FILES[0]
    return json.loads(path.read_text()) if path.is_file() else None


def render_commands(plan: RecipePlan) -> str:
    """Every command in dependency order, finished folds as comments."""

    s = plan.settings
    check_script_values(plan)
    out = [f"# nnunet-genesis recipe for {s.dataset}: configurations {' '.join(s.configurations)}, folds "
           f"{' '.join(map(str, s.folds))}, trainer {s.trainer}"
           + (f", baseline {s.baseline_trainer}" if s.baseline_trainer else ""),
           "# Run with the package's environment on PATH; nnU-Net finds the Genesis trainers through nnUNet_extTrainer.",
           *environment_lines()]
    out += [f"# note: {n}" for n in plan.notes]
    sections = {ATTACH: "attach the checkpoint (plans variant)",
                TRAIN: "training, in dependency order (--npz: ensembling needs the validation probabilities)",
                SELECT: "selection (nnU-Net writes inference_information.json per dataset: keep each arm's copy)",
                COMPARE: "Genesis vs baseline"}
    current = None
    for step in plan.steps:
        if step.kind in sections and step.kind != current:
            current = step.kind
            out.append(f"\n# --- {sections[step.kind]}")
        if step.kind == TRAIN:
            status = training_status(plan, step)
            if status.state == FINISHED:
                out.append(f"# finished ({status.reason}): {_line(step.command)}")
            else:
                out.append(_line(step.train_command(status.state))
                           + ("" if status.state == "fresh" else f"  # {status.reason}"))
        elif step.kind == SELECT:
            out.append(_line(step.command))
            out += _selection_copy(plan, step)
        elif step.kind == CV_TABLE:
            out.append(f"# per-fold Dice table {step.output}/cross_validation.md: written by 'nnunet-genesis recipe "
                       f"--finish'")
        else:
            out.append(_line(step.command))
    out.append("\n# --- prediction of the test images, post-processing, submission")
    info = _selection_info(plan)
    if info is None:
        out.append(f"# These follow the selection ({plan.work.selection(GENESIS_ARM)}/{SELECTION_FILES[0]}): "
                   f"nnUNetv2_predict per chosen model, nnUNetv2_ensemble if an ensemble wins, "
                   f"nnUNetv2_apply_postprocessing, package-msd. Print them again after the selection, or run them with:")
        out.append(_line(["nnunet-genesis", "recipe", *recipe_argv(s), "--finish"]))
    else:
        out += [_line(step.command) for step in prediction_steps(plan, info)]
    return "\n".join(out) + "\n"


def _train_groups(plan: RecipePlan) -> list[tuple[str, list[RecipeStep]]]:
    """Training steps in job arrays: a stage that others build on, and each stage that builds on
    one, get their own array (so dependencies are whole arrays); the rest share one."""
    steps = plan.of_kind(TRAIN)
    names = {st.name: st for st in steps}
    needed = {n for st in steps for n in st.needs if n in names}
    needed_models = {names[n].model for n in needed}
    groups: dict[str, list[RecipeStep]] = {}
    for st in steps:
        own = st.model in needed_models or any(n in names for n in st.needs)
        key = st.model.identifier if own else "train"
        groups.setdefault(key, []).append(st)
    return list(groups.items())


_TRAIN_FOLD = r'''train_fold() {  # FOLD_DIR, then the nnUNetv2_train command
  local dir=$1; shift
  if [ -f "$dir/checkpoint_final.pth" ] && [ -f "$dir/validation/summary.json" ] \
     && compgen -G "$dir/validation/*.npz" > /dev/null; then
    echo "finished earlier: $dir"; return 0
  fi
  if [ -f "$dir/checkpoint_final.pth" ]; then "$@" --val           # only the final validation is missing
  elif [ -f "$dir/checkpoint_latest.pth" ] || [ -f "$dir/checkpoint_best.pth" ]; then "$@" --c  # interrupted
  else "$@"; fi
}'''


def _job(name: str, body: list[str], sbatch: Sequence[str], logs: Path, array: int | None = None,
         gpu: bool = False) -> list[str]:
    log = f"--output={logs}/{name}_%A_%a.out" if array else f"--output={logs}/{name}_%j.out"
    head = ["#!/bin/bash", f"#SBATCH --job-name={shlex.quote(name)}", f"#SBATCH {shlex.quote(log)}"]
    head += [f"#SBATCH --array=0-{array - 1}"] if array else []
    head += ["#SBATCH --gres=gpu:1"] if gpu else []
    head += [f"#SBATCH {shlex.quote(opt)}" for opt in sbatch]  # sbatch reads quotes in #SBATCH lines
    preamble = ["set -euo pipefail", format_assignment("PATH", f"{Path(sys.executable).parent}") + ':"$PATH"',
                *environment_lines()]
    return head + preamble + body


def render_slurm(plan: RecipePlan, sbatch: Sequence[str] = (), path: Path | None = None) -> str:
    s = plan.settings
    check_script_values(plan, sbatch)
    gpu = s.device == "cuda"
    logs = plan.work.root / "slurm_logs"
    jobs: list[tuple[str, list[str], str]] = []  # (shell variable, job script lines, dependency expression)
    job_of_step: dict[str, str] = {}
    attach = plan.of_kind(ATTACH)
    if attach:
        jobs.append(("attach", _job("genesis-attach", [_line(attach[0].command)], sbatch, logs), ""))
        job_of_step[attach[0].name] = "attach"
    summary = []
    for i, (key, steps) in enumerate(_train_groups(plan), 1):
        var = f"train{i}"
        deps = sorted({job_of_step[n] for st in steps for n in st.needs if n in job_of_step})
        cases = [f"  {k}) train_fold {shlex.quote(str(plan.model_dir(st.model) / f'fold_{st.fold}'))} "
                 f"{_line(st.command)} ;;" for k, st in enumerate(steps)]
        body = [_TRAIN_FOLD, 'case "$SLURM_ARRAY_TASK_ID" in', *cases,
                '  *) echo "no task $SLURM_ARRAY_TASK_ID" >&2; exit 2 ;;', "esac"]
        jobs.append((var, _job(f"genesis-{var}", body, sbatch, logs, array=len(steps), gpu=gpu),
                     ":".join(f"${d}" for d in deps)))
        for st in steps:
            job_of_step[st.name] = var
        summary.append(f"# ${var}: {len(steps)} task(s): " + ", ".join(
            f"{m.configuration} folds {' '.join(str(st.fold) for st in steps if st.model == m)} ({m.trainer})"
            for m in dict.fromkeys(st.model for st in steps)) + (f"; after {', '.join(deps)}" if deps else ""))
    final_deps = sorted(set(job_of_step.values()))
    final = _line(["nnunet-genesis", "recipe", *recipe_argv(s), "--finish"])
    jobs.append(("final", _job("genesis-finish", [final], sbatch, logs, gpu=gpu), ":".join(f"${d}" for d in final_deps)))

    out = ["#!/bin/bash", f"{SLURM_HEADER} {s.dataset}, written by "
           f"'nnunet-genesis recipe --slurm'. Submit from a login node: bash {shlex.quote(str(path or 'THIS_FILE'))}",
           "# attach -> training arrays (one task per configuration and fold) -> final job (selection, comparison,",
           "# prediction, post-processing, package-msd). Submitting again skips finished folds.",
           *summary, f"# $final: {final}", *[f"# note: {n}" for n in plan.notes],
           "set -euo pipefail", _line(["mkdir", "-p", str(logs)])]
    for var, script, deps in jobs:
        dep = f" --dependency=afterok:{deps}" if deps else ""
        out += [f"{var}=$(sbatch --parsable{dep} <<'GENESIS_JOB'", *script, "GENESIS_JOB", ")",
                f'echo "{var}: job ${{{var}}}"']
    return "\n".join(out) + "\n"


def write_slurm(plan: RecipePlan, path: Path, sbatch: Sequence[str] = ()) -> Path:
    """Write the SLURM script; an existing file is replaced only if it is such a script."""
    path = check_output_file(Path(path).expanduser().resolve(), "--slurm", inputs=(plan.settings.checkpoint,),
                             ours=text_starting_with(f"#!/bin/bash\n{SLURM_HEADER} "))
    atomic_write_text(path, render_slurm(plan, sbatch, path))
    path.chmod(path.stat().st_mode | 0o111)
    return path
