"""The account of one weight transfer: what happened to every tensor of the target network.

Printed by the trainers at the start of a fine-tuning, saved as ``genesis_transfer_report.json``
next to nnU-Net's checkpoints, and read back by ``compare``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from nnunet_genesis.outputs import atomic_write_text


@dataclass
class TensorTransfer:
    """What happened to one tensor of the target network."""

    target_key: str
    source_key: str | None
    status: str  # "loaded" | "adapted" | "skipped"
    reason: str
    target_shape: list[int]
    source_shape: list[int] | None
    part: str  # "encoder" | "decoder" | "head"


@dataclass
class TransferReport:
    """Per-tensor account of a transfer, printed at trainer start and saved as JSON."""

    entries: list[TensorTransfer]
    checkpoint: str
    unmatched_source_stages: list[str] = field(default_factory=list)
    unmatched_target_stages: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # which kind of checkpoint it was (pretrained_sources.KINDS) and what it holds, when it says so
    checkpoint_kind: str | None = None
    checkpoint_description: str | None = None

    def _fraction(self, part: str) -> float:
        total = done = 0
        for e in self.entries:
            if e.part != part:
                continue
            n = _numel(e.target_shape)
            total += n
            if e.status in ("loaded", "adapted"):
                done += n
        return done / total if total else 0.0

    @property
    def encoder_fraction(self) -> float:
        """Share of the target encoder's parameters (numel) loaded or adapted."""
        return self._fraction("encoder")

    @property
    def decoder_fraction(self) -> float:
        """Share of the target decoder's parameters (numel, head excluded) loaded or adapted."""
        return self._fraction("decoder")

    def summary_text(self) -> str:
        """Human-readable report: shares per part, adapted tensors, skips grouped by reason."""
        lines = [f"Genesis weight transfer from {self.checkpoint}"]
        if self.checkpoint_kind:
            lines.append(f"  kind: {self.checkpoint_kind}"
                         + (f" ({self.checkpoint_description})" if self.checkpoint_description else ""))
        for part in ("encoder", "decoder"):
            es = [e for e in self.entries if e.part == part]
            total = sum(_numel(e.target_shape) for e in es)
            counts = {s: sum(e.status == s for e in es) for s in ("loaded", "adapted", "skipped")}
            lines.append(
                f"  {part}: {100 * self._fraction(part):5.1f}% of {total:,} parameters transferred "
                f"({counts['loaded']} tensors loaded, {counts['adapted']} adapted, "
                f"{counts['skipped']} skipped)"
            )
        head = [e for e in self.entries if e.part == "head"]
        lines.append(f"  head: {len(head)} tensors ({sum(_numel(e.target_shape) for e in head):,} "
                     f"parameters) kept as initialised, never transferred")
        lines.append("  pretrained stages without partner: "
                     + (", ".join(self.unmatched_source_stages) or "none"))
        lines.append("  network stages without partner: "
                     + (", ".join(self.unmatched_target_stages) or "none"))
        adapted = [e for e in self.entries if e.status == "adapted"]
        if adapted:
            lines.append("  adapted:")
            for e in adapted:
                lines.append(f"    {e.target_key} {e.target_shape} <- {e.source_key} "
                             f"{e.source_shape}: {e.reason}")
        by_reason: dict[str, list[TensorTransfer]] = {}
        for e in self.entries:
            if e.status == "skipped" and e.part != "head":
                by_reason.setdefault(e.reason, []).append(e)
        if by_reason:
            lines.append("  skipped:")
            for reason, es in by_reason.items():
                keys = ", ".join(e.target_key for e in es[:3]) + (", ..." if len(es) > 3 else "")
                lines.append(f"    {len(es)} tensors ({reason}): {keys}")
        for note in self.notes:
            lines.append(f"  note: {note}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint,
            "checkpoint_kind": self.checkpoint_kind,
            "checkpoint_description": self.checkpoint_description,
            "encoder_fraction": self.encoder_fraction,
            "decoder_fraction": self.decoder_fraction,
            "unmatched_source_stages": list(self.unmatched_source_stages),
            "unmatched_target_stages": list(self.unmatched_target_stages),
            "notes": list(self.notes),
            "entries": [asdict(e) for e in self.entries],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TransferReport":
        """Inverse of to_dict (the fractions are derived, so they are not read back)."""
        return cls(
            entries=[TensorTransfer(**e) for e in d["entries"]],
            checkpoint=d["checkpoint"],
            unmatched_source_stages=list(d.get("unmatched_source_stages", [])),
            unmatched_target_stages=list(d.get("unmatched_target_stages", [])),
            notes=list(d.get("notes", [])),
            checkpoint_kind=d.get("checkpoint_kind"),
            checkpoint_description=d.get("checkpoint_description"),
        )

    def save_json(self, path: str | os.PathLike) -> None:
        """Write to_dict() as JSON via a temp file and rename (never half-written)."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2))


def _numel(shape: list[int] | None) -> int:
    n = 1
    for s in shape or []:
        n *= int(s)
    return n
