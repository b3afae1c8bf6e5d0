"""Text between files and a shell or a terminal: values written into scripts must be one plain
line, and text read from a file reaches the terminal without control characters (an escape
sequence in a checkpoint's metadata must not drive the user's terminal)."""

from __future__ import annotations

from nnunet_genesis.errors import GenesisUserError


def printable(text: str) -> str:
    """``text`` with every non-printable character (control characters, ESC, DEL, C1, bidi
    overrides, line separators) escaped as ``repr`` writes it (``\\x1b``, ``\\u202e``)."""
    text = str(text)
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def one_line(value: str, what: str) -> str:
    """``value`` unchanged, or a refusal (exit 2) naming ``what`` when it holds a newline or another
    non-printable character: in a script the line would end there and the rest run as a command."""
    bad = sorted({repr(c) for c in value if not c.isprintable()})
    if bad:
        raise GenesisUserError(f"{what} {value!r} holds the control character(s) {', '.join(bad)}; a value written "
                               f"into a script must be one line of printable characters (at a newline the rest would "
                               f"run as a command of its own). Nothing was written.")
    return value
