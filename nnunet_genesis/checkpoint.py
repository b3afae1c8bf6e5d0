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
import io
import json
import os
import pickle
import pickletools
import re
import zipfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

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
# torch names the refused global in its message, worded differently across versions: "Unsupported global:
# GLOBAL io.open was not ...", "Trying to load unsupported GLOBAL posix.system whose ...", "Unsupported class x.Y"
_FORBIDDEN_GLOBAL = re.compile(r"(?:\bGLOBAL|\bUnsupported class|\bglobal:?)\s+'?([A-Za-z_][\w.]*\.[A-Za-z_]\w*)",
                               re.IGNORECASE)
# sentences of torch's message that advise loading the file unsafely: never passed on
_UNSAFE_ADVICE = re.compile(r"weights_only|trust|arbitrary code|allowlist|safe_globals|two options", re.IGNORECASE)
# the only integer tensors in the state dicts of the networks nnU-Net builds (BatchNorm's step counter)
INTEGER_BUFFERS = ("num_batches_tracked",)
# what nnUNetTrainer.load_checkpoint reads from its training checkpoints (--c, --val, pretrain --resume)
TRAINING_CHECKPOINT_KEYS = ("network_weights", "optimizer_state", "current_epoch", "init_args", "logging",
                            "_best_ema")


def safe_torch_load(path: str | os.PathLike, what: str = "Checkpoint", map_location="cpu", mmap: bool = False) -> Any:
    """``torch.load(weights_only=True)`` (numeric numpy scalars allowed) with a clear error.

    The one place where an untrusted torch file is read: a file that is missing, empty, not
    a torch file, truncated, changed after it was written (a zip member failing its CRC: torch
    itself does not check them, so a flipped bit would load as a weight of 1e36), or that needs
    code to unpickle (the forbidden global is named) is a GenesisUserError naming ``what`` and
    the path; nothing in the file runs. ``mmap``: map tensors from a zip-format file instead of
    reading them (for callers that need little of it).
    """
    path = Path(path)
    head = _verified_container(path, what)
    try:
        with torch.serialization.safe_globals(numpy_safe_globals()):
            return torch.load(path, map_location=map_location, weights_only=True,
                              mmap=mmap and head.startswith(b"PK"))
    except pickle.UnpicklingError as e:
        text = _ANSI.sub("", str(e))
        refused = _refused_global(text, path, head)
        if refused:
            raise GenesisUserError(
                f"{what} {path} was refused: it holds the global {refused}, which could run code "
                f"when unpickled; untrusted files are read with weights_only=True (tensors, plain "
                f"containers and numbers only), so nothing in it ran. Re-save it as a plain dict of "
                f"tensors and JSON-like metadata, or convert official weights with 'nnunet-genesis "
                f"import-v1'.") from None
        raise GenesisUserError(f"{what} {path} could not be read: the pickle inside is damaged or not a "
                               f"torch checkpoint ({_safe_detail(text)}).") from None
    except (EOFError, RuntimeError, OSError, ValueError) as e:
        raise GenesisUserError(f"{what} {path} could not be read: the file is damaged or truncated "
                               f"({_safe_detail(_ANSI.sub('', str(e)))}).") from None


def _verified_container(path: Path, what: str) -> bytes:
    """The file's first bytes, after checking that it exists, is not empty, is a torch file and, for
    torch's zip format, that every member still has the CRC-32 written with it (refused otherwise)."""
    if not path.is_file():
        raise GenesisUserError(f"{what} {path} does not exist or is not a file.")
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise GenesisUserError(f"{what} {path} is empty (0 bytes); the file is truncated.")
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()  # reads every member: about 0.1 s per 100 MB
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, ValueError):
            raise GenesisUserError(f"{what} {path} is a damaged torch file: its zip archive is incomplete (the "
                                   f"file is truncated). Copy it again.") from None
        if bad is not None:
            raise GenesisUserError(f"{what} {path} is damaged: member {bad!r} fails its CRC check (its bytes "
                                   f"changed after torch.save wrote them, e.g. a flipped bit on disk or in a "
                                   f"copy), so its values cannot be trusted. Copy the file again from its "
                                   f"source.")
    elif head[:1] != b"\x80":  # neither torch's zip format nor the legacy pickle format
        raise GenesisUserError(f"{what} {path} is not a torch file (it starts neither like torch.save's zip "
                               f"archive nor like a pickle).")
    return head


def _refused_global(text: str, path: Path, head: bytes) -> str | None:
    """The global that made ``weights_only=True`` refuse the file: from torch's message when it names
    one, otherwise the first global in the file's pickle that the safe unpickler does not allow."""
    found = _FORBIDDEN_GLOBAL.search(text)
    if found:
        return found.group(1)
    allowed = _allowed_global_names()
    if allowed is None:
        return None
    return next((g for g in _pickle_globals(path, head) if g not in allowed), None)


def _allowed_global_names() -> set[str] | None:
    try:
        from torch import _weights_only_unpickler

        names = set(_weights_only_unpickler._get_allowed_globals())
    except (ImportError, AttributeError):  # a private API: without it the message alone names the global
        return None
    extra = list(getattr(torch.serialization, "get_safe_globals", list)()) + numpy_safe_globals()
    for item in extra:
        obj, name = item if isinstance(item, tuple) else (item, None)
        names.add(name or f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}")
    return names


def _pickle_globals(path: Path, head: bytes) -> list[str]:
    """``module.name`` of each GLOBAL / STACK_GLOBAL in the file's pickles, read without running them."""
    found: list[str] = []
    try:
        with ExitStack() as stack:
            if head.startswith(b"PK"):
                archive = stack.enter_context(zipfile.ZipFile(path))
                streams = [io.BytesIO(archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl"))))]
            else:  # torch's legacy format: magic number, protocol, system info, then the data pickle
                f = stack.enter_context(open(path, "rb"))
                streams = [f] * 4
            for stream in streams:
                recent, memo = [None, None], {}  # recent: what the last two pushing opcodes pushed
                for op, arg, _ in pickletools.genops(stream):
                    if op.name == "GLOBAL":
                        found.append(arg.replace(" ", "."))
                    elif op.name == "STACK_GLOBAL":
                        found.append(f"{recent[-2]}.{recent[-1]}")
                    elif op.name == "MEMOIZE":
                        memo[len(memo)] = recent[-1]
                    elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
                        memo[arg] = recent[-1]
                    else:
                        pushed = memo.get(arg) if op.name in ("GET", "BINGET", "LONG_BINGET") else \
                            arg if isinstance(arg, str) and ("UNICODE" in op.name or "STRING" in op.name) else None
                        recent = [recent[-1], pushed]
    except Exception:  # noqa: BLE001 - a damaged pickle: nothing more to name than found so far
        pass
    return found


def _safe_detail(text: str) -> str:
    """The most specific line of an error that gives no advice to load the file unsafely."""
    lines = [li.strip() for li in re.split(r"[\n\t]|(?<=\.) ", text) if li.strip()]
    safe = [li for li in lines if not _UNSAFE_ADVICE.search(li)]
    specific = [li for li in safe if not li.lower().startswith("weights only load failed")]
    return (specific or safe or ["no detail"])[0][:200]


def load_checkpoint(path: str | os.PathLike, require_metadata: bool = True) -> GenesisCheckpoint:
    """Load a checkpoint safely (``safe_torch_load``) and check its structure.

    Raises GenesisUserError naming the file for: missing file, a pickle that needs code to
    load (refused, nothing in it runs), a file that is not a checkpoint, or missing metadata.
    """
    path = Path(path)
    return checkpoint_from_object(safe_torch_load(path, "Checkpoint"), path, require_metadata)


def checkpoint_from_object(obj: Any, path: Path, require_metadata: bool = True) -> GenesisCheckpoint:
    """``load_checkpoint`` on an object already loaded by ``safe_torch_load`` (``pretrained_sources``
    reads a file once and then decides its kind)."""
    if not isinstance(obj, dict) or not isinstance(obj.get("network_weights"), dict):
        raise GenesisUserError(
            f"Checkpoint {path} is not a Genesis/nnU-Net checkpoint: expected a dict with a "
            f"'network_weights' dict of tensors, found "
            f"{type(obj).__name__} with keys {sorted(map(str, obj))[:8] if isinstance(obj, dict) else '-'}."
        )
    weights = obj["network_weights"]
    verify_network_weights(weights, f"Checkpoint {path}")
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


def verify_network_weights(weights: Mapping[Any, Any], where: str, entry: str = "'network_weights'",
                           expected: Mapping[str, torch.Tensor] | None = None,
                           expected_name: str = "this trainer's network") -> None:
    """Refuse weights that cannot be a network's: the one check every route runs before using them.

    Each entry must be a dense tensor under a string key, with no zero-size dimension, of a
    floating-point dtype (integers only for ``INTEGER_BUFFERS``, or where ``expected`` holds
    integers) and with finite values; a bit flip, a diverged training or a wrong conversion would
    otherwise be transferred and trained on silently. With ``expected`` (the state dict of the
    network the weights are for, called ``expected_name``) the keys and shapes must match it too. ``where`` names the file
    in the GenesisUserError; the first offending key is named.
    """
    seen: set[tuple] = set()
    for k, v in weights.items():
        if not isinstance(k, str):
            raise GenesisUserError(f"{where}: {entry} has a key of type {type(k).__name__} ({k!r:.80}); the "
                                   f"keys of a state dict are parameter names (strings).")
        if not isinstance(v, torch.Tensor):
            raise GenesisUserError(f"{where}: {entry} entry {k!r} is not a tensor (a {type(v).__name__}).")
        if v.layout != torch.strided or v.is_quantized:
            raise GenesisUserError(f"{where}: {entry} entry {k!r} is a {v.layout} "
                                   f"{'quantized ' if v.is_quantized else ''}tensor; network weights are dense "
                                   f"tensors.")
        if 0 in v.shape:
            raise GenesisUserError(f"{where}: {entry} entry {k!r} has shape {list(v.shape)}, with a dimension of "
                                   f"size 0 (e.g. a convolution with no input channels); no network has such a "
                                   f"layer.")
        floats = expected[k].is_floating_point() if expected is not None and k in expected \
            else k.rsplit(".", 1)[-1] not in INTEGER_BUFFERS
        if floats and not v.is_floating_point():
            raise GenesisUserError(f"{where}: {entry} entry {k!r} is stored as {str(v.dtype).replace('torch.', '')}; "
                                   f"network weights are floating-point numbers (only buffers such as "
                                   f"{INTEGER_BUFFERS[0]} are integers), so these are no trained weights (a "
                                   f"wrong conversion or a damaged file).")
        sk = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape), tuple(v.stride()), v.dtype)
        if v.is_floating_point() and sk not in seen:
            seen.add(sk)
            if not all(map(torch.isfinite, torch.aminmax(v))):  # one pass, no copy (isfinite().all(): 4x slower)
                nan = int(torch.isnan(v).sum())
                inf = int((~torch.isfinite(v)).sum()) - nan
                what = " and ".join(p for p in (f"{nan} NaN" if nan else "", f"{inf} infinite" if inf else "") if p)
                raise GenesisUserError(f"{where}: {entry} entry {k!r} holds {what} value(s) among {v.numel()}; "
                                       f"training from it would give a loss of nan (the training that wrote it "
                                       f"diverged, or the file is damaged). Use an earlier checkpoint.")
    if expected is None:
        return
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    if missing or unexpected:
        first = (f"lacks {missing[0]!r} (shape {list(expected[missing[0]].shape)})" if missing
                 else f"has {unexpected[0]!r}, which")
        raise GenesisUserError(f"{where}: {entry} {first} {'of' if missing else 'is not in'} {expected_name} "
                               f"({len(missing)} missing, {len(unexpected)} unknown key(s)): it was "
                               f"written for another architecture or configuration.")
    for k, v in weights.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise GenesisUserError(f"{where}: {entry} entry {k!r} has shape {list(v.shape)} but {expected_name} "
                                   f"needs {list(expected[k].shape)}: it was written for another "
                                   f"architecture or configuration.")


def pretrained_weights_requested(argv: Sequence[str]) -> bool:
    """Whether a command line carries nnUNetv2_train's ``-pretrained_weights`` option (nnU-Net loads that
    file with ``torch.load(weights_only=False)``, so every trainer of this package refuses it)."""
    return any(a == "-pretrained_weights" or a.startswith("-pretrained_weights=") for a in argv)

def load_training_checkpoint(path: str | os.PathLike, network_state: Mapping[str, torch.Tensor],
                             what: str = "nnU-Net training checkpoint", map_location="cpu") -> dict[str, Any]:
    """An nnU-Net training checkpoint (``--c``, ``--val``, pretrain ``--resume``), loaded safely and
    verified against the state dict of the trainer's network before nnU-Net's own loader reads it
    (which would fail with a traceback, or train on, whatever the file holds)."""
    path = Path(path)
    obj = safe_torch_load(path, what, map_location=map_location)
    where = f"{what} {path}"
    if not isinstance(obj, dict):
        raise GenesisUserError(f"{where} is not an nnU-Net training checkpoint: it holds a {type(obj).__name__}, "
                               f"not a dict.")
    missing = [k for k in TRAINING_CHECKPOINT_KEYS if k not in obj]
    if missing:
        raise GenesisUserError(f"{where} is not an nnU-Net training checkpoint: it lacks {missing} (found keys "
                               f"{sorted(map(str, obj))[:8]}).")
    weights = obj["network_weights"]
    if not isinstance(weights, dict):
        raise GenesisUserError(f"{where}: 'network_weights' is a {type(weights).__name__}, not a dict of tensors.")
    if not isinstance(obj["current_epoch"], int) or obj["current_epoch"] < 0 \
            or not isinstance(obj["logging"], dict) or not isinstance(obj["optimizer_state"], dict):
        raise GenesisUserError(f"{where}: 'current_epoch', 'logging' or 'optimizer_state' is not what nnU-Net "
                               f"writes (an epoch number and two dicts).")
    # nnUNetTrainer.load_checkpoint drops DDP's "module." where the bare name is the network's
    renamed = {k[7:] if isinstance(k, str) and k not in network_state and k.startswith("module.") else k: v
               for k, v in weights.items()}
    verify_network_weights(renamed, where, expected=network_state)
    return obj

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
