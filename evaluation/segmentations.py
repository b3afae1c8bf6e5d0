"""Finding and naming segmentation files; comparing their geometry (reading: ``nnunet_genesis.volumes``).

Shared by ``evaluate`` and ``package-msd``: case names follow nnU-Net (prediction
``case.nii.gz`` for image ``case_0000.nii.gz``) and geometry is compared in world terms
(size, spacing, origin, direction) within small tolerances.
"""

from __future__ import annotations

import json
import re
from pathlib import Path


from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.file_checks import check_input_path, error_detail
# the one geometry comparison, shared with the readers' channel check
from nnunet_genesis.volumes import DIRECTION_ATOL, ORIGIN_ATOL_MM, SPACING_ATOL_MM, Geometry  # noqa: F401

DEFAULT_FILE_ENDING = ".nii.gz"
# nnU-Net's channel suffix on image files: case_0000.nii.gz, case_0001.nii.gz, ...
_CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")

# Geometry tolerances: far below any voxel size, above float32 header rounding.


def strip_ending(name: str, file_ending: str) -> str | None:
    """``name`` without ``file_ending`` (case-insensitive), or None if it lacks it."""
    if name.lower().endswith(file_ending.lower()) and len(name) > len(file_ending):
        return name[: -len(file_ending)]
    return None


def same_up_to_case(files: list[Path], file_ending: str) -> list[list[Path]]:
    """Groups of ``files`` whose names (ending stripped) are equal up to case: one file on a
    case-insensitive file system, two here, so taking either would be a guess."""
    groups: dict[str, list[Path]] = {}
    for p in files:
        stem = strip_ending(p.name, file_ending)
        if stem is not None:
            groups.setdefault(stem.casefold(), []).append(p)
    return [g for g in groups.values() if len(g) > 1]


def list_cases(folder: Path, file_ending: str = DEFAULT_FILE_ENDING) -> dict[str, Path]:
    """Case name -> file for every file in ``folder`` ending with ``file_ending``; names equal up
    to case are refused."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GenesisUserError(f"{folder} does not exist or is not a folder.")
    files = [p for p in sorted(folder.iterdir()) if strip_ending(p.name, file_ending) is not None]
    for p in files:  # a FIFO, device, dangling link or loop is named, not skipped as if it were absent
        if check_input_path(p):
            raise GenesisUserError(f"{p}: is a folder, not a segmentation file; remove it from {folder}.")
    clashes = same_up_to_case(files, file_ending)
    if clashes:
        raise GenesisUserError(f"{folder}: the files {'; '.join(', '.join(p.name for p in g) for g in clashes)} have "
                               f"names equal up to case (one file on a case-insensitive file system); keep one.")
    return {strip_ending(p.name, file_ending): p for p in files}


def image_case_name(stem: str) -> tuple[str, int | None]:
    """Case name and channel of an image file stem: ``la_003_0000`` -> (``la_003``, 0).

    Stems without nnU-Net's 4-digit channel suffix (MSD layout) return channel None.
    """
    m = _CHANNEL_SUFFIX.match(stem)
    if m:
        return m.group("case"), int(m.group("channel"))
    return stem, None


def file_ending_from_dataset_json(folder: Path) -> str | None:
    """The ``file_ending`` of a ``dataset.json`` in ``folder`` (nnU-Net writes one next to
    predictions), or None."""
    path = Path(folder) / "dataset.json"
    if not path.is_file():
        return None
    try:
        ending = json.loads(path.read_text()).get("file_ending")
    except (json.JSONDecodeError, OSError, AttributeError):
        return None
    return ending if isinstance(ending, str) and ending.startswith(".") else None


def read_geometry(path: Path) -> Geometry:
    """Geometry from the file header only (fast: no voxel data is read)."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise GenesisUserError(f"{path}: SimpleITK could not read its header ({error_detail(e)}).") from None
    return Geometry.of(reader)
