"""Executing a recipe plan: one progress line per step, the commands' output in ``WORK/logs``.

Training folds are skipped when nnU-Net's files say they are finished, continued with ``--c``
when interrupted, re-validated with ``--val`` when only the validation is missing. Every other
step is skipped when ``state.json`` records it with the same command and nothing it
depends on ran in this invocation; otherwise its output folder is removed and it runs again.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.outputs import atomic_write_bytes
from nnunet_genesis.workflows.pipeline import Workspace, command_path, format_seconds, genesis_command, remove, run_logged
from nnunet_genesis.workflows.recipe.folders import FINISHED, SELECTION_FILES, fold_status
from nnunet_genesis.workflows.recipe.plan import (ATTACH, COMPARE, CV_TABLE, GENESIS_CLI, PACKAGE, SELECT, TRAIN, RecipePlan,
                                        RecipeStep, prediction_steps)
from nnunet_genesis.workflows.recipe.settings import GENESIS_ARM
from nnunet_genesis.workflows.recipe.state import RecipeState, work_lock
from nnunet_genesis.trainers.attach import attach
from nnunet_genesis.workflows.recipe.report import write_cross_validation


class _UserFolders(Workspace):
    """The user's nnU-Net folders with the recipe's work folder as root: ``env()`` is the
    environment every pipeline command gets (trainers found, one export worker per two cores,
    passive OpenMP waits), without a workspace's private nnU-Net folders."""

    def __init__(self, work_root: Path, raw: Path | None, preprocessed: Path, results: Path):
        super().__init__(work_root)
        self.raw, self.preprocessed, self.results = raw, preprocessed, results

    def env(self) -> dict[str, str]:
        env = super().env()
        if self.raw is None:  # the recipe needs no raw data when --images-ts is given
            env.pop("nnUNet_raw", None)
        return env


def next_stages_in_plan(plan: RecipePlan, configuration: str) -> tuple[str, ...]:
    """The stages built on ``configuration`` that the plan trains (their inputs must exist)."""
    trained = {s.model.configuration for s in plan.of_kind(TRAIN)}
    return tuple(n for n in plan.facts.configuration(configuration).next_stages if n in trained)


def training_status(plan: RecipePlan, step: RecipeStep):
    return fold_status(plan.model_dir(step.model) / f"fold_{step.fold}",
                       next_stages_in_plan(plan, step.model.configuration))


def resolve_command(command: tuple[str, ...]) -> list[str]:
    """A plan command as this machine runs it (this interpreter, the venv's console scripts)."""
    program, *rest = command
    if program == GENESIS_CLI:
        return genesis_command(*rest)
    if program == "python":
        return [sys.executable, *rest]
    return [command_path(program), *rest]


class RecipeRunner:
    def __init__(self, plan: RecipePlan, finish_only: bool = False):
        import os

        self.plan, self.finish_only = plan, finish_only
        self.work = plan.work
        raw = os.environ.get("nnUNet_raw")
        self.folders = _UserFolders(self.work.root, Path(raw).resolve() if raw else None,
                                    plan.facts.preprocessed_dir.parent, plan.results_root)
        self.ran: set[str] = set()
        self.index = 0

    # -- output
    def line(self, text: str) -> None:
        print(text, flush=True)

    def _log(self, step: RecipeStep) -> Path:
        return self.work.logs / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', step.name)}.log"

    def _skip(self, step: RecipeStep, why: str) -> None:
        self.index += 1
        self.line(f"[{self.index:>2}] {step.label}: skipped ({why})")

    def _execute(self, step: RecipeStep, command: tuple[str, ...], state: RecipeState, info: dict | None = None,
                 in_process=None) -> None:
        self.index += 1
        log = self._log(step)
        shown = " ".join(command) if command else "(in-process)"
        self.line(f"[{self.index:>2}] {step.label}: running\n      $ {shown}\n      log: {log}")
        if step.output is not None and step.kind not in (SELECT, PACKAGE, CV_TABLE):
            remove([step.output])  # a partial output of an interrupted run
        t0 = time.monotonic()
        if in_process is not None:
            extra = in_process()
        else:
            run_logged(resolve_command(command), log, self.folders.env(), cwd=self.work.root)
            extra = None
        seconds = time.monotonic() - t0
        self.ran.add(step.name)
        state.record(step.name, command, seconds, {**(info or {}), **(extra or {})})
        self.line(f"[{self.index:>2}] {step.label}: done in {format_seconds(seconds)}")

    def _recorded_and_current(self, step: RecipeStep, state: RecipeState) -> bool:
        return (state.recorded(step.name, step.command) and not (set(step.needs) & self.ran)
                and (step.output is None or step.output.exists()))

    # -- steps
    def attach(self, step: RecipeStep) -> float:
        """Write the plans variant (nnunet-genesis attach, in this process so that a checkpoint that
        does not fit is refused with attach's message, exit 2). Runs before the work folder exists:
        a refused checkpoint leaves nothing behind."""

        s = self.plan.settings
        three_d = [c for c in self.plan.trained_configurations if self.plan.facts.configuration(c).is_3d]
        self.index += 1
        self.line(f"[{self.index:>2}] {step.label}: running\n      $ {' '.join(step.command)}")
        t0 = time.monotonic()
        target = attach(s.dataset, s.checkpoint, s.source_plans, s.variant, three_d)
        for name, f in (json.loads(target.read_text())["genesis"].get("transfer_check") or {}).items():
            self.line(f"      {name}: {f['encoder_fraction']:.1%} of encoder and {f['decoder_fraction']:.1%} "
                      f"of decoder parameters transfer")
        seconds = time.monotonic() - t0
        self.ran.add(step.name)
        self.line(f"[{self.index:>2}] {step.label}: done in {format_seconds(seconds)}")
        return seconds

    def train(self, step: RecipeStep, state: RecipeState) -> None:
        status = training_status(self.plan, step)
        if status.state == FINISHED:
            self._skip(step, f"finished earlier: {status.reason}")
            return
        command = step.train_command(status.state)
        self._execute(step, command, state, {"started_as": status.state})
        after = training_status(self.plan, step)
        if after.state != FINISHED:
            raise GenesisUserError(f"{' '.join(command)} ended without finishing fold {step.fold} ({after.reason}); "
                                   f"see {self._log(step)}.", exit_code=1)

    def select(self, step: RecipeStep, state: RecipeState) -> None:
        if self._recorded_and_current(step, state) and (step.output / SELECTION_FILES[0]).is_file():
            self._skip(step, "selected earlier from the same models")
            return
        source = self.plan.results_root / self.plan.facts.name

        def do() -> dict:
            run_logged(resolve_command(step.command), self._log(step), self.folders.env(), cwd=self.work.root)
            # nnU-Net writes one inference_information.json per dataset: keep this arm's copy
            for name in SELECTION_FILES:
                atomic_write_bytes(step.output / name, (source / name).read_bytes())
            best = json.loads((step.output / SELECTION_FILES[0]).read_text())["best_model_or_ensemble"]
            chosen = " + ".join(f"{m['configuration']} ({m['trainer']})" for m in best["selected_model_or_models"])
            self.line(f"      chosen: {chosen}; cross-validation Dice {best['result_on_crossval_pre_pp']:.4f}, "
                      f"{best['result_on_crossval_post_pp']:.4f} after post-processing")
            return {"chosen": chosen}

        self._execute(step, step.command, state, in_process=do)

    def generic(self, step: RecipeStep, state: RecipeState) -> None:
        if self._recorded_and_current(step, state):
            self._skip(step, "done earlier with the same inputs")
            return
        info = {"output": str(step.output)} if step.kind == PACKAGE else None
        self._execute(step, step.command, state, info)

    def cv_table(self, step: RecipeStep, state: RecipeState) -> None:
        self._execute(step, (), state, in_process=lambda: {"report": str(write_cross_validation(self.plan))})

    # -- the whole recipe
    def unfinished_trainings(self) -> list[str]:
        return [f"{s.model.identifier} fold {s.fold} ({training_status(self.plan, s).reason})"
                for s in self.plan.of_kind(TRAIN) if training_status(self.plan, s).state != FINISHED]

    def run(self) -> int:
        plan, s = self.plan, self.plan.settings
        if self.finish_only:
            unfinished = self.unfinished_trainings()
            if unfinished:
                raise GenesisUserError(f"--finish runs only after every training; unfinished: {'; '.join(unfinished)}. "
                                       f"Run the recipe without --finish to train them.")
        t0 = time.monotonic()
        self.line(f"nnunet-genesis recipe: {s.dataset}, configurations {' '.join(s.configurations)}, folds "
                  f"{' '.join(map(str, s.folds))}, {s.trainer}" + (f" vs {s.baseline_trainer}" if s.baseline_trainer
                                                                 else ""))
        self.line(f"work folder {self.work.root} (state: {self.work.state_file.name})")
        for note in plan.notes:
            self.line(f"note: {note}")
        attached = {}
        for step in plan.of_kind(ATTACH):
            if self.finish_only:
                self._skip(step, "--finish: the trainings that need it are done")
            else:
                attached[step] = self.attach(step)
        with work_lock(self.work):
            state = RecipeState(self.work, s)
            state.save()
            for step, seconds in attached.items():
                state.record(step.name, step.command, seconds)
            for step in plan.steps:
                if step.kind == TRAIN:
                    self.train(step, state)
                elif step.kind == SELECT:
                    self.select(step, state)
                elif step.kind == CV_TABLE:
                    self.cv_table(step, state)
                elif step.kind == COMPARE:
                    self.generic(step, state)
            info = json.loads((plan.work.selection(GENESIS_ARM) / SELECTION_FILES[0]).read_text())
            for step in prediction_steps(plan, info):
                self.generic(step, state)
        self.line(f"recipe finished in {format_seconds(time.monotonic() - t0)}")
        if s.task:
            self.line(f"submission: {s.output or self.work.default_zip}")
        else:
            self.line(f"predictions: {self.work.predictions / 'final'} (not packaged: no Decathlon task; give --task)")
        return 0


def run_recipe(plan: RecipePlan, finish_only: bool = False) -> int:
    return RecipeRunner(plan, finish_only).run()
