"""Fault injection across every subcommand, table-driven.

Each case damages one input or option the way a hostile or careless user would and asserts
the promise of docs/reliability.md: the documented exit code (2), a message naming the file
or option, no traceback, and nothing left behind (no new file, not even a hidden temp file,
and the shared inputs unchanged). The inputs, damage helpers and the check are in
fault_harness.py. The trainers through ``nnUNetv2_train`` are covered in
tests/trainers/test_nnunet_commands.py (bad checkpoints, -pretrained_weights, --c).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnunet_genesis.cli import main

from fault_harness import (TASK, Case, World, _RunsCode, _write, a_file, check_case, ckpt_with, folder_copy, junk,
                           registry, torch_file, truncated, with_pixdim, with_value)

# ---------------------------------------------------------------------------------------------
# the cases: name -> function(world, tmp) -> Case (files it creates before the run are inputs)

CASES, case = registry()


def _preview(src: Path, tmp: Path, *extra: str) -> list[str]:
    return ["preview", str(src), "-o", str(tmp / "out" / "preview.png"), *extra]


for _name, _make, _needle in [
    ("missing", lambda w, t: t / "absent.nii.gz", "does not exist"),
    ("truncated", lambda w, t: truncated(w.ct, t / "cut.nii.gz"), "truncated"),
    ("truncated-in-header", lambda w, t: truncated(w.ct, t / "cut.nii.gz", 0.002), "truncated"),
    ("junk", lambda w, t: junk(t / "junk.nii.gz"), "junk.nii.gz"),
    ("empty-file", lambda w, t: a_file(t / "empty.nii.gz", ""), "empty.nii.gz"),
    ("nan", lambda w, t: with_value(w.ct, t / "nan.nii.gz", np.nan), "NaN/Inf"),
    ("inf", lambda w, t: with_value(w.ct, t / "inf.nii.gz", np.inf), "NaN/Inf"),
    ("pixdim-zero", lambda w, t: with_pixdim(w.ct, t / "p0.nii.gz", 0.0), "invalid voxel spacing"),
    ("pixdim-negative", lambda w, t: with_pixdim(w.ct, t / "pn.nii.gz", -2.0), "invalid voxel spacing"),
    ("pixdim-nan", lambda w, t: with_pixdim(w.ct, t / "pnan.nii.gz", float("nan")), "invalid voxel spacing"),
    ("2d", lambda w, t: _write(np.zeros((9, 9), np.float32), t / "2d.nii.gz"), "2D"),
    ("empty-folder", lambda w, t: (t / "empty_dir").mkdir() or t / "empty_dir", "no DICOM series"),
]:
    def _make_case(w, t, _make=_make, _needle=_needle):
        src = _make(w, t)
        return Case(_preview(src, t), (_needle, str(src)))
    case(f"preview/{_name}")(_make_case)


@case("preview/output-parent-is-a-file")
def _(w, t):
    a_file(t / "out")
    return Case(["preview", str(w.ct), "-o", str(t / "out" / "p.png")], (str(t / "out"),))


@case("preview/output-is-a-directory")
def _(w, t):
    (t / "out.png").mkdir()
    return Case(["preview", str(w.ct), "-o", str(t / "out.png")], (str(t / "out.png"),))


@case("preview/crop-zero")
def _(w, t):
    return Case(_preview(w.ct, t, "--crop", "0", "64", "64"), ("--crop",))


@case("preview/channel-out-of-range")
def _(w, t):
    return Case(_preview(w.ct, t, "--channel", "3"), ("--channel",))


@case("preview/crop-not-a-number")
def _(w, t):
    return Case(_preview(w.ct, t, "--crop", "a", "b", "c"), ("--crop",))


# inspect ------------------------------------------------------------------------------------

def _ckpt_cases(command: str, argv: Callable[[Path, Path], list[str]]):
    variants = [
        ("missing", lambda w, t: t / "absent.pth", "does not exist"),
        ("directory", lambda w, t: (t / "dir.pth").mkdir() or t / "dir.pth", "dir.pth"),
        ("empty-file", lambda w, t: a_file(t / "empty.pth", ""), "empty.pth"),
        ("random-bytes", lambda w, t: junk(t / "random.pth"), "not a torch file"),
        ("text-file", lambda w, t: a_file(t / "notes.pth", "hello"), "not a torch file"),
        ("truncated", lambda w, t: truncated(w.ckpt, t / "cut.pth", 0.5), "truncated"),
        ("runs-code", lambda w, t: torch_file(t / "evil.pth", {"network_weights": {}, "x": _RunsCode(t / "ran")}),
         "holds the global"),
        ("genesis-list", lambda w, t: ckpt_with(w, t / "c.pth", lambda o: o.update(genesis=[1, 2])), "is a list"),
        ("genesis-string", lambda w, t: ckpt_with(w, t / "c.pth", lambda o: o.update(genesis="x")), "is a str"),
        ("int-weight-key", lambda w, t: ckpt_with(w, t / "c.pth", lambda o: o["network_weights"].update(
            {5: torch.zeros(1)})), "key of type int"),
        ("sparse-tensor", lambda w, t: ckpt_with(w, t / "c.pth", lambda o: o["network_weights"].update(
            {"extra.weight": torch.eye(2).to_sparse()})), "sparse"),
        ("non-tensor-weight", lambda w, t: ckpt_with(w, t / "c.pth", lambda o: o["network_weights"].update(
            {"extra.weight": [1, 2]})), "is not a tensor"),
        ("tensor-in-metadata", lambda w, t: ckpt_with(w, t / "c.pth", lambda o: o["genesis"].update(
            t=torch.zeros(2))), "a Tensor at genesis.t"),
        ("tuple-key-in-metadata", lambda w, t: ckpt_with(w, t / "c.pth", lambda o: o["genesis"].update(
            d={(1, 2): 3})), "key of type tuple"),
        ("list-not-dict", lambda w, t: torch_file(t / "c.pth", [1, 2, 3]), "not a Genesis/nnU-Net checkpoint"),
        ("bare-tensor", lambda w, t: torch_file(t / "c.pth", torch.zeros(3)), "not a Genesis/nnU-Net checkpoint"),
        ("mixed-key-types", lambda w, t: torch_file(t / "c.pth", {1: 2, "a": 3}), "not a Genesis/nnU-Net checkpoint"),
    ]
    for name, make, needle in variants:
        def _make_case(w, t, make=make, needle=needle):
            src = make(w, t)
            return Case(argv(src, t), (needle, str(src)))
        case(f"{command}/{name}")(_make_case)


_ckpt_cases("inspect", lambda src, t: ["inspect", str(src)])
_ckpt_cases("inspect-json", lambda src, t: ["inspect", str(src), "--json"])


# attach -------------------------------------------------------------------------------------

def _attach(w: World, ckpt: Path, *extra: str) -> Case:
    return Case(["attach", "-d", "4", "-c", str(ckpt), "-n", "nnUNetPlans_faults", *extra], (),
                env={"nnUNet_preprocessed": str(w.nnunet["nnUNet_preprocessed"]),
                     "nnUNet_raw": str(w.nnunet["nnUNet_raw"])})


def _attach_case(name, make, needle):
    def _make_case(w, t):
        c = _attach(w, make(w, t))
        c.needles = (needle,)
        return c
    case(f"attach/{name}")(_make_case)


_attach_case("missing-checkpoint", lambda w, t: t / "absent.pth", "does not exist")
_attach_case("random-bytes", lambda w, t: junk(t / "random.pth"), "not a torch file")
_attach_case("runs-code", lambda w, t: torch_file(t / "e.pth", {"network_weights": {}, "x": _RunsCode(t / "r")}),
             "holds the global")
_attach_case("other-network", lambda w, t: w.ckpt, "cannot be transferred")
_attach_case("no-metadata", lambda w, t: ckpt_with(w, t / "c.pth", lambda o: o.pop("genesis")),
             "no 'genesis' metadata")
_attach_case("first-conv-weight-1d", lambda w, t: ckpt_with(w, t / "c.pth", lambda o: o["network_weights"].update(
    {"encoder.stages.0.0.convs.0.conv.weight": torch.zeros(4)})), "different ranks")
_attach_case("genesis-list", lambda w, t: ckpt_with(w, t / "c.pth", lambda o: o.update(genesis=[1])), "is a list")


def _plans_with_configurations(w: World, t: Path, configurations) -> Case:
    """A copy of the preprocessed dataset's plans whose 'configurations' is damaged."""
    source = Path(w.nnunet["nnUNet_preprocessed"])
    dataset = next(p for p in source.iterdir() if p.name.startswith("Dataset004"))
    copy = t / "pre" / dataset.name
    copy.mkdir(parents=True)
    for name in ("dataset.json", "nnUNetPlans.json"):
        shutil.copy(dataset / name, copy / name)
    plans = json.loads((copy / "nnUNetPlans.json").read_text())
    plans["configurations"] = configurations
    (copy / "nnUNetPlans.json").write_text(json.dumps(plans))
    c = _attach(w, w.ckpt)
    c.env = {"nnUNet_preprocessed": str(t / "pre"), "nnUNet_raw": str(w.nnunet["nnUNet_raw"])}
    return c


@case("attach/plans-configurations-a-list")
def _(w, t):
    c = _plans_with_configurations(w, t, ["3d_fullres"])
    c.needles = ("'configurations' is a list", "nnUNetPlans.json")
    return c


@case("attach/plans-configuration-without-settings")
def _(w, t):
    c = _plans_with_configurations(w, t, {"3d_fullres": "x"})
    c.needles = ("configuration '3d_fullres' is a str, not its settings", "nnUNetPlans.json")
    return c


@case("attach/unknown-dataset")
def _(w, t):
    c = _attach(w, w.ckpt)
    c.argv[2] = "987"
    c.needles = ("987",)
    return c


@case("attach/variant-name-with-slash")
def _(w, t):
    c = _attach(w, w.ckpt)
    c.argv[6] = "a/b"
    c.needles = ("a/b",)
    return c


@case("attach/variant-equals-source")
def _(w, t):
    c = _attach(w, w.ckpt)
    c.argv[6] = "nnUNetPlans"
    c.needles = ("never overwrites the source plans",)
    return c


@case("attach/unknown-source-plans")
def _(w, t):
    c = _attach(w, w.ckpt, "-p", "nnUNetPlansNope")
    c.needles = ("nnUNetPlansNope",)
    return c


@case("attach/unknown-configuration")
def _(w, t):
    c = _attach(w, w.ckpt, "--configurations", "3d_nope")
    c.needles = ("3d_nope",)
    return c


@case("attach/no-preprocessed-env")
def _(w, t):
    c = _attach(w, w.ckpt)
    c.env = {"nnUNet_preprocessed": str(t / "nothing_here")}
    c.needles = ("nothing_here",)
    return c


# import-v1 ----------------------------------------------------------------------------------

def _v1(src: Path, out: Path, *extra: str) -> list[str]:
    return ["import-v1", str(src), str(out), *extra]


for _name, _make, _needle in [
    ("missing", lambda w, t: t / "absent.model", "does not exist"),
    ("random-bytes", lambda w, t: junk(t / "r.model"), "not a torch file"),
    ("truncated", lambda w, t: truncated(w.ckpt, t / "cut.model", 0.5), "truncated"),
    ("runs-code", lambda w, t: torch_file(t / "e.model", {"state_dict": {}, "x": _RunsCode(t / "ran")}), "holds the global"),
    ("not-v1", lambda w, t: torch_file(t / "n.model", {"a": 1}), "not an nnU-Net v1 checkpoint"),
    ("state-dict-non-tensor", lambda w, t: torch_file(t / "n.model", {"state_dict": {"a": 1}}), "is not a tensor"),
    ("state-dict-int-key", lambda w, t: torch_file(t / "n.model", {"state_dict": {1: torch.zeros(1)}}), "key"),
    ("v2-checkpoint", lambda w, t: w.ckpt, "not an nnU-Net v1 checkpoint"),
]:
    def _make_case(w, t, _make=_make, _needle=_needle):
        src = _make(w, t)
        return Case(_v1(src, t / "out" / "g.pth"), (_needle, str(src)))
    case(f"import-v1/{_name}")(_make_case)


@case("import-v1/output-parent-is-a-file")
def _(w, t):
    a_file(t / "out")
    return Case(_v1(w.ckpt, t / "out" / "g.pth"), (str(t / "out"),))


@case("import-v1/force-onto-a-directory")
def _(w, t):
    (t / "g.pth").mkdir()
    return Case(_v1(w.ckpt, t / "g.pth", "--force"), (str(t / "g.pth"),))


@case("import-v1/existing-output-without-force")
def _(w, t):
    a_file(t / "g.pth")
    return Case(_v1(w.ckpt, t / "g.pth"), ("--force",))


# export -------------------------------------------------------------------------------------

def _export(src: Path, out: Path, *extra: str) -> list[str]:
    return ["export", str(src), "--format", "nnssl", "-o", str(out), *extra]


for _name, _make, _needle in [
    ("missing", lambda w, t: t / "absent.pth", "does not exist"),
    ("random-bytes", lambda w, t: junk(t / "r.pth"), "not a torch file"),
    ("truncated", lambda w, t: truncated(w.ckpt, t / "cut.pth", 0.5), "truncated"),
    ("runs-code", lambda w, t: torch_file(t / "e.pth", {"network_weights": {}, "x": _RunsCode(t / "ran")}),
     "holds the global"),
    ("not-a-checkpoint", lambda w, t: torch_file(t / "n.pth", {"a": 1}), "n.pth"),
    ("no-patch-size", lambda w, t: w.ckpt, "--patch-size"),  # the shared checkpoint records none
    ("weights-do-not-fit", lambda w, t: ckpt_with(w, t / "w.pth", lambda o: o["network_weights"].pop(
        "decoder.seg_layers.0.weight")), "decoder.seg_layers.0.weight"),
]:
    def _make_case(w, t, _make=_make, _needle=_needle):
        src = _make(w, t)
        return Case(_export(src, t / "out" / "n.pth"), (_needle, str(src)))
    case(f"export/{_name}")(_make_case)


@case("export/patch-size-not-a-multiple-of-the-strides")
def _(w, t):
    return Case(_export(w.ckpt, t / "n.pth", "--patch-size", "16", "30", "32"), ("--patch-size", "[4, 4, 4]"))


@case("export/unknown-format")
def _(w, t):
    return Case(["export", str(w.ckpt), "--format", "onnx", "-o", str(t / "n.pth")], ("--format",))


@case("export/existing-output-without-force")
def _(w, t):
    a_file(t / "n.pth")
    return Case(_export(w.ckpt, t / "n.pth", "--patch-size", "16", "32", "32"), ("--force",))


@case("export/force-onto-a-file-it-did-not-write")
def _(w, t):
    src = shutil.copy(w.ckpt, t / "theirs.pth")  # a torch checkpoint, but no export
    return Case(_export(w.ckpt, Path(src), "--patch-size", "16", "32", "32", "--force"),
                ("not written by this command",))


@case("export/output-is-its-input")
def _(w, t):
    src = shutil.copy(w.ckpt, t / "g.pth")
    return Case(_export(Path(src), Path(src), "--patch-size", "16", "32", "32", "--force"), ("input of this command",))


# evaluate -----------------------------------------------------------------------------------

def _evaluate(pred: Path, ref: Path, out: Path, *extra: str) -> list[str]:
    return ["evaluate", "--pred", str(pred), "--ref", str(ref), "-o", str(out), *extra]


def _damaged_prediction(damage: Callable[[Path, Path], Path], needle: str):
    def make(w, t):
        pred = folder_copy(w.pred, t / "pred")
        victim = sorted(pred.iterdir())[1]
        damage(w.pred / victim.name, victim)
        return Case(_evaluate(pred, w.ref, t / "out.json", "--task", TASK), (needle, victim.name))
    return make


for _name, _damage, _needle in [
    ("truncated", lambda s, d: truncated(s, d), "truncated"),
    ("junk", lambda s, d: junk(d), "not a NIfTI file"),
    ("empty-file", lambda s, d: a_file(d, ""), "truncated"),
    ("nan", lambda s, d: with_value(s, d, np.nan), "NaN/Inf"),
    ("inf", lambda s, d: with_value(s, d, -np.inf), "NaN/Inf"),
    ("probabilities", lambda s, d: with_value(s, d, 0.5), "non-integer"),
    ("label-5", lambda s, d: with_value(s, d, 5), "outside the task's label set"),
    ("label-minus-1", lambda s, d: with_value(s, d, -1), "outside the task's label set"),
    ("pixdim-zero", lambda s, d: with_pixdim(s, d, 0.0), "invalid voxel spacing"),
    ("2d", lambda s, d: _write(np.zeros((9, 9), np.uint8), d), "3D"),
]:
    case(f"evaluate/prediction-{_name}")(_damaged_prediction(_damage, _needle))


@case("evaluate/pred-dir-missing")
def _(w, t):
    return Case(_evaluate(t / "nope", w.ref, t / "o.json", "--task", TASK), (str(t / "nope"),))


@case("evaluate/ref-dir-missing")
def _(w, t):
    return Case(_evaluate(w.pred, t / "nope", t / "o.json", "--task", TASK), (str(t / "nope"),))


@case("evaluate/pred-dir-empty")
def _(w, t):
    (t / "empty").mkdir()
    return Case(_evaluate(t / "empty", w.ref, t / "o.json", "--task", TASK), (str(t / "empty"),))


@case("evaluate/missing-prediction")
def _(w, t):
    pred = folder_copy(w.pred, t / "pred")
    victim = sorted(pred.iterdir())[0]
    victim.unlink()
    return Case(_evaluate(pred, w.ref, t / "o.json", "--task", TASK), (victim.name[:-7],))


@case("evaluate/geometry-mismatch")
def _(w, t):
    pred = folder_copy(w.pred, t / "pred")
    victim = sorted(pred.iterdir())[0]
    im = sitk.ReadImage(str(victim))
    im.SetSpacing([s * 2 for s in im.GetSpacing()])
    sitk.WriteImage(im, str(victim))
    return Case(_evaluate(pred, w.ref, t / "o.json", "--task", TASK), ("spacing", victim.name[:-7]))


@case("evaluate/no-tolerance")
def _(w, t):
    return Case(_evaluate(w.pred, w.ref, t / "o.json"), ("--nsd-tolerance",))


@case("evaluate/negative-tolerance")
def _(w, t):
    return Case(_evaluate(w.pred, w.ref, t / "o.json", "--nsd-tolerance", "-1"), ("--nsd-tolerance",))


@case("evaluate/label-zero")
def _(w, t):
    return Case(_evaluate(w.pred, w.ref, t / "o.json", "--labels", "0", "--nsd-tolerance", "1"), ("--labels",))


@case("evaluate/unknown-task")
def _(w, t):
    return Case(_evaluate(w.pred, w.ref, t / "o.json", "--task", "Task99_Nope"), ("Task99_Nope",))


@case("evaluate/output-parent-is-a-file")
def _(w, t):
    a_file(t / "out")
    return Case(_evaluate(w.pred, w.ref, t / "out" / "o.json", "--task", TASK), (str(t / "out"),))


@case("evaluate/output-is-a-directory")
def _(w, t):
    (t / "o.json").mkdir()
    return Case(_evaluate(w.pred, w.ref, t / "o.json", "--task", TASK), (str(t / "o.json"),))


@case("evaluate/csv-sibling-is-a-directory")
def _(w, t):
    (t / "o.csv").mkdir()
    return Case(_evaluate(w.pred, w.ref, t / "o.json", "--task", TASK), (str(t / "o.csv"),))


@case("evaluate/zero-processes")
def _(w, t):
    return Case(_evaluate(w.pred, w.ref, t / "o.json", "--task", TASK, "-np", "0"), ("--num-processes",))


# compare ------------------------------------------------------------------------------------

def _compare(t: Path, *results: Path, extra=()) -> list[str]:
    return ["compare", *map(str, results), "-o", str(t / "report"), *extra]


def _json_result(name: str, content) -> Callable[[World, Path], Case]:
    def make(w, t):
        bad = t / f"{name}.json"
        if isinstance(content, bytes):
            bad.write_bytes(content)
        else:
            a_file(bad, content if isinstance(content, str) else json.dumps(content))
        return Case(_compare(t, w.evaluation, bad), (str(bad),))
    return make


for _name, _content in [
    ("invalid-json", "{not json"),
    ("json-list", [1, 2]),
    ("no-labels", {"format": "nnunet_genesis.evaluation/1", "cases": []}),
    ("nnunet-summary-without-metrics", {"metric_per_case": [{"reference_file": "a.nii.gz"}], "mean": {}}),
    ("empty-object", {}),
    ("binary", b"\xff\xfe\x00garbage"),
]:
    case(f"compare/{_name}")(_json_result(_name, _content))


@case("compare/missing-result")
def _(w, t):
    return Case(_compare(t, w.evaluation, t / "absent.json"), (str(t / "absent.json"),))


@case("compare/output-parent-is-a-file")
def _(w, t):
    a_file(t / "f")
    return Case(["compare", str(w.evaluation), str(w.evaluation), "-o", str(t / "f" / "report")], (str(t / "f"),))


@case("compare/names-count-mismatch")
def _(w, t):
    return Case(_compare(t, w.evaluation, w.evaluation, extra=("--names", "only-one")), ("--names",))


# package-msd --------------------------------------------------------------------------------

def _package(t: Path, pred: Path, images: Path, out: Path | None = None, task: str = TASK, extra=()) -> list[str]:
    return ["package-msd", "--task", task, "--pred", str(pred), "--images", str(images),
            "-o", str(out or t / "submission.zip"), *extra]


def _damaged_test_prediction(damage, needle):
    def make(w, t):
        pred = folder_copy(w.test_pred, t / "pred")
        victim = sorted(pred.iterdir())[3]
        damage(w.test_pred / victim.name, victim)
        return Case(_package(t, pred, w.images), (needle, victim.name))
    return make


for _name, _damage, _needle in [
    ("truncated", lambda s, d: truncated(s, d), "truncated"),
    ("junk", lambda s, d: junk(d), "not a NIfTI file"),
    ("nan", lambda s, d: with_value(s, d, np.nan), "NaN/Inf"),
    ("probabilities", lambda s, d: with_value(s, d, 0.25), "non-integer"),
    ("label-3", lambda s, d: with_value(s, d, 3), "outside"),
    ("pixdim-nan", lambda s, d: with_pixdim(s, d, float("nan")), "invalid voxel spacing"),
]:
    case(f"package-msd/prediction-{_name}")(_damaged_test_prediction(_damage, _needle))


@case("package-msd/unknown-task")
def _(w, t):
    return Case(_package(t, w.test_pred, w.images, task="Task77_Nope"), ("Task77_Nope",))


@case("package-msd/images-missing")
def _(w, t):
    return Case(_package(t, w.test_pred, t / "nope"), (str(t / "nope"),))


@case("package-msd/pred-missing")
def _(w, t):
    return Case(_package(t, t / "nope", w.images), (str(t / "nope"),))


@case("package-msd/output-parent-is-a-file")
def _(w, t):
    a_file(t / "f")
    return Case(_package(t, w.test_pred, w.images, out=t / "f" / "s.zip"), (str(t / "f"),))


@case("package-msd/output-exists")
def _(w, t):
    a_file(t / "s.zip")
    return Case(_package(t, w.test_pred, w.images, out=t / "s.zip"), ("--force",))


@case("package-msd/output-is-a-directory-with-force")
def _(w, t):
    (t / "s.zip").mkdir()
    return Case(_package(t, w.test_pred, w.images, out=t / "s.zip", extra=("--force",)), (str(t / "s.zip"),))


# pretrain -----------------------------------------------------------------------------------

def _pretrain(t: Path, *sources: str, out: Path | None = None, extra=()) -> list[str]:
    return ["pretrain", *sources, "-o", str(out or t / "run"), "--device", "cpu", "--workers", "1",
            "--spacing", "6", "6", "6", "--patch-size", "32", "32", "32", "--prepare-only", *extra]


def _pretrain_source(make, needle):
    def run(w, t):
        src = make(w, t)
        return Case(_pretrain(t, "-i", str(src)), (needle, str(src)), env=_no_nnunet_env())
    return run


def _no_nnunet_env() -> dict[str, str]:
    return {"nnUNet_raw": "", "nnUNet_preprocessed": "", "nnUNet_results": ""}


for _name, _make, _needle in [
    ("missing-input", lambda w, t: t / "absent", "absent"),
    ("truncated-volume", lambda w, t: truncated(w.ct, t / "src" / "cut.nii.gz"), "truncated"),
    ("nan-volume", lambda w, t: with_value(w.ct, t / "src" / "nan.nii.gz", np.nan), "NaN/Inf"),
    ("pixdim-zero", lambda w, t: with_pixdim(w.ct, t / "src" / "p0.nii.gz", 0.0), "invalid voxel spacing"),
    ("junk-volume", lambda w, t: junk(t / "src" / "j.nii.gz"), "not a NIfTI file"),
    ("empty-folder", lambda w, t: (t / "src").mkdir() or t / "src", "src"),
]:
    case(f"pretrain/{_name}")(_pretrain_source(_make, _needle))


@case("pretrain/duplicate-volume")
def _(w, t):
    src = t / "src"
    src.mkdir()
    shutil.copy(w.ct, src / "a.nii.gz")
    shutil.copy(w.ct, src / "b.nii.gz")
    return Case(_pretrain(t, "-i", str(src)), ("duplicate", str(src / "b.nii.gz")), env=_no_nnunet_env())


@case("pretrain/no-sources")
def _(w, t):
    return Case(_pretrain(t), ("No sources",), env=_no_nnunet_env())


@case("pretrain/output-is-a-file")
def _(w, t):
    a_file(t / "run")
    return Case(_pretrain(t, "-i", str(w.ct)), (str(t / "run"),), env=_no_nnunet_env())


@case("pretrain/output-parent-is-a-file")
def _(w, t):
    a_file(t / "f")
    return Case(_pretrain(t, "-i", str(w.ct), out=t / "f" / "run"), (str(t / "f"),), env=_no_nnunet_env())


@case("pretrain/negative-seed")
def _(w, t):
    return Case(_pretrain(t, "-i", str(w.ct), extra=("--seed", "-1")), ("--seed",), env=_no_nnunet_env())


for _opt, _value in [("--epochs", "0"), ("--iters-per-epoch", "-3"), ("--batch-size", "0"), ("--workers", "-1"),
                     ("--time-budget", "-5"), ("--lr", "0"), ("--val-fraction", "1.5"), ("--val-patches", "0")]:
    def _make_case(w, t, _opt=_opt, _value=_value):
        return Case(_pretrain(t, "-i", str(w.ct), extra=(_opt, _value)), (_opt,), env=_no_nnunet_env())
    case(f"pretrain/option{_opt}={_value}")(_make_case)


@case("pretrain/patch-size-zero")
def _(w, t):
    argv = _pretrain(t, "-i", str(w.ct))
    i = argv.index("--patch-size")
    argv[i + 1:i + 4] = ["0", "32", "32"]
    return Case(argv, ("--patch-size",), env=_no_nnunet_env())


@case("pretrain/spacing-negative")
def _(w, t):
    argv = _pretrain(t, "-i", str(w.ct))
    i = argv.index("--spacing")
    argv[i + 1:i + 4] = ["-1", "6", "6"]
    return Case(argv, ("--spacing",), env=_no_nnunet_env())


@case("pretrain/absurd-coarse-spacing")
def _(w, t):
    src = _write(np.zeros((16, 16, 16), np.float32) + np.arange(16, dtype=np.float32), t / "src" / "coarse.nii.gz",
                 spacing=(100.0, 100.0, 100.0))
    argv = [a for a in _pretrain(t, "-i", str(src))]
    i = argv.index("--spacing")
    del argv[i:i + 4]  # the target spacing from the data: the resampled size explodes
    return Case(argv + ["--spacing", "0.01", "0.01", "0.01"], ("--spacing",), env=_no_nnunet_env())


@case("pretrain/absurd-fine-spacing")
def _(w, t):
    src = _write(np.zeros((16, 16, 16), np.float32) + np.arange(16, dtype=np.float32), t / "src" / "fine.nii.gz",
                 spacing=(1e-6, 1e-6, 1e-6))
    return Case(_pretrain(t, "-i", str(src)), ("fine.nii.gz",), env=_no_nnunet_env())


@case("pretrain/dataset-json-non-integer-channel-keys")
def _(w, t):
    raw = folder_copy(w.raw_dataset, t / "Dataset556_Bad")
    (raw / "dataset.json").write_text(json.dumps({"channel_names": {"zero": "CT"}, "labels": {"background": 0},
                                                  "numTraining": 1, "file_ending": ".nii.gz"}))
    return Case(_pretrain(t, "-d", str(raw)), ("channel_names",), env=_no_nnunet_env())


@case("pretrain/dataset-json-not-an-object")
def _(w, t):
    raw = folder_copy(w.raw_dataset, t / "Dataset556_Bad")
    (raw / "dataset.json").write_text("[1, 2, 3]")
    return Case(_pretrain(t, "-d", str(raw)), ("dataset.json",), env=_no_nnunet_env())


@case("pretrain/dataset-json-invalid")
def _(w, t):
    raw = folder_copy(w.raw_dataset, t / "Dataset556_Bad")
    (raw / "dataset.json").write_text("{oops")
    return Case(_pretrain(t, "-d", str(raw)), ("dataset.json",), env=_no_nnunet_env())


@case("pretrain/unknown-dataset")
def _(w, t):
    return Case(_pretrain(t, "-d", "Dataset999_Nope"), ("Dataset999_Nope",), env=_no_nnunet_env())


@case("pretrain/resume-without-run")
def _(w, t):
    return Case(_pretrain(t, extra=("--resume",)), ("--resume",), env=_no_nnunet_env())


@case("pretrain/resume-with-corrupt-state")
def _(w, t):
    a_file(t / "run" / "pretrain_state.json", "{broken")
    return Case(_pretrain(t, extra=("--resume",)), ("pretrain_state.json",), env=_no_nnunet_env())


@case("pretrain/resume-with-incomplete-state")
def _(w, t):
    a_file(t / "run" / "pretrain_state.json", json.dumps({"dataset_name": "Dataset001_X"}))
    return Case(_pretrain(t, extra=("--resume",)), ("pretrain_state.json",), env=_no_nnunet_env())


@case("pretrain/resume-after-the-dataset-was-deleted")
def _(w, t):
    a_file(t / "run" / "pretrain_state.json", json.dumps({
        "dataset_name": "Dataset999_GenesisPretrain", "plans_identifier": "genesisPretrainPlans",
        "configuration": "3d_fullres", "fold": 0,
        "folders": {n: str(t / "gone" / n) for n in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}}))
    return Case(_pretrain(t, extra=("--resume",)), ("is gone",), env=_no_nnunet_env())


@case("pretrain/two-processes-batch-one")
def _(w, t):
    return Case(_pretrain(t, "-i", str(w.ct), extra=("--num-gpus", "2", "--batch-size", "1")), ("--num-gpus 2",),
                env=_no_nnunet_env())


@case("pretrain/plans-from-unknown")
def _(w, t):
    return Case(_pretrain(t, "-i", str(w.ct), extra=("--plans-from", "Dataset998_Nope")), ("Dataset998_Nope",),
                env=_no_nnunet_env())


@case("pretrain/unknown-option-value")
def _(w, t):
    return Case(_pretrain(t, "-i", str(w.ct), extra=("--optimizer", "lbfgs")), ("--optimizer",), env=_no_nnunet_env())


# demo and env -------------------------------------------------------------------------------

@case("demo/output-is-a-file")
def _(w, t):
    a_file(t / "demo_out")
    return Case(["demo", "-o", str(t / "demo_out"), "--quick"], (str(t / "demo_out"),))


@case("demo/msd-task-missing")
def _(w, t):
    return Case(["demo", "-o", str(t / "demo_out"), "--msd-task", str(t / "nope"), "--quick"], (str(t / "nope"),))


@case("demo/labelled-zero")
def _(w, t):
    return Case(["demo", "-o", str(t / "demo_out"), "--quick", "--labelled", "0"], ("--labelled",))


@case("env/unknown-shell")
def _(w, t):
    return Case(["env", "--shell", "tcsh"], ("--shell",))


def _recipe(w: World, *extra: str) -> Case:
    return Case(["recipe", "-d", "4", "-c", str(w.ckpt), "--configurations", "3d_fullres", "--device", "cpu",
                 "--variant", "nnUNetPlans_faultsRecipe", *extra], (),
                env={name: str(w.nnunet[name]) for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")})


@case("recipe/unknown-configuration")
def _(w, t):
    c = _recipe(w, "--print-commands")
    c.argv[c.argv.index("3d_fullres")] = "3d_nope"
    c.needles = ("3d_nope",)
    return c


@case("recipe/fold-outside-the-splits")
def _(w, t):
    c = _recipe(w, "--folds", "7", "--print-commands")
    c.needles = ("Fold(s) 7 do not exist",)
    return c


@case("recipe/not-a-checkpoint")
def _(w, t):
    c = _recipe(w, "--print-commands")
    c.argv[4] = str(junk(t / "random.pth"))
    c.needles = ("not a torch file",)
    return c


@case("recipe/checkpoint-does-not-attach")
def _(w, t):
    c = _recipe(w, "--work-dir", str(t / "work"), "-o", str(t / "submission.zip"))
    c.needles = ("cannot be transferred onto configuration '3d_fullres'",)
    return c


# ---------------------------------------------------------------------------------------------
def test_the_suite_covers_every_subcommand_with_enough_cases():
    from nnunet_genesis.cli import SUBCOMMANDS

    commands = {name.split("/")[0].replace("inspect-json", "inspect") for name in CASES}
    assert commands == set(SUBCOMMANDS)
    assert len(CASES) >= 100


@pytest.mark.parametrize("name", sorted(CASES))
def test_fault(name, world, tmp_path, capsys, monkeypatch):
    work = tmp_path / "case"
    work.mkdir()
    check_case(CASES[name](world, work), world, work, capsys, monkeypatch)


def test_outputs_follow_the_users_umask(world, tmp_path):
    """Outputs used to be created 0600 (mkstemp's mode) whatever the umask."""
    old = os.umask(0o027)
    try:
        assert main(["evaluate", "--pred", str(world.pred), "--ref", str(world.ref), "--task", TASK,
                     "-o", str(tmp_path / "e.json")]) == 0
        assert main(["compare", str(world.evaluation), str(tmp_path / "e.json"), "-o", str(tmp_path / "report")]) == 0
        assert main(["package-msd", "--task", TASK, "--pred", str(world.test_pred), "--images", str(world.images),
                     "-o", str(tmp_path / "s.zip")]) == 0
        assert main(["preview", str(world.ct), "-o", str(tmp_path / "p.png"), "--crop", "16", "32", "32"]) == 0
    finally:
        os.umask(old)
    files = [tmp_path / n for n in ("e.json", "e.csv", "s.zip", "p.png")] + sorted((tmp_path / "report").iterdir())
    assert len(files) > 5
    for f in files:
        assert (f.stat().st_mode & 0o777) == 0o640, f
