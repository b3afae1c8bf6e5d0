"""Writing outputs whole or not at all, where the user asked, with the user's permissions.

One writer for every result file (temp file in the same folder + ``os.replace``: readers never
see half a file, a kill leaves at most a hidden ``.NAME.*.tmp`` that the next write of the same
file removes), and the checks every command runs on its output paths before any work starts.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from nnunet_genesis.errors import GenesisUserError


def _umask() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: read it by setting it, and put it straight back
    os.umask(mask)
    return mask


def _private_temp(path: Path) -> Path:
    """A new temp file next to ``path``; stale temps of the same output (a killed run) go first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a finished output follows the umask
    return Path(tmp)


@contextmanager
def written_then_renamed(path: str | os.PathLike) -> Iterator[Path]:
    """A fresh temp file name in ``path``'s folder for writers that need a name (zip, torch);
    renamed to ``path`` when the block ends, removed when it fails."""
    tmp = _private_temp(Path(path))
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale_temps(*folders: Path) -> None:
    """Temp files a kill left in ``folders`` while a file was written (``.NAME.*.tmp``, ``NAME.pth.tmp``)."""
    for folder in folders:
        if folder.is_dir():
            for stale in [*folder.glob(".*.tmp"), *folder.glob("*.pth.tmp")]:
                stale.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temp file and rename: readers never see half a file."""
    with written_then_renamed(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _first_file_ancestor(path: Path) -> Path | None:
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def check_output_file(path: str | os.PathLike, option: str, overwrite: bool = True) -> Path:
    """Refuse, before any work, an output file that cannot be written where asked."""
    path = Path(path)
    blocker = _first_file_ancestor(path)
    if blocker is not None:
        raise GenesisUserError(f"{option} {path}: cannot be created, {blocker} is a file, not a folder.")
    if path.is_dir():
        raise GenesisUserError(f"{option} {path}: is a folder; give the name of the file to write.")
    if path.exists() and not overwrite:
        raise GenesisUserError(f"{option} {path}: already exists; remove it or pass --force to replace it.")
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not os.access(parent, os.W_OK | os.X_OK):
        raise GenesisUserError(f"{option} {path}: {parent} is not writable.")
    return path


def check_output_dir(path: str | os.PathLike, option: str) -> Path:
    """Refuse, before any work, an output folder that is a file or lies under a file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise GenesisUserError(f"{option} {path}: is a file; give a folder (it is created if missing).")
    blocker = _first_file_ancestor(path)
    if blocker is not None:
        raise GenesisUserError(f"{option} {path}: cannot be created, {blocker} is a file, not a folder.")
    parent = next((p for p in [path, *path.parents] if p.exists()), None)
    if parent is not None and not os.access(parent, os.W_OK | os.X_OK):
        raise GenesisUserError(f"{option} {path}: {parent} is not writable.")
    return path


def write_json_atomic(obj, path: str | os.PathLike, indent: int = 2) -> Path:
    """``obj`` as JSON (plus a final newline), written atomically."""
    import json

    return atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def new_figure(**kwargs):
    """A matplotlib ``Figure`` made without pyplot: no backend is chosen, no global state is
    touched, and nothing needs closing; ``savefig`` renders it with Agg."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def figure_png(fig, dpi: int = 100) -> bytes:
    """A matplotlib figure as PNG bytes."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def save_figure(fig, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Write a matplotlib figure as PNG atomically."""
    return atomic_write_bytes(path, figure_png(fig, dpi))
