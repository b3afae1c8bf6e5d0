"""A run folder's identity: the settings that decide its results.

The demo, the recipe and the label-efficiency benchmark keep their work in a folder that a later
invocation continues. Continuing it with other settings would mix two runs' results, so the
folder records its identity and a different one is refused, naming each setting that differs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from nnunet_genesis.errors import GenesisUserError


def differing_keys(recorded: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    """The keys whose values differ between two identities; nested mappings named ``outer.inner``."""
    keys = []
    for key in sorted({*recorded, *expected}):
        a, b = recorded.get(key), expected.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            keys += [f"{key}.{inner}" for inner in differing_keys(a, b)]
        elif a != b:
            keys.append(key)
    return keys


def _value(identity: Mapping[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        identity = identity.get(part) if isinstance(identity, Mapping) else None
    return identity


def refuse_other_identity(recorded: Mapping[str, Any] | None, expected: Mapping[str, Any], where: str | Path,
                          what: str, remedy: str) -> None:
    """Raise (exit 2) when ``where`` records another identity than ``expected``; nothing recorded passes.

    ``what`` names the run (``a demo run``), ``remedy`` says how to go on. The message lists each
    differing setting with its recorded and its new value."""
    if recorded is None:
        return
    keys = differing_keys(recorded, expected)
    if keys:
        details = "; ".join(f"{k}: recorded {_value(recorded, k)!r}, now {_value(expected, k)!r}" for k in keys)
        raise GenesisUserError(f"{where} belongs to {what} with other settings ({details}). {remedy}")
