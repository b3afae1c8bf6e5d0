"""benchmarks/pretrain_throughput.py: a tiny run on synthetic volumes (universal plan, CPU, 0 workers)
gives finite positive figures and the workers-needed formula; bad options exit 2 before any work."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

import pretrain_throughput as bench  # benchmarks/, put on the path by conftest.py

pytestmark = pytest.mark.slow


def _volumes(folder, n=3, size=40):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        image = sitk.GetImageFromArray(rng.normal(0, 300, (size,) * 3).astype(np.float32))
        image.SetSpacing((1.0, 1.0, 1.0))
        sitk.WriteImage(image, str(folder / f"ct_{i}.nii.gz"))
    return folder


def test_tiny_run_writes_finite_figures_and_cleans_its_scratch(tmp_path, capsys):
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    rc = bench.main(["-i", str(_volumes(tmp_path / "vols")), "--patch-size", "32", "32", "32", "--batch-size", "1",
                     "--iterations", "2", "--step-iterations", "1", "--warmup", "0", "--workers", "0",
                     "--gpu-its", "10", "33", "--device", "cpu", "--out", str(out), "--scratch", str(scratch)])
    printed = capsys.readouterr().out
    assert rc == 0
    assert "patches/s per worker" in printed and "data workers a device" in printed
    results = json.loads((out / bench.RESULTS_FILE).read_text())
    assert (out / bench.PLOT_FILE).stat().st_size > 10_000
    assert list(scratch.iterdir()) == []  # the prepared run is removed

    assert results["benchmark"] == bench.BENCHMARK and results["source"]["kind"] == "volumes"
    assert results["plan"]["patch_size"] == [32, 32, 32] and results["plan"]["batch_size"] == 1
    machine = results["machine"]
    assert machine["cpu_model"] and machine["cpu_count"] >= 1 and machine["torch"] and machine["device"] == "cpu"
    pipe = results["pipeline"]
    for key in ("seconds", "patches_per_s_per_worker", "patches_per_s_per_worker_without_corruption",
                "ms_per_patch", "corruption_seconds", "cpu_seconds", "patches_per_cpu_s"):
        assert math.isfinite(pipe[key]) and pipe[key] > 0, key
    assert 0 < pipe["corruption_share"] < 1
    assert pipe["patches_per_s_per_worker"] == pytest.approx(2 / pipe["seconds"])
    assert pipe["patches_per_s_per_worker_without_corruption"] > pipe["patches_per_s_per_worker"]

    [loop] = results["training"]
    assert loop["workers"] == 0 and loop["corruption"] == "workers" and loop["iterations"] == 1
    for key in ("wall_s", "step_s_mean", "iterations_per_s", "patches_per_s"):
        assert math.isfinite(loop[key]) and loop[key] > 0, key
    assert 0 <= loop["data_wait_share"] < 1 and loop["gpu_busy_share"] is None
    assert loop["step_s_mean"] + loop["data_wait_s"] == pytest.approx(loop["wall_s"], rel=0.05)

    assert [w["gpu_its"] for w in results["workers_needed"]] == [10, 33]
    for w in results["workers_needed"]:
        n = w["gpu_its"]
        assert w["workers_corruption_in_workers"] == max(1, math.ceil(n * 1 / pipe["patches_per_s_per_worker"]))
        assert w["workers_corruption_on_device"] == max(
            1, math.ceil(n * 1 / pipe["patches_per_s_per_worker_without_corruption"]))
        assert w["workers_corruption_in_workers_cpu_time"] == max(1, math.ceil(n * 1 / pipe["patches_per_cpu_s"]))


def test_workers_needed_formula():
    assert bench.workers_needed(33, 6, 100.0) == 2  # 198 patches/s
    assert bench.workers_needed(100, 2, 20.0) == 10
    assert bench.workers_needed(1, 1, 1000.0) == 1


@pytest.mark.parametrize("args, message", [
    ([], "Give one source"),
    (["--workers", "-1"], "must be 0 or more"),
    (["--gpu-its", "0"], "positive iterations per second"),
    (["--iterations", "0"], "must be at least 1"),
    (["--spacing", "1", "1", "1", "--dataset", "DIR"], "universal plan"),
])
def test_bad_options_exit_2_before_any_work(tmp_path, capsys, args, message):
    vols = tmp_path / "vols"
    vols.mkdir()
    if "--dataset" in args:
        folder = tmp_path / "Task04_Hippocampus"
        (folder / "imagesTr").mkdir(parents=True)
        (folder / "dataset.json").write_text("{}")
        args = [str(folder) if a == "DIR" else a for a in args]
    elif args:
        args = ["-i", str(vols), *args]
    rc = bench.main([*args, "--out", str(tmp_path / "out"), "--scratch", str(tmp_path / "scratch")])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "scratch").exists()
