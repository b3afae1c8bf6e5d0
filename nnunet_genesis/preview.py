"""``nnunet-genesis preview``: see what the Genesis corruptions do to a volume.

Writes a PNG grid: one row per version (original, each corruption alone, all together),
one column per orientation (middle slice along each axis). Corruptions run on a centred
crop (default 128^3, like an nnU-Net training patch), because block and box sizes scale
with the input size.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.outputs import check_output_file, new_figure, png_written_by_us, save_figure
from nnunet_genesis.volumes import read_volume
from nnunet_genesis.transforms import GenesisConfig, corrupt

# (row title, GenesisConfig overrides): each corruption alone (probability 1), then all.
_NONE = dict(flip_rate=0.0, local_rate=0.0, nonlinear_rate=0.0, paint_rate=0.0)
VERSIONS: list[tuple[str, dict | None]] = [
    ("original", None),
    ("flip (all 3 axes)", {**_NONE, "flip_rate": 1.0}),
    ("local pixel shuffling", {**_NONE, "local_rate": 1.0}),
    ("non-linear (Bezier)", {**_NONE, "nonlinear_rate": 1.0}),
    ("in-painting", {**_NONE, "paint_rate": 1.0, "outpaint_rate": 0.0}),
    ("out-painting", {**_NONE, "paint_rate": 1.0, "outpaint_rate": 1.0}),
    ("all + in-painting", dict(flip_rate=0.5, local_rate=1.0, nonlinear_rate=1.0, paint_rate=1.0, outpaint_rate=0.0)),
    ("all + out-painting", dict(flip_rate=0.5, local_rate=1.0, nonlinear_rate=1.0, paint_rate=1.0, outpaint_rate=1.0)),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("volumes", nargs="+", metavar="VOLUME",
                        help="NIfTI/NRRD/MHA file or DICOM series folder; give several (same shape) "
                             "for a multi-channel image, in channel order")
    parser.add_argument("-o", "--output", required=True, help="PNG file to write")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0): same seed, same picture")
    parser.add_argument("--channel", type=int, default=0, help="channel to display (default 0)")
    parser.add_argument("--crop", type=int, nargs=3, default=(128, 128, 128), metavar=("X", "Y", "Z"),
                        help="size of the centred crop that is corrupted, in array axis order "
                             "(default 128 128 128; larger than the volume = whole axis)")


def load_channels(paths: list[str]) -> tuple[np.ndarray, tuple[float, ...]]:
    arrays, spacing = [], None
    for p in paths:
        arr, sp = read_volume(p)
        if arrays and arr.shape != arrays[0].shape:
            raise GenesisUserError(f"{p}: shape {arr.shape[1:]} differs from {paths[0]} ({arrays[0].shape[1:]}); "
                                   f"all channels of one image must have the same shape.")
        arrays.append(arr)
        spacing = spacing or sp
    return np.concatenate(arrays, axis=0), spacing


def centre_crop(image: np.ndarray, size: tuple[int, int, int]) -> np.ndarray:
    sl = [slice(None)]
    for dim, s in zip(image.shape[1:], size):
        s = min(dim, s)
        start = (dim - s) // 2
        sl.append(slice(start, start + s))
    return np.ascontiguousarray(image[tuple(sl)])


def display_window(volume: np.ndarray) -> tuple[float, float]:
    """Grey-scale window of one row: its own 0.5-99.5 percentiles. A row whose intensities were
    remapped (Bezier) or painted would show flat on the original's window."""
    vmin, vmax = (float(v) for v in np.percentile(volume, [0.5, 99.5]))
    if vmax <= vmin:
        vmin, vmax = float(volume.min()), float(volume.max())
        if vmax <= vmin:
            vmax = vmin + 1e-6
    return vmin, vmax


def render(image: np.ndarray, spacing: tuple[float, ...], channel: int, seed: int, output: Path, title: str) -> None:
    """Corrupt ``image`` (C, X, Y, Z) once per version and write the PNG grid atomically."""

    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(len(VERSIONS))]
    shown = image[channel]
    mids = [d // 2 for d in shown.shape]
    fig = new_figure(figsize=(9, 3 * len(VERSIONS)))
    axes = fig.subplots(len(VERSIONS), 3, squeeze=False)
    for row, ((name, overrides), rng) in enumerate(zip(VERSIONS, rngs)):
        if overrides is None:
            version = shown
        else:
            version = corrupt(image, rng, dataclasses.replace(GenesisConfig(), **overrides))[0][channel]
        vmin, vmax = display_window(version)
        for col in range(3):
            ax = axes[row, col]
            sl = [slice(None)] * 3
            sl[col] = mids[col]
            other = [a for a in range(3) if a != col]
            ax.imshow(version[tuple(sl)], cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest",
                      aspect=spacing[other[0]] / spacing[other[1]] if spacing else 1.0)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"middle slice, axis {col}", fontsize=9)
            if col == 0:
                ax.set_ylabel(f"{name}\nwindow [{vmin:.3g}, {vmax:.3g}]", fontsize=9)
    fig.suptitle(title, fontsize=9, wrap=True)
    fig.tight_layout(rect=(0, 0, 1, 0.975))
    save_figure(fig, output)


def run(args: argparse.Namespace) -> int:
    output = Path(args.output)
    if output.suffix.lower() != ".png":
        raise GenesisUserError(f"{output}: the preview is a PNG image; give an output name ending in .png.")
    check_output_file(output, "-o", inputs=args.volumes, ours=png_written_by_us)  # replaces only its own PNGs
    if args.seed < 0:
        raise GenesisUserError(f"--seed {args.seed}: must be 0 or more (numpy seeds are non-negative).")
    if any(c < 1 for c in args.crop):
        raise GenesisUserError(f"--crop {' '.join(map(str, args.crop))}: crop sizes must be positive.")
    image, spacing = load_channels(args.volumes)
    if not 0 <= args.channel < image.shape[0]:
        raise GenesisUserError(f"--channel {args.channel}: the image has {image.shape[0]} channel(s) "
                               f"(one per VOLUME given), so the channel must be in 0..{image.shape[0] - 1}.")
    crop = centre_crop(image, tuple(args.crop))
    names = ", ".join(Path(p).name for p in args.volumes)
    title = (f"{names}: crop {crop.shape[1:]} of {image.shape[1:]}, channel {args.channel}, seed {args.seed}; "
             f"intensity range [{crop[args.channel].min():.4g}, {crop[args.channel].max():.4g}]")
    render(crop, spacing, args.channel, args.seed, output, title)
    print(f"wrote {output}")
    return 0
