"""Text between files and a shell or a terminal: values written into scripts must be one plain
line, and text read from a file reaches the terminal without control characters (an escape
sequence in a checkpoint's metadata must not drive the user's terminal)."""

from __future__ import annotations

import unicodedata

from nnunet_genesis.errors import GenesisUserError


def _is_control(c: str) -> bool:
    return unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")


def one_line(value: str, what: str) -> str:
    """``value`` unchanged, or a refusal (exit 2) naming ``what`` when it holds a newline or another
    control character: a script line would end there and the rest run as a command."""
    bad = sorted({repr(c)[1:-1] for c in value if _is_control(c)})
    if bad:
        raise GenesisUserError(f"{what} {value!r} holds control character(s) {', '.join(bad)}; a value written "
                               f"into a script must be one plain line.")
    return value


def printable(text: str) -> str:
    """``text`` with every control character shown escaped (``\\x1b``, ``\\n``), for the terminal."""
    return "".join(repr(c)[1:-1] if _is_control(c) else c for c in str(text))
