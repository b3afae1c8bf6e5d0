"""``nnunet-genesis recipe`` without training: the plan built from a fake preprocessed dataset whose
plans have 2d, 3d_fullres, 3d_lowres and 3d_cascade_fullres, its order and trainers, the printed
commands (checked against the argparse of nnU-Net 2.8's own entry points), the SLURM script and
the refusals.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nnunet_genesis import cli
from nnunet_genesis.checkpoint import save_checkpoint
from nnunet_genesis.workflows.recipe.folders import CONTINUE, FINISHED, FRESH, VALIDATE, fold_status
from nnunet_genesis.workflows.recipe.plan import PREDICT, SELECT, TRAIN, Model, is_product, prediction_steps, select_command
from stand_ins import stand_in_sbatch

DATASET = "Dataset004_Hippocampus"
CONFIGS = ("2d", "3d_fullres", "3d_lowres", "3d_cascade_fullres")
_ARCH = {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
         "arch_kwargs": {}, "_kw_requires_import": []}


def _plans() -> dict:
    return {
        "dataset_name": DATASET, "plans_name": "nnUNetPlans",
        "configurations": {
            "2d": {"data_identifier": "nnUNetPlans_2d", "patch_size": [56, 40], "architecture": _ARCH},
            "3d_fullres": {"data_identifier": "nnUNetPlans_3d_fullres", "patch_size": [40, 56, 40],
                           "architecture": _ARCH},
            "3d_lowres": {"inherits_from": "3d_fullres", "data_identifier": "nnUNetPlans_3d_lowres",
                          "patch_size": [32, 48, 32], "next_stage": "3d_cascade_fullres"},
            "3d_cascade_fullres": {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"},
        },
    }


@pytest.fixture()
def fake(tmp_path, monkeypatch):
    """nnU-Net folders with a planned and 'preprocessed' dataset 4, one test image and a checkpoint."""
    folders = {}
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        folders[name] = tmp_path / name
        monkeypatch.setenv(name, str(folders[name]))
    pre = folders["nnUNet_preprocessed"] / DATASET
    for ident in ("nnUNetPlans_2d", "nnUNetPlans_3d_fullres", "nnUNetPlans_3d_lowres"):
        (pre / ident).mkdir(parents=True)
        (pre / ident / "hippocampus_001.b2nd").write_bytes(b"x")
    (pre / "nnUNetPlans.json").write_text(json.dumps(_plans()))
    (pre / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "a": 1}, "file_ending": ".nii.gz"}))
    ts = folders["nnUNet_raw"] / DATASET / "imagesTs"
    ts.mkdir(parents=True)
    (ts / "hippocampus_002_0000.nii.gz").write_bytes(b"x")
    folders["nnUNet_results"].mkdir()
    ckpt = save_checkpoint(tmp_path / "genesis_final.pth", {"w": torch.zeros(2)},
                           {"network_class": "x", "network_kwargs": {}, "network_kwargs_requires_import": [],
                            "input_channels": 1, "output_channels": 1, "source": "pretrain"})
    return {**folders, "pre": pre, "checkpoint": ckpt, "tmp": tmp_path}


def _args(fake, *extra: str) -> list[str]:
    return ["recipe", "-d", "4", "-c", str(fake["checkpoint"]), *extra]


def _plan(fake, *extra: str):
    from nnunet_genesis.workflows.recipe.cli import resolve

    parser = cli.build_parser(_args(fake, *extra))
    return resolve(parser.parse_args(_args(fake, *extra)))


def _refusal(fake, capsys, *extra: str) -> str:
    code = cli.main(_args(fake, *extra))
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    return err


# -- checking a command line against the argparse of the installed entry point -------------------
class _Parsed(Exception):
    def __init__(self, namespace):
        self.namespace = namespace


def parse_command(command: list[str], monkeypatch) -> argparse.Namespace:
    """Parse ``command`` with the parser of the program it names (nnU-Net's console scripts
    through their entry points, ``nnunet-genesis`` through its CLI); an unknown flag or a missing
    argument fails the test (argparse exits with 2)."""
    program, *rest = command
    if program == "nnunet-genesis":
        return cli.build_parser(rest).parse_args(rest)
    if program == "python":
        assert rest[:2] == ["-m", "nnunet_genesis.workflows.recipe.selection"], command
        from nnunet_genesis.workflows.recipe.selection import build_parser

        return build_parser().parse_args(rest[2:])
    scripts = {e.name: e for e in importlib.metadata.entry_points(group="console_scripts")}
    assert program in scripts, f"{program} is not a console script of the installed packages"
    entry = scripts[program]
    assert entry.dist.name == "nnunetv2" and entry.dist.version.startswith("2.8"), entry
    original = argparse.ArgumentParser.parse_args

    def stop_after_parsing(self, args=None, namespace=None):
        raise _Parsed(original(self, args, namespace))

    with monkeypatch.context() as m:
        m.setattr(argparse.ArgumentParser, "parse_args", stop_after_parsing)
        m.setattr(sys, "argv", [program, *rest])
        with pytest.raises(_Parsed) as parsed:
            entry.load()()
    return parsed.value.namespace


def _command_lines(text: str) -> list[list[str]]:
    lines = [li for li in text.splitlines() if li.strip() and not li.lstrip().startswith("#")]
    return [shlex.split(li, comments=True) for li in lines if not li.startswith(("export ", "mkdir ", "cp "))]


# -- the plan ---------------------------------------------------------------------------------------
def test_default_plan_trains_every_configuration_in_dependency_order(fake):
    plan = _plan(fake)
    assert plan.settings.configurations == CONFIGS  # all that nnU-Net planned
    assert plan.steps[0].kind == "attach"
    train = plan.of_kind(TRAIN)
    assert len(train) == 4 * 5
    order = [s.model.configuration for s in train]
    assert max(i for i, c in enumerate(order) if c == "3d_lowres") < min(
        i for i, c in enumerate(order) if c == "3d_cascade_fullres")
    models = {s.model.configuration: s.model for s in train}
    assert models["2d"] == Model("nnUNetTrainerScratch", "nnUNetPlans", "2d")  # Genesis is 3D
    for c in ("3d_fullres", "3d_lowres", "3d_cascade_fullres"):
        assert models[c] == Model("nnUNetTrainerGenesis", "nnUNetPlans_genesis", c)
    lowres = {s.name for s in train if s.model.configuration == "3d_lowres"}
    for s in train:
        if s.model.configuration == "3d_cascade_fullres":
            assert lowres <= set(s.needs) and "attach" in s.needs
        if s.model.configuration == "2d":
            assert "attach" not in s.needs  # the plain trainer reads no checkpoint
        assert s.command[-4:] == ("--npz", "-device", "cuda") or "--npz" in s.command
    assert any("Genesis networks are 3D" in n and "nnUNetTrainerScratch" in n for n in plan.notes)
    # the Genesis arm mixes plain 2D and Genesis 3D models: the stock command line cannot name them
    (select,) = plan.of_kind(SELECT)
    assert select.command[:3] == ("python", "-m", "nnunet_genesis.workflows.recipe.selection")
    assert set(select.needs) == {s.name for s in train}


def test_smoke_trainer_gets_its_smoke_partner_and_a_subset_of_folds_keeps_every_lowres_fold(fake):
    plan = _plan(fake, "--trainer", "nnUNetTrainerGenesis_smoke", "--folds", "0", "1")
    by_config: dict[str, list] = {}
    for s in plan.of_kind(TRAIN):
        by_config.setdefault(s.model.configuration, []).append(s)
    assert {s.model.trainer for s in by_config["2d"]} == {"nnUNetTrainerScratch_smoke"}
    assert [s.fold for s in by_config["3d_lowres"]] == [0, 1, 2, 3, 4]
    assert [s.fold for s in by_config["3d_cascade_fullres"]] == [0, 1]
    assert any("3d_lowres: all 5 folds" in n for n in plan.notes)


def test_cascade_alone_brings_its_lowres_stage_but_selects_only_the_cascade(fake):
    plan = _plan(fake, "--configurations", "3d_cascade_fullres", "--folds", "0")
    assert [s.model.configuration for s in plan.of_kind(TRAIN)] == ["3d_lowres"] * 5 + ["3d_cascade_fullres"]
    (select,) = plan.of_kind(SELECT)
    assert select.command[0] == "nnUNetv2_find_best_configuration"
    assert select.command[select.command.index("-c") + 1] == "3d_cascade_fullres"


def test_baseline_shares_the_2d_model_and_selects_with_the_stock_command(fake):
    plan = _plan(fake, "--baseline", "--folds", "0", "1")
    train = plan.of_kind(TRAIN)
    assert len({s.name for s in train}) == len(train)
    baseline = [s for s in train if s.arm == "baseline"]
    assert {s.model.trainer for s in baseline} == {"nnUNetTrainerScratch"}
    assert "2d" not in {s.model.configuration for s in baseline}  # the same model as the Genesis arm's 2d
    selects = {s.arm: s for s in plan.of_kind(SELECT)}
    assert selects["baseline"].command[0] == "nnUNetv2_find_best_configuration"  # one trainer, one plans
    compares = [s.name for s in plan.of_kind("compare")]
    assert compares == ["compare/3d_fullres", "compare/3d_lowres", "compare/3d_cascade_fullres"]
    assert any("2d: the same model in both arms" in n for n in plan.notes)


def test_is_product_and_select_command():
    a = Model("G", "P_g", "3d_fullres")
    b = Model("S", "P", "2d")
    assert is_product([a]) and is_product([a, Model("G", "P_g", "3d_lowres")])
    assert not is_product([a, b])
    assert select_command("D", [a, b], (0, 1)) == ("python", "-m", "nnunet_genesis.workflows.recipe.selection", "D", "-m", "G",
                                                   "P_g", "3d_fullres", "-m", "S", "P", "2d", "-f", "0", "1")


def test_recipe_select_passes_exactly_the_trained_models(fake, monkeypatch):
    import nnunetv2.evaluation.find_best_configuration as fbc

    from nnunet_genesis.workflows.recipe import selection as recipe_select

    calls = []
    monkeypatch.setattr(fbc, "find_best_configuration", lambda *a, **k: calls.append((a, k)))
    assert recipe_select.main(["4", "-m", "S", "nnUNetPlans", "2d", "-m", "G", "nnUNetPlans_genesis", "3d_fullres",
                               "-f", "0", "1"]) == 0
    (args, kwargs), = calls
    assert args == (DATASET, ({"plans": "nnUNetPlans", "configuration": "2d", "trainer": "S"},
                              {"plans": "nnUNetPlans_genesis", "configuration": "3d_fullres", "trainer": "G"}))
    assert kwargs["folds"] == (0, 1) and kwargs["allow_ensembling"] and kwargs["strict"]


# -- resume: what nnUNetv2_train still has to do ------------------------------------------------------
def test_fold_status_and_the_resume_flag(tmp_path, fake):
    fold = tmp_path / "m" / "fold_0"
    fold.mkdir(parents=True)
    assert fold_status(fold).state == FRESH
    (fold / "checkpoint_latest.pth").write_bytes(b"x")
    assert fold_status(fold).state == CONTINUE
    (fold / "checkpoint_final.pth").write_bytes(b"x")
    assert fold_status(fold).state == VALIDATE
    (fold / "validation").mkdir()
    (fold / "validation" / "summary.json").write_text(json.dumps({"metric_per_case": [{}, {}]}))
    (fold / "validation" / "c1.npz").write_bytes(b"x")
    assert fold_status(fold).state == VALIDATE  # one .npz for two cases: trained without --npz
    (fold / "validation" / "c2.npz").write_bytes(b"x")
    assert fold_status(fold).state == FINISHED
    nxt = tmp_path / "m" / "predicted_next_stage" / "3d_cascade_fullres"
    nxt.mkdir(parents=True)
    (nxt / "c1.b2nd").write_bytes(b"x")
    assert fold_status(fold, ["3d_cascade_fullres"]).state == VALIDATE
    (nxt / "c2.b2nd").write_bytes(b"x")
    assert fold_status(fold, ["3d_cascade_fullres"]).state == FINISHED

    step = _plan(fake, "--configurations", "3d_fullres", "--folds", "0").of_kind(TRAIN)[0]
    assert step.train_command(CONTINUE)[-1] == "--c" and step.train_command(VALIDATE)[-1] == "--val"
    assert step.train_command(FRESH) == step.command


# -- rendering -------------------------------------------------------------------------------------------
def test_print_commands_are_valid_nnunet_commands_in_dependency_order(fake, capsys, monkeypatch):
    # one lowres fold was interrupted: its command continues it
    fold = fake["nnUNet_results"] / DATASET / "nnUNetTrainerGenesis__nnUNetPlans_genesis__3d_lowres" / "fold_2"
    fold.mkdir(parents=True)
    (fold / "checkpoint_latest.pth").write_bytes(b"x")
    assert cli.main(_args(fake, "--print-commands", "--baseline", "--device", "cpu")) == 0
    out = capsys.readouterr().out
    assert not (fake["pre"] / "nnUNetPlans_genesis.json").exists(), "--print-commands ran attach"
    assert "nnUNet_extTrainer=" in out and "Genesis networks are 3D" in out
    commands = _command_lines(out)
    programs = [c[0] for c in commands]
    assert programs[0] == "nnunet-genesis" and commands[0][1] == "attach"
    trains = [parse_command(c, monkeypatch) for c in commands if c[0] == "nnUNetv2_train"]
    assert len(trains) == 4 * 5 + 3 * 5  # Genesis arm + baseline's 3D models (2d is shared)
    assert all(t.npz and t.device == "cpu" and t.dataset_name_or_id == DATASET for t in trains)
    genesis = [t for t in trains if t.tr == "nnUNetTrainerGenesis"]
    configs = [t.configuration for t in genesis]
    assert max(i for i, c in enumerate(configs) if c == "3d_lowres") < configs.index("3d_cascade_fullres")
    assert all(t.p == "nnUNetPlans_genesis" for t in genesis)
    assert {(t.tr, t.p) for t in trains if t.configuration == "2d"} == {("nnUNetTrainerScratch", "nnUNetPlans")}
    continued = [t for t in trains if t.c]
    assert [(t.configuration, t.fold, t.tr) for t in continued] == [("3d_lowres", "2", "nnUNetTrainerGenesis")]
    for c in commands:
        if c[0] != "nnUNetv2_train":
            parse_command(c, monkeypatch)
    stock = [parse_command(c, monkeypatch) for c in commands if c[0] == "nnUNetv2_find_best_configuration"]
    assert [(s.tr, s.p, s.f) for s in stock] == [(["nnUNetTrainerScratch"], ["nnUNetPlans"], [0, 1, 2, 3, 4])]
    assert any(c[:3] == ["python", "-m", "nnunet_genesis.workflows.recipe.selection"] for c in commands)
    assert commands[-1][:2] == ["nnunet-genesis", "recipe"] and commands[-1][-1] == "--finish"
    assert "cp " in out and "inference_information.json" in out


def test_prediction_commands_follow_inference_information(fake, monkeypatch):
    plan = _plan(fake, "--device", "cpu")
    res = fake["nnUNet_results"] / DATASET
    info = {"folds": [0, 1, 2, 3, 4], "dataset_name_or_id": DATASET, "best_model_or_ensemble": {
        "postprocessing_file": str(res / "ensembles" / "e" / "postprocessing.pkl"),
        "some_plans_file": str(res / "ensembles" / "e" / "plans.json"),
        "result_on_crossval_pre_pp": 0.8, "result_on_crossval_post_pp": 0.81,
        "selected_model_or_models": [
            {"configuration": "2d", "trainer": "nnUNetTrainerScratch", "plans_identifier": "nnUNetPlans"},
            {"configuration": "3d_cascade_fullres", "trainer": "nnUNetTrainerGenesis",
             "plans_identifier": "nnUNetPlans_genesis"}]}}
    steps = prediction_steps(plan, info)
    assert [s.kind for s in steps] == [PREDICT, PREDICT, PREDICT, "ensemble", "postprocess", "package"]
    parsed = [parse_command(list(s.command), monkeypatch) for s in steps]
    p2d, plow, pcas = parsed[:3]
    assert p2d.c == "2d" and p2d.save_probabilities and p2d.f == ["0", "1", "2", "3", "4"]
    assert plow.c == "3d_lowres" and plow.tr == "nnUNetTrainerGenesis" and not plow.save_probabilities
    assert pcas.c == "3d_cascade_fullres" and pcas.save_probabilities and pcas.prev_stage_predictions == plow.o
    assert parsed[3].i == [p2d.o, pcas.o]
    assert parsed[4].i == parsed[3].o and parsed[4].pp_pkl_file == info["best_model_or_ensemble"]["postprocessing_file"]
    assert parsed[4].dataset_json == str(res / "ensembles" / "e" / "dataset.json")
    assert parsed[5].task_groups == [{"task": "Task04_Hippocampus", "pred": parsed[4].o,
                                      "images": str(fake["nnUNet_raw"] / DATASET / "imagesTs")}]


def test_slurm_script_arrays_dependencies_and_final_job(fake, capsys, monkeypatch, tmp_path):
    script = tmp_path / "recipe.sbatch.sh"
    assert cli.main(_args(fake, "--slurm", str(script), "--sbatch=--partition=gpu")) == 0
    text = script.read_text()
    subprocess.run(["bash", "-n", str(script)], check=True)  # valid shell
    arrays = [int(n) + 1 for n in re.findall(r"^#SBATCH --array=0-(\d+)$", text, re.M)]
    assert sum(arrays) == len(CONFIGS) * 5
    assert arrays == [10, 5, 5]  # 2d + 3d_fullres; 3d_lowres; 3d_cascade_fullres
    submits = re.findall(r"^(\w+)=\$\(sbatch --parsable(?: --dependency=afterok:(\S+))? <<'GENESIS_JOB'$", text, re.M)
    deps = {var: dep for var, dep in submits}
    assert list(deps) == ["attach", "train1", "train2", "train3", "final"]
    assert deps["train1"] == deps["train2"] == "$attach"
    assert set(deps["train3"].split(":")) == {"$attach", "$train2"}  # the cascade after every lowres fold
    assert set(deps["final"].split(":")) == {"$attach", "$train1", "$train2", "$train3"}
    assert text.count("#SBATCH --partition=gpu") == 5 and "#SBATCH --gres=gpu:1" in text
    tasks = re.findall(r"^  \d+\) train_fold (\S+) (nnUNetv2_train .*) ;;$", text, re.M)
    assert len(tasks) == 20
    for folder, command in tasks:
        ns = parse_command(shlex.split(command), monkeypatch)
        assert Path(shlex.split(folder)[0]).name == f"fold_{ns.fold}" and ns.npz
    final = re.search(r"^(nnunet-genesis recipe .* --finish)$", text, re.M).group(1)
    assert parse_command(shlex.split(final), monkeypatch).finish


# -- refusals: exit 2 before anything runs, naming the problem --------------------------------------
def test_refuses_an_unknown_configuration(fake, capsys):
    err = _refusal(fake, capsys, "--configurations", "3d_fullres", "3d_midres")
    assert "3d_midres" in err and "2d, 3d_fullres, 3d_lowres, 3d_cascade_fullres" in err


@pytest.mark.parametrize("folds", [["5"], ["-1"], ["0", "0"]])
def test_refuses_folds_outside_the_splits(fake, capsys, folds):
    err = _refusal(fake, capsys, "--folds", *folds)
    assert "fold" in err.lower() and ("0-4" in err or "twice" in err)


def test_refuses_a_fold_outside_splits_final(fake, capsys):
    (fake["pre"] / "splits_final.json").write_text(json.dumps([{"train": [], "val": []}] * 3))
    err = _refusal(fake, capsys, "--folds", "3")
    assert "0-2" in err and "splits_final.json" in err


def test_refuses_a_dataset_without_plans(fake, capsys):
    (fake["pre"] / "nnUNetPlans.json").unlink()
    err = _refusal(fake, capsys)
    assert "has no plans" in err and "nnUNetv2_plan_and_preprocess" in err


def test_refuses_a_configuration_that_is_not_preprocessed(fake, capsys):
    import shutil

    shutil.rmtree(fake["pre"] / "nnUNetPlans_3d_lowres")
    err = _refusal(fake, capsys, "--configurations", "3d_cascade_fullres")
    assert "3d_lowres" in err and "not preprocessed" in err


def test_refuses_a_work_folder_of_other_settings(fake, capsys):
    plan = _plan(fake, "--configurations", "3d_fullres")
    plan.work.root.mkdir(parents=True)
    identity = {**plan.settings.identity(), "trainer": "nnUNetTrainerGenesis_smoke", "folds": [0, 1]}
    plan.work.state_file.write_text(json.dumps({"identity": identity, "finished": {}}))
    err = _refusal(fake, capsys, "--configurations", "3d_fullres", "--print-commands")
    assert "recipe_state.json belongs to a recipe with other settings" in err
    assert "trainer: recorded 'nnUNetTrainerGenesis_smoke', now 'nnUNetTrainerGenesis'" in err and "folds" in err


def test_refuses_a_variant_that_names_another_checkpoint(fake, capsys):
    (fake["pre"] / "nnUNetPlans_genesis.json").write_text(json.dumps(
        {**_plans(), "plans_name": "nnUNetPlans_genesis", "genesis": {"checkpoint": "/x.pth", "sha256": "ab" * 32}}))
    err = _refusal(fake, capsys, "--print-commands")
    assert "names another checkpoint" in err and "--variant" in err


def test_refuses_a_file_that_is_not_a_checkpoint(fake, capsys):
    bad = fake["tmp"] / "bad.pth"
    bad.write_text("not a checkpoint")
    code = cli.main(["recipe", "-d", "4", "-c", str(bad), "--print-commands"])
    assert code == 2 and "is not a torch file" in capsys.readouterr().err


def test_refuses_a_trainer_without_plain_partner_for_2d(fake, capsys):
    err = _refusal(fake, capsys, "--trainer", "nnUNetTrainerGenesis_nnUNetRecipe", "--print-commands")
    assert "no plain partner" in err and "--plain-trainer" in err


def test_finish_refuses_while_training_is_unfinished(fake, capsys):
    err = _refusal(fake, capsys, "--configurations", "3d_fullres", "--folds", "0", "--finish")
    assert "--finish runs only after every training" in err and "fold 0" in err
    assert not (fake["pre"] / "nnUNetPlans_genesis.json").exists()  # not even attached


def test_cross_validation_table_of_both_arms(fake):
    from nnunet_genesis.workflows.recipe.report import write_cross_validation

    plan = _plan(fake, "--configurations", "2d", "3d_fullres", "--folds", "0", "1", "--baseline")
    res = fake["nnUNet_results"] / DATASET
    for ident, dice in (("nnUNetTrainerGenesis__nnUNetPlans_genesis__3d_fullres", 0.8),
                        ("nnUNetTrainerScratch__nnUNetPlans__3d_fullres", 0.7),
                        ("nnUNetTrainerScratch__nnUNetPlans__2d", 0.6)):
        for fold in (0, 1):
            (res / ident / f"fold_{fold}" / "validation").mkdir(parents=True)
            (res / ident / f"fold_{fold}" / "validation" / "summary.json").write_text(
                json.dumps({"foreground_mean": {"Dice": dice + fold / 100}, "metric_per_case": []}))
    selection = plan.work.selection("genesis")
    selection.mkdir(parents=True)
    (selection / "inference_information.json").write_text(json.dumps({"best_model_or_ensemble": {
        "selected_model_or_models": [{"configuration": "3d_fullres", "trainer": "nnUNetTrainerGenesis",
                                      "plans_identifier": "nnUNetPlans_genesis"}],
        "result_on_crossval_pre_pp": 0.805, "result_on_crossval_post_pp": 0.81}}))
    md = write_cross_validation(plan).read_text()
    assert "| 3d_fullres | 0 | 0.8000 | 0.7000 | +0.1000 |" in md
    assert "| 3d_fullres | 1 | 0.8100 | 0.7100 | +0.1000 |" in md
    assert "| 2d (same model) | 1 | 0.6100 | 0.6100 | +0.0000 |" in md
    assert "- genesis: nnUNetTrainerGenesis__nnUNetPlans_genesis__3d_fullres, Dice 0.8050 before" in md
    assert "- baseline: not run yet" in md
    data = json.loads((plan.work.compare / "cross_validation.json").read_text())
    assert len(data["rows"]) == 4


def test_slurm_script_submits_in_order_and_array_tasks_resume(fake, tmp_path):
    """The script run against a stand-in sbatch (records each job, prints a job id), then each array
    task run with a stand-in nnUNetv2_train: finished folds are skipped, the others get --c / --val."""
    script = tmp_path / "recipe.sh"
    assert cli.main(_args(fake, "--configurations", "3d_fullres", "--folds", "0", "1", "2", "3", "--device", "cpu",
                          "--slurm", str(script))) == 0
    jobs, fakebin = stand_in_sbatch(tmp_path, "$((100 + n))")
    env = {"PATH": f"{fakebin}:/usr/bin:/bin", "HOME": str(tmp_path)}
    r = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["attach:", "job", "100", "train1:", "job", "101", "final:", "job", "102"]
    args = [(jobs / f"{i}.args").read_text().split() for i in range(3)]
    assert args == [["--parsable"], ["--parsable", "--dependency=afterok:100"],
                    ["--parsable", "--dependency=afterok:100:101"]]
    assert "--gres=gpu:1" not in (jobs / "1.sh").read_text()  # --device cpu

    model = fake["nnUNet_results"] / DATASET / "nnUNetTrainerGenesis__nnUNetPlans_genesis__3d_fullres"
    for fold, files in {0: ["checkpoint_final.pth", "validation/summary.json", "validation/c.npz"],
                        1: ["checkpoint_latest.pth"], 2: ["checkpoint_final.pth"], 3: []}.items():
        for f in files:
            (model / f"fold_{fold}" / f).parent.mkdir(parents=True, exist_ok=True)
            (model / f"fold_{fold}" / f).write_bytes(b"x")
    calls = tmp_path / "calls.txt"
    for task in range(4):
        # an exported shell function is found before the PATH the job script sets
        r = subprocess.run(["bash", "-c", f'nnUNetv2_train() {{ echo "$*" >> {calls}; }}; export -f nnUNetv2_train; '
                                          f'SLURM_ARRAY_TASK_ID={task} bash {jobs}/1.sh'],
                           env={**env, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        if task == 0:
            assert "finished earlier" in r.stdout
    lines = calls.read_text().splitlines()
    assert [li.split()[2] for li in lines] == ["1", "2", "3"]
    assert lines[0].endswith("--npz -device cpu --c") and lines[1].endswith("--npz -device cpu --val")
    assert lines[2].endswith("--npz -device cpu")


def test_refuses_results_trained_from_another_checkpoint(fake, capsys):
    folder = fake["nnUNet_results"] / DATASET / "nnUNetTrainerGenesis__nnUNetPlans_genesis__3d_lowres"
    folder.mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps({"genesis": {"sha256": "cd" * 32}}))
    err = _refusal(fake, capsys, "--configurations", "3d_cascade_fullres", "--print-commands")
    assert str(folder) in err and "another checkpoint" in err


def _finished_liver_recipe(fake, postprocessed: bool = True) -> dict:
    """A Task03_Liver recipe's work folder as a finished run leaves it (state and final predictions)."""
    work = fake["nnUNet_results"] / "Dataset003_Liver" / "genesis_recipe"
    (work / "predictions" / "final").mkdir(parents=True)
    images = fake["nnUNet_raw"] / "Dataset003_Liver" / "imagesTs"
    images.mkdir(parents=True)
    finished = {"postprocess": {"command": ["nnUNetv2_apply_postprocessing"]}} if postprocessed else {}
    (work / "recipe_state.json").write_text(json.dumps(
        {"version": 1, "identity": {"dataset": "Dataset003_Liver"}, "settings": {"images_ts": str(images)},
         "finished": finished}))
    return {"predictions": str(work / "predictions" / "final"), "images": str(images)}


def test_task_twice_packages_the_other_tasks_finished_recipe_into_the_same_zip(fake, monkeypatch):
    liver = _finished_liver_recipe(fake)
    plan = _plan(fake, "--device", "cpu", "--task", "Task03_Liver", "--task", "Task04_Hippocampus")
    res = fake["nnUNet_results"] / DATASET
    info = {"folds": [0], "best_model_or_ensemble": {
        "postprocessing_file": str(res / "p.pkl"), "some_plans_file": str(res / "plans.json"),
        "selected_model_or_models": [{"configuration": "3d_fullres", "trainer": "nnUNetTrainerGenesis",
                                      "plans_identifier": "nnUNetPlans_genesis"}]}}
    package = prediction_steps(plan, info)[-1]
    assert package.kind == "package" and "Task04_Hippocampus + Task03_Liver" in package.label
    parsed = parse_command(list(package.command), monkeypatch)
    assert [g["task"] for g in parsed.task_groups] == ["Task04_Hippocampus", "Task03_Liver"]
    assert parsed.task_groups[1] == {"task": "Task03_Liver", **{"pred": liver["predictions"], "images": liver["images"]}}


def test_task_twice_refuses_an_unfinished_other_recipe_or_leaving_out_its_own_task(fake, capsys):
    err = _refusal(fake, capsys, "--task", "Task04_Hippocampus", "--task", "Task03_Liver", "--print-commands")
    assert "Task03_Liver" in err and "no dataset" in err and "recipe -d" in err
    _finished_liver_recipe(fake, postprocessed=False)
    err = _refusal(fake, capsys, "--task", "Task04_Hippocampus", "--task", "Task03_Liver", "--print-commands")
    assert "has not finished its post-processing" in err and "Dataset003_Liver" in err
    err = _refusal(fake, capsys, "--task", "Task03_Liver", "--print-commands")
    assert "leaves it out" in err and "--task Task04_Hippocampus" in err
    err = _refusal(fake, capsys, "--task", "Task04_Hippocampus", "--task", "Task04_Hippocampus", "--print-commands")
    assert "given twice" in err


# -- issue 31: what the recipe trains with and writes into scripts ------------------------------------
@pytest.mark.parametrize("trainer", ["nnUNetTrainer", "nnUNetTrainerScratch", "nnUNetTrainerGenesisPretrain"])
def test_refuses_a_trainer_that_does_not_load_the_checkpoint(fake, capsys, trainer):
    err = _refusal(fake, capsys, "--trainer", trainer, "--print-commands")
    assert f"--trainer {trainer}" in err and "does not load the Genesis checkpoint" in err and "--baseline" in err


def test_accepts_the_users_own_genesis_subclass_by_name_and_a_scratch_baseline(fake, capsys):
    plan = _plan(fake, "--trainer", "nnUNetTrainerGenesisMine", "--baseline", "nnUNetTrainer",
                 "--plain-trainer", "nnUNetTrainerScratch")
    assert plan.settings.trainer == "nnUNetTrainerGenesisMine" and plan.settings.baseline_trainer == "nnUNetTrainer"


def test_refuses_test_images_that_are_a_file_or_of_another_ending(fake, capsys, tmp_path):
    (tmp_path / "ts_file").write_text("x")
    assert "is a file, not a folder" in _refusal(fake, capsys, "--images-ts", str(tmp_path / "ts_file"))
    (tmp_path / "ts").mkdir()
    (tmp_path / "ts" / "hippocampus_002_0000.nrrd").write_bytes(b"x")
    err = _refusal(fake, capsys, "--images-ts", str(tmp_path / "ts"))
    assert "no '*.nii.gz' images" in err and ".nrrd" in err


def test_sbatch_values_are_quoted_and_newlines_refused(fake, capsys, tmp_path):
    script = tmp_path / "jobs.sh"
    err = _refusal(fake, capsys, "--slurm", str(script), "--sbatch", "--partition=gpu\ntouch /tmp/ran")
    assert "--sbatch" in err and "'\\n'" in err and not script.exists()
    assert cli.main(_args(fake, "--slurm", str(script), "--sbatch", "--comment=a b; touch /tmp/ran")) == 0
    text = script.read_text()
    assert "#SBATCH '--comment=a b; touch /tmp/ran'" in text
    assert not any(line.startswith("touch") for line in text.splitlines())
    script.write_text("#!/bin/bash\necho mine\n")  # the user's own script is never replaced
    assert "not written by this command" in _refusal(fake, capsys, "--slurm", str(script))
