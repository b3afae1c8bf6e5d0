"""A corpus prepared in parts on several machines, then merged, is the one-machine preparation file
for file (docs/pretraining.md, "Preparing a large corpus on several machines"); the merge refuses
missing parts and parts of other options without writing anything; a finished part is not redone;
the SLURM form submits a job array of the parts and the merge with the training after it."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from nnunet_genesis.cli import main
from nnunet_genesis.pretraining.parts import share
from stand_ins import stand_in_sbatch

PLANS = "genesisUniversalPlans"


@pytest.fixture(autouse=True)
def _no_nnunet_env(monkeypatch):
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """9 inputs in the sorted scan order, so 3 parts take 3 each: a00-a06 (24^3 voxels, int16 'HU',
    spacings 1-1.6 mm), m_bad (not a NIfTI file: found when read, in part 2), notes.txt (found by the
    scan) and z_dup, a copy of a01: part 2 holds a duplicate of a volume of part 0."""
    import SimpleITK as sitk

    src = tmp_path_factory.mktemp("parts_corpus")
    rng = np.random.default_rng(7)
    for i in range(7):
        image = sitk.GetImageFromArray(rng.normal(0, 300, (24, 24, 24)).astype(np.int16))
        image.SetSpacing([1.0 + 0.1 * i, 1.0, 1.25])
        sitk.WriteImage(image, str(src / f"a{i:02d}.nii.gz"), True)
    shutil.copy(src / "a01.nii.gz", src / "z_dup.nii.gz")
    (src / "m_bad.nii.gz").write_bytes(b"this is not a NIfTI file " * 40)
    (src / "notes.txt").write_text("not an image")
    return src


def _args(src: Path, out: Path, *extra: str) -> list[str]:
    return ["pretrain", "-i", str(src), "-o", str(out), "--patch-size", "32", "32", "32", "--workers", "1",
            "--skip-bad", "--device", "cpu", *extra]


def _tree(folder: Path) -> dict[str, Path]:
    return {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*")) if p.is_file()}


def _dataset_files(out: Path) -> dict[str, Path]:
    state = json.loads((out / "pretrain_state.json").read_text())
    files = {}
    for kind in ("nnUNet_raw", "nnUNet_preprocessed"):
        files.update({f"{kind}/{k}": p for k, p in _tree(Path(state["folders"][kind]) / state["dataset_name"]).items()})
    return files


def _blosc2_content(path: Path):
    import blosc2

    array = blosc2.open(str(path))
    cparams = array.schunk.cparams
    return array[:], (array.shape, array.dtype, array.chunks, array.blocks, cparams.codec, cparams.clevel,
                      tuple(cparams.filters))


def assert_same_preparation(one: Path, merged: Path, plans: str = PLANS) -> None:
    """Every file of the raw and preprocessed dataset has the same name and the same bytes (the
    NIfTI volumes and labels, dataset.json, genesis_sources.json, dataset_fingerprint.json,
    splits_final.json, the .pkl properties), except: the plans, compared as JSON without
    ``genesis_pretraining.export_folder`` (each run's OUT); the .b2nd arrays, compared by content
    (voxels, dtype, shape, chunks, blocks, codec, level, filters) where the bytes differ: nnU-Net's
    blosc2 writer stores a partial block's padding uninitialised, so even one array saved twice by
    one process can differ in those bytes."""
    a, b = _dataset_files(one), _dataset_files(merged)
    assert sorted(a) == sorted(b)
    assert sum(k.endswith(".b2nd") for k in a) == 2 * 7 and sum(k.endswith(".nii.gz") for k in a) == 2 * 7
    for name in a:
        if name.endswith(f"{plans}.json"):
            pa, pb = json.loads(a[name].read_text()), json.loads(b[name].read_text())
            assert pa["genesis_pretraining"].pop("export_folder") == str(one)
            assert pb["genesis_pretraining"].pop("export_folder") == str(merged)
            assert pa == pb
        elif a[name].read_bytes() != b[name].read_bytes():
            assert name.endswith(".b2nd"), name
            (xa, la), (xb, lb) = _blosc2_content(a[name]), _blosc2_content(b[name])
            assert la == lb and np.array_equal(xa, xb), name


@pytest.fixture(scope="module")
def one_machine(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one_machine") / "out"
    assert main(_args(corpus, out, "--prepare-only")) == 0
    return out


def test_the_shares_are_contiguous_chunks_that_cover_every_case_once():
    assert [share(9, i, 3) for i in range(3)] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert [share(7, i, 3) for i in range(3)] == [[0, 1, 2], [3, 4], [5, 6]]
    assert [share(2, i, 3) for i in range(3)] == [[0], [1], []]


def test_parts_then_merge_give_the_one_machine_files(corpus, one_machine, tmp_path, capsys):
    out = tmp_path / "out"
    part = lambda i, *extra: main(_args(corpus, out, "--prepare-only", "--part", str(i), "--parts", "3", *extra))
    assert part(0) == 0
    # a killed run of part 1 left a folder without part.json: removed when part 1 runs again
    (out / "parts" / "part_1_of_3" / "nnUNet_raw").mkdir(parents=True)
    assert part(1) == 0
    assert "interrupted run of part 1 of 3" in capsys.readouterr().out
    record = json.loads((out / "parts" / "part_0_of_3" / "part.json").read_text())
    assert [c["identifier"] for c in record["cases"]] == ["case_00000", "case_00001", "case_00002"]
    assert record["scan_bad"][0]["path"].endswith("notes.txt") and record["bad"] == []
    assert sorted(p.name for p in out.iterdir()) == ["parts"]  # no dataset id reserved, nothing outside parts

    # (b) the merge with part 2 missing: exit 2, the command that makes it, nothing written
    before = _tree(out)
    assert main(_args(corpus, out, "--parts", "3", "--prepare-only")) == 2
    err = capsys.readouterr().err
    assert "part(s) 2 of 3 are not finished" in err and "Nothing was written" in err
    command = next(line for line in err.splitlines() if "--part 2" in line).strip()
    assert shlex.split(command)[:2] == ["nnunet-genesis", "pretrain"]
    assert command.endswith("--prepare-only --part 2 --parts 3") and f"--output={out}" in command
    assert _tree(out) == before

    # (e) a finished part is not done again
    assert part(0) == 0
    assert "Part 0 of 3 done earlier" in capsys.readouterr().out
    assert _tree(out) == before
    assert main(shlex.split(command)[1:]) == 0  # the command the refusal printed makes part 2
    assert "1 unusable" in capsys.readouterr().out  # m_bad; the duplicate is the merge's to find

    # (c) the merge of parts made with other plan options: exit 2, nothing written
    before = _tree(out)
    assert main(_args(corpus, out, "--parts", "3", "--prepare-only", "--modality", "MRI")) == 2
    assert "were made from other sources or plan options" in capsys.readouterr().err
    assert _tree(out) == before

    # (a) the merge: the one-machine files; the parts are gone
    assert main(_args(corpus, out, "--parts", "3", "--prepare-only")) == 0
    printed = capsys.readouterr().out
    assert "continuing without 3 input(s)" in printed and "a duplicate" in printed
    assert not (out / "parts").exists()
    assert_same_preparation(one_machine, out)
    assert main(_args(corpus, out, "--prepare-only", "--part", "0", "--parts", "3")) == 2  # OUT is prepared
    assert "already holds a pretraining run" in capsys.readouterr().err


@pytest.mark.parametrize("extra, words", [
    (["--part", "0", "--prepare-only"], "--part 0 needs --parts N"),
    (["--part", "3", "--parts", "3", "--prepare-only"], "--part 3: must be between 0 and 2"),
    (["--part", "-1", "--parts", "3", "--prepare-only"], "--part -1: must be between 0 and 2"),
    (["--parts", "0"], "--parts 0: must be at least 1"),
    (["--part", "1", "--parts", "3"], "--part 1 needs --prepare-only"),
    (["--parts", "3", "--resume"], "--parts 3 with --resume"),
    (["--parts", "3", "--part", "0", "--prepare-only", "--slurm", "S"], "--part with --slurm"),
])
def test_part_option_mistakes_exit_2_before_any_work(tmp_path, capsys, extra, words):
    extra = [str(tmp_path / "s.sh") if x == "S" else x for x in extra]
    out = tmp_path / "out"
    assert main(["pretrain", "-i", str(tmp_path), "-o", str(out), *extra]) == 2
    assert words in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "s.sh").exists()


def test_slurm_parts_script_submits_the_array_then_merge_and_training(corpus, one_machine, tmp_path, capsys):
    """(d) The script against a stand-in sbatch (saves each job script, prints a job id); then each
    array task run as SLURM would (the part command for real), and the training job's merge line."""
    out, script = tmp_path / "shared out" / "run", tmp_path / "genesis parts.sh"
    assert main(_args(corpus, out, "--slurm", str(script), "--parts", "3", "--slurm-nodes", "2",
                      "--sbatch=--time=2:00:00", "--sbatch=--comment=a b")) == 0
    assert f"bash {script}" in capsys.readouterr().out
    assert not out.exists()  # nothing prepared here
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0

    jobs, fakebin = stand_in_sbatch(tmp_path, '"$((500 + n));cluster1"')
    r = subprocess.run(["bash", str(script)], env={"PATH": f"{fakebin}:/usr/bin:/bin", "HOME": str(tmp_path)},
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "job array 500 (3 parts); merge and training: job 501" in r.stdout
    assert [(jobs / f"{i}.args").read_text().split() for i in range(2)] == [
        ["--parsable"], ["--parsable", "--dependency=afterok:500"]]
    array, train = (jobs / "0.sh").read_text(), (jobs / "1.sh").read_text()
    assert "#SBATCH --array=0-2" in array and "#SBATCH '--comment=a b'" in array
    assert "#SBATCH --nodes=2" in train and "#SBATCH --time=2:00:00" in train
    assert out.is_dir()  # made by the script: the jobs' logs go there

    env = dict(os.environ)
    for task in range(3):
        r = subprocess.run(["bash", str(jobs / "0.sh")], env={**env, "SLURM_ARRAY_TASK_ID": str(task)},
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert f"Part {task} of 3 done" in r.stdout
    merge_line = re.search(r"^if \[ ! -e .*\n(.*)\nfi$", train, re.M).group(1)
    assert shlex.split(merge_line)[1:5] == ["-m", "nnunet_genesis.cli", "pretrain", "--input"]
    assert merge_line.endswith("--parts 3 --prepare-only") and "--sbatch" not in merge_line
    r = subprocess.run(["bash", "-c", f"set -eu\n{merge_line}"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert_same_preparation(one_machine, out)
    r = subprocess.run(["bash", str(jobs / "0.sh")], env={**env, "SLURM_ARRAY_TASK_ID": "1"},
                       capture_output=True, text=True)
    assert r.returncode == 0 and "prepared already" in r.stdout  # submitting again: the parts have nothing to do


def _with_target_dataset(out: Path, universal_plans: dict) -> None:
    """A planned 'target dataset' Dataset900_Target in OUT's own nnU-Net folders (nnunet_work), whose
    nnUNetPlans are the universal plan's: enough for --plans-from 900 without nnUNetv2_plan_and_preprocess."""
    target = out / "nnunet_work" / "nnUNet_preprocessed" / "Dataset900_Target"
    target.mkdir(parents=True)
    plans = {k: v for k, v in universal_plans.items() if k != "genesis_pretraining"}
    plans.update(dataset_name="Dataset900_Target", plans_name="nnUNetPlans")
    plans["configurations"]["3d_fullres"]["data_identifier"] = "nnUNetPlans_3d_fullres"
    (target / "nnUNetPlans.json").write_text(json.dumps(plans, indent=2))
    (target / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0, "x": 1},
                                                     "numTraining": 1, "file_ending": ".nii.gz"}))


def test_plans_from_route_in_parts_and_one_part_give_the_one_machine_files(corpus, one_machine, tmp_path, capsys):
    """--plans-from: each part moves the target's plans onto its own dataset with nnU-Net's
    move_plans_between_datasets (in its own nnU-Net folders) before preprocessing; --parts 1 is a
    one-machine preparation too."""
    state = json.loads((one_machine / "pretrain_state.json").read_text())
    universal = json.loads((Path(state["folders"]["nnUNet_preprocessed"]) / state["dataset_name"]
                            / f"{PLANS}.json").read_text())
    outs = {}
    for name in ("one", "parts2", "parts1"):
        outs[name] = tmp_path / name
        _with_target_dataset(outs[name], universal)
    assert main(_args(corpus, outs["one"], "--plans-from", "900", "--prepare-only")) == 0
    for parts in (2, 1):
        out = outs[f"parts{parts}"]
        for i in range(parts):
            assert main(_args(corpus, out, "--plans-from", "900", "--prepare-only", "--part", str(i),
                              "--parts", str(parts))) == 0
        assert (out / "parts" / f"part_0_of_{parts}" / "nnUNet_preprocessed" / "Dataset000_GenesisPretrainPart"
                / "genesisPretrainPlans.json").is_file()
        assert main(_args(corpus, out, "--plans-from", "900", "--parts", str(parts), "--prepare-only")) == 0
        assert_same_preparation(outs["one"], out, plans="genesisPretrainPlans")


def test_an_interrupted_merge_leaves_nothing_and_the_parts_intact(corpus, one_machine, tmp_path, monkeypatch, capsys):
    from nnunet_genesis.pretraining import parts as parts_module

    out = tmp_path / "out"
    for i in range(2):
        assert main(_args(corpus, out, "--prepare-only", "--part", str(i), "--parts", "2")) == 0
    before = {k: p.read_bytes() for k, p in _tree(out).items()}
    link = parts_module._link_or_copy

    def interrupted(source, target):  # Ctrl-C while the preprocessed files are taken over
        if source.suffix == ".b2nd":
            raise KeyboardInterrupt
        link(source, target)

    monkeypatch.setattr(parts_module, "_link_or_copy", interrupted)
    assert main(_args(corpus, out, "--parts", "2", "--prepare-only")) == 130
    assert {k: p.read_bytes() for k, p in _tree(out).items()} == before  # no dataset, claim or state; parts intact
    monkeypatch.setattr(parts_module, "_link_or_copy", link)
    assert main(_args(corpus, out, "--parts", "2", "--prepare-only")) == 0
    assert_same_preparation(one_machine, out)
