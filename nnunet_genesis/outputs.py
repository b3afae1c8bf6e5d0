"""Writing outputs whole or not at all, where the user asked, never over what the user or nnU-Net owns.

One writer for every result file (temp file in the same folder + ``os.replace``: readers never
see half a file, a kill leaves at most a hidden ``.NAME.*.tmp`` that the next write of the same
file removes; a full disk, a read-only file system or a refused permission is one
GenesisUserError naming the output, with the temp file removed), and the one check every
command runs on its output paths before any work starts (``check_output_file`` /
``check_output_dir``).

Outputs never replace inputs: an output named like a file nnU-Net owns (``RESERVED_NAMES``), or
that is one of the command's own inputs, is refused even with ``--force``; an existing file is
replaced only when the caller's ``ours`` test recognises it as written by this package. The tests
look at the file's content, not its name (which anyone can choose): an evaluate JSON carries its
``format`` key, a plans variant its ``genesis`` block, a PNG figure the ``Software`` text chunk
``figure_png`` writes (``png_written_by_us``), a submission zip only ``TaskXX_Name/`` entries.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

from nnunet_genesis.errors import GenesisUserError

# Files of nnU-Net (raw, preprocessed and results folders, next to predictions): no output may take
# their names, whatever the folder; a results JSON called dataset.json would be read by nnU-Net.
RESERVED_NAMES = frozenset({"dataset.json", "dataset_fingerprint.json", "splits_final.json", "plans.json",
                            "nnUNetPlans.json"})
# The OS errors a writer meets that are the user's to fix (space, permissions, a read-only mount, a long name).
_USER_OS_ERRORS = {errno.ENOSPC: "the file system is full", errno.EDQUOT: "the disk quota is exceeded",
                   errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
                   errno.EPERM: "operation not permitted", errno.ENAMETOOLONG: "the name is too long",
                   errno.EFBIG: "the file is too large for the file system"}
FIGURE_SOFTWARE = "nnunet-genesis (matplotlib)"  # the PNG text chunk that marks our figures
_TEMP_RANDOM = 8  # the random characters mkstemp puts between prefix and suffix


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


def name_max(folder: Path) -> int:
    """The longest file name (bytes) the file system of ``folder`` (or its nearest existing parent) takes."""
    existing = next((p for p in [folder, *folder.parents] if os.path.isdir(p)), Path("/"))
    try:
        return int(os.pathconf(existing, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return 255


def _temp_prefix(path: Path) -> str:
    """``.NAME.`` for the temp file of ``path``; a name too long for that keeps its start and a hash
    of the whole name, so the temp name stays within the file system's limit and unique."""
    budget = name_max(path.parent) - _TEMP_RANDOM - len(".tmp")
    prefix = f".{path.name}."
    if len(os.fsencode(prefix)) <= budget:
        return prefix
    digest = hashlib.sha1(os.fsencode(path.name)).hexdigest()[:12]
    keep = path.name
    while keep and len(os.fsencode(f".{keep}~{digest}.")) > budget:
        keep = keep[:-1]
    return f".{keep}~{digest}."


def _os_error(path: Path, e: OSError) -> GenesisUserError:
    """The OS error of a write as the user's problem: what happened to which output, and what to do."""
    what = _USER_OS_ERRORS.get(e.errno or 0, "the system refused it")
    hint = {errno.ENOSPC: "Free some space or write elsewhere.", errno.EDQUOT: "Free some space or write elsewhere.",
            errno.EROFS: "Write to another folder.", errno.ENAMETOOLONG: "Choose a shorter name."}.get(
        e.errno or 0, "Write to a folder you may write to.")
    return GenesisUserError(f"{path}: could not be written: {what} ({e.strerror or e}). No partial file was left "
                            f"there. {hint}")


def _disk_full(folder: Path) -> bool:
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_bavail == 0 or (st.f_files > 0 and st.f_favail == 0)


def _private_temp(path: Path) -> Path:
    """A new temp file next to ``path``; stale temps of the same output (a killed run) go first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = _temp_prefix(path)
    for stale in path.parent.glob(f"{_glob_escape(prefix)}*.tmp"):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a finished output follows the umask
    return Path(tmp)


def _glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[]" else c for c in text)


@contextmanager
def written_then_renamed(path: str | os.PathLike) -> Iterator[Path]:
    """A fresh temp file name in ``path``'s folder for writers that need a name (zip, torch);
    renamed to ``path`` when the block ends, removed when it fails. A full disk, a read-only
    file system or a refused permission becomes a GenesisUserError naming ``path`` (exit 2)."""
    path = Path(path)
    try:
        tmp = _private_temp(path)
    except OSError as e:
        if e.errno in _USER_OS_ERRORS:
            raise _os_error(path, e) from None
        raise
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.errno in _USER_OS_ERRORS:
            raise _os_error(path, e) from None
        raise
    except GenesisUserError:
        tmp.unlink(missing_ok=True)
        raise
    except Exception as e:
        tmp.unlink(missing_ok=True)
        if _disk_full(path.parent):  # writers that wrap the OS error (torch, SimpleITK, zipfile)
            raise _os_error(path, OSError(errno.ENOSPC, f"{type(e).__name__}: {e}", str(path))) from None
        raise
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


# ---------------------------------------------------------------------------------------------
# checks before any work

def _blocking_ancestor(path: Path, option: str) -> None:
    """Refuse a path under a file, or under a symbolic link that leads nowhere (dangling or a loop)."""
    for parent in reversed(path.parents):
        if parent.is_symlink() and not parent.exists():
            raise GenesisUserError(f"{option} {path}: cannot be created, {parent} is a symbolic link to "
                                   f"{os.readlink(parent)}, which does not exist (or loops). Fix or remove the link.")
        if parent.exists() and not parent.is_dir():
            raise GenesisUserError(f"{option} {path}: cannot be created, {parent} is a file, not a folder.")


def _check_name_lengths(path: Path, option: str) -> None:
    """Refuse a name longer than its file system takes (any part of the path), before anything looks at it."""
    limit = name_max(path.parent)
    for part in path.parts:
        if len(os.fsencode(part)) > limit:
            raise GenesisUserError(f"{option} {path}: the name {part[:40]}... is {len(os.fsencode(part))} bytes "
                                   f"long; the file system takes at most {limit}. Choose a shorter name.")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except (OSError, RuntimeError):  # a symlink loop (RuntimeError before Python 3.13): the reader names it
        return False


def _writable_parent(path: Path, option: str, candidates: Iterable[Path]) -> None:
    parent = next((p for p in candidates if p.exists()), None)
    if parent is not None and not os.access(parent, os.W_OK | os.X_OK):
        raise GenesisUserError(f"{option} {path}: {parent} is not writable.")


def check_output_file(path: str | os.PathLike, option: str, overwrite: bool = True, inputs: Iterable[
        str | os.PathLike] = (), ours: Callable[[Path], bool] | None = None) -> Path:
    """Refuse, before any work, an output file that cannot be written where asked or would replace
    what is not ours: nnU-Net's files (``RESERVED_NAMES``) and the command's ``inputs`` always,
    an existing file without ``overwrite`` (``--force``), and with it one that ``ours`` (the test
    that the file was written by this command) does not recognise."""
    path = Path(path)
    _check_name_lengths(path, option)
    _blocking_ancestor(path, option)
    if path.is_dir():
        raise GenesisUserError(f"{option} {path}: is a folder; give the name of the file to write.")
    for given in inputs:
        if _same_file(path, Path(given)):
            raise GenesisUserError(f"{option} {path}: is an input of this command ({given}); an output never "
                                   f"replaces an input. Choose another name.")
    if path.name in RESERVED_NAMES:
        raise GenesisUserError(f"{option} {path}: {path.name} is a file name nnU-Net uses for its own files; an "
                               f"output never takes it (even with --force). Choose another name.")
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise GenesisUserError(f"{option} {path}: already exists; remove it or pass --force to replace it.")
        if ours is not None and not _recognised(ours, path):
            raise GenesisUserError(f"{option} {path}: already exists and was not written by this command, so it "
                                   f"is not replaced (not even with --force). Remove it yourself or choose another "
                                   f"name.")
    _writable_parent(path, option, path.parents)
    return path


def _recognised(ours: Callable[[Path], bool], path: Path) -> bool:
    try:
        return bool(ours(path))
    except (OSError, ValueError):
        return False


def check_output_dir(path: str | os.PathLike, option: str) -> Path:
    """Refuse, before any work, an output folder that is a file, lies under a file or a broken
    link, or has a name its file system cannot take."""
    path = Path(path)
    _check_name_lengths(path, option)
    if path.is_symlink() and not path.exists():
        raise GenesisUserError(f"{option} {path}: is a symbolic link to {os.readlink(path)}, which does not exist "
                               f"(or loops). Fix or remove the link.")
    if path.exists() and not path.is_dir():
        raise GenesisUserError(f"{option} {path}: is a file; give a folder (it is created if missing).")
    _blocking_ancestor(path, option)
    _writable_parent(path, option, [path, *path.parents])
    return path


# ---------------------------------------------------------------------------------------------
# how an existing output is recognised as ours (``check_output_file(..., ours=...)``)

def json_object_with(**values) -> Callable[[Path], bool]:
    """The test of a JSON object holding every key of ``values`` (a value of ``...`` means any
    value; ``dict`` means a JSON object)."""
    def ours(path: Path) -> bool:
        if path.stat().st_size > 512 * 2**20:
            return False
        try:
            data = json.loads(path.read_bytes())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return False
        if not isinstance(data, dict):
            return False
        for key, want in values.items():
            if key not in data:
                return False
            if want is dict and not isinstance(data[key], dict):
                return False
            if want is not ... and want is not dict and data[key] != want:
                return False
        return True
    return ours


def text_starting_with(prefix: str) -> Callable[[Path], bool]:
    """The test of a text file that starts with ``prefix``."""
    def ours(path: Path) -> bool:
        want = prefix.encode("utf-8")
        with open(path, "rb") as f:
            return f.read(len(want)) == want
    return ours


def png_written_by_us(path: Path) -> bool:
    """Whether ``path`` is a PNG figure of ``figure_png`` (its ``Software`` text chunk)."""
    with open(path, "rb") as f:
        head = f.read(4096)
    return head.startswith(b"\x89PNG") and b"Software\x00" + FIGURE_SOFTWARE.encode() in head


def write_json_atomic(obj, path: str | os.PathLike, indent: int = 2) -> Path:
    """``obj`` as JSON (plus a final newline), written atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def new_figure(**kwargs):
    """A matplotlib ``Figure`` made without pyplot: no backend is chosen, no global state is
    touched, and nothing needs closing; ``savefig`` renders it with Agg."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def figure_png(fig, dpi: int = 100) -> bytes:
    """A matplotlib figure as PNG bytes, marked as ours (``png_written_by_us``)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": FIGURE_SOFTWARE})
    return buf.getvalue()


def save_figure(fig, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Write a matplotlib figure as PNG atomically."""
    return atomic_write_bytes(path, figure_png(fig, dpi))
