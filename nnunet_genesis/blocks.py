"""Reading the package's JSON: whole files and the dataclass blocks kept in plans and checkpoints.

One strict reader for each: a file that cannot be read is a user error naming it, and a block
with keys its dataclass does not know is refused (another version wrote it, and ignoring a key
would change a run silently).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping

from nnunet_genesis.errors import GenesisUserError


def read_json(path: str | Path, what: str = "") -> Any:
    """The JSON document in ``path``; a missing, unreadable or invalid file is a GenesisUserError."""
    path = Path(path)
    name = f"{what} {path}" if what else str(path)
    if not path.is_file():
        raise GenesisUserError(f"{name} does not exist.")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GenesisUserError(f"{name} could not be read as JSON ({e}).") from None


def check_known_keys(cls: type, data: Mapping[str, Any], where: str) -> None:
    """Raise ValueError naming ``where`` if ``data`` has keys that are not fields of dataclass ``cls``."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where} has unknown keys {unknown}; known: {sorted(known)}")
