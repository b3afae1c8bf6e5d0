"""Speed of the Genesis corruptions: vectorised ``corrupt`` vs a per-block loop reference.

Run:  python benchmarks/transforms.py            (full: 64x64x32 and 128^3, about 40 s)
      python benchmarks/transforms.py --quick    (fewer repetitions, about 15 s)
      python benchmarks/transforms.py --repeat 5 (the full-pipeline comparison 5 times per size:
                                                  the spread on a shared machine, and how many
                                                  repeats reach the issue's 25x target)
      python benchmarks/transforms.py --pipeline (only the data-pipeline share: nnU-Net's spatial +
                                                  mirror augmentation vs ``corrupt`` per 128^3 patch)

Everything runs on ONE CPU core (thread pools limited before NumPy/torch are imported).
Times are CPU seconds of this process (``time.process_time``), which on a single thread is
the work done, unaffected by other jobs sharing the machine; wall times are printed too.
The reference below is a straightforward transcription of the papers' algorithm (Zhou et al.,
MICCAI 2019 / MedIA 2021) with one Python iteration per shuffle block and per painting box,
the same configuration, the same semantics (range-aware, sorted Bezier control points) and
the same seeds as ``corrupt``; it draws its yes/no decisions first, as ``corrupt`` does
(``CorruptionDecisions.sample``), so both sides apply the same corruptions to each seed. It
is kept here only as the yardstick.
"""

from __future__ import annotations

import os
from nnunet_genesis.volumes import read_volume

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import time  # noqa: E402
from math import comb  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

from nnunet_genesis.transforms import GenesisConfig, corrupt, corrupt_batch  # noqa: E402
from nnunet_genesis.transforms.config import CorruptionDecisions  # noqa: E402
from nnunet_genesis.transforms.kernels import compile_kernels  # noqa: E402


# --------------------------------------------------------------------------------------
# Reference: the paper's algorithm, one Python iteration per block / box.
# --------------------------------------------------------------------------------------
def reference_corrupt(image: np.ndarray, rng: np.random.Generator, cfg: GenesisConfig,
                      timings: dict[str, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    C, X, Y, Z = image.shape
    dims = (X, Y, Z)

    def tick(name: str, t0: float) -> None:
        if timings is not None:
            timings[name] = timings.get(name, 0.0) + time.process_time() - t0

    t0 = time.process_time()
    # the yes/no decisions are drawn first, as corrupt() draws them, so that for a given seed
    # both sides apply the same corruptions (a fair comparison with few seeds)
    decide = CorruptionDecisions.sample(rng, cfg)
    x = image
    for axis in decide.flip_axes:
        x = np.flip(x, axis)
    x = np.array(x, dtype=np.float32)
    target = x.copy()
    tick("flip", t0)

    t0 = time.process_time()
    if decide.shuffle:
        out = x.copy()
        maxe = [max(1, int(d * cfg.shuffle_max_block_fraction)) for d in dims]
        for _ in range(cfg.shuffle_blocks):
            bx = rng.integers(1, maxe[0] + 1)
            by = rng.integers(1, maxe[1] + 1)
            bz = rng.integers(1, maxe[2] + 1)
            px = rng.integers(0, X - bx + 1)
            py = rng.integers(0, Y - by + 1)
            pz = rng.integers(0, Z - bz + 1)
            window = x[:, px:px + bx, py:py + by, pz:pz + bz]   # read from the unshuffled image
            flat = window.reshape(C, -1)
            perm = rng.permutation(flat.shape[1])
            out[:, px:px + bx, py:py + by, pz:pz + bz] = flat[:, perm].reshape(window.shape)
        x = out
    tick("local shuffle", t0)

    t0 = time.process_time()
    if decide.curve:
        t = np.linspace(0.0, 1.0, cfg.bezier_lut_size)   # same curve resolution as corrupt()
        for c in range(C):
            lo, hi = float(x[c].min()), float(x[c].max())
            if hi <= lo:
                continue
            cx, cy = np.sort(rng.random(2)), np.sort(rng.random(2))
            px_, py_ = [0.0, cx[0], cx[1], 1.0], [0.0, cy[0], cy[1], 1.0]
            bern = [comb(3, i) * t ** i * (1 - t) ** (3 - i) for i in range(4)]
            xs = sum(b * p for b, p in zip(bern, px_))
            ys = sum(b * p for b, p in zip(bern, py_))
            if rng.random() < cfg.nonlinear_invert_rate:
                ys = 1.0 - ys
            x[c] = lo + (hi - lo) * np.interp((x[c] - lo) / (hi - lo), xs, ys)
    tick("non-linear", t0)

    t0 = time.process_time()
    if decide.paint:
        lo, hi = x.reshape(C, -1).min(1), x.reshape(C, -1).max(1)
        outpaint = decide.outpaint
        frac = cfg.outpaint_box_fraction if outpaint else cfg.inpaint_box_fraction
        b = cfg.paint_border
        if min(dims) - 2 * b >= 1:
            boxes = []
            for _ in range(rng.integers(1, cfg.max_boxes + 1)):
                box = []
                for d in dims:
                    e = min(max(int(round(rng.uniform(frac[0], frac[1]) * d)), 1), d - 2 * b)
                    s = rng.integers(b, d - b - e + 1)
                    box.append(slice(s, s + e))
                boxes.append(tuple(box))
            if outpaint:
                noisy = np.empty_like(x)
                for c in range(C):
                    noisy[c] = rng.uniform(lo[c], hi[c], size=dims)
                for box in boxes:
                    noisy[(slice(None),) + box] = x[(slice(None),) + box]
                x = noisy
            else:
                for box in boxes:
                    shape = tuple(s.stop - s.start for s in box)
                    for c in range(C):
                        x[(c,) + box] = rng.uniform(lo[c], hi[c], size=shape)
    tick("painting", t0)
    return x, target


# --------------------------------------------------------------------------------------
def test_volume(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Smooth, z-scored synthetic volume (like nnU-Net-normalised CT), shape (1, X, Y, Z)."""
    from scipy.ndimage import gaussian_filter

    v = gaussian_filter(np.random.default_rng(seed).standard_normal(shape), 2.0)
    v = (v - v.mean()) / v.std()
    return v[None].astype(np.float32)


def load_crop(path: str, shape: tuple[int, int, int]) -> np.ndarray:
    arr, _ = read_volume(path)
    arr = arr[0]
    short = [max(0, s - a) for a, s in zip(arr.shape, shape)]
    if any(short):  # e.g. 48 slices for a 64- or 128-voxel axis: mirror the volume at its ends
        print(f"  ({path}: shape {arr.shape} is smaller than {shape}; padded by reflection)")
        arr = np.pad(arr, [(k // 2, k - k // 2) for k in short], mode="symmetric")
    c = [(a - s) // 2 for a, s in zip(arr.shape, shape)]
    crop = arr[c[0]:c[0] + shape[0], c[1]:c[1] + shape[1], c[2]:c[2] + shape[2]]
    return ((crop - crop.mean()) / crop.std())[None].astype(np.float32)


def cpu_ms(fn, *args) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    fn(*args)
    return (time.process_time() - c0) * 1e3, (time.perf_counter() - w0) * 1e3


TARGET = 25.0  # issue 2: corrupt at least 25x faster than the per-block reference on both sizes

ONLY = {  # one corruption at a time, applied with probability 1
    "flip": dict(flip_rate=1.0, local_rate=0.0, nonlinear_rate=0.0, paint_rate=0.0),
    "local shuffle": dict(flip_rate=0.0, local_rate=1.0, nonlinear_rate=0.0, paint_rate=0.0),
    "non-linear": dict(flip_rate=0.0, local_rate=0.0, nonlinear_rate=1.0, paint_rate=0.0),
    "in-painting": dict(flip_rate=0.0, local_rate=0.0, nonlinear_rate=0.0, paint_rate=1.0, outpaint_rate=0.0),
    "out-painting": dict(flip_rate=0.0, local_rate=0.0, nonlinear_rate=0.0, paint_rate=1.0, outpaint_rate=1.0),
}


def compare(image: np.ndarray, cfg: GenesisConfig, seeds: range) -> tuple[float, float, float, float, dict]:
    """Mean CPU/wall ms per sample for reference and corrupt, interleaved seed by seed."""
    ref_c = ref_w = new_c = new_w = 0.0
    parts: dict[str, float] = {}
    corrupt(image, np.random.default_rng(10 ** 6), cfg)  # warm-up (imports, caches)
    for s in seeds:
        c, w = cpu_ms(reference_corrupt, image, np.random.default_rng(s), cfg, parts)
        ref_c, ref_w = ref_c + c, ref_w + w
        c, w = cpu_ms(corrupt, image, np.random.default_rng(s), cfg)
        new_c, new_w = new_c + c, new_w + w
    n = len(seeds)
    return ref_c / n, ref_w / n, new_c / n, new_w / n, {k: v * 1e3 / n for k, v in parts.items()}


def back_to_back(image: np.ndarray, cfg: GenesisConfig, seeds: range) -> tuple[float, float]:
    """Mean CPU ms per sample for reference and corrupt, each over all seeds in a row.

    The interleaved ``compare`` starts every ``corrupt`` call with its data out of the caches
    (the reference ran for a few hundred ms in between); here each side runs on its own warm
    caches, as a corruption in a data-loading worker does on the patch it has just produced.
    """
    t0 = time.process_time()
    for s in seeds:
        reference_corrupt(image, np.random.default_rng(s), cfg)
    t1 = time.process_time()
    for s in seeds:
        corrupt(image, np.random.default_rng(s), cfg)
    t2 = time.process_time()
    return (t1 - t0) * 1e3 / len(seeds), (t2 - t1) * 1e3 / len(seeds)


def torch_throughput(shape: tuple[int, int, int], device: str, batch: int, reps: int, cfg: GenesisConfig) -> float:
    x = torch.from_numpy(test_volume(shape)).to(device).expand(batch, -1, -1, -1, -1).contiguous()
    g = torch.Generator(device=device).manual_seed(0)
    corrupt_batch(x, g, cfg)  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        corrupt_batch(x, g, cfg)
    if device == "cuda":
        torch.cuda.synchronize()
    return reps * batch / (time.perf_counter() - t0)


# --------------------------------------------------------------------------------------
# The data pipeline of the workers route: nnU-Net's spatial + mirror augmentation, then corrupt.
# --------------------------------------------------------------------------------------
def nnunet_spatial_augmentation(patch_size: tuple[int, int, int]):
    """(transform, input patch size): nnU-Net 2.x's SpatialTransform + MirrorTransform for a 3D
    fullres plan with this patch (as ``nnUNetTrainer`` configures them: rotation +-30 degrees and
    scaling 0.7-1.4, each with probability 0.2, mirroring on all axes), and the larger patch its
    loader crops for them (``get_patch_size``)."""
    from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
    from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
    from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
    from nnunetv2.training.data_augmentation.compute_initial_patch_size import get_patch_size
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    rotation = (-30.0 / 360 * 2 * np.pi, 30.0 / 360 * 2 * np.pi)
    full = nnUNetTrainer.get_training_transforms(patch_size, rotation, None, (0, 1, 2), False)
    kept = [t for t in full.transforms if isinstance(t, (SpatialTransform, MirrorTransform))]
    assert len(kept) == 2, kept
    initial = tuple(int(v) for v in get_patch_size(patch_size, rotation, rotation, rotation, (0.85, 1.25)))
    return ComposeTransforms(kept), initial


def pipeline(volume: str | None, cfg: GenesisConfig, seeds: int, reps: int) -> None:
    """Per 128^3 patch, CPU ms: nnU-Net's spatial + mirror augmentation, then ``corrupt`` on its output.

    Each repetition runs the same ``seeds`` samples (the augmentation's global generators and
    ``corrupt``'s generator seeded per sample), timing the two one after the other, so a slow
    stretch of a shared machine hits both alike. Printed: the median over the repetitions of
    each one's mean per sample, and corrupt's share of the two together.
    """
    patch = (128, 128, 128)
    augment, initial = nnunet_spatial_augmentation(patch)
    image = torch.from_numpy(load_crop(volume, initial) if volume else test_volume(initial))
    seg = torch.zeros(image.shape, dtype=torch.int16)  # pretraining's all-background placeholder label
    print(f"== data pipeline per {patch[0]}^3 patch ({'crop of ' + volume if volume else 'synthetic z-scored'}; "
          f"loader patch {initial}), {seeds} samples x {reps} repetitions ==")

    def augmented(s: int) -> np.ndarray:
        np.random.seed(s)
        torch.manual_seed(s)
        with torch.no_grad():
            return augment(image=image.clone(), segmentation=seg.clone())["image"].numpy()

    corrupt(augmented(0), np.random.default_rng(0), cfg)  # warm-up
    rows: dict[str, list[float]] = {"spatial + mirror": [], "corrupt": []}
    for _ in range(reps):
        totals = dict.fromkeys(rows, 0.0)
        for s in range(seeds):
            c0 = time.process_time()
            x = augmented(s)
            c1 = time.process_time()
            corrupt(x, np.random.default_rng(s), cfg)
            c2 = time.process_time()
            totals["spatial + mirror"] += (c1 - c0) * 1e3
            totals["corrupt"] += (c2 - c1) * 1e3
        for name in rows:
            rows[name].append(totals[name] / seeds)
    med = {name: float(np.median(v)) for name, v in rows.items()}
    for name, v in rows.items():
        print(f"  {name:<18s} median {med[name]:6.2f} ms   (repetitions: {min(v):.2f}-{max(v):.2f})")
    print(f"  corrupt: {100 * med['corrupt'] / (med['corrupt'] + med['spatial + mirror']):.0f} % of the pipeline "
          f"({med['corrupt'] + med['spatial + mirror']:.1f} ms)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer repetitions (rough figures, about 15 s)")
    p.add_argument("--volume", help="use a centred crop of this CT volume (z-scored) instead of a synthetic one")
    p.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="run the full-pipeline comparison N times per size and summarise the ratios (default 1)")
    p.add_argument("--pipeline", action="store_true",
                   help="only the data-pipeline share at 128^3: nnU-Net's spatial + mirror augmentation vs corrupt")
    p.add_argument("--pipeline-seeds", type=int, default=16, metavar="N", help="samples per repetition (default 16)")
    p.add_argument("--pipeline-reps", type=int, default=15, metavar="N", help="repetitions (default 15)")
    args = p.parse_args()
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    if args.pipeline:
        compile_kernels()
        pipeline(args.volume, GenesisConfig(), args.pipeline_seeds, args.pipeline_reps)
        return
    reps = {(64, 64, 32): 6 if args.quick else 40, (128, 128, 128): 3 if args.quick else 16}
    cfg = GenesisConfig()
    print(f"one core: torch threads={torch.get_num_threads()}, numpy {np.__version__}, torch {torch.__version__}")
    w0 = time.perf_counter()
    compile_kernels()  # once per process: compile, or load from numba's cache; not part of the per-sample times
    print(f"compiled kernels ready in {time.perf_counter() - w0:.2f} s (once per process)")
    print(f"config: {cfg.to_dict()}")
    print("times: mean CPU ms per sample (wall ms in brackets); ratio = reference / corrupt (CPU)\n")
    summary: dict[tuple[int, int, int], str] = {}  # --repeat: the ratios of each size, printed again at the end
    for shape, n in reps.items():
        image = load_crop(args.volume, shape) if args.volume else test_volume(shape)
        print(f"== {shape[0]}x{shape[1]}x{shape[2]} ({'crop of ' + args.volume if args.volume else 'synthetic z-scored'}), "
              f"{n} seeds ==")
        ratios = []
        for _ in range(args.repeat):
            rc, rw, nc, nw, parts = compare(image, cfg, range(n))
            ratios.append(rc / nc)
            print(f"  full pipeline (paper's rates): reference {rc:8.1f} ms [{rw:8.1f}]   corrupt {nc:6.2f} ms [{nw:6.2f}]"
                  f"   ratio {rc / nc:6.1f}x")
        if args.repeat > 1:
            summary[shape] = (", ".join(f"{r:.1f}x" for r in ratios) + f" (min {min(ratios):.1f}x, median "
                              f"{np.median(ratios):.1f}x); {sum(r >= TARGET for r in ratios)} of {args.repeat} "
                              f"at {TARGET:g}x or more")
            print(f"  {args.repeat} repeats: {summary[shape]}")
        rb, nb = back_to_back(image, cfg, range(n))
        print(f"  the same, each side's seeds back to back (warm caches): reference {rb:8.1f} ms   corrupt {nb:6.2f} ms"
              f"   ratio {rb / nb:6.1f}x")
        print("  reference time by stage (mean per sample, rates included): "
              + ", ".join(f"{k} {v:.1f} ms" for k, v in parts.items()))
        for name, over in ONLY.items():
            only = dataclasses.replace(cfg, **over)
            k = max(2, n // 3)
            rc1, _, nc1, _, _ = compare(image, only, range(k))
            print(f"  only {name:<14s} reference {rc1:8.1f} ms   corrupt {nc1:6.2f} ms   ratio {rc1 / nc1:6.1f}x")
    print("\n== corrupt_batch (torch) throughput, default config ==")
    for shape in reps:
        b = 2
        sps = torch_throughput(shape, "cpu", b, 2 if args.quick else 6, cfg)
        print(f"  cpu  (1 thread) {shape}: {sps:7.1f} samples/s (batch {b})")
        if torch.cuda.is_available():
            sps = torch_throughput(shape, "cuda", 8, 10 if args.quick else 50, cfg)
            print(f"  cuda {torch.cuda.get_device_name()} {shape}: {sps:7.1f} samples/s (batch 8)")
    if not torch.cuda.is_available():
        print("  (no CUDA device here: GPU throughput not measured)")
    if summary:
        print(f"\n== full-pipeline ratio over {args.repeat} repeats (target {TARGET:g}x, interleaved) ==")
        for shape, line in summary.items():
            print(f"  {shape[0]}x{shape[1]}x{shape[2]}: {line}")


if __name__ == "__main__":
    main()
