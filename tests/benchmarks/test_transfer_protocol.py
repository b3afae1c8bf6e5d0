"""benchmarks/transfer.py and its protocol module: case draws, resume-skipping and the statistics (no training)."""

from __future__ import annotations

import importlib.util
import json
import signal
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest

from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.evaluation import label_efficiency
from nnunet_genesis.outputs import write_json_atomic
from nnunet_genesis.trainers import starts, variants

import transfer_protocol as protocol  # benchmarks/, put on the path by conftest.py

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def transfer():
    spec = importlib.util.spec_from_file_location("transfer_benchmark", ROOT / "benchmarks" / "transfer.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]



def test_script_loads_with_the_protocols_defaults(transfer):
    args = transfer.parse_args(["--msd-task", "Task04_Hippocampus"])
    assert args.labelled == [5, 20] and args.seeds == [0, 1, 2] and tuple(args.arms) == protocol.DEFAULT_ARMS
    assert set(protocol.DEFAULT_ARMS) <= set(protocol.ARMS) and "scratch" in protocol.DEFAULT_ARMS

def test_training_cases_are_nested_across_k_and_differ_between_seeds():
    pool = [f"case_{i:03d}" for i in range(100)]
    for seed in (0, 1, 2):
        small, large = protocol.training_cases(pool, 5, seed), protocol.training_cases(pool, 20, seed)
        assert len(small) == 5 and len(large) == 20 and set(small) <= set(large)
        assert protocol.training_cases(pool, 5, seed) == small  # reproducible
    assert protocol.training_cases(pool, 20, 0) != protocol.training_cases(pool, 20, 1)
    with pytest.raises(GenesisUserError, match="only 100"):
        protocol.training_cases(pool, 101, 0)


def test_heldout_draw_is_disjoint_and_refuses_an_empty_pool():
    cases = [f"c{i}" for i in range(30)]
    ev, val, pool = protocol.draw_heldout(cases, 10, 3, split_seed=0)
    assert len(ev) == 10 and len(val) == 3 and len(pool) == 17
    assert not (set(ev) & set(val)) and not (set(ev) | set(val)) & set(pool)
    with pytest.raises(GenesisUserError, match="leave none"):
        protocol.draw_heldout(cases, 25, 5, split_seed=0)


def _record(k, seed, arm, dice_by_case, first_nonzero):
    cases = {c: {"1": {"dice": d, "nsd": d}, "2": {"dice": d / 2, "nsd": d / 2}} for c, d in dice_by_case.items()}
    return {"K": k, "seed": seed, "arm": arm, "label_names": {"1": "A", "2": "P"},
            "labels": {"1": {"dice": float(np.mean(list(dice_by_case.values()))), "nsd": None},
                       "2": {"dice": float(np.mean(list(dice_by_case.values()))) / 2, "nsd": None}},
            "cases": cases, "first_nonzero_epoch": first_nonzero}


def test_pending_units_skip_finished_records(tmp_path):
    units = [(5, s, a) for s in (0, 1) for a in ("genesis", "scratch")]
    assert protocol.pending_units(tmp_path, units) == units
    write_json_atomic(_record(5, 0, "genesis", {"a": 0.5}, [1, 1]),
                               protocol.unit_path(tmp_path, protocol.unit_name(5, 0, "genesis")))
    (tmp_path / "units" / ".K5_seed1_genesis.json.tmp").write_text("{")  # an interrupted write is not a record
    assert protocol.pending_units(tmp_path, units) == [(5, 0, "scratch"), (5, 1, "genesis"), (5, 1, "scratch")]
    assert [r["arm"] for r in protocol.load_runs(tmp_path)] == ["genesis"]


def test_import_runs_copies_checkpoint_free_records_of_the_same_settings_only(tmp_path):
    pool = [f"case_{i:03d}" for i in range(30)]
    expected = {"task": "Task04_Hippocampus", "device": "cpu", "setting": "cpu",
                "setting_values": {"width": 0.25, "cpu_bf16": False}, "split_seed": 0}
    runs = [dict(_record(k, s, a, {"a": 0.5}, [1, 1]), train_cases=protocol.training_cases(pool, k, s))
            for k in (5, 20) for s in (0, 1) for a in ("genesis", "scratch", "stock")]
    source = tmp_path / "old" / "transfer_results.json"
    write_json_atomic(dict(expected, runs=runs), source)
    out = tmp_path / "new"
    write_json_atomic(_record(5, 0, "scratch", {"a": 0.9}, [1, 1]), protocol.unit_path(out, "K5_seed0_scratch"))
    units = [(k, s, a) for k in (5, 20) for s in (0,) for a in ("scratch", "headwarmup")]
    records = protocol.importable_runs(source, expected)
    assert protocol.import_runs(records, source, out, pool, units) == ["K20_seed0_scratch"]  # K5 exists here
    copied = json.loads(protocol.unit_path(out, "K20_seed0_scratch").read_text())
    assert copied["imported_from"] == str(source) and copied["arm"] == "scratch"
    assert protocol.pending_units(out, units) == [(5, 0, "headwarmup"), (20, 0, "headwarmup")]  # never genesis arms
    assert json.loads(protocol.unit_path(out, "K5_seed0_scratch").read_text())["labels"]["1"]["dice"] == 0.9

    other = tmp_path / "other.json"
    for values in ({"width": 0.5}, {"width": 0.25, "cpu_bf16": True}):
        write_json_atomic(dict(expected, setting_values=values, runs=runs), other)
        with pytest.raises(GenesisUserError, match="setting_values"):
            protocol.importable_runs(other, expected)
    with pytest.raises(GenesisUserError, match="other cases"):
        protocol.import_runs(records, source, tmp_path / "b", list(reversed(pool)), units)
    assert not (tmp_path / "b" / "units").exists()  # refused before anything is written
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(GenesisUserError, match="not a readable"):
        protocol.importable_runs(tmp_path / "broken.json", expected)


def test_an_unreadable_import_is_refused_before_anything_runs(transfer, hippocampus_dir, tmp_path, capsys):
    (tmp_path / "results.json").write_text('{"task": "Task04_Hippocampus"}')
    out = tmp_path / "out"
    handler = signal.getsignal(signal.SIGTERM)  # main() turns SIGTERM into an interrupt
    try:
        rc = transfer.main(["--msd-task", str(hippocampus_dir), "-o", str(out), "--import-runs",
                            str(tmp_path / "results.json")])
    finally:
        signal.signal(signal.SIGTERM, handler)
    assert rc == 2 and not out.exists()
    assert "not a readable transfer_results.json" in capsys.readouterr().err


def test_cpu_bf16_reaches_the_schedule_and_is_refused_on_a_gpu(transfer, hippocampus_dir, tmp_path, capsys):
    cpu = protocol.SETTINGS["cpu"]
    for bf16 in (False, True):
        bench = protocol.TransferBenchmark(tmp_path, hippocampus_dir, "cpu", "cpu", replace(cpu, cpu_bf16=bf16), 0, None)
        assert bench.schedule().cpu_bf16 is bf16
    handler = signal.getsignal(signal.SIGTERM)
    try:
        rc = transfer.main(["--msd-task", str(hippocampus_dir), "-o", str(tmp_path / "out"), "--device", "cuda",
                            "--cpu-bf16", "on"])
    finally:
        signal.signal(signal.SIGTERM, handler)
    assert rc == 2 and not (tmp_path / "out").exists()
    assert "only for --device cpu" in capsys.readouterr().err


def test_cpu_bf16_warns_on_a_cpu_without_bfloat16_instructions(transfer, hippocampus_dir, tmp_path, capsys,
                                                                 monkeypatch):
    monkeypatch.setattr(transfer, "cpu_has_native_bf16", lambda: False)
    (tmp_path / "someone_elses_file").write_text("")
    handler = signal.getsignal(signal.SIGTERM)
    try:  # stops at the folder check, after the warning
        rc = transfer.main(["--msd-task", str(hippocampus_dir), "-o", str(tmp_path), "--cpu-bf16", "on"])
    finally:
        signal.signal(signal.SIGTERM, handler)
    err = capsys.readouterr().err
    assert rc == 2 and "no bfloat16 instructions" in err and "not a benchmark folder" in err


@pytest.mark.parametrize("native", [True, False])
def test_bfloat16_runs_by_default_only_where_the_cpu_has_it(transfer, monkeypatch, native):
    """Never the emulated path by default: on a CPU without bfloat16 instructions the cpu setting
    fine-tunes in float32, says so, and keeps its results in a folder of their own."""
    monkeypatch.setattr(transfer, "cpu_has_native_bf16", lambda: native)
    cpu = protocol.SETTINGS["cpu"]
    assert cpu.cpu_bf16
    setting, precision, warning = transfer.resolve_cpu_bf16(cpu, None, "cpu")
    assert setting.cpu_bf16 is native and warning is None
    assert precision.startswith("bfloat16 forward pass" if native else "float32 (this CPU has no bfloat16")
    for requested in ("on", "off"):  # an explicit choice is kept, a slow one with a warning
        setting, precision, warning = transfer.resolve_cpu_bf16(cpu, requested, "cpu")
        assert setting.cpu_bf16 is (requested == "on") and f"--cpu-bf16 {requested}" in precision
        assert (warning is not None) is (requested == "on" and not native)
    assert transfer.resolve_cpu_bf16(cpu, None, "cuda")[0].cpu_bf16 is False


def test_a_folder_of_another_setting_is_refused_naming_what_differs(transfer, hippocampus_dir, tmp_path, capsys,
                                                                    monkeypatch):
    monkeypatch.setattr(transfer, "cpu_has_native_bf16", lambda: True)  # the setting's bfloat16 runs here
    values = dict(asdict(protocol.SETTINGS["cpu"]), cpu_bf16=False)  # a float32 run
    config = {"msd_task": str(Path(hippocampus_dir).resolve()), "device": "cpu", "setting": "cpu", "values": values,
              "split_seed": 0, "max_cases": None}
    (tmp_path / "benchmark_config.json").write_text(json.dumps(config))
    handler = signal.getsignal(signal.SIGTERM)
    try:
        rc = transfer.main(["--msd-task", str(hippocampus_dir), "-o", str(tmp_path), "--report-only"])
        err = capsys.readouterr().err
        assert rc == 2 and "values.cpu_bf16: recorded False, now True" in err and "repeat that run's options" in err
        rc = transfer.main(["--msd-task", str(hippocampus_dir), "-o", str(tmp_path), "--report-only",
                            "--cpu-bf16", "off"])  # the same settings: accepted, nothing prepared there yet
        err = capsys.readouterr().err
        assert rc == 2 and "holds no prepared benchmark" in err
    finally:
        signal.signal(signal.SIGTERM, handler)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["benchmark_config.json"]


def test_summary_gives_the_paired_difference_with_ci_and_p():
    rng = np.random.default_rng(0)
    cases = [f"c{i}" for i in range(30)]
    runs = []
    for seed in (0, 1, 2):
        base = dict(zip(cases, rng.uniform(0.3, 0.6, len(cases))))
        runs.append(_record(5, seed, "scratch", base, [2, 3]))
        runs.append(_record(5, seed, "genesis", {c: v + 0.1 for c, v in base.items()}, [1, 3]))
        runs.append(_record(5, seed, "encoder", dict(base), [2, None]))
    summary = label_efficiency.summarize(runs, n_boot=2000)
    row = summary["5"]["1"]["arms"]["genesis"]["dice"]["vs_scratch"]
    assert row["mean_diff"] == pytest.approx(0.1)
    assert row["ci95"][0] == pytest.approx(0.1) and row["ci95"][1] == pytest.approx(0.1)
    assert row["p"] < 1e-4 and row["n_seeds"] == 3 and row["n_cases"] == 30
    same = summary["5"]["1"]["arms"]["encoder"]["dice"]["vs_scratch"]
    assert same["mean_diff"] == 0 and same["p"] is None
    assert "vs_scratch" not in summary["5"]["1"]["arms"]["scratch"]["dice"]
    crit = label_efficiency.criteria(runs)
    assert [c["seed"] for c in crit] == [0, 1, 2]
    assert all(c["leaves_zero_no_later"] and c["mean_dice_not_lower"] for c in crit)
    # an arm that never leaves 0 on a label fails the criterion
    runs_bad = [dict(r, first_nonzero_epoch=[1, None]) if r["arm"] == "genesis" else r for r in runs]
    assert not any(c["leaves_zero_no_later"] for c in label_efficiency.criteria(runs_bad))
    text = label_efficiency.table({"task": "T", "setting": "cpu", "device": "cpu", "n_eval": 30, "summary": summary,
                           "criteria": crit})
    assert "+0.100" in text and "genesis" in text and "genesis 3 of 3" in text
    crit_encoder = label_efficiency.criteria(runs, "encoder")  # leaves 0 on label 2 never: fails on every run
    assert {c["arm"] for c in crit_encoder} == {"encoder"} and not any(c["leaves_zero_no_later"] for c in crit_encoder)
    json.dumps(summary)  # the summary goes into transfer_results.json


def test_first_nonzero_epochs():
    assert label_efficiency.first_nonzero_epochs([[0, 0], [0.1, 0], [0.2, 0.3]], 2) == [1, 2]
    assert label_efficiency.first_nonzero_epochs([[0, 0]], 2) == [None, None]


def test_plot_writes_a_png(tmp_path):
    runs = [_record(k, s, a, {"c1": 0.4 + 0.01 * s, "c2": 0.5}, [0, 0]) for k in (5, 20) for s in (0, 1)
            for a in ("scratch", "genesis")]
    results = {"task": "T", "setting": "cpu", "summary": label_efficiency.summarize(runs, n_boot=200)}
    label_efficiency.plot(results, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    one_k = {"task": "T", "setting": "cpu", "summary": label_efficiency.summarize(
        [r for r in runs if r["K"] == 5], n_boot=200)}  # one K: the CIs are error bars, not a band of width 0
    label_efficiency.plot(one_k, tmp_path / "one.png")
    assert (tmp_path / "one.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_first_epoch_above_half_on_every_label():
    from nnunet_genesis.evaluation.label_efficiency import first_epoch_all_above

    assert first_epoch_all_above([[0.0, 0.6], [0.55, 0.4], [0.6, 0.7], [0.9, 0.9]]) == 2
    assert first_epoch_all_above([[0.6, 0.0]]) is None
    assert first_epoch_all_above([]) is None


def test_a_baseline_that_did_not_learn_a_label_is_flagged_as_unfair():
    runs = [_record(20, s, "scratch", {"c1": 0.8, "c2": 0.9}, [0, 0]) for s in (0, 1)]
    runs[0]["labels"]["2"] = {"dice": 0.8, "nsd": 0.8}
    runs[1]["labels"]["2"] = {"dice": 0.03, "nsd": 0.1}
    runs.append(_record(20, 1, "genesis", {"c1": 0.8, "c2": 0.9}, [0, 0]))
    unfair = label_efficiency.unfair_runs(runs)
    assert unfair == [{"K": 20, "seed": 1, "labels": {"2": 0.03}}]
    text = label_efficiency.table({"task": "T", "setting": "cpu", "device": "cpu", "n_eval": 2, "summary": {},
                                   "criteria": [], "unfair_runs": unfair})
    assert "NOT FAIR" in text and "K=20 seed 1 (label 2 0.030)" in text
    assert label_efficiency.unlearnt({"1": 0.51, "2": 0.5, "3": None}) == ["2", "3"]


def test_every_start_of_the_registry_is_an_arm_on_the_short_schedule():
    assert [arm for arm in protocol.ARMS if arm not in ("scratch", "stock")] == [s.arm for s in starts.STARTS]
    for arm, (trainer, reads_checkpoint) in protocol.ARMS.items():
        assert trainer.endswith("_demo") and trainer in variants.TRAINERS
        assert reads_checkpoint == (arm not in protocol.CHECKPOINT_FREE_ARMS)
    assert protocol.CHECKPOINT_FREE_ARMS == ("scratch", "stock")


def test_the_committed_cpu_results_import_under_the_current_settings():
    """benchmarks/results/cpu.json is in the current format: --import-runs takes it as it is."""
    results = ROOT / "benchmarks" / "results" / "cpu.json"
    expected = {"task": "Task04_Hippocampus", "device": "cpu", "setting": "cpu",
                "setting_values": asdict(protocol.SETTINGS["cpu"]), "split_seed": 0}
    runs = protocol.importable_runs(results, expected)
    assert {r["arm"] for r in runs} <= set(protocol.ARMS) and len(runs) == 66
    assert {(r["K"], r["seed"]) for r in runs} == {(k, s) for k in (5, 20) for s in (0, 1, 2)}


# --- --checkpoint NAME=PATH: an arm fine-tuned from any accepted file with the default start

def _small_genesis_checkpoint(path: Path, seed: int = 0) -> Path:
    """A Genesis checkpoint of a two-stage PlainConvUNet (random weights; ``seed`` changes the file)."""
    import torch

    from nnunet_genesis.checkpoint import save_checkpoint
    from nnunet_genesis.network import build_network, universal_genesis_arch

    meta = universal_genesis_arch(1, 1)
    meta["network_kwargs"].update(n_stages=2, features_per_stage=[4, 8], kernel_sizes=[[3, 3, 3]] * 2,
                                  strides=[[1, 1, 1], [2, 2, 2]], n_conv_per_stage=[1, 1], n_conv_per_stage_decoder=[1])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = build_network(meta)
    return save_checkpoint(path, network.state_dict(), dict(meta, source="pretrain"))


def test_a_checkpoint_arm_needs_a_new_name():
    assert protocol.parse_checkpoint_arm("supervised=~/m.pth") == ("supervised", Path("~/m.pth").expanduser())
    assert protocol.parse_checkpoint_arm("genesis_nnssl-2=a=b.pth")[0] == "genesis_nnssl-2"
    for spec, match in (("model.pth", "expected NAME=PATH"), ("=m.pth", "expected NAME=PATH"),
                        ("supervised=", "expected NAME=PATH"), ("my arm=m.pth", "letters, digits"),
                        ("a/b=m.pth", "letters, digits"), ("_x=m.pth", "begin with"), ("a__b=m.pth", "'__'"),
                        ("x" * 41 + "=m.pth", "1 to 40"), ("genesis=m.pth", "an arm of the benchmark already"),
                        ("scratch=m.pth", "an arm of the benchmark already"),
                        ("Genesis=m.pth", "an arm of the benchmark already")):
        with pytest.raises(GenesisUserError, match=match) as e:
            protocol.parse_checkpoint_arm(spec)
        assert "\n" not in str(e.value)  # one paragraph


def test_checkpoint_arms_are_read_verified_and_hashed_up_front(tmp_path):
    from nnunet_genesis.checkpoint import sha256_of

    ckpt = _small_genesis_checkpoint(tmp_path / "a.pth")
    arms = protocol.read_checkpoint_arms([f"mine={ckpt}", f"again={ckpt}"])
    assert list(arms) == ["mine", "again"]
    assert arms["mine"].kind == "genesis" and arms["mine"].sha256 == sha256_of(ckpt) and arms["mine"].path == ckpt
    assert arms["mine"].to_dict()["sha256"] == sha256_of(ckpt)
    with pytest.raises(GenesisUserError, match="more than once"):
        protocol.read_checkpoint_arms([f"mine={ckpt}", f"mine={ckpt}"])
    with pytest.raises(GenesisUserError, match="no such file"):
        protocol.read_checkpoint_arms([f"mine={tmp_path / 'missing.pth'}"])
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(GenesisUserError, match="--checkpoint junk: ") as e:
        protocol.read_checkpoint_arms([f"junk={tmp_path / 'junk.pth'}"])
    assert "junk.pth" in str(e.value)
    # every name is checked before any file is read
    with pytest.raises(GenesisUserError, match="an arm of the benchmark already"):
        protocol.read_checkpoint_arms([f"junk={tmp_path / 'junk.pth'}", f"stock={ckpt}"])


def test_a_checkpoint_arm_trains_the_default_start_on_plans_of_its_own(tmp_path):
    ckpt = _small_genesis_checkpoint(tmp_path / "a.pth")
    arms = protocol.read_checkpoint_arms([f"mine={ckpt}"])
    bench = protocol.TransferBenchmark(tmp_path / "out", tmp_path / "Task04_Hippocampus", "cpu", "cpu",
                                       protocol.SETTINGS["cpu"], 0, None, checkpoint_arms=arms)
    assert bench.trainer_and_plans("mine") == (protocol.ARMS["genesis"][0], "nnUNetPlans_bench_cpu_ckpt_mine")
    assert protocol.CHECKPOINT_ARM_TRAINER == "nnUNetTrainerGenesis_demo"
    assert bench.trainer_and_plans("genesis") == ("nnUNetTrainerGenesis_demo", "nnUNetPlans_bench_cpu_genesis")
    assert bench.reads_checkpoint("mine") and bench.reads_checkpoint("genesis") and not bench.reads_checkpoint("stock")
    # no pretraining where no arm reads the Genesis checkpoint; one attach per --checkpoint arm
    assert [s.name for s in bench.shared_steps(pretrain=False)] == ["convert", "preprocess", "attach_ckpt_mine"]
    assert [s.name for s in bench.shared_steps()] == ["convert", "preprocess", "pretrain", "attach",
                                                      "attach_ckpt_mine"]
    # the attach step is done only for this file at this path
    bench.ws.mark_done("attach_ckpt_mine", 1.0, {"checkpoint": str(ckpt), "sha256": arms["mine"].sha256})
    bench.shared_steps()
    assert bench.ws.is_done("attach_ckpt_mine")
    bench.ws.mark_done("attach_ckpt_mine", 1.0, {"checkpoint": str(tmp_path / "moved.pth"),
                                                 "sha256": arms["mine"].sha256})
    bench.shared_steps()
    assert not bench.ws.is_done("attach_ckpt_mine")


def test_finished_units_of_another_checkpoint_are_refused_not_mixed(tmp_path):
    ckpt = _small_genesis_checkpoint(tmp_path / "a.pth")
    other = _small_genesis_checkpoint(tmp_path / "b.pth", seed=1)
    arms = protocol.read_checkpoint_arms([f"mine={ckpt}"])
    record = dict(_record(5, 0, "mine", {"a": 0.5}, [1, 1]), checkpoint=arms["mine"].to_dict())
    write_json_atomic(record, protocol.unit_path(tmp_path, "K5_seed0_mine"))
    protocol.refuse_mixed_checkpoints(tmp_path, arms)  # the same file: accepted
    protocol.refuse_mixed_checkpoints(tmp_path, protocol.read_checkpoint_arms([f"mine={tmp_path / 'a.pth'}"]))
    protocol.refuse_mixed_checkpoints(tmp_path, protocol.read_checkpoint_arms([f"theirs={other}"]))  # another name
    with pytest.raises(GenesisUserError, match="never mixed under one name") as e:
        protocol.refuse_mixed_checkpoints(tmp_path, protocol.read_checkpoint_arms([f"mine={other}"]))
    assert "K5_seed0_mine" in str(e.value) and arms["mine"].sha256 in str(e.value) and "\n" not in str(e.value)
    # a registry start never takes the units of a --checkpoint arm of its name for its own
    write_json_atomic(dict(record, arm="genesis"), protocol.unit_path(tmp_path, "K5_seed0_genesis"))
    protocol.refuse_mixed_checkpoints(tmp_path, {}, ["scratch", "stock"])
    with pytest.raises(GenesisUserError, match="not units of the start 'genesis'"):
        protocol.refuse_mixed_checkpoints(tmp_path, {}, ["genesis", "scratch"])


def test_checkpoint_arms_get_the_same_records_statistics_and_plot(transfer, hippocampus_dir, tmp_path, capsys,
                                                                  monkeypatch):
    """--report-only over finished units: a --checkpoint arm is summarised against scratch, gets the
    criteria and its line in the plot, and its file is named in the results; another file under the
    same name is refused."""
    monkeypatch.setattr(transfer, "cpu_has_native_bf16", lambda: True)
    ckpt = _small_genesis_checkpoint(tmp_path / "a.pth")
    other = _small_genesis_checkpoint(tmp_path / "b.pth", seed=1)
    arm = protocol.read_checkpoint_arms([f"mine={ckpt}"])["mine"]
    out = tmp_path / "out"
    config = {"msd_task": str(Path(hippocampus_dir).resolve()), "device": "cpu", "setting": "cpu",
              "values": asdict(protocol.SETTINGS["cpu"]), "split_seed": 0, "max_cases": None}
    write_json_atomic(config, out / "benchmark_config.json")
    write_json_atomic({"evaluation": ["a", "b", "c"], "val": ["v"], "pool": [], "plan": {}, "schedule": {}},
                      out / "state" / "cases.json")
    rng = np.random.default_rng(0)
    for seed in (0, 1):
        base = {c: float(rng.uniform(0.3, 0.6)) for c in "abc"}
        write_json_atomic(_record(5, seed, "scratch", base, [2, 3]), protocol.unit_path(out, f"K5_seed{seed}_scratch"))
        write_json_atomic(dict(_record(5, seed, "mine", {c: v + 0.1 for c, v in base.items()}, [1, 3]),
                               checkpoint=arm.to_dict()), protocol.unit_path(out, f"K5_seed{seed}_mine"))
    handler = signal.getsignal(signal.SIGTERM)
    argv = ["--msd-task", str(hippocampus_dir), "-o", str(out), "--report-only", "--labelled", "5", "--seeds", "0",
            "1", "--arms", "scratch"]
    try:
        rc = transfer.main([*argv, "--checkpoint", f"mine={ckpt}"])
        assert rc == 0, capsys.readouterr().err
        results = json.loads((out / "transfer_results.json").read_text())
        assert results["arms"] == ["scratch", "mine"]
        assert results["checkpoint_arms"] == {"mine": arm.to_dict()}
        vs = results["summary"]["5"]["1"]["arms"]["mine"]["dice"]["vs_scratch"]
        assert vs["mean_diff"] == pytest.approx(0.1) and vs["n_seeds"] == 2
        assert [(c["arm"], c["seed"]) for c in results["criteria"]] == [("mine", 0), ("mine", 1)]
        assert (out / "transfer_dice_vs_k.png").is_file() and "mine" in capsys.readouterr().out
        rc = transfer.main([*argv, "--checkpoint", f"mine={other}"])
        err = capsys.readouterr().err
        assert rc == 2 and "never mixed under one name" in err and err.count("\n") == 1
        rc = transfer.main([*argv, "--checkpoint", f"genesis={ckpt}"])
        err = capsys.readouterr().err
        assert rc == 2 and "an arm of the benchmark already" in err and err.count("\n") == 1
    finally:
        signal.signal(signal.SIGTERM, handler)
