"""benchmarks/transfer_sources.py: the supervised source's settings and the check that two arms are identical
(no training)."""

from __future__ import annotations

import json

import pytest

import transfer_protocol as protocol  # benchmarks/, put on the path by conftest.py
import transfer_sources as sources
from nnunet_genesis.outputs import write_json_atomic


def _record(seed, arm, dice, pseudo):
    return {"K": 5, "seed": seed, "arm": arm, "label_names": {"1": "A"},
            "labels": {"1": {"dice": sum(dice.values()) / len(dice), "nsd": None}},
            "cases": {c: {"1": {"dice": d, "nsd": d}} for c, d in dice.items()}, "pseudo_dice": pseudo}


def test_compare_arms_finds_identical_and_different_records():
    runs = [_record(0, "genesis", {"a": 0.5, "b": 0.7}, [[0.1], [0.6]]),
            _record(0, "genesis_nnssl", {"a": 0.5, "b": 0.7}, [[0.1], [0.6]]),
            _record(1, "genesis", {"a": 0.5, "b": 0.7}, [[0.1], [0.6]]),
            _record(1, "genesis_nnssl", {"a": 0.5, "b": 0.75}, [[0.1], [0.5]]),
            _record(2, "genesis", {"a": 0.5}, [[0.1]])]  # no partner: not compared
    rows = sources.compare_arms(runs, "genesis", "genesis_nnssl")
    assert [(r["seed"], r["identical"]) for r in rows] == [(0, True), (1, False)]
    assert rows[1]["max_abs_diff"]["dice"] == pytest.approx(0.05)
    assert rows[1]["max_abs_diff"]["pseudo_dice"] == pytest.approx(0.1)
    shorter = [runs[0], dict(runs[1], pseudo_dice=[[0.1]])]  # a curve of another length is a difference
    assert not sources.compare_arms(shorter, "genesis", "genesis_nnssl")[0]["identical"]


def test_same_arms_exit_codes(tmp_path, capsys):
    for arm, dice in (("genesis", 0.5), ("copy", 0.5), ("other", 0.6)):
        write_json_atomic(_record(0, arm, {"a": dice}, [[dice]]), protocol.unit_path(tmp_path, f"K5_seed0_{arm}"))
    assert sources.main(["same-arms", str(tmp_path), "genesis", "copy"]) == 0
    assert "identical on every (K, seed)" in capsys.readouterr().out
    assert sources.main(["same-arms", str(tmp_path), "genesis", "other"]) == 1
    assert "NOT identical" in capsys.readouterr().out
    assert sources.main(["same-arms", str(tmp_path), "genesis", "absent"]) == 2
    assert "nothing to compare" in capsys.readouterr().err


def test_the_supervised_source_has_the_benchmarks_cpu_reduction_and_never_hippocampus(tmp_path, capsys):
    source = sources.SupervisedSource()
    assert source.epochs == protocol.SETTINGS["cpu"].finetune_epochs
    assert source.iterations == protocol.SETTINGS["cpu"].finetune_iterations
    assert sources.TRAINER == "nnUNetTrainerStock_demo"
    run = sources.Supervised(tmp_path / "s", source)
    assert run.nnunet.dataset_id == 990  # the synthetic dataset's id, not hippocampus (4)
    assert [s.name for s in run.steps()] == ["dataset", "preprocess", "train"]
    # a folder of other settings is refused, naming what differs
    write_json_atomic(dict(json.loads(json.dumps(vars(source))), seed=1), tmp_path / "s" / sources.CONFIG_FILE)
    assert sources.main(["supervised", "-o", str(tmp_path / "s"), "--cpu-bf16", "off"]) == 2
    assert "seed: recorded 1, now 0" in capsys.readouterr().err


def test_the_committed_source_records_hold_what_the_docs_say():
    """benchmarks/results/sources_k5.json (docs/benchmark_transfer.md, "Other sources against Genesis"):
    the nnssl round trip's arm equals genesis on every seed, both extra arms name their file by sha256,
    and the records import under the current settings like cpu.json."""
    from dataclasses import asdict
    from pathlib import Path

    results = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "sources_k5.json"
    data = json.loads(results.read_text())
    rows = sources.compare_arms(data["runs"], "genesis", "genesis_nnssl")
    assert [(r["seed"], r["identical"]) for r in rows] == [(0, True), (1, True), (2, True)]
    assert {a: v["kind"] for a, v in data["checkpoint_arms"].items()} == {"supervised": "nnunet", "genesis_nnssl": "nnssl"}
    assert all(len(v["sha256"]) == 64 for v in data["checkpoint_arms"].values())
    expected = {"task": "Task04_Hippocampus", "device": "cpu", "setting": "cpu",
                "setting_values": asdict(protocol.SETTINGS["cpu"]), "split_seed": 0}
    assert len(protocol.importable_runs(results, expected)) == 15  # 5 arms x 3 seeds, the settings of cpu.json
