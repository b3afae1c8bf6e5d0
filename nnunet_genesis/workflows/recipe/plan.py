"""The recipe as a plan: the steps, their commands and what each one waits for. Pure: built from
the settings and the dataset's facts, never by looking at what has run. The runner executes a
plan, ``--print-commands`` and ``--slurm`` render it (``render``).

Order: attach -> ``nnUNetv2_train ... --npz`` per (configuration, fold) -> selection per arm
(``nnUNetv2_find_best_configuration``) -> compare (``--baseline``) -> prediction of the test
images as the selection's ``inference_information.json`` says (``prediction_steps``: known only
once the selection ran) -> ``nnUNetv2_apply_postprocessing`` -> ``package-msd``.

The cascade: nnU-Net 2.8's trainer of ``3d_cascade_fullres`` reads the segmentations of the
previous stage from ``nnUNet_results/DATASET/<same trainer>__<same plans>__3d_lowres/
predicted_next_stage/3d_cascade_fullres`` (``nnUNetTrainer.__init__``,
``folder_with_segs_from_previous_stage``); the lowres final validation writes them, one per
validation case of its fold. A cascade fold trains on the cases of the *other* folds, so every
lowres fold of the splits must finish before any cascade fold starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.workflows.recipe.folders import CONTINUE, VALIDATE, DatasetFacts, WorkDir
from nnunet_genesis.workflows.recipe.settings import BASELINE_ARM, GENESIS_ARM, Model, RecipeSettings

ATTACH, TRAIN, SELECT, COMPARE, CV_TABLE = "attach", "train", "select", "compare", "cv_table"
PREDICT, ENSEMBLE, POSTPROCESS, PACKAGE = "predict", "ensemble", "postprocess", "package"
GENESIS_CLI = "nnunet-genesis"
# find_best_configuration with an explicit list of models (see selection)
SELECT_MODULE = ("python", "-m", "nnunet_genesis.workflows.recipe.selection")


@dataclass(frozen=True)
class RecipeStep:
    """One command of the recipe. ``command`` starts with a program name as a user would type it
    (``nnUNetv2_train``, ``nnunet-genesis``, ``python``); an empty command is done in-process."""

    name: str
    kind: str
    label: str
    command: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    model: Model | None = None
    fold: int | None = None
    arm: str | None = None
    output: Path | None = None

    def train_command(self, state: str) -> tuple[str, ...]:
        """The training command for a fold in ``state``: ``--c`` continues an interrupted
        training, ``--val`` redoes only the final validation of a finished one."""
        if self.kind != TRAIN:
            raise ValueError(f"{self.name} is not a training step")
        return self.command + (("--c",) if state == CONTINUE else ("--val",) if state == VALIDATE else ())


@dataclass(frozen=True)
class RecipePlan:
    settings: RecipeSettings
    facts: DatasetFacts
    results_root: Path
    steps: tuple[RecipeStep, ...]
    trained_configurations: tuple[str, ...] = ()  # the requested ones and the stages they build on, in order
    notes: tuple[str, ...] = ()

    @property
    def work(self) -> WorkDir:
        return WorkDir(self.settings.work_dir)

    def of_kind(self, *kinds: str) -> list[RecipeStep]:
        return [s for s in self.steps if s.kind in kinds]

    def step(self, name: str) -> RecipeStep:
        return next(s for s in self.steps if s.name == name)

    def model_dir(self, model: Model) -> Path:
        return self.results_root / self.facts.name / model.identifier

    def arm_models(self, arm: str) -> list[Model]:
        """The models an arm's selection chooses from (the requested configurations)."""
        s = self.settings
        return [s.model_for(arm, c, self.facts.configuration(c).is_3d) for c in s.configurations]


def _train_step(settings: RecipeSettings, facts: DatasetFacts, model: Model, fold: int, arm: str,
                needs: tuple[str, ...]) -> RecipeStep:
    cmd = ("nnUNetv2_train", facts.name, model.configuration, str(fold), "-tr", model.trainer, "-p", model.plans,
           "--npz", "-device", settings.device)
    return RecipeStep(f"train/{model.identifier}/fold_{fold}", TRAIN,
                      f"train {model.configuration} fold {fold} ({model.trainer}, {model.plans})", cmd, needs,
                      model, fold, arm)


def ordered_configurations(facts: DatasetFacts, wanted: Sequence[str]) -> list[str]:
    """The wanted configurations plus the stages they build on, each after its previous stage."""
    chosen: list[str] = []
    for name in wanted:
        chain = [name]
        while facts.configuration(chain[-1]).previous_stage:
            chain.append(facts.configuration(chain[-1]).previous_stage)
        chosen += [c for c in reversed(chain) if c not in chosen]
    ordered: list[str] = []
    while len(ordered) < len(chosen):
        ready = [c for c in chosen if c not in ordered
                 and (facts.configuration(c).previous_stage in (None, *ordered))]
        ordered.append(min(ready, key=lambda c: list(facts.configurations).index(c)))
    return ordered


def is_product(models: Sequence[Model]) -> bool:
    """Whether the models are every (trainer, plans, configuration) combination of their own
    trainers, plans and configurations: only then can the stock command line (which takes the
    three lists and combines all of them) name exactly these models."""
    trainers, plans, configs = ({getattr(m, a) for m in models} for a in ("trainer", "plans", "configuration"))
    return len(set(models)) == len(trainers) * len(plans) * len(configs)


def _unique(values) -> list[str]:
    return list(dict.fromkeys(values))


def select_command(dataset: str, models: Sequence[Model], folds: Sequence[int]) -> tuple[str, ...]:
    """``nnUNetv2_find_best_configuration`` over exactly ``models``.

    nnU-Net 2.8's command line takes -c, -tr and -p lists and evaluates every combination of
    them, stopping with an error at the first combination that has no results folder. When the
    Genesis arm mixes a 2D model (plain trainer, source plans) with 3D ones (Genesis trainer,
    variant plans), that product names models that were never trained; the same selection
    then runs through nnU-Net's Python function ``find_best_configuration`` with the explicit
    model list (``selection``)."""
    f = tuple(str(x) for x in folds)
    if is_product(models):
        return ("nnUNetv2_find_best_configuration", dataset, "-c", *_unique(m.configuration for m in models),
                "-tr", *_unique(m.trainer for m in models), "-p", *_unique(m.plans for m in models), "-f", *f)
    model_args = [a for m in models for a in ("-m", m.trainer, m.plans, m.configuration)]
    return (*SELECT_MODULE, dataset, *model_args, "-f", *f)


def build_plan(settings: RecipeSettings, facts: DatasetFacts, results_root: Path,
               attach_needed: bool = True) -> RecipePlan:
    """The recipe's steps up to the selection and the comparison (prediction follows the selection)."""
    steps: list[RecipeStep] = []
    notes: list[str] = []
    work = WorkDir(settings.work_dir)
    configurations = ordered_configurations(facts, settings.configurations)
    three_d = [c for c in configurations if facts.configuration(c).is_3d]
    attach_name = "attach"
    if attach_needed:
        cmd = (GENESIS_CLI, "attach", "-d", facts.name, "-c", str(settings.checkpoint), "-p", settings.source_plans,
               "-n", settings.variant)
        cmd += ("--configurations", *three_d) if three_d else ()
        steps.append(RecipeStep(attach_name, ATTACH, f"attach {settings.checkpoint.name} as {settings.variant}", cmd))
    for c in settings.configurations:
        if not facts.configuration(c).is_3d:
            notes.append(f"{c}: Genesis networks are 3D; {c} trains with {settings.plain_trainer} (the same schedule "
                         f"from random weights) on {settings.source_plans}.")

    prerequisites = {facts.configuration(c).previous_stage for c in configurations} - {None}
    for extra in [c for c in configurations if c not in settings.configurations]:
        notes.append(f"{extra}: trained because {', '.join(n for n in configurations if facts.configuration(n).previous_stage == extra)} "
                     f"builds on it (not a candidate of the selection).")
    all_folds = tuple(range(facts.n_splits))
    for c in sorted(prerequisites):
        if tuple(settings.folds) != all_folds:
            notes.append(f"{c}: all {facts.n_splits} folds are trained (not only {' '.join(map(str, settings.folds))}): "
                         f"each cascade fold trains on the cases the other {c} folds validated.")
    names: set[str] = set()
    train_names: dict[Model, list[str]] = {}
    for arm in settings.arms():
        for c in configurations:
            model = settings.model_for(arm, c, facts.configuration(c).is_3d)
            folds = all_folds if c in prerequisites else tuple(settings.folds)
            prev = facts.configuration(c).previous_stage
            needs: tuple[str, ...] = (attach_name,) if attach_needed and model.plans == settings.variant else ()
            if prev:
                # the same trainer and plans: nnU-Net looks for <trainer>__<plans>__<prev>/predicted_next_stage
                needs += tuple(train_names[Model(model.trainer, model.plans, prev)])
            for fold in folds:
                step = _train_step(settings, facts, model, fold, arm, needs)
                if step.name not in names:
                    names.add(step.name)
                    steps.append(step)
                    train_names.setdefault(model, []).append(step.name)

    arm_models = {arm: [settings.model_for(arm, c, facts.configuration(c).is_3d) for c in settings.configurations]
                  for arm in settings.arms()}
    for arm, models in arm_models.items():
        needs = tuple(n for m in models for n in train_names[m])
        steps.append(RecipeStep(f"select/{arm}", SELECT, f"select the best model/ensemble ({arm})",
                                select_command(facts.name, models, settings.folds), needs, arm=arm,
                                output=work.selection(arm)))
    if settings.baseline_trainer:
        compared = []
        for g, b in zip(arm_models[GENESIS_ARM], arm_models[BASELINE_ARM]):
            if g == b:
                notes.append(f"{g.configuration}: the same model in both arms ({g.trainer}), not compared.")
                continue
            out = work.compare / g.configuration
            cmd = (GENESIS_CLI, "compare", str(results_root / facts.name / b.identifier),
                   str(results_root / facts.name / g.identifier), "-o", str(out), "--names", b.trainer, g.trainer)
            step = RecipeStep(f"compare/{g.configuration}", COMPARE, f"compare {g.configuration}: {g.trainer} vs "
                              f"{b.trainer}", cmd, tuple(train_names[g] + train_names[b]), output=out)
            steps.append(step)
            compared.append(step.name)
        steps.append(RecipeStep("compare/cross_validation", CV_TABLE, "cross-validation Dice per fold and configuration",
                                (), tuple(n for m in (*arm_models[GENESIS_ARM], *arm_models[BASELINE_ARM])
                                          for n in train_names[m]), output=work.compare))
    return RecipePlan(settings, facts, results_root, tuple(steps), tuple(configurations),
                      tuple(dict.fromkeys(notes)))


def selected_models(info: Mapping[str, Any]) -> list[Model]:
    """The model(s) an ``inference_information.json`` chose (two for an ensemble)."""
    try:
        chosen = info["best_model_or_ensemble"]["selected_model_or_models"]
        return [Model(m["trainer"], m["plans_identifier"], m["configuration"]) for m in chosen]
    except (KeyError, TypeError) as e:
        raise GenesisUserError(f"inference_information.json lacks the selected models ({e}); was it written by "
                               f"nnUNetv2_find_best_configuration?") from None


def prediction_steps(plan: RecipePlan, info: Mapping[str, Any]) -> list[RecipeStep]:
    """The Genesis arm's test-set prediction as the selection's ``inference_information.json``
    says: ``nnUNetv2_predict`` per chosen model (the previous stage first for a cascade, with
    ``-prev_stage_predictions``), ``nnUNetv2_ensemble`` when an ensemble won,
    ``nnUNetv2_apply_postprocessing`` with the chosen ``postprocessing.pkl`` and plans, then
    ``package-msd``.

    nnU-Net 2.8's own inference_instructions.txt leaves out the previous stage of a cascade
    (``generate_inference_command`` tests ``'previous_stage' in available_configurations``,
    which is never true); reading the JSON avoids that."""
    s, facts, work = plan.settings, plan.facts, plan.work
    if s.images_ts is None:
        raise GenesisUserError("No test images folder (--images-ts) to predict.")
    members = selected_models(info)
    best = info["best_model_or_ensemble"]
    folds = tuple(str(f) for f in info.get("folds", s.folds))
    ensemble = len(members) > 1
    select = f"select/{GENESIS_ARM}"
    steps: list[RecipeStep] = []
    outputs: dict[Model, RecipeStep] = {}

    def predict(model: Model, probabilities: bool) -> RecipeStep:
        if model in outputs:
            return outputs[model]
        needs: tuple[str, ...] = (select,)
        extra: tuple[str, ...] = ()
        prev = facts.configuration(model.configuration).previous_stage
        if prev:
            prev_step = predict(Model(model.trainer, model.plans, prev), Model(model.trainer, model.plans, prev)
                                in members and ensemble)
            needs += (prev_step.name,)
            extra = ("-prev_stage_predictions", str(prev_step.output))
        out = work.predictions / model.identifier
        cmd = ("nnUNetv2_predict", "-i", str(s.images_ts), "-o", str(out), "-d", facts.name, "-c", model.configuration,
               "-tr", model.trainer, "-p", model.plans, "-f", *folds, "-device", s.device, "--disable_progress_bar",
               *(("--save_probabilities",) if probabilities else ()), *extra)
        step = RecipeStep(f"predict/{model.identifier}", PREDICT, f"predict the test images with {model.identifier}",
                          cmd, needs, model=model, output=out)
        steps.append(step)
        outputs[model] = step
        return step

    member_steps = [predict(m, ensemble) for m in members]
    last = member_steps[0]
    if ensemble:
        out = work.predictions / "ensemble"
        last = RecipeStep("ensemble", ENSEMBLE, f"ensemble {' + '.join(m.configuration for m in members)}",
                          ("nnUNetv2_ensemble", "-i", *(str(p.output) for p in member_steps), "-o", str(out)),
                          tuple(p.name for p in member_steps), output=out)
        steps.append(last)
    plans_json = Path(best["some_plans_file"])
    final = work.predictions / "final"
    steps.append(RecipeStep("postprocess", POSTPROCESS, "apply the selected post-processing",
                            ("nnUNetv2_apply_postprocessing", "-i", str(last.output), "-o", str(final),
                             "-pp_pkl_file", str(best["postprocessing_file"]), "-plans_json", str(plans_json),
                             "-dataset_json", str(plans_json.parent / "dataset.json")),
                            (last.name,), output=final))
    if s.task:
        zip_path = s.output or work.default_zip
        others = [a for t in s.other_tasks for a in ("--task", t.task, "--pred", str(t.predictions), "--images",
                                                      str(t.images))]
        tasks = " + ".join([s.task, *(t.task for t in s.other_tasks)])
        steps.append(RecipeStep("package", PACKAGE, f"package {tasks} into {zip_path.name}",
                                (GENESIS_CLI, "package-msd", "--task", s.task, "--pred", str(final), "--images",
                                 str(s.images_ts), *others, "-o", str(zip_path), "--force"), ("postprocess",),
                                output=zip_path))
    return steps
