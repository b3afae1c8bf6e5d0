"""Cost of the pretraining corpus preparation against the number of volumes (docs/pretraining.md,
"Preparation cost per volume").

Run:  python benchmarks/prepare_scaling.py --work /scratch/prep [--sizes 16 64 256] [--workers N] [--out DIR]

1. Derives ``max(--sizes)`` CT volumes from the real CTs of ``--data/ct_unlabeled`` (its NIfTI and
   NRRD volumes; the DICOM series is left out): each a random sub-box of 96-160 voxels per side
   (the whole extent along an axis where the CT is smaller: most have 30-64 slices) of a CT drawn
   at random, its intensities shifted by a few HU and scaled by a few per cent, written as int16
   NIfTI with the CT's spacing into ``--work/volumes`` (seeded by ``--seed``: the same corpus every
   run). The corpus of size n is the first n of them (hard links in ``--work/corpus_n``).
2. For each size, one ``nnunet-genesis pretrain -i CORPUS -o OUT --prepare-only`` (universal plan,
   nnU-Net folders inside OUT: the nnUNet_* variables are unset for it) in a subprocess: wall
   time, and the peak resident memory of its largest process (the command or one of its
   preprocessing workers; ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` of a wrapper process whose only
   child it is). OUT is removed afterwards, and so is ``--work`` at the end unless ``--keep``.
3. Prints a table (volumes, total voxels, seconds, seconds per volume, peak RSS), fits
   ``time = a + b * volumes`` (least squares over the sizes) and extrapolates to 10^4 volumes on one
   machine and to one part of 10^4 / N volumes for N = 8 and 32 machines (``--part I --parts N``; the
   merge, hard links and plans, is not included). Writes ``prepare_scaling.json`` and
   ``prepare_scaling.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from nnunet_genesis.outputs import new_figure, save_figure, write_json_atomic
from nnunet_genesis.volumes import read_volume, write_volume

ROOT = Path(__file__).resolve().parents[1]
EXTRAPOLATE_VOLUMES = 10_000
EXTRAPOLATE_PARTS = (8, 32)
SIDE = (96, 160)  # voxels per side of the sub-boxes (inclusive)
# The wrapper the measured command runs under: its only child is the command, so the peak RSS of its
# children is the command's (or of the largest of the command's own children).
_MEASURE = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.run(sys.argv[2:]).returncode
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
open(sys.argv[1], "w").write(json.dumps({"returncode": code, "seconds": seconds, "peak_rss_bytes": peak}))
sys.exit(code)
"""


def source_volumes(data: Path) -> list[Path]:
    """The NIfTI and NRRD CTs of ``data/ct_unlabeled``, sorted."""
    folder = data / "ct_unlabeled"
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith((".nii.gz", ".nii", ".nrrd")))
    if not found:
        raise SystemExit(f"no NIfTI/NRRD volumes in {folder} (see ../shared/data/README.md; --data DIR)")
    return found


def derive_corpus(sources: list[Path], count: int, folder: Path, seed: int = 0,
                  side: tuple[int, int] = SIDE) -> list[Path]:
    """``count`` volumes cut from ``sources`` (random CT, random sub-box, intensity shift), as
    ``folder/derived_NNNNN.nii.gz``; the same files for the same seed. Returns their paths."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    cache: dict[Path, tuple[np.ndarray, tuple[float, ...]]] = {}
    paths = []
    for i in range(count):
        source = sources[int(rng.integers(len(sources)))]
        if source not in cache:
            array, spacing = read_volume(source)
            cache[source] = (array[0], spacing)
        volume, spacing = cache[source]
        box = [min(int(rng.integers(side[0], side[1] + 1)), n) for n in volume.shape]
        start = [int(rng.integers(0, n - b + 1)) for n, b in zip(volume.shape, box)]
        crop = volume[tuple(slice(s, s + b) for s, b in zip(start, box))]
        shifted = crop * rng.uniform(0.97, 1.03) + rng.uniform(-30, 30)
        path = folder / f"derived_{i:05d}.nii.gz"
        write_volume(np.clip(np.round(shifted), -32768, 32767).astype(np.int16), spacing, path)
        paths.append(path)
    return paths


def voxel_count(path: Path) -> int:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return int(np.prod(reader.GetSize()))


def linked_corpus(volumes: list[Path], folder: Path) -> Path:
    """``folder`` holding hard links to ``volumes`` (a copy where the file system has none)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for v in volumes:
        try:
            os.link(v, folder / v.name)
        except OSError:
            shutil.copyfile(v, folder / v.name)
    return folder


def measure_preparation(corpus: Path, out: Path, workers: int | None) -> dict:
    """One ``pretrain --prepare-only`` of ``corpus`` into ``out`` (removed afterwards)."""
    command = [sys.executable, "-m", "nnunet_genesis.cli", "pretrain", "-i", str(corpus), "-o", str(out),
               "--prepare-only", "--device", "cpu", "--skip-bad"]
    command += ["--workers", str(workers)] if workers is not None else []
    env = {k: v for k, v in os.environ.items() if k not in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    report = out.parent / f".{out.name}.measure.json"
    try:
        result = subprocess.run([sys.executable, "-c", _MEASURE, str(report), *command], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
        return json.loads(report.read_text())
    finally:
        report.unlink(missing_ok=True)
        shutil.rmtree(out, ignore_errors=True)  # the scratch nnU-Net folders (OUT/nnunet_work) with it


def fit_and_extrapolate(volumes: list[int], seconds: list[float]) -> dict:
    """Least-squares ``seconds = a + b * volumes`` and its values at 10^4 volumes and at 10^4 / N."""
    if len(set(volumes)) < 2:
        return {}
    b, a = np.polyfit(np.asarray(volumes, float), np.asarray(seconds, float), 1)
    predict = lambda n: float(a + b * n)  # noqa: E731
    return {"a_seconds": float(a), "b_seconds_per_volume": float(b),
            "one_machine": {"volumes": EXTRAPOLATE_VOLUMES, "seconds": predict(EXTRAPOLATE_VOLUMES)},
            "per_part": [{"parts": n, "volumes_per_part": EXTRAPOLATE_VOLUMES / n,
                          "seconds": predict(EXTRAPOLATE_VOLUMES / n)} for n in EXTRAPOLATE_PARTS]}


def figure(rows: list[dict], fit: dict):
    fig = new_figure(figsize=(6, 4))
    ax = fig.add_subplot(1, 1, 1)
    x = [r["volumes"] for r in rows]
    ax.plot(x, [r["seconds"] for r in rows], "o", label="measured")
    if fit:
        grid = np.linspace(0, max(x), 50)
        ax.plot(grid, fit["a_seconds"] + fit["b_seconds_per_volume"] * grid, "-",
                label=f"{fit['a_seconds']:.1f} s + {fit['b_seconds_per_volume']:.2f} s x volumes")
    ax.set_xlabel("volumes")
    ax.set_ylabel("pretrain --prepare-only, wall seconds")
    ax.set_title("Preparation cost (universal plan)")
    ax.legend()
    fig.tight_layout()
    return fig


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, required=True, help="scratch folder (derived volumes, preparations)")
    p.add_argument("--sizes", type=int, nargs="+", default=[16, 64, 256], help="corpus sizes (default: %(default)s)")
    p.add_argument("--workers", type=int, help="pretrain --workers (default: pretrain's)")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data", help="the real data folder")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="where the JSON and PNG go")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", action="store_true", help="keep the derived volumes in --work")
    args = p.parse_args(argv)
    if any(s < 1 for s in args.sizes):
        p.error("--sizes: each at least 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    sizes = sorted(set(args.sizes))
    rows = []
    try:
        print(f"Deriving {max(sizes)} volumes from {args.data / 'ct_unlabeled'} into {work / 'volumes'} ...")
        volumes = derive_corpus(source_volumes(args.data), max(sizes), work / "volumes", args.seed)
        for n in sizes:
            corpus = linked_corpus(volumes[:n], work / f"corpus_{n}")
            voxels = sum(voxel_count(v) for v in volumes[:n])
            measured = measure_preparation(corpus, work / f"prepared_{n}", args.workers)
            shutil.rmtree(corpus, ignore_errors=True)
            rows.append({"volumes": n, "voxels": voxels, "seconds": measured["seconds"],
                         "seconds_per_volume": measured["seconds"] / n,
                         "peak_rss_mb": measured["peak_rss_bytes"] / 2**20})
            r = rows[-1]
            print(f"  {n} volumes: {r['seconds']:.1f} s, {r['seconds_per_volume']:.2f} s/volume, "
                  f"peak RSS {r['peak_rss_mb']:.0f} MB")
    finally:
        for leftover in work.glob("prepared_*"):
            shutil.rmtree(leftover, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(work / "volumes", ignore_errors=True)
            for leftover in work.glob("corpus_*"):
                shutil.rmtree(leftover, ignore_errors=True)
    fit = fit_and_extrapolate([r["volumes"] for r in rows], [r["seconds"] for r in rows])
    print(f"\n| volumes | total voxels | seconds | seconds per volume | peak RSS MB |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['volumes']} | {r['voxels']:.3g} | {r['seconds']:.1f} | {r['seconds_per_volume']:.2f} | "
              f"{r['peak_rss_mb']:.0f} |")
    if fit:
        print(f"\nfit: time = {fit['a_seconds']:.1f} s + {fit['b_seconds_per_volume']:.3f} s x volumes")
        print(f"{EXTRAPOLATE_VOLUMES} volumes on one machine: {fit['one_machine']['seconds'] / 3600:.1f} h")
        for part in fit["per_part"]:
            print(f"  in {part['parts']} parts: {part['volumes_per_part']:.0f} volumes and "
                  f"{part['seconds'] / 3600:.2f} h per part (plus the merge)")
    results = {"benchmark": "prepare_scaling", "sizes": sizes, "workers": args.workers, "seed": args.seed,
               "rows": rows, "fit": fit, "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                                      "python": platform.python_version()},
               "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(results, args.out / "prepare_scaling.json")
    save_figure(figure(rows, fit), args.out / "prepare_scaling.png")
    print(f"\nWrote {args.out / 'prepare_scaling.json'} and {args.out / 'prepare_scaling.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
