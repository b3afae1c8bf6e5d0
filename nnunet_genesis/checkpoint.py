"""The self-describing Genesis checkpoint format.

A Genesis checkpoint is a ``torch.save``d dict that nnU-Net's own ``-pretrained_weights``
also accepts::

    {
      "network_weights": {key: tensor},   # no "module." / "_orig_mod." prefixes
      "genesis": {...metadata...},        # plain JSON-like values only
    }

Only tensors, dicts, lists, strings, numbers, booleans and None are stored, so the file
loads with ``torch.load(weights_only=True)``: checkpoints from outside are untrusted and
nothing in them may run code.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.outputs import written_then_renamed
from nnunet_genesis import __version__

FORMAT_VERSION = 1
CHECKPOINT_FILE_NAME = "genesis_final.pth"  # what a finished pretraining writes into its output folder
LATEST_FILE_NAME = "genesis_latest.pth"  # written next to each of nnU-Net's checkpoints during a pretraining
_NUMERIC_KINDS = "biufc"
_PREFIXES = ("module.", "_orig_mod.")

# Metadata keys every checkpoint written by this package carries (docs/pretraining.md, "The Genesis checkpoint").
REQUIRED_METADATA = (
    "format_version",
    "network_class",  # dotted class name, e.g. dynamic_network_architectures.architectures.unet.PlainConvUNet
    "network_kwargs",  # JSON-able kwargs as in nnU-Net plans ("arch_kwargs")
    "network_kwargs_requires_import",  # kwargs whose value is a dotted class name (nnU-Net's _kw_requires_import)
    "input_channels",
    "output_channels",
    "source",  # "pretrain" | "import-v1" | ...
)


@dataclass
class GenesisCheckpoint:
    """Weights plus metadata, as read from or written to disk."""

    network_weights: dict[str, torch.Tensor]
    metadata: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


def strip_prefixes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove DDP's ``module.`` and torch.compile's ``_orig_mod.`` prefixes from every key."""
    out = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for p in _PREFIXES:
                if key.startswith(p):
                    key = key[len(p):]
                    changed = True
        out[key] = value.detach().cpu() if isinstance(value, torch.Tensor) else value
    return out


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` to a temp file in the same folder, then rename: never a half-written file."""
    with written_then_renamed(path) as tmp:
        torch.save(obj, tmp)


def save_checkpoint(path: str | os.PathLike, network_weights: Mapping[str, torch.Tensor],
                    metadata: Mapping[str, Any]) -> Path:
    """Save weights and metadata atomically; missing required metadata is a programming error."""
    meta = json.loads(json.dumps(dict(metadata)))  # plain JSON values only (what load_checkpoint accepts)
    meta.setdefault("format_version", FORMAT_VERSION)
    missing = [k for k in REQUIRED_METADATA if k not in meta]
    if missing:
        raise ValueError(f"Genesis checkpoint metadata lacks {missing}")
    atomic_torch_save({"network_weights": strip_prefixes(network_weights), "genesis": meta}, path)
    return Path(path)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_FORBIDDEN_GLOBAL = re.compile(r"(?:Unsupported global: GLOBAL|Unsupported class|global) ([A-Za-z_][\w.]*)")


def safe_torch_load(path: str | os.PathLike, what: str = "Checkpoint", map_location="cpu", mmap: bool = False) -> Any:
    """``torch.load(weights_only=True)`` (numeric numpy scalars allowed) with a clear error.

    The one place where an untrusted torch file is read: a file that is missing, empty, not
    a torch file, truncated, or that needs code to unpickle (the forbidden global is named)
    is a GenesisUserError naming ``what`` and the path; nothing in the file runs. ``mmap``: map
    tensors from a zip-format file instead of reading them (for callers that need little of it).
    """
    path = Path(path)
    if not path.is_file():
        raise GenesisUserError(f"{what} {path} does not exist or is not a file.")
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise GenesisUserError(f"{what} {path} is empty (0 bytes); the file is truncated.")
    if head.startswith(b"PK"):
        import zipfile

        try:
            with zipfile.ZipFile(path) as archive:
                archive.infolist()
        except (zipfile.BadZipFile, OSError):
            raise GenesisUserError(f"{what} {path} is a damaged torch file: its zip archive is incomplete (the "
                                   f"file is truncated). Copy it again.") from None
    elif head[:1] != b"\x80":  # neither torch's zip format nor the legacy pickle format
        raise GenesisUserError(f"{what} {path} is not a torch file (it starts neither like torch.save's zip "
                               f"archive nor like a pickle).")
    try:
        with torch.serialization.safe_globals(numpy_safe_globals()):
            return torch.load(path, map_location=map_location, weights_only=True,
                              mmap=mmap and head.startswith(b"PK"))
    except pickle.UnpicklingError as e:
        text = _ANSI.sub("", str(e))
        found = _FORBIDDEN_GLOBAL.search(text)
        if "weights only load failed" in text.lower() and found:
            raise GenesisUserError(
                f"{what} {path} was refused: it holds the global {found.group(1)}, which could run code "
                f"when unpickled; untrusted files are read with weights_only=True (tensors, plain "
                f"containers and numbers only), so nothing in it ran. Re-save it as a plain dict of "
                f"tensors and JSON-like metadata, or convert official weights with 'nnunet-genesis "
                f"import-v1'.") from None
        raise GenesisUserError(f"{what} {path} could not be read: the pickle inside is damaged or not a "
                               f"torch checkpoint ({_first_line(text)}).") from None
    except (EOFError, RuntimeError, OSError, ValueError) as e:
        raise GenesisUserError(f"{what} {path} could not be read: the file is damaged or truncated "
                               f"({_first_line(_ANSI.sub('', str(e)))}).") from None


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0][:200] if lines else "no detail"


def load_checkpoint(path: str | os.PathLike, require_metadata: bool = True) -> GenesisCheckpoint:
    """Load a checkpoint safely (``safe_torch_load``) and check its structure.

    Raises GenesisUserError naming the file for: missing file, a pickle that needs code to
    load (refused, nothing in it runs), a file that is not a checkpoint, or missing metadata.
    """
    path = Path(path)
    obj = safe_torch_load(path, "Checkpoint")
    if not isinstance(obj, dict) or not isinstance(obj.get("network_weights"), dict):
        raise GenesisUserError(
            f"Checkpoint {path} is not a Genesis/nnU-Net checkpoint: expected a dict with a "
            f"'network_weights' dict of tensors, found "
            f"{type(obj).__name__} with keys {sorted(map(str, obj))[:8] if isinstance(obj, dict) else '-'}."
        )
    weights = obj["network_weights"]
    for k, v in weights.items():
        if not isinstance(k, str):
            raise GenesisUserError(f"Checkpoint {path}: 'network_weights' has a key of type {type(k).__name__} "
                                   f"({k!r:.80}); the keys of a state dict are parameter names (strings).")
        if not isinstance(v, torch.Tensor):
            raise GenesisUserError(f"Checkpoint {path}: 'network_weights' entry {k!r} is not a tensor.")
        if v.layout != torch.strided or v.is_quantized:
            raise GenesisUserError(f"Checkpoint {path}: 'network_weights' entry {k!r} is a {v.layout} "
                                   f"{'quantized ' if v.is_quantized else ''}tensor; network weights are dense "
                                   f"tensors.")
    meta = obj.get("genesis")
    if meta is not None and not isinstance(meta, dict):
        raise GenesisUserError(f"Checkpoint {path}: its 'genesis' metadata block is a {type(meta).__name__}, "
                               f"not a dict; the file was not written by nnunet-genesis.")
    problem = _not_json_like(meta) if meta is not None else None
    if problem:
        raise GenesisUserError(f"Checkpoint {path}: its 'genesis' metadata holds {problem}; metadata must be "
                               f"plain JSON-like values (dicts with string keys, lists, strings, numbers).")
    if require_metadata:
        if not isinstance(meta, dict):
            raise GenesisUserError(
                f"Checkpoint {path} has network weights but no 'genesis' metadata block, so the "
                f"network it belongs to is unknown. Use a checkpoint written by 'nnunet-genesis "
                f"pretrain' or 'nnunet-genesis import-v1'."
            )
        missing = [k for k in REQUIRED_METADATA if k not in meta]
        if missing:
            raise GenesisUserError(f"Checkpoint {path}: the 'genesis' metadata lacks {missing}.")
    return GenesisCheckpoint(strip_prefixes(weights), dict(meta or {}), path)


def _not_json_like(value: Any, where: str = "genesis", depth: int = 0) -> str | None:
    """What in ``value`` is not JSON-like (None if all is), with its location."""
    if depth > 32:
        return f"nesting deeper than 32 levels at {where}"
    if value is None or isinstance(value, (bool, int, float, str)):
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                return f"a key of type {type(k).__name__} at {where}"
            problem = _not_json_like(v, f"{where}.{k}", depth + 1)
            if problem:
                return problem
        return None
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            problem = _not_json_like(v, f"{where}[{i}]", depth + 1)
            if problem:
                return problem
        return None
    return f"a {type(value).__name__} at {where}"


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 of a file, so a plans variant can pin the exact checkpoint it names."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def package_versions() -> dict[str, str]:
    """Versions recorded in every checkpoint's metadata."""
    from importlib.metadata import PackageNotFoundError, version

    # str(): torch.__version__ is a TorchVersion, which weights_only=True refuses to unpickle
    out = {"nnunet_genesis": __version__, "torch": str(torch.__version__)}
    for name in ("nnunetv2", "dynamic_network_architectures"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def numpy_safe_globals() -> list[tuple[Any, str]]:
    """For ``torch.serialization.safe_globals``: numpy scalar reconstruction, restricted to numeric
    dtypes (nnU-Net v1 and v2 training checkpoints hold numpy floats in their loss curves)."""
    import numpy as np

    def checked_dtype(obj, align=False, copy=False):
        if not isinstance(obj, str):
            raise pickle.UnpicklingError(f"numpy dtype from {type(obj).__name__} refused")
        dt = np.dtype(obj)
        if dt.kind not in _NUMERIC_KINDS:
            raise pickle.UnpicklingError(f"numpy dtype {obj!r} refused (numeric dtypes only)")
        return np.dtype(obj, bool(align), bool(copy))

    def checked_scalar(dtype, data=None):
        if not isinstance(dtype, np.dtype) or dtype.kind not in _NUMERIC_KINDS \
                or not isinstance(data, bytes) or len(data) != dtype.itemsize:
            raise pickle.UnpicklingError("numpy scalar refused (numeric scalars from raw bytes only)")
        return np.frombuffer(data, dtype=dtype)[0].copy()

    dtype_classes = {type(np.dtype(c)) for c in "?bBhHiIlLqQefdgFDG"}
    return ([(checked_scalar, "numpy.core.multiarray.scalar"),
             (checked_scalar, "numpy._core.multiarray.scalar"),
             (checked_dtype, "numpy.dtype")]
            + [(cls, f"{cls.__module__}.{cls.__name__}") for cls in dtype_classes])
