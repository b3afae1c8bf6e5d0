"""Sources are scanned and checked before anything is trained: every bad file in one message."""

from __future__ import annotations

import json
import shutil

import pytest

from nnunet_genesis.cli import main
from nnunet_genesis.pretraining.sources import check_channel_counts, scan_input, scan_raw_dataset


@pytest.fixture(autouse=True)
def _no_nnunet_env(monkeypatch):
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.delenv(name, raising=False)


def _pretrain_args(out, *sources, extra=()):
    return ["pretrain", *sources, "-o", str(out), "--device", "cpu", "--workers", "1",
            "--spacing", "6", "6", "6", "--patch-size", "32", "32", "32", "--prepare-only", *extra]


def _sources_for(key, path):
    return ["-d", str(path)] if key == "mixed channel counts" else ["-i", str(path)]


def test_ct_folder_scan_finds_nifti_nrrd_and_the_dicom_series(ct_dir):
    result = scan_input(ct_dir)
    assert result.bad == []
    found = {c.channels[0].name for c in result.cases}
    assert "pyradiomics_lung1_ct.nrrd" in found
    assert "totalseg_ct_dicom_series" in found  # the folder itself is one volume
    assert sum(n.endswith(".nii.gz") for n in found) == len(list(ct_dir.glob("*.nii.gz")))
    assert len(result.cases) == len(list(ct_dir.glob("*.nii.gz"))) + 2


def test_raw_dataset_scan_groups_channels_and_reports_missing_ones(tmp_path, bad_volumes):
    two = bad_volumes["mixed channel counts"]
    result = scan_raw_dataset(str(two))
    assert [len(c.channels) for c in result.cases] == [2]
    (two / "imagesTr" / "pair_0001.nii.gz").unlink()
    result = scan_raw_dataset(str(two))
    assert result.cases == [] and "lacks channel file(s) 0001" in result.bad[0].reason


def test_channel_count_check_keeps_the_majority_or_the_plans_count(bad_volumes, ct_crops):
    cases = scan_raw_dataset(str(bad_volumes["mixed channel counts"])).cases
    cases += [c for p in ct_crops for c in scan_input(p).cases]
    good, bad = check_channel_counts(cases, None)
    assert len(good) == 3 and len(bad) == 1 and "has 2 channel(s)" in bad[0].reason
    good, bad = check_channel_counts(cases, 2)
    assert len(good) == 1 and len(bad) == 3


@pytest.mark.parametrize("key", ["not a NIfTI file", "truncated", "duplicate", "2D image", "4D image", "NaN/Inf",
                                 "unknown extension", "empty folder", "mixed channel counts"])
def test_each_bad_input_stops_before_training_with_exit_2(key, bad_volumes, ct_crops, tmp_path, capsys):
    bad = bad_volumes[key]
    src = tmp_path / "one_bad"
    src.mkdir()
    shutil.copy(ct_crops[0], src / ct_crops[0].name)
    if key in ("empty folder", "mixed channel counts"):
        sources = ["-i", str(src), *_sources_for(key, bad)]
    else:
        shutil.copy(bad, src / bad.name)
        sources = ["-i", str(src)]
    out = tmp_path / "out"
    assert main(_pretrain_args(out, *sources)) == 2
    err = capsys.readouterr().err
    assert "1 input(s) cannot be used" in err and key in err
    assert (bad.name if key not in ("empty folder", "mixed channel counts") else str(bad)) in err
    assert "Traceback" not in err
    # nothing kept: no run state, no dataset, no staging folder
    assert not (out / "pretrain_state.json").exists()
    raw = out / "nnunet_work" / "nnUNet_raw"
    assert not raw.exists() or list(raw.iterdir()) == []


def test_all_bad_inputs_in_one_message_then_skip_bad_continues(bad_volumes, ct_crops, tmp_path, capsys):
    good = tmp_path / "good"
    good.mkdir()
    for p in ct_crops[:2]:
        shutil.copy(p, good / p.name)
    folder = bad_volumes["not a NIfTI file"].parent  # holds all bad files except the two below
    sources = ["-i", str(good), str(folder), str(bad_volumes["empty folder"]),
               "-d", str(bad_volumes["mixed channel counts"])]
    out = tmp_path / "out"
    assert main(_pretrain_args(out, *sources)) == 2
    err = capsys.readouterr().err
    assert f"{len(bad_volumes)} input(s) cannot be used" in err
    for key, path in bad_volumes.items():
        assert key in err, key
    assert not (out / "pretrain_state.json").exists()

    assert main(_pretrain_args(out, *sources, extra=["--skip-bad"])) == 0
    printed = capsys.readouterr().out
    assert f"continuing without {len(bad_volumes)} input(s)" in printed
    state = json.loads((out / "pretrain_state.json").read_text())
    raw = out / "nnunet_work" / "nnUNet_raw" / state["dataset_name"]
    record = json.loads((raw / "genesis_sources.json").read_text())
    assert record["num_volumes"] == 2
    assert sorted(p for c in record["cases"].values() for p in c["files"]) == sorted(
        str(good / p.name) for p in ct_crops[:2])
    assert len(record["skipped"]) == len(bad_volumes)
    pre = out / "nnunet_work" / "nnUNet_preprocessed" / state["dataset_name"]
    assert len(list((pre / f"{state['plans_identifier']}_3d_fullres").glob("*.b2nd"))) == 2 * 2  # data + seg
    # a second fresh run into the same OUT is refused instead of mixing two runs
    assert main(_pretrain_args(out, "-i", str(good))) == 2
    assert "--resume" in capsys.readouterr().err
