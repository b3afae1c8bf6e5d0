"""Data-pipeline throughput of Genesis pretraining: does it keep a GPU fed, and how many data
workers does it need?

    python benchmarks/pretrain_throughput.py --dataset ../shared/data/Task04_Hippocampus
    python benchmarks/pretrain_throughput.py -i ../shared/data/ct_unlabeled --step-iterations 3
    python benchmarks/pretrain_throughput.py --dataset DIR --device cuda --workers 0 4 8 12

1. Preparation, in a scratch folder removed at the end: ``nnunet-genesis pretrain --prepare-only``
   on the source. ``--dataset`` takes a Decathlon task folder (``TaskXX_Name``: converted with
   ``nnUNetv2_convert_MSD_dataset``) or an nnU-Net raw dataset folder (``DatasetXXX_Name``); the
   dataset is planned by nnU-Net (``nnUNetv2_plan_and_preprocess --no_pp``) and the pretraining
   takes its plans (``--plans-from``: the dataset's network, patch and batch). ``-i`` takes volume
   folders or files for the universal Genesis plan (CT: the HU window).
2. Data pipeline per worker: the pretraining trainer (``nnUNetTrainerGenesisPretrain``) builds its
   own training loader (``get_dataloaders()``: nnU-Net's loader, its spatial augmentation and the
   Genesis corruption of the workers route) with 0 workers, so that everything runs in this one
   process, and ``--iterations`` batches are drawn: patches per second per worker. The corruption
   transforms come from the trainer's ``corruption_transforms()`` hook, wrapped to time them: their
   share of the pipeline time. Without that share: the load of a worker on the device route. The
   process's CPU time over the same batches gives patches per CPU second: what a worker with a
   core of its own delivers where other jobs share the CPUs (wall and CPU time agree on an idle machine).
3. Training loop: for each ``--workers`` W, the trainer's loader with W background workers
   (nnU-Net's ``nnUNet_n_proc_DA``) feeds ``--step-iterations`` calls of the trainer's own
   ``train_step`` (forward, MSE, backward, optimiser, at the plans' batch and patch), as
   nnU-Net's epoch loop calls it: the step time, and the share of wall time spent blocked in
   ``next(loader)``. ``--corruption`` chooses the route as the pretraining option does (auto:
   on the device with CUDA, in the workers otherwise). On CUDA, the GPU's busy share is the sum
   of CUDA-event spans around each step over the wall time (a step in flight on the GPU; launch
   gaps inside a step count as busy), plus NVML's utilisation (``torch.cuda.utilization``)
   sampled every 0.1 s where pynvml is installed.
4. Workers a GPU at N iterations/s needs: ``ceil(N * batch / patches_per_s_per_worker)`` for each
   ``--gpu-its`` N, on both routes (and, for the workers route, from the CPU-time figure).

Outputs in ``--out``: ``pretrain_throughput.json`` (figures, settings, the machine),
``pretrain_throughput.png`` and a console table. Figures: docs/pretraining.md, "Data-pipeline
throughput".
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Sequence

import torch
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from tqdm import tqdm

from nnunet_genesis.errors import GenesisUserError, script_exit_code
from nnunet_genesis.network import unwrap_network
from nnunet_genesis.outputs import (check_output_dir, check_output_file, json_object_with, new_figure,
                                    png_written_by_us, save_figure, write_json_atomic)
from nnunet_genesis.pretraining.folders import nnunet_environment
from nnunet_genesis.pretraining.launch import RunState
from nnunet_genesis.pretraining.trainer import nnUNetTrainerGenesisPretrain
from nnunet_genesis.workflows.pipeline import Step, Workspace, command_path, genesis_command, run_steps

BENCHMARK = "pretrain_throughput"
RESULTS_FILE = f"{BENCHMARK}.json"
PLOT_FILE = f"{BENCHMARK}.png"
CONFIGURATION = "3d_fullres"
DEFAULT_GPU_ITS = (10.0, 33.0, 100.0)  # 33: one H200 on the hippocampus plan (docs/pretraining.md)
NVML_INTERVAL_S = 0.1


@dataclass(frozen=True)
class Source:
    """What the benchmark prepares: a Decathlon task, an nnU-Net raw dataset or volume paths."""

    kind: str  # "msd", "raw" or "volumes"
    paths: tuple[Path, ...]
    patch_size: tuple[int, ...] | None = None
    batch_size: int | None = None
    spacing: tuple[float, ...] | None = None

    @property
    def name(self) -> str:
        return self.paths[0].name if len(self.paths) == 1 else f"{self.paths[0].name}+{len(self.paths) - 1}"

    def dataset_id(self) -> int:
        """The nnU-Net id the planned dataset gets (msd: the task number; raw: the folder's id)."""
        pattern = r"Task(\d{2})_.+" if self.kind == "msd" else r"Dataset(\d{3})_.+"
        return int(re.fullmatch(pattern, self.paths[0].name).group(1))


@dataclass(frozen=True)
class Settings:
    device: str
    iterations: int
    step_iterations: int
    warmup: int
    workers: tuple[int, ...]
    gpu_its: tuple[float, ...]
    corruption: str
    seed: int


@dataclass
class PipelineResult:
    """The loader with 0 workers: one process, so the figures are per worker."""

    batches: int
    batch_size: int
    seconds: float
    corruption_seconds: float
    cpu_seconds: float  # CPU time of this process meanwhile: what a core of its own would take
    patches_per_s_per_worker: float = field(init=False)
    patches_per_cpu_s: float = field(init=False)
    corruption_share: float = field(init=False)
    ms_per_patch: float = field(init=False)
    corruption_ms_per_patch: float = field(init=False)
    patches_per_s_per_worker_without_corruption: float = field(init=False)

    def __post_init__(self) -> None:
        patches = self.batches * self.batch_size
        self.patches_per_s_per_worker = patches / self.seconds
        self.patches_per_cpu_s = patches / max(self.cpu_seconds, 1e-9)
        self.corruption_share = self.corruption_seconds / self.seconds
        self.ms_per_patch = 1e3 * self.seconds / patches
        self.corruption_ms_per_patch = 1e3 * self.corruption_seconds / patches
        # the device route's worker: the same pipeline without the corruption (its time subtracted)
        self.patches_per_s_per_worker_without_corruption = patches / max(self.seconds - self.corruption_seconds, 1e-9)


@dataclass
class LoopResult:
    """``step_iterations`` training iterations fed by ``workers`` background workers."""

    workers: int
    corruption: str  # "workers" or "device"
    iterations: int
    batch_size: int
    wall_s: float
    data_wait_s: float
    step_s_mean: float
    step_s_median: float
    gpu_busy_share: float | None = None  # CUDA events: step spans / wall
    gpu_utilization_nvml: float | None = None  # mean of torch.cuda.utilization() samples, 0..1
    data_wait_share: float = field(init=False)
    iterations_per_s: float = field(init=False)
    patches_per_s: float = field(init=False)

    def __post_init__(self) -> None:
        self.data_wait_share = self.data_wait_s / self.wall_s
        self.iterations_per_s = self.iterations / self.wall_s
        self.patches_per_s = self.iterations * self.batch_size / self.wall_s


def workers_needed(gpu_its: float, batch_size: int, patches_per_s_per_worker: float) -> int:
    """Data workers that keep a device at ``gpu_its`` iterations/s fed (at least 1)."""
    return max(1, math.ceil(gpu_its * batch_size / patches_per_s_per_worker))


# --------------------------------------------------------------------------------------------
# 1. preparation (subprocesses, logged in the scratch workspace)

def _plan_dataset(ws: Workspace, dataset_id: int):
    def run(ctx):
        ctx.command([command_path("nnUNetv2_plan_and_preprocess"), "-d", str(dataset_id), "-c", CONFIGURATION,
                     "--no_pp", "-npfp", str(max(1, min(4, os.cpu_count() or 1)))])
    return run


def preparation_steps(source: Source, ws: Workspace, run_dir: Path, seed: int) -> list[Step]:
    """The commands that leave a prepared pretraining run in ``run_dir``."""
    steps = []
    pretrain = ["pretrain", "-o", str(run_dir), "--prepare-only", "--seed", str(seed), "--val-patches", "2"]
    if source.kind in ("msd", "raw"):
        dataset_id = source.dataset_id()
        if source.kind == "msd":
            steps.append(Step("convert", f"convert {source.paths[0].name} (nnUNetv2_convert_MSD_dataset)",
                              lambda ctx: ctx.command([command_path("nnUNetv2_convert_MSD_dataset"), "-i",
                                                       str(source.paths[0]), "-np", "1"])))
        else:
            steps.append(Step("link", f"link {source.paths[0].name} into the scratch nnUNet_raw",
                              lambda ctx: (ws.raw / source.paths[0].name).symlink_to(source.paths[0])))
        steps.append(Step("plan", f"plan dataset {dataset_id} (nnU-Net, {CONFIGURATION})",
                          _plan_dataset(ws, dataset_id)))
        pretrain += ["-d", str(dataset_id), "--plans-from", str(dataset_id), "-c", CONFIGURATION]
    else:
        pretrain += ["-i", *map(str, source.paths)]
        if source.spacing:
            pretrain += ["--spacing", *map(str, source.spacing)]
    if source.patch_size:
        pretrain += ["--patch-size", *map(str, source.patch_size)]
    if source.batch_size:
        pretrain += ["--batch-size", str(source.batch_size)]
    steps.append(Step("prepare", "nnunet-genesis pretrain --prepare-only",
                      lambda ctx: ctx.command(genesis_command(*pretrain))))
    return steps


# --------------------------------------------------------------------------------------------
# 2./3. measurement in this process, on the trainer the pretraining runs

class TimedTransform(BasicTransform):
    """Runs ``inner`` and adds its wall time to ``seconds`` (in the process that runs it)."""

    def __init__(self, inner: BasicTransform):
        super().__init__()
        self.inner, self.seconds = inner, 0.0

    def __call__(self, **data_dict) -> dict:
        t0 = time.perf_counter()
        out = self.inner(**data_dict)
        self.seconds += time.perf_counter() - t0
        return out


class ThroughputTrainer(nnUNetTrainerGenesisPretrain):
    """The pretraining trainer whose corruption transforms (its hook) are timed."""

    timed: list[TimedTransform] = []

    def corruption_transforms(self):
        self.timed = [TimedTransform(t) for t in super().corruption_transforms()]
        return self.timed


def build_trainer(state, device):
    """The pretraining trainer on the prepared plans, as ``nnUNetv2_train`` builds it, initialised."""
    base = state.nnunet_folders.preprocessed / state.dataset_name
    plans = json.loads((base / f"{state.plans_identifier}.json").read_text())
    plans["continue_training"] = False
    dataset_json = json.loads((base / "dataset.json").read_text())
    trainer = _quietly(ThroughputTrainer, plans=plans, configuration=state.configuration, fold=state.fold,
                       dataset_json=dataset_json, device=torch.device(device))
    _quietly(trainer.initialize)
    trainer.network.train()
    return trainer


def _quietly(fn, *args, **kwargs):
    """``fn(...)`` with its console output (nnU-Net's log lines; its log file keeps them) dropped."""
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


@contextlib.contextmanager
def training_loader(trainer, workers: int, on_device: bool):
    """The trainer's own training loader with ``workers`` background workers (0: this process), on
    the corruption route ``on_device`` (the attribute its ``corruption`` option sets); stopped after."""
    trainer.corrupt_on_device = on_device
    saved = os.environ.get("nnUNet_n_proc_DA")
    os.environ["nnUNet_n_proc_DA"] = str(workers)
    try:
        loader, _ = _quietly(trainer.get_dataloaders)
    finally:
        if saved is None:
            os.environ.pop("nnUNet_n_proc_DA", None)
        else:
            os.environ["nnUNet_n_proc_DA"] = saved
    try:
        yield loader
    finally:
        if hasattr(loader, "_finish"):
            loader._finish()


def measure_pipeline(trainer, settings: Settings) -> PipelineResult:
    """Patches per second of the workers-route pipeline in this process, and the corruption's share."""
    with training_loader(trainer, 0, on_device=False) as loader:
        for _ in range(settings.warmup):
            next(loader)
        for t in trainer.timed:
            t.seconds = 0.0
        t0, cpu0 = time.perf_counter(), time.process_time()
        for _ in tqdm(range(settings.iterations), desc="data pipeline, 0 workers", unit="batch", leave=False,
                      dynamic_ncols=True, disable=None):
            next(loader)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return PipelineResult(settings.iterations, trainer.batch_size, seconds, sum(t.seconds for t in trainer.timed),
                          cpu)


class NvmlSampler:
    """Samples ``torch.cuda.utilization()`` (NVML: share of time a kernel ran) in a thread."""

    def __init__(self, device):
        self.device, self.samples, self.error = device, [], None
        self._stop = threading.Event()
        try:
            torch.cuda.utilization(device)
        except Exception as e:  # pynvml missing, or NVML unusable here
            self.error = f"{type(e).__name__}: {e}"
        self._thread = None if self.error else threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(NVML_INTERVAL_S):
            self.samples.append(torch.cuda.utilization(self.device) / 100.0)

    def __enter__(self):
        if self._thread is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def mean(self) -> float | None:
        return statistics.fmean(self.samples) if self.samples else None


def measure_loop(trainer, workers: int, on_device: bool, settings: Settings) -> tuple[LoopResult, str | None]:
    """The training loop with ``workers`` workers: time blocked in ``next(loader)`` vs ``train_step``."""
    cuda = trainer.device.type == "cuda"
    waits, steps, events = [], [], []
    with training_loader(trainer, workers, on_device) as loader:
        for _ in range(settings.warmup):
            trainer.train_step(next(loader))
        if cuda:
            torch.cuda.synchronize(trainer.device)
        sampler = NvmlSampler(trainer.device) if cuda else None
        with sampler or contextlib.nullcontext():
            t_start = time.perf_counter()
            for _ in tqdm(range(settings.step_iterations), desc=f"training loop, {workers} worker(s)", unit="it",
                          leave=False, dynamic_ncols=True, disable=None):
                t0 = time.perf_counter()
                batch = next(loader)
                t1 = time.perf_counter()
                if cuda:
                    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    begin.record()
                trainer.train_step(batch)  # ends with the loss on the CPU: the step is done
                if cuda:
                    end.record()
                    events.append((begin, end))
                waits.append(t1 - t0)
                steps.append(time.perf_counter() - t1)
            wall = time.perf_counter() - t_start
        if cuda:
            torch.cuda.synchronize(trainer.device)
    busy = sum(b.elapsed_time(e) for b, e in events) / 1e3 / wall if cuda else None
    result = LoopResult(workers, "device" if on_device else "workers", settings.step_iterations, trainer.batch_size,
                        wall, sum(waits), statistics.fmean(steps), statistics.median(steps), busy,
                        sampler.mean() if sampler else None)
    return result, (sampler.error if sampler else None)


# --------------------------------------------------------------------------------------------
# report

def machine_info(device: str) -> dict:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        names = re.findall(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = names[0].strip() if names else cpu
    versions = {}
    for package in ("nnunetv2", "numpy", "batchgeneratorsv2"):
        with contextlib.suppress(PackageNotFoundError):
            versions[package] = version(package)
    info = {"cpu_model": cpu, "cpu_count": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__, **versions,
            "device": device, "cuda_available": torch.cuda.is_available(), "device_name": None}
    if device == "cuda":
        info["device_name"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    elif device == "cpu":
        info["device_name"] = f"CPU ({cpu})"
    return info


def needed_table(gpu_its: Sequence[float], batch: int, pipeline: PipelineResult) -> list[dict]:
    return [{"gpu_its": n, "patches_per_s_needed": n * batch,
             "workers_corruption_in_workers": workers_needed(n, batch, pipeline.patches_per_s_per_worker),
             "workers_corruption_on_device": workers_needed(n, batch,
                                                            pipeline.patches_per_s_per_worker_without_corruption),
             "workers_corruption_in_workers_cpu_time": workers_needed(n, batch, pipeline.patches_per_cpu_s)}
            for n in gpu_its]


def table(results: dict) -> str:
    p, plan = results["pipeline"], results["plan"]
    lines = [f"{results['source']['kind']} {results['source']['name']}: {plan['network']} "
             f"({plan['parameters'] / 1e6:.1f} M parameters), patch {plan['patch_size']}, batch {plan['batch_size']}, "
             f"{plan['training_cases']} training case(s); machine: {results['machine']['cpu_model']}, "
             f"{results['machine']['cpu_count']} CPU(s), device {results['machine']['device_name']}",
             "",
             f"data pipeline in one process ({p['batches']} batches of {p['batch_size']}): per worker",
             f"  patches/s per worker, corruption in the workers      {p['patches_per_s_per_worker']:9.2f}"
             f"   ({p['ms_per_patch']:.1f} ms per patch)",
             f"  Genesis corruption share of it                       {100 * p['corruption_share']:8.1f} %"
             f"   ({p['corruption_ms_per_patch']:.1f} ms per patch)",
             f"  patches/s per worker without it (device route)       "
             f"{p['patches_per_s_per_worker_without_corruption']:9.2f}",
             f"  patches per CPU second (with corruption)             {p['patches_per_cpu_s']:9.2f}"
             f"   (CPU time {p['cpu_seconds']:.2f} s of {p['seconds']:.2f} s wall: below 1 = a shared CPU)",
             "",
             f"training loop on {results['machine']['device']} ({results['settings']['step_iterations']} iterations "
             f"after {results['settings']['warmup']} warm-up):",
             f"  {'workers':>7} {'corruption':>10} {'step s':>8} {'wait s/it':>10} {'wait share':>10} {'it/s':>7} "
             f"{'patches/s':>9} {'GPU busy':>9} {'NVML':>6}"]
    for r in results["training"]:
        busy = f"{100 * r['gpu_busy_share']:8.1f}%" if r["gpu_busy_share"] is not None else f"{'-':>9}"
        nvml = f"{100 * r['gpu_utilization_nvml']:5.0f}%" if r["gpu_utilization_nvml"] is not None else f"{'-':>6}"
        lines.append(f"  {r['workers']:7d} {r['corruption']:>10} {r['step_s_mean']:8.3f} "
                     f"{r['data_wait_s'] / r['iterations']:10.3f} {100 * r['data_wait_share']:9.1f}% "
                     f"{r['iterations_per_s']:7.2f} {r['patches_per_s']:9.2f} {busy} {nvml}")
    lines += ["", f"data workers a device at N iterations/s needs (batch {plan['batch_size']}; "
                  f"ceil(N x batch / patches per s per worker)):",
              f"  {'N it/s':>8} {'patches/s':>10} {'corruption in workers':>22} {'corruption on device':>21} "
              f"{'in workers, from CPU time':>26}"]
    for w in results["workers_needed"]:
        lines.append(f"  {w['gpu_its']:8g} {w['patches_per_s_needed']:10g} {w['workers_corruption_in_workers']:22d} "
                     f"{w['workers_corruption_on_device']:21d} {w['workers_corruption_in_workers_cpu_time']:26d}")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import numpy as np

    p, batch = results["pipeline"], results["plan"]["batch_size"]
    fig = new_figure(figsize=(15, 4.5))
    ax_pipe, ax_loop, ax_need = fig.subplots(1, 3)
    rest = p["ms_per_patch"] - p["corruption_ms_per_patch"]
    ax_pipe.barh([0], [rest], height=0.4, color="tab:blue", label="loader + spatial augmentation")
    ax_pipe.barh([0], [p["corruption_ms_per_patch"]], height=0.4, left=[rest], color="tab:orange",
                 label="Genesis corruption")
    ax_pipe.set_yticks([0], [f"{p['patches_per_s_per_worker']:.1f} patches/s\nper worker"])
    ax_pipe.set_ylim(-0.6, 0.9)
    ax_pipe.set_xlabel("ms per patch, one worker (0 workers: this process)")
    ax_pipe.set_title(f"data pipeline: corruption {100 * p['corruption_share']:.0f} % of it")
    ax_pipe.legend(loc="upper center", fontsize=8, ncol=2)
    loops = results["training"]
    x = np.arange(len(loops))
    bars = ax_loop.bar(x, [100 * r["data_wait_share"] for r in loops], color="tab:red")
    ax_loop.bar_label(bars, fmt="%.1f %%", fontsize=8)
    ax_loop.set_xticks(x, [f"{r['workers']} w\n{r['step_s_mean']:.2f} s/step" for r in loops])
    ax_loop.set_ylabel("% of loop wall time waiting for data")
    ax_loop.set_ylim(0, 100)
    ax_loop.set_title(f"training loop on {results['machine']['device']}")
    its = np.geomspace(1, max(200.0, *results["settings"]["gpu_its"]), 400)
    for key, per_worker, label in (("workers_corruption_in_workers", p["patches_per_s_per_worker"],
                                    "corruption in the workers"),
                                   ("workers_corruption_on_device", p["patches_per_s_per_worker_without_corruption"],
                                    "corruption on the device")):
        line, = ax_need.step(its, [workers_needed(n, batch, per_worker) for n in its], where="post", label=label)
        marks = results["workers_needed"]
        ax_need.plot([m["gpu_its"] for m in marks], [m[key] for m in marks], "o", color=line.get_color())
    ax_need.set_xscale("log")
    ax_need.set_ylim(bottom=0)
    ax_need.yaxis.get_major_locator().set_params(integer=True)
    ax_need.set_xlabel("device iterations / s")
    ax_need.set_ylabel("data workers needed")
    ax_need.grid(True, which="both", alpha=0.3)
    ax_need.legend(fontsize=8)
    ax_need.set_title(f"workers needed (batch {batch})")
    fig.suptitle(f"Genesis pretraining throughput: {results['source']['name']}, patch "
                 f"{results['plan']['patch_size']}, {results['machine']['cpu_model']}", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


# --------------------------------------------------------------------------------------------
# command line

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    src = p.add_argument_group("source (one of --dataset / -i)")
    src.add_argument("--dataset", type=Path, metavar="DIR",
                     help="Decathlon task folder (TaskXX_Name) or nnU-Net raw dataset folder (DatasetXXX_Name): "
                          "the dataset's own nnU-Net plan")
    src.add_argument("-i", "--input", dest="inputs", type=Path, nargs="+", default=[], metavar="PATH",
                     help="volume folders or files: the universal Genesis plan")
    src.add_argument("--patch-size", type=int, nargs=3, metavar=("Z", "Y", "X"), help="override the plan's patch")
    src.add_argument("--batch-size", type=int, help="override the plan's batch size")
    src.add_argument("--spacing", type=float, nargs=3, metavar=("Z", "Y", "X"), help="universal plan's spacing (mm)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="training device (default: cuda if "
                                                                          "available, else cpu)")
    p.add_argument("--iterations", type=int, default=20, help="batches drawn for the per-worker pipeline figure")
    p.add_argument("--step-iterations", type=int, default=None,
                   help="training iterations timed per --workers value (default: --iterations)")
    p.add_argument("--warmup", type=int, default=2, help="untimed batches / iterations before each measurement")
    p.add_argument("--workers", type=int, nargs="+", default=None, metavar="W",
                   help="background data workers of the training loops (default: 0 and half the CPUs)")
    p.add_argument("--gpu-its", type=float, nargs="+", default=list(DEFAULT_GPU_ITS), metavar="N",
                   help="device speeds (iterations/s) to size the data workers for")
    p.add_argument("--corruption", choices=("auto", "device", "workers"), default="auto",
                   help="corruption route of the training loops (auto: device on CUDA, workers otherwise)")
    p.add_argument("--seed", type=int, default=12345, help="the pretraining's --seed")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: benchmarks/output/pretrain_throughput_<source>)")
    p.add_argument("--scratch", type=Path, default=None,
                   help="where the scratch folder of the prepared run is made (default: the system's temp folder)")
    p.add_argument("--keep-scratch", action="store_true", help="keep the scratch folder (its path is printed)")
    return p.parse_args(argv)


def source_from(args) -> Source:
    if (args.dataset is None) == (not args.inputs):
        raise GenesisUserError("Give one source: --dataset DIR (a Decathlon task or nnU-Net raw dataset folder) "
                               "or -i PATH [PATH ...] (volumes).")
    overrides = dict(patch_size=tuple(args.patch_size) if args.patch_size else None, batch_size=args.batch_size,
                     spacing=tuple(args.spacing) if args.spacing else None)
    if args.inputs:
        missing = [str(p) for p in args.inputs if not p.exists()]
        if missing:
            raise GenesisUserError(f"-i: {', '.join(missing)} does not exist.")
        return Source("volumes", tuple(p.expanduser().resolve() for p in args.inputs), **overrides)
    folder = args.dataset.expanduser().resolve()
    if args.spacing:
        raise GenesisUserError("--spacing applies to the universal plan (-i) only; --dataset uses the dataset's plan.")
    if not (folder / "dataset.json").is_file() or not (folder / "imagesTr").is_dir():
        raise GenesisUserError(f"--dataset {args.dataset}: not a dataset folder (dataset.json and imagesTr needed).")
    if re.fullmatch(r"Task\d{2}_.+", folder.name):
        return Source("msd", (folder,), **overrides)
    if re.fullmatch(r"Dataset\d{3}_.+", folder.name):
        return Source("raw", (folder,), **overrides)
    raise GenesisUserError(f"--dataset {args.dataset}: name it like a Decathlon task (TaskXX_Name) or an nnU-Net "
                           f"raw dataset (DatasetXXX_Name).")


def settings_from(args) -> Settings:
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise GenesisUserError("--device cuda: PyTorch sees no CUDA GPU here (use --device cpu).")
    for name in ("iterations", "step_iterations", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise GenesisUserError(f"--{name.replace('_', '-')} {value}: must be at least 1.")
    if args.warmup < 0:
        raise GenesisUserError(f"--warmup {args.warmup}: must be 0 or more.")
    workers = args.workers if args.workers is not None else sorted({0, max(1, (os.cpu_count() or 1) // 2)})
    if any(w < 0 for w in workers):
        raise GenesisUserError(f"--workers {workers}: must be 0 or more.")
    if any(not (math.isfinite(n) and n > 0) for n in args.gpu_its):
        raise GenesisUserError(f"--gpu-its {args.gpu_its}: must be positive iterations per second.")
    if args.seed < 0:
        raise GenesisUserError(f"--seed {args.seed}: must be 0 or more.")
    return Settings(device, args.iterations, args.step_iterations or args.iterations, args.warmup,
                    tuple(dict.fromkeys(workers)), tuple(dict.fromkeys(args.gpu_its)), args.corruption, args.seed)


def measure(state: RunState, settings: Settings) -> dict:
    with nnunet_environment(state.nnunet_folders):
        trainer = build_trainer(state, settings.device)
        on_device = settings.corruption == "device" or (settings.corruption == "auto" and settings.device == "cuda")
        net = unwrap_network(trainer.network)
        plan = {"plans": state.plans_identifier, "configuration": state.configuration,
                "patch_size": [int(s) for s in trainer.configuration_manager.patch_size],
                "batch_size": int(trainer.batch_size), "network": type(net).__name__,
                "parameters": sum(p.numel() for p in net.parameters()),
                "training_cases": len(_quietly(trainer.do_split)[0]),
                "genesis_config": trainer.genesis_config.to_dict(), "preset": trainer.options.preset}
        print(f"measuring the data pipeline ({settings.iterations} batches of {plan['batch_size']}, patch "
              f"{plan['patch_size']}) ...", flush=True)
        pipeline = measure_pipeline(trainer, settings)
        loops, nvml_errors = [], set()
        for w in settings.workers:
            print(f"training loop with {w} worker(s) ({settings.step_iterations} iterations on {settings.device}) "
                  f"...", flush=True)
            loop, error = measure_loop(trainer, w, on_device, settings)
            loops.append(asdict(loop))
            if error:
                nvml_errors.add(error)
    gpu = None
    if settings.device == "cuda":
        gpu = {"busy_share": "sum of CUDA-event spans around train_step / loop wall time",
               "nvml": (f"mean of torch.cuda.utilization() every {NVML_INTERVAL_S} s" if not nvml_errors
                        else f"unavailable ({'; '.join(sorted(nvml_errors))})")}
    return {"plan": plan, "pipeline": asdict(pipeline), "training": loops, "gpu_measures": gpu,
            "workers_needed": needed_table(settings.gpu_its, plan["batch_size"], pipeline)}


def main(argv=None) -> int:
    args = parse_args(argv)
    return script_exit_code("pretrain_throughput.py", lambda: run(args, argv))


def run(args: argparse.Namespace, argv=None) -> int:
    """The benchmark of ``args`` in a scratch folder removed at the end (``--keep-scratch`` keeps it)."""
    scratch = None
    try:
        source = source_from(args)
        settings = settings_from(args)
        out = (args.out or Path(__file__).resolve().parent / "output" / f"{BENCHMARK}_{source.name}").resolve()
        check_output_dir(out, "--out")
        check_output_file(out / RESULTS_FILE, "--out", ours=json_object_with(benchmark=BENCHMARK))
        check_output_file(out / PLOT_FILE, "--out", ours=png_written_by_us)
        if args.scratch is not None:
            check_output_dir(args.scratch.resolve(), "--scratch")
            args.scratch.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f"{BENCHMARK}_", dir=args.scratch))
        ws = Workspace(scratch)
        ws.make()
        run_dir = scratch / "run"
        t0 = time.monotonic()
        run_steps(ws, preparation_steps(source, ws, run_dir, settings.seed), f"preparing {source.name}")
        prepare_s = time.monotonic() - t0
        t0 = time.monotonic()
        measured = measure(RunState.load(run_dir), settings)
        results = {"benchmark": BENCHMARK,
                   "command": ["python", "benchmarks/pretrain_throughput.py",
                               *(sys.argv[1:] if argv is None else argv)],
                   "source": {"kind": source.kind, "name": source.name, "paths": [str(p) for p in source.paths]},
                   "settings": asdict(settings), "machine": machine_info(settings.device), **measured,
                   "seconds": {"prepare": round(prepare_s, 1), "measure": round(time.monotonic() - t0, 1)},
                   "created": time.strftime("%Y-%m-%d %H:%M:%S")}
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(results, out / RESULTS_FILE)
        plot(results, out / PLOT_FILE)
    finally:
        if scratch is not None:
            if args.keep_scratch:
                print(f"scratch folder kept: {scratch}")
            else:
                shutil.rmtree(scratch, ignore_errors=True)
    print()
    print(table(results))
    print(f"\nresults: {out / RESULTS_FILE}\nplot:    {out / PLOT_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
