"""Runs own what they delete: a pretraining reserves its dataset id atomically, and the clean-up of
an interrupted preparation removes only what its own run created (issue: a killed run's re-run
deleted another run's dataset that had taken the same id)."""

from __future__ import annotations

import json
import multiprocessing as mp

import pytest

from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.pretraining.folders import (NnunetFolders, claim_path, read_claim, release_claim,
                                                reserve_dataset_name)
from nnunet_genesis.pretraining.prepare import CLAIM_FILE, remove_interrupted_preparation


@pytest.fixture()
def folders(tmp_path) -> NnunetFolders:
    f = NnunetFolders(tmp_path / "raw", tmp_path / "pre", tmp_path / "results")
    f.make()
    return f


def killed_during_conversion(folders: NnunetFolders, out, run: str) -> str:
    """What a preparation killed (-9) while converting leaves: its claims and a staging folder only."""
    name = reserve_dataset_name(folders, None, run, out)
    out.mkdir(parents=True)
    (out / CLAIM_FILE).write_text(json.dumps({"dataset_name": name, "folders": folders.to_dict(), "run": run}))
    (folders.raw / f".{name}.x1.staging").mkdir()
    return name


def test_an_id_held_only_by_a_staging_folder_or_a_claim_is_not_taken_again(folders, tmp_path):
    a = killed_during_conversion(folders, tmp_path / "out_a", "run-a")
    assert a == "Dataset999_GenesisPretrain"
    claim_path(folders, a).unlink()  # even with its claim gone, the staging folder holds the id
    assert reserve_dataset_name(folders, None, "run-b", tmp_path / "out_b") == "Dataset998_GenesisPretrain"
    assert reserve_dataset_name(folders, None, "run-c", tmp_path / "out_c") == "Dataset997_GenesisPretrain"
    with pytest.raises(GenesisUserError, match="being prepared by another run"):
        reserve_dataset_name(folders, 997, "run-d", tmp_path / "out_d")


def test_rerunning_a_killed_run_removes_its_own_leftovers_and_nothing_of_another_run(folders, tmp_path, capsys):
    a = killed_during_conversion(folders, tmp_path / "out_a", "run-a")
    b = reserve_dataset_name(folders, None, "run-b", tmp_path / "out_b")  # a second run, finished
    for base in (folders.raw, folders.preprocessed, folders.results):
        (base / b).mkdir()
        (base / b / "keep").write_text("the other run's data")
    release_claim(folders, b, "run-b")

    remove_interrupted_preparation(tmp_path / "out_a")
    assert not list(folders.raw.glob(f".{a}*")) and not (tmp_path / "out_a" / CLAIM_FILE).exists()
    assert all((base / b / "keep").is_file() for base in (folders.raw, folders.preprocessed, folders.results))


def test_a_dataset_another_run_holds_now_is_never_removed(folders, tmp_path, capsys):
    """The reported loss: run A was killed, its id was then taken by run B (its reservation gone);
    re-running A must not delete B's raw, preprocessed and results folders."""
    a = killed_during_conversion(folders, tmp_path / "out_a", "run-a")
    claim_path(folders, a).unlink()
    claim_path(folders, a).write_text(json.dumps({"run": "run-b", "out": str(tmp_path / "out_b")}))
    for base in (folders.raw, folders.preprocessed, folders.results):
        (base / a).mkdir()
        (base / a / "checkpoint_final.pth").write_text("run B's")
    remove_interrupted_preparation(tmp_path / "out_a")
    assert all((base / a / "checkpoint_final.pth").is_file() for base in (folders.raw, folders.preprocessed,
                                                                          folders.results))
    assert read_claim(folders, a)["run"] == "run-b"  # B's reservation stays
    assert "nothing of Dataset999_GenesisPretrain was removed" in capsys.readouterr().out
    # a claim file of the version before run tokens is treated the same way: nothing removed
    (tmp_path / "out_a" / CLAIM_FILE).write_text(json.dumps({"dataset_name": a, "folders": folders.to_dict()}))
    remove_interrupted_preparation(tmp_path / "out_a")
    assert (folders.raw / a / "checkpoint_final.pth").is_file()


def _reserve(args):
    raw, pre, results, run = args
    return reserve_dataset_name(NnunetFolders(raw, pre, results), None, run, raw)


def test_concurrent_reservations_get_distinct_ids(folders):
    with mp.get_context("spawn").Pool(4) as pool:
        names = pool.map(_reserve, [(folders.raw, folders.preprocessed, folders.results, f"run-{i}")
                                    for i in range(12)])
    assert len(set(names)) == 12
