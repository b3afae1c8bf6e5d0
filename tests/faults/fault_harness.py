"""The fault-injection harness: the intact inputs every case damages a copy of (``World``), the
damage helpers, the case registry and the one check of the promise of docs/reliability.md (exit 2,
a message naming the file or option, no traceback, nothing left behind, the inputs unchanged).

Each ``test_fault*.py`` file of this folder keeps its own table of cases (``registry``) and runs
them with ``check_case``; the ``world`` fixture is in conftest.py.
"""

from __future__ import annotations

import gzip
import os
import json
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk
import torch

from nnunet_genesis.checkpoint import load_checkpoint, save_checkpoint
from nnunet_genesis.cli import main
from nnunet_genesis.network import build_network, universal_genesis_arch

TASK = "Task04_Hippocampus"


@dataclass
class World:
    """Intact inputs shared by every case (cases copy what they damage into their own folder)."""

    root: Path
    ct: Path  # a real CT crop, int16 NIfTI
    ckpt: Path  # a small Genesis checkpoint
    weights: dict
    metadata: dict
    ref: Path  # real hippocampus labels
    pred: Path  # predictions equal to the labels
    images: Path  # the real hippocampus test images
    test_pred: Path  # valid predictions for those test images
    evaluation: Path  # a valid evaluate JSON
    raw_dataset: Path  # a small nnU-Net raw dataset
    nnunet: dict


@dataclass
class Case:
    argv: list[str]
    needles: tuple[str, ...]
    code: int = 2
    env: dict[str, str] = field(default_factory=dict)


def _write(array: np.ndarray, path: Path, spacing=(1.0, 1.0, 1.0), like: sitk.Image | None = None) -> Path:
    image = sitk.GetImageFromArray(array)
    if like is not None:
        image.CopyInformation(like)
    else:
        image.SetSpacing(list(spacing)[::-1][: image.GetDimension()])
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), True)
    return path


def build_world(root: Path, ct_dir: Path, hippocampus_dir: Path, hippocampus_preprocessed: dict) -> World:
    """The intact inputs, made once per session (conftest.py's ``world``)."""
    image = sitk.ReadImage(str(ct_dir / "totalseg_abdomen_ct_3mm.nii.gz"))
    crop = sitk.GetArrayFromImage(image)[:24, :48, :48].astype(np.int16)
    ct = _write(crop, root / "ct.nii.gz", spacing=image.GetSpacing()[::-1])

    meta = universal_genesis_arch(1, 1)
    meta["network_kwargs"].update(n_stages=3, features_per_stage=[4, 8, 16], kernel_sizes=[[3, 3, 3]] * 3,
                                  strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2]], n_conv_per_stage=[1, 1, 1],
                                  n_conv_per_stage_decoder=[1, 1])
    meta["source"] = "pretrain"
    net = build_network(meta)
    ckpt = save_checkpoint(root / "genesis_final.pth", net.state_dict(), meta)

    ref, pred = root / "ref", root / "pred"
    ref.mkdir()
    pred.mkdir()
    for f in sorted((hippocampus_dir / "labelsTr").glob("hippocampus_*.nii.gz"))[:3]:
        shutil.copy(f, ref / f.name)
        shutil.copy(f, pred / f.name)
    evaluation = root / "eval.json"
    assert main(["evaluate", "--pred", str(pred), "--ref", str(ref), "--task", TASK, "-o", str(evaluation)]) == 0

    test_pred = root / "test_pred"
    test_pred.mkdir()
    for f in sorted((hippocampus_dir / "imagesTs").glob("hippocampus_*.nii.gz")):
        im = sitk.ReadImage(str(f))
        a = sitk.GetArrayFromImage(im)
        _write((a > np.quantile(a, 0.8)).astype(np.uint8), test_pred / f.name, like=im)

    raw = root / "Dataset555_Faults"
    (raw / "imagesTr").mkdir(parents=True)
    shutil.copy(ct, raw / "imagesTr" / "case_0000.nii.gz")
    (raw / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0}, "numTraining": 1, "file_ending": ".nii.gz"}))
    return World(root, ct, ckpt, dict(net.state_dict()), dict(load_checkpoint(ckpt).metadata), ref, pred, hippocampus_dir / "imagesTs", test_pred,
                 evaluation, raw, hippocampus_preprocessed)


# ---------------------------------------------------------------------------------------------
# damage helpers

def truncated(src: Path, dst: Path, fraction: float = 0.6) -> Path:
    data = src.read_bytes()
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data[:int(len(data) * fraction)])
    return dst


def junk(dst: Path, size: int = 2000) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes())
    return dst


def with_value(src: Path, dst: Path, value: float) -> Path:
    im = sitk.ReadImage(str(src))
    a = sitk.GetArrayFromImage(im).astype(np.float32)
    a[a.shape[0] // 2, a.shape[1] // 2, a.shape[2] // 2] = value
    return _write(a, dst, like=im)


def with_pixdim(src: Path, dst: Path, value: float) -> Path:
    raw = bytearray(gzip.decompress(src.read_bytes()))
    struct.pack_into("<f", raw, 80, value)  # pixdim[1]
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(gzip.compress(bytes(raw)))
    return dst


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def torch_file(dst: Path, obj) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, dst)
    return dst


def ckpt_with(w: World, dst: Path, damage: Callable[[dict], None]) -> Path:
    obj = {"network_weights": dict(w.weights), "genesis": json.loads(json.dumps(w.metadata))}
    damage(obj)
    return torch_file(dst, obj)


def folder_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def a_file(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path

def registry() -> tuple[dict[str, Callable[[World, Path], Case]], Callable]:
    """A table of cases and its decorator: ``@case(name)`` on ``function(world, tmp) -> Case``
    (files it creates before the run are inputs)."""
    cases: dict[str, Callable[[World, Path], Case]] = {}

    def case(name: str):
        def register(fn):
            assert name not in cases, name
            cases[name] = fn
            return fn
        return register

    return cases, case



def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for p in folder.rglob("*"):
        try:
            st = p.lstat()
        except FileNotFoundError:
            continue
        out[str(p.relative_to(folder))] = (st.st_size, st.st_mtime_ns) if p.is_file() else (-1, 0)
    return out


def run_cli(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse's usage errors
        return int(e.code) if isinstance(e.code, int) else 2


def check_case(c: Case, world: World, work: Path, capsys, monkeypatch) -> None:
    """Run one case and assert the promise: its exit code, its needles in stderr, no traceback,
    nothing left behind or changed in its folder or in the shared inputs, no pickle's code run."""
    for key, value in c.env.items():
        if value:
            monkeypatch.setenv(key, value)
        else:
            monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(work)
    before, world_before = _tree(work), _tree(world.root)
    rc = run_cli(c.argv)
    out, err = capsys.readouterr()
    assert rc == c.code, f"exit {rc}\n{out[-2000:]}\n{err[-2000:]}"
    assert "Traceback" not in err and "Traceback" not in out
    for needle in c.needles:
        assert needle in err, f"{needle!r} not in:\n{err}"
    assert _tree(work) == before, "files were left behind or changed"
    assert _tree(world.root) == world_before
    assert not list(work.rglob("ran")), "a pickle's code ran"
