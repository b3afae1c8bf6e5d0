"""``nnunet-genesis attach``: a plans variant that names the checkpoint to start from.

The checkpoint may be of any kind ``pretrained_sources`` reads (Genesis, an nnU-Net v2 training
checkpoint, nnssl, the official Models Genesis v1 file); the kind found is printed and recorded.

The variant is a copy of the source plans (default ``nnUNetPlans``) with ``plans_name``
changed and a ``genesis`` block added (see ``plans_block``). Every configuration keeps its
``data_identifier``, so the preprocessed data of the source plans is reused as it is: no
second preprocessing. Before writing, the checkpoint is loaded safely and, unless
``--skip-check``, dry-run transferred onto the network of every 3D configuration, so an
unusable checkpoint is refused here and not hours later in ``nnUNetv2_train``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from nnunet_genesis.blocks import read_json
from nnunet_genesis.checkpoint import sha256_of
from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.outputs import atomic_write_text, check_output_file, json_object_with
from nnunet_genesis.pretrained_sources import read_pretrained
from nnunet_genesis.safe_text import printable
from nnunet_genesis.trainers.plans_block import PLANS_KEY
# the dry run lives in the core (inspect -d runs it too); its helpers are importable from here as before
from nnunet_genesis.transfer_check import (dry_run_transfer, plans_3d_configurations, resolve_dataset_folder,  # noqa: F401
                                           select_configurations, three_d_configurations)

DEFAULT_SOURCE_PLANS = "nnUNetPlans"
DEFAULT_VARIANT = "nnUNetPlans_genesis"
# A plans variant attach wrote carries the genesis block: the only existing file -n may replace
# (nnU-Net's dataset.json, fingerprint, splits and plans never, even with --force).
OUR_VARIANT = json_object_with(**{PLANS_KEY: dict})
# Metadata copied into the plans so the results folder says what the checkpoint was.
_SUMMARY_KEYS = ("kind", "description", "format_version", "source", "network_class", "input_channels",
                 "output_channels", "created", "versions", "pretraining", "plans_name", "dataset_name",
                 "configuration", "trainer_name", "nnssl_architecture")


def build_variant(source_plans: Mapping[str, Any], variant_name: str, source_name: str,
                  checkpoint_path: Path, sha256: str, metadata: Mapping[str, Any],
                  transfer_check: Mapping[str, Any] | None, allow_partial: bool = False,
                  checkpoint_plans: Path | None = None) -> dict[str, Any]:
    """The variant dict: the source plans, renamed, with the genesis block (data_identifier kept)."""
    variant = copy.deepcopy(dict(source_plans))
    variant["plans_name"] = variant_name
    variant[PLANS_KEY] = {
        "checkpoint": str(checkpoint_path),
        "sha256": sha256,
        "source_plans": source_name,
        "attached": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "checkpoint_metadata": {k: metadata[k] for k in _SUMMARY_KEYS if k in metadata},
        "transfer_check": dict(transfer_check) if transfer_check is not None else None,
    }
    if allow_partial:
        variant[PLANS_KEY]["allow_partial_transfer"] = True
    if checkpoint_plans is not None:  # attach --source-plans: the trainer reads the checkpoint with the same plans
        variant[PLANS_KEY]["checkpoint_plans"] = str(checkpoint_plans)
        variant[PLANS_KEY]["checkpoint_plans_sha256"] = sha256_of(checkpoint_plans)
    return variant


def _same_variant(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Equal apart from the attach time stamp."""
    def strip(p):
        p = copy.deepcopy(dict(p))
        if isinstance(p.get(PLANS_KEY), dict):
            p[PLANS_KEY].pop("attached", None)
        return p
    return strip(a) == strip(b)


def attach(dataset: str, checkpoint: str | os.PathLike, source_plans: str = DEFAULT_SOURCE_PLANS,
           variant_name: str = DEFAULT_VARIANT, configurations: list[str] | None = None,
           check: bool = True, force: bool = False, allow_partial: bool = False,
           checkpoint_plans: str | os.PathLike | None = None) -> Path:
    """Write nnUNet_preprocessed/DATASET/<variant_name>.json; returns its path.

    ``checkpoint`` may be any kind ``pretrained_sources`` reads; ``checkpoint_plans`` is the plans.json an
    nnU-Net training checkpoint was trained with when it no longer lies beside it (--source-plans)."""
    if variant_name == source_plans:
        raise GenesisUserError(f"The variant name {variant_name!r} equals the source plans name; "
                               f"attach never overwrites the source plans. Choose another -n.")
    if not variant_name or os.sep in variant_name or variant_name.endswith(".json"):
        raise GenesisUserError(f"Invalid plans variant name {variant_name!r} (give a bare name such "
                               f"as {DEFAULT_VARIANT}).")
    folder = resolve_dataset_folder(dataset)
    target = check_output_file(folder / f"{variant_name}.json", "-n", inputs=(folder / f"{source_plans}.json",
                                                                              checkpoint), ours=OUR_VARIANT)
    source = read_json(folder / f"{source_plans}.json", "Source plans")
    dataset_json = read_json(folder / "dataset.json", "dataset.json")
    ckpt_path = Path(checkpoint).expanduser().resolve()
    plans_path = Path(checkpoint_plans).expanduser().resolve() if checkpoint_plans is not None else None
    loaded = read_pretrained(ckpt_path, plans_path)
    sha256 = sha256_of(ckpt_path)

    configurations = select_configurations(source, folder / f"{source_plans}.json", configurations)
    transfer_check = dry_run_transfer(source, dataset_json, configurations, loaded, allow_partial,
                                      "Use --configurations to attach it for the configurations it fits only."
                                      ) if check else None

    variant = build_variant(source, variant_name, source_plans, ckpt_path, sha256, loaded.metadata,
                            transfer_check, allow_partial, plans_path)
    if target.exists() and not force:
        existing = read_json(target, "Existing plans variant")
        if not _same_variant(existing, variant):
            old = existing.get(PLANS_KEY, {}) if isinstance(existing.get(PLANS_KEY), dict) else {}
            raise GenesisUserError(
                f"{target} already exists and differs (it names checkpoint "
                f"{old.get('checkpoint', 'none')}); models trained with it would no longer say which "
                f"weights they started from. Use another -n, or --force to replace it."
            )
    atomic_write_text(target, json.dumps(variant, indent=4))
    return target


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Write a plans variant nnUNet_preprocessed/DATASET/NAME.json that reuses the preprocessed "
        "data of the source plans and names a pretrained checkpoint of any accepted kind (path and sha256). Train with "
        "nnUNetv2_train DATASET CONFIG FOLD -tr nnUNetTrainerGenesis -p NAME.")
    parser.add_argument("-d", "--dataset", required=True, help="dataset id or name (e.g. 4 or Dataset004_Hippocampus)")
    parser.add_argument("-c", "--checkpoint", required=True,
                        help="checkpoint to start from: Genesis, nnU-Net v2 training (checkpoint_final.pth), nnssl "
                             "or the official Models Genesis v1 file (recognised by content)")
    parser.add_argument("--source-plans", type=Path, default=None, metavar="FILE",
                        help="the plans.json an nnU-Net training checkpoint was trained with, when the checkpoint no "
                             "longer lies in its results folder (recorded in the plans variant)")
    parser.add_argument("-p", "--plans", default=DEFAULT_SOURCE_PLANS,
                        help=f"source plans name (default: {DEFAULT_SOURCE_PLANS})")
    parser.add_argument("-n", "--name", default=DEFAULT_VARIANT,
                        help=f"name of the plans variant to write (default: {DEFAULT_VARIANT})")
    parser.add_argument("--configurations", nargs="+", default=None, metavar="CONFIG",
                        help="3D configurations to check the transfer for (default: all 3D ones)")
    parser.add_argument("--skip-check", action="store_true",
                        help="do not dry-run the weight transfer (only load and hash the checkpoint)")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing, different variant of the same name")
    parser.add_argument("--allow-partial-transfer", action="store_true",
                        help="accept a checkpoint that fits only part of the encoder (recorded in the plans; "
                             "the trainers print the share). By default the encoder must transfer fully")


def run(args: argparse.Namespace) -> int:
    target = attach(args.dataset, args.checkpoint, args.plans, args.name, args.configurations,
                    check=not args.skip_check, force=args.force, allow_partial=args.allow_partial_transfer,
                    checkpoint_plans=args.source_plans)
    variant = json.loads(target.read_text())
    block = variant[PLANS_KEY]
    found = block["checkpoint_metadata"]
    print(f"Wrote {target}")
    print(f"  checkpoint {block['checkpoint']}")
    print(f"  sha256     {block['sha256']}")
    print(printable(f"  kind       {found.get('kind')}: {found.get('description')}"))
    for name, fractions in (block["transfer_check"] or {}).items():
        print(f"  {name}: {fractions['encoder_fraction']:.1%} of encoder and "
              f"{fractions['decoder_fraction']:.1%} of decoder parameters transfer")
    print(f"Train with: nnUNetv2_train {args.dataset} CONFIG FOLD -tr nnUNetTrainerGenesis -p {args.name}")
    return 0
