"""nnU-Net's per-epoch training curves, read from a checkpoint or from the training log.

nnU-Net logs, once per epoch, the mean train loss, the mean validation loss and the
"pseudo Dice" per foreground class on the validation patches (plus its mean and an
exponential moving average). They live in the checkpoint's ``'logging'`` entry and in the
text lines of ``training_log_*.txt``.

Checkpoints are untrusted: they are loaded with ``torch.load(weights_only=True)``; only
NumPy's scalar type (nnU-Net logs numpy floats) is added to the allowed globals. A
checkpoint that needs anything else is not loaded; the text log is used instead.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.checkpoint import safe_torch_load

# nnU-Net's moving average of the pseudo Dice (nnunetv2.training.logging.nnunet_logger).
_EMA_KEEP = 0.9
_LOG_LINE = re.compile(r"^(?P<stamp>\d{4}-\d{2}-\d{2} [\d:.]+): (?P<message>.*)$")
_NUMPY_WRAPPER = re.compile(r"np\.\w+\(([^()]*)\)")
_NUMBER = re.compile(r"nan|[-+]?inf|[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?", re.IGNORECASE)


@dataclass
class TrainingCurves:
    """One training run's per-epoch values; ``source`` says where they were read from."""

    source: str
    train_losses: list[float] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    mean_fg_dice: list[float] = field(default_factory=list)
    ema_fg_dice: list[float] = field(default_factory=list)
    dice_per_class: list[list[float]] = field(default_factory=list)

    @property
    def n_epochs(self) -> int:
        return min(len(self.train_losses), len(self.val_losses), len(self.mean_fg_dice))

    def to_dict(self) -> dict:
        def clean(v):
            return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v
        return {
            "source": self.source,
            "train_losses": [clean(v) for v in self.train_losses],
            "val_losses": [clean(v) for v in self.val_losses],
            "mean_fg_dice": [clean(v) for v in self.mean_fg_dice],
            "ema_fg_dice": [clean(v) for v in self.ema_fg_dice],
            "dice_per_class": [[clean(v) for v in row] for row in self.dice_per_class],
        }


def _floats(values) -> list[float]:
    return [float(v) for v in values]


def _ema(values: list[float]) -> list[float]:
    out: list[float] = []
    for v in values:
        out.append(v if not out else _EMA_KEEP * out[-1] + (1 - _EMA_KEEP) * v)
    return out


def curves_from_checkpoint(path: Path) -> TrainingCurves | None:
    """Curves from an nnU-Net checkpoint's ``'logging'`` entry, loaded with weights_only=True.

    Returns None when the file cannot be loaded safely or has no usable logging entry.
    """

    try:
        checkpoint = safe_torch_load(path, "nnU-Net checkpoint", mmap=True)  # only 'logging' is read
    except GenesisUserError:
        return None
    logging = checkpoint.get("logging") if isinstance(checkpoint, dict) else None
    if not isinstance(logging, dict):
        return None
    try:
        curves = TrainingCurves(
            source=f"checkpoint {path}",
            train_losses=_floats(logging.get("train_losses", [])),
            val_losses=_floats(logging.get("val_losses", [])),
            mean_fg_dice=_floats(logging.get("mean_fg_dice", [])),
            ema_fg_dice=_floats(logging.get("ema_fg_dice", [])),
            dice_per_class=[_floats(row) for row in logging.get("dice_per_class_or_region", [])],
        )
    except (TypeError, ValueError):
        return None
    if not curves.ema_fg_dice and curves.mean_fg_dice:
        curves.ema_fg_dice = _ema(curves.mean_fg_dice)
    return curves if curves.n_epochs else None


def _log_sort_key(path: Path) -> tuple:
    # training_log_YYYY_M_D_HH_MM_SS.txt: month and day are not zero-padded
    return tuple(int(n) for n in re.findall(r"\d+", path.stem)) + (path.name,)


def _parse_numbers(text: str) -> list[float]:
    return [float(tok) for tok in _NUMBER.findall(_NUMPY_WRAPPER.sub(r"\1", text))]


def curves_from_training_logs(paths: list[Path]) -> TrainingCurves | None:
    """Curves from nnU-Net's ``training_log_*.txt`` lines (oldest file first; a continued
    training's later log overrides the epochs it repeats)."""
    epochs: dict[int, dict] = {}
    for path in sorted(paths, key=_log_sort_key):
        current = None
        for line in path.read_text(errors="replace").splitlines():
            m = _LOG_LINE.match(line.strip())
            if not m:
                continue
            message = m.group("message").strip()
            if re.fullmatch(r"Epoch \d+", message):
                current = int(message.split()[1])
                epochs[current] = {}
            elif current is None:
                continue
            elif message.startswith("train_loss "):
                epochs[current]["train"] = _parse_numbers(message[len("train_loss "):])[0]
            elif message.startswith("val_loss "):
                epochs[current]["val"] = _parse_numbers(message[len("val_loss "):])[0]
            elif message.startswith("Pseudo dice "):
                epochs[current]["dice"] = _parse_numbers(message[len("Pseudo dice "):])
    complete = [e for e in sorted(epochs) if {"train", "val", "dice"} <= set(epochs[e])]
    # keep the unbroken run of complete epochs from 0 (a crash mid-epoch leaves a partial one)
    kept = []
    for i, e in enumerate(complete):
        if e != i:
            break
        kept.append(e)
    if not kept:
        return None
    per_class = [epochs[e]["dice"] for e in kept]
    mean = [float(np.nanmean(row)) if row and not all(math.isnan(v) for v in row) else float("nan")
            for row in per_class]
    return TrainingCurves(
        source="training log " + ", ".join(str(p) for p in sorted(paths, key=_log_sort_key)),
        train_losses=[epochs[e]["train"] for e in kept],
        val_losses=[epochs[e]["val"] for e in kept],
        mean_fg_dice=mean,
        ema_fg_dice=_ema(mean),
        dice_per_class=per_class,
    )


def curves_for_fold(fold_dir: Path) -> tuple[TrainingCurves | None, str]:
    """Best available curves of one nnU-Net fold folder and a note on where they came from.

    Order: ``checkpoint_final.pth`` (complete), the training logs (every epoch, 4 decimals),
    ``checkpoint_latest.pth`` (saved every 50 epochs).
    """
    final = fold_dir / "checkpoint_final.pth"
    notes = []
    if final.is_file():
        curves = curves_from_checkpoint(final)
        if curves:
            return curves, f"from {final.name}"
        notes.append(f"{final.name} could not be read with weights_only=True or has no logging entry")
    logs = sorted(fold_dir.glob("training_log_*.txt"))
    if logs:
        curves = curves_from_training_logs(logs)
        if curves:
            return curves, "; ".join(notes + [f"from {len(logs)} training log(s)"])
    latest = fold_dir / "checkpoint_latest.pth"
    if latest.is_file():
        curves = curves_from_checkpoint(latest)
        if curves:
            return curves, "; ".join(notes + [f"from {latest.name}"])
    return None, "; ".join(notes + ["no readable checkpoint or training log with epoch values"])


def pseudo_dice_of_fold(fold_dir: Path) -> list[list[float]] | None:
    """nnU-Net's validation pseudo Dice per epoch and label of one fold folder (None: no readable curves)."""
    curves, _ = curves_for_fold(fold_dir)
    return None if curves is None else [[float(v) for v in row] for row in curves.dice_per_class]
