"""``nnunet-genesis inspect CKPT``: what a checkpoint holds, and with ``-d`` whether it fits a dataset.

Names the kind ``pretrained_sources`` recognised (genesis, nnunet, nnssl, models-genesis-v1) and the
architecture (family, stages, features, channels), prints the metadata readably and a parameter
summary per top-level module and stage (``encoder.stages.0``, ``decoder.transpconvs.3``, ...): tensor count and number of
values. Tensors that share storage (nnU-Net's decoder keeps a reference to the encoder, and
conv blocks list their convolution twice) are counted once in the totals. ``--json`` prints
the same as one JSON document. The file is loaded with ``weights_only=True`` and verified
(``pretrained_sources.read_pretrained``; bare weights without any description are shown too).
``-d DATASET [-p PLANS] [-c CONFIG ...]`` adds the transfer report of a dry run onto each 3D
configuration of the dataset's plans (``transfer_check``, what attach checks; nothing is written).
Text from the file (metadata, key names) reaches the terminal
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

from nnunet_genesis.blocks import read_json
from nnunet_genesis.checkpoint import REQUIRED_METADATA
from nnunet_genesis.pretrained_sources import architecture_summary, read_pretrained
from nnunet_genesis.safe_text import printable
from nnunet_genesis.transfer_check import dry_run_reports, resolve_dataset_folder, select_configurations
from nnunet_genesis.transfer_report import TransferReport

_FOUND = ("kind", "description")  # what read_pretrained adds; printed apart from the file's metadata


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, metavar="CKPT",
                        help="checkpoint of any accepted kind: Genesis, nnU-Net v2 training, nnssl, Models Genesis v1")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    parser.add_argument("--source-plans", type=Path, default=None, metavar="FILE",
                        help="the plans.json an nnU-Net training checkpoint was trained with (when moved)")
    parser.add_argument("-d", "--dataset", default=None,
                        help="also dry-run the transfer onto this dataset's plans and print its report "
                             "(writes nothing)")
    parser.add_argument("-p", "--plans", default="nnUNetPlans", help="plans of DATASET (default: nnUNetPlans)")
    parser.add_argument("-c", "--configurations", nargs="+", default=None, metavar="CONFIG",
                        help="3D configurations of the dry run (default: all 3D ones)")
    parser.add_argument("--allow-partial-transfer", action="store_true",
                        help="dry run as attach --allow-partial-transfer would")


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


def format_text(path: Path, metadata: Mapping[str, Any], summary: Mapping[str, Any],
                found: Mapping[str, Any] | None = None) -> str:
    """The text report; each line passes through ``safe_text.printable`` (text from the file is untrusted).
    ``found``: the kind and description ``read_pretrained`` gave."""
    lines = [f"Checkpoint: {path}"]
    kind = (found or {}).get("kind")
    if kind:
        lines.append(f"Kind: {kind} ({found.get('description')})")
        lines.append(f"Architecture: {architecture_summary(metadata)}")
    elif metadata:
        lines.append("Kind: none of the accepted kinds (attach refuses it)")
    if metadata:
        missing = [k for k in REQUIRED_METADATA if k not in metadata and (k != "format_version" or kind == "genesis")]
        block = "'genesis' block" if kind in (None, "genesis") else f"read from the {kind} checkpoint"
        lines.append(f"Metadata ({block}, {len(metadata)} keys"
                     + (f"; missing required {missing}" if missing else "") + "):")
        first = [k for k in REQUIRED_METADATA if k in metadata]
        for key in first + sorted(k for k in metadata if k not in first):
            lines.extend(_format_item(key, metadata[key], 1))
    else:
        lines.append("Metadata: none (no 'genesis' block; plain nnU-Net-style weights, which attach refuses: the "
                     "network they belong to is unknown)")
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


def dry_run(args, checkpoint) -> tuple[str, dict[str, TransferReport]]:
    """The transfer reports of ``-d DATASET [-p PLANS] [-c CONFIG ...]`` (what attach would check)."""
    folder = resolve_dataset_folder(args.dataset)
    plans_path = folder / f"{args.plans}.json"
    plans = read_json(plans_path, "Plans")
    dataset_json = read_json(folder / "dataset.json", "dataset.json")
    configurations = select_configurations(plans, plans_path, args.configurations)
    reports = dry_run_reports(plans, dataset_json, configurations, checkpoint, args.allow_partial_transfer,
                              "-c CONFIG dry-runs the configurations named only")
    return f"{folder.name}, plans {args.plans}", reports


def run(args) -> int:
    # a dry run needs what attach needs: a checkpoint that describes its network
    ckpt = read_pretrained(args.checkpoint, args.source_plans, require_description=args.dataset is not None)
    target, reports = dry_run(args, ckpt) if args.dataset is not None else ("", {})
    found = {k: ckpt.metadata.pop(k) for k in _FOUND if k in ckpt.metadata}
    summary = parameter_summary(ckpt.network_weights)
    if args.json:
        doc = {"checkpoint": str(args.checkpoint), "kind": found.get("kind"), "description": found.get("description"),
               "architecture": architecture_summary(ckpt.metadata) if found else None,
               "metadata": ckpt.metadata, "parameters": summary}
        if args.dataset is not None:
            doc["dry_run"] = {"target": target, "reports": {c: r.to_dict() for c, r in reports.items()}}
        # json.dumps escapes C0 and (ensure_ascii) non-ASCII characters; DEL is the one it leaves raw
        print(json.dumps(doc, indent=2).replace("\x7f", "\\u007f"))
    else:
        print(format_text(args.checkpoint, ckpt.metadata, summary, found))
        for configuration, report in reports.items():
            print(printable(f"\nDry run onto {target}, configuration {configuration} (nothing written):"))
            print("\n".join(map(printable, report.summary_text().splitlines())))
    return 0
