"""``nnunet-genesis inspect CKPT``: what a Genesis checkpoint holds, without building anything.

Prints the ``genesis`` metadata block readably and a parameter summary per top-level module
and stage (``encoder.stages.0``, ``decoder.transpconvs.3``, ...): tensor count and number of
values. Tensors that share storage (nnU-Net's decoder keeps a reference to the encoder, and
conv blocks list their convolution twice) are counted once in the totals. ``--json`` prints
the same as one JSON document. The file is loaded with ``weights_only=True`` and verified
(``checkpoint.load_checkpoint``). Text from the file (metadata, key names) reaches the terminal
without control characters: they are printed escaped (``\\x1b``), as ``repr`` writes them, so an
escape sequence in a checkpoint cannot drive the terminal.
"""

from __future__ import annotations

import argparse
import json
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import torch

from nnunet_genesis.checkpoint import REQUIRED_METADATA, load_checkpoint
from nnunet_genesis.safe_text import printable


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, metavar="CKPT", help="Genesis checkpoint (.pth)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")


def group_name(key: str) -> str:
    """``encoder.stages.0.0.convs.1.conv.weight`` -> ``encoder.stages.0``: module path up to the first index."""
    parts = key.split(".")[:-1]  # drop the tensor name
    out = []
    for p in parts:
        out.append(p)
        if p.isdigit():
            break
    return ".".join(out) or key


def _storage_key(t: torch.Tensor) -> tuple:
    return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()))


def parameter_summary(weights: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Per group: tensors, values, and how many of them repeat a tensor seen under another key."""
    groups: "OrderedDict[str, dict[str, Any]]" = OrderedDict()
    seen: dict[tuple, str] = {}
    unique_values = 0
    for key, t in weights.items():
        g = groups.setdefault(group_name(key), {"tensors": 0, "values": 0, "shared_tensors": 0, "shares_with": []})
        g["tensors"] += 1
        g["values"] += t.numel()
        sk = _storage_key(t)
        if sk in seen:
            g["shared_tensors"] += 1
            other = group_name(seen[sk])
            if other != group_name(key) and other not in g["shares_with"]:
                g["shares_with"].append(other)
        else:
            seen[sk] = key
            unique_values += t.numel()
    dtypes = sorted({str(t.dtype).replace("torch.", "") for t in weights.values()})
    return {
        "groups": [{"name": n, **v} for n, v in groups.items()],
        "total_tensors": len(weights),
        "unique_tensors": len(seen),
        "total_values": sum(t.numel() for t in weights.values()),
        "unique_values": unique_values,
        "dtypes": dtypes,
    }


def _format_item(key: str, value: Any, indent: int, max_items: int = 10) -> list[str]:
    """One ``key: value`` line; dicts open one line per key, long lists one line per item."""
    pad = "  " * indent
    if isinstance(value, dict) and value:
        out = [f"{pad}{key}:"]
        for k, v in value.items():
            out.extend(_format_item(str(k), v, indent + 1))
        return out
    text = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    if isinstance(value, list) and len(text) > 100:
        shown = [f"{pad}  - {json.dumps(v) if isinstance(v, (dict, list)) else v}" for v in value[:max_items]]
        more = [f"{pad}  ... {len(value) - max_items} more (--json lists all)"] if len(value) > max_items else []
        return [f"{pad}{key}: ({len(value)} items)"] + shown + more
    return [f"{pad}{key}: {text}"]


def format_text(path: Path, metadata: Mapping[str, Any], summary: Mapping[str, Any]) -> str:
    """The text report; each line passes through ``safe_text.printable`` (text from the file is untrusted)."""
    lines = [f"Checkpoint: {path}"]
    if metadata:
        missing = [k for k in REQUIRED_METADATA if k not in metadata]
        lines.append(f"Metadata ('genesis' block, {len(metadata)} keys"
                     + (f"; missing required {missing}" if missing else "") + "):")
        first = [k for k in REQUIRED_METADATA if k in metadata]
        for key in first + sorted(k for k in metadata if k not in first):
            lines.extend(_format_item(key, metadata[key], 1))
    else:
        lines.append("Metadata: none (no 'genesis' block; plain nnU-Net-style weights)")
    lines.append("")
    lines.append(f"Parameters per module ({summary['total_tensors']} tensors, "
                 f"{summary['unique_values']:,} values in {summary['unique_tensors']} distinct tensors; "
                 f"dtypes {', '.join(summary['dtypes'])}):")
    width = max([len(g["name"]) for g in summary["groups"]] + [6])
    lines.append(f"  {'module':<{width}}  {'tensors':>7}  {'values':>12}  shared")
    for g in summary["groups"]:
        shared = ""
        if g["shared_tensors"]:
            shared = f"{g['shared_tensors']} repeat(s)" + (f" of {', '.join(g['shares_with'])}" if g["shares_with"] else "")
        lines.append(f"  {g['name']:<{width}}  {g['tensors']:>7}  {g['values']:>12,}  {shared}")
    return "\n".join(map(printable, lines))


def run(args) -> int:
    ckpt = load_checkpoint(args.checkpoint, require_metadata=False)
    summary = parameter_summary(ckpt.network_weights)
    if args.json:
        # json.dumps escapes C0 and (ensure_ascii) non-ASCII characters; DEL is the one it leaves raw
        print(json.dumps({"checkpoint": str(args.checkpoint), "metadata": ckpt.metadata,
                          "parameters": summary}, indent=2).replace("\x7f", "\\u007f"))
    else:
        print(format_text(args.checkpoint, ckpt.metadata, summary))
    return 0
