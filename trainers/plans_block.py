"""The ``genesis`` block of a plans variant: which checkpoint a Genesis trainer starts from.

``nnunet-genesis attach`` writes it, the Genesis trainers read it. nnU-Net copies the plans
into the results folder (``plans.json``), so every trained model records the checkpoint path
and sha256 it started from. Layout::

    plans["genesis"] = {
        "checkpoint": "/abs/path/genesis_final.pth",
        "sha256": "<hex digest of the file>",
        "source_plans": "nnUNetPlans",
        "attached": "2025-01-01T12:00:00+00:00",
        "checkpoint_metadata": {...short summary...},
        "transfer_check": {"3d_fullres": {"encoder_fraction": 1.0, "decoder_fraction": 1.0}},
        "checkpoint_plans": "/abs/path/plans.json",      # only with attach --source-plans (nnU-Net
        "checkpoint_plans_sha256": "<hex digest>",       # checkpoints moved out of their results folder)
    }
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from nnunet_genesis.checkpoint import sha256_of
from nnunet_genesis.errors import GenesisUserError

PLANS_KEY = "genesis"


@dataclass(frozen=True)
class GenesisPlansBlock:
    """The checkpoint a plans variant names, with the digest it must still have."""

    checkpoint: Path
    sha256: str
    source_plans: str | None
    plans_name: str
    dataset_name: str = "DATASET"
    allow_partial_transfer: bool = False  # attach --allow-partial-transfer
    checkpoint_plans: Path | None = None  # attach --source-plans: the plans the checkpoint was trained with
    checkpoint_plans_sha256: str | None = None

    @classmethod
    def from_plans(cls, plans: Mapping[str, Any], who: str = "A Genesis trainer") -> "GenesisPlansBlock":
        """Read the block; a missing or malformed block is a user error naming the plans."""
        plans_name = str(plans.get("plans_name", "?"))
        where = f"plans '{plans_name}' of dataset {plans.get('dataset_name', '?')}"
        block = plans.get(PLANS_KEY)
        if not isinstance(block, Mapping):
            raise GenesisUserError(
                f"{who} needs a Genesis checkpoint, but the {where} have no '{PLANS_KEY}' block, so "
                f"there are no weights to start from (it never trains from scratch silently). "
                f"Create a plans variant with 'nnunet-genesis attach -d DATASET -c CHECKPOINT' and "
                f"train with '-p nnUNetPlans_genesis' (or the name given with -n), or use a stock "
                f"trainer for training from scratch."
            )
        missing = [k for k in ("checkpoint", "sha256") if not isinstance(block.get(k), str) or not block.get(k)]
        if missing:
            raise GenesisUserError(
                f"The '{PLANS_KEY}' block of the {where} lacks {missing}; re-create the variant with "
                f"'nnunet-genesis attach'."
            )
        plans_file = block.get("checkpoint_plans")
        if plans_file is not None and not (isinstance(plans_file, str) and plans_file
                                           and isinstance(block.get("checkpoint_plans_sha256"), str)):
            raise GenesisUserError(
                f"The '{PLANS_KEY}' block of the {where} names checkpoint_plans without its "
                f"checkpoint_plans_sha256; re-create the variant with 'nnunet-genesis attach --source-plans'.")
        return cls(Path(block["checkpoint"]), block["sha256"], block.get("source_plans"), plans_name,
                   str(plans.get("dataset_name", "DATASET")), block.get("allow_partial_transfer") is True,
                   Path(plans_file) if plans_file else None, block.get("checkpoint_plans_sha256"))

    def _reattach_hint(self, checkpoint: str) -> str:
        source = f" -p {self.source_plans}" if self.source_plans else ""
        plans = f" --source-plans {shlex.quote(str(self.checkpoint_plans))}" if self.checkpoint_plans else ""
        return (f"'nnunet-genesis attach -d {self.dataset_name} -c {checkpoint}{source}{plans} "
                f"-n {self.plans_name} --force'")

    def verified_checkpoint(self) -> Path:
        """The checkpoint path after checking that it exists and still has the recorded sha256."""
        return self._verified(self.checkpoint, self.sha256, "Genesis checkpoint", "the weights")

    def verified_checkpoint_plans(self) -> Path | None:
        """The plans the checkpoint is read with (attach --source-plans), checked as the checkpoint is; None
        when the checkpoint describes its network itself."""
        if self.checkpoint_plans is None:
            return None
        return self._verified(self.checkpoint_plans, str(self.checkpoint_plans_sha256),
                              "plans file of the checkpoint (--source-plans)", "the network")

    def _verified(self, path: Path, sha256: str, what: str, names: str) -> Path:
        if not path.is_file():
            raise GenesisUserError(
                f"The {what} {path} named in plans '{self.plans_name}' does not "
                f"exist (moved or deleted?). Restore the file, or attach the checkpoint again with "
                f"{self._reattach_hint('NEW_PATH')}. Training was not started."
            )
        digest = sha256_of(path)
        if digest != sha256:
            raise GenesisUserError(
                f"The {what} {path} has changed since it was attached to plans "
                f"'{self.plans_name}': its sha256 is {digest}, the plans record {sha256}. "
                f"A model must start from {names} its plans name; if the new file is intended, "
                f"attach it again with {self._reattach_hint(shlex.quote(str(self.checkpoint)))}. Training was not started."
            )
        return path
