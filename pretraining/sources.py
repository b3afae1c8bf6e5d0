"""Finding the volumes a pretraining run reads, without reading them yet.

Two kinds of source:

* ``-i DIR``: a folder (searched recursively) of NIfTI, NRRD or MetaImage files, and of
  folders that hold one DICOM series each. A volume file may also be given directly.
* ``-d DATASET``: an nnU-Net raw dataset (name, id, or folder); all images of ``imagesTr`` and
  ``imagesTs`` are used, grouped into cases by nnU-Net's ``_XXXX`` channel suffix. Labels
  are ignored.

Problems found here (missing path, empty folder, unknown extension, missing channel files)
are collected as :class:`BadInput` so that one message can list every bad file at once.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.file_checks import check_input_path
from nnunet_genesis.volumes import VOLUME_SUFFIXES, has_volume_suffix, is_dicom_file

# Data files that belong to a header file (.mhd/.nhdr) in the same folder.
_DETACHED_DATA_SUFFIXES = (".raw", ".zraw", ".raw.gz", ".img")
_HEADER_SUFFIXES = (".mhd", ".nhdr", ".hdr")


@dataclass(frozen=True)
class SourceCase:
    """One volume: one path per channel (a file or a DICOM series folder)."""

    channels: tuple[Path, ...]
    origin: str  # the source it came from, e.g. "-i /data/ct" or "-d Dataset004_Hippocampus (imagesTr)"
    channel_names: tuple[str, ...] | None = None  # from a raw dataset's dataset.json

    @property
    def label(self) -> str:
        return str(self.channels[0]) if len(self.channels) == 1 else f"{self.channels[0]} (+{len(self.channels) - 1} channels)"


@dataclass(frozen=True)
class BadInput:
    path: str
    reason: str

    def line(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class ScanResult:
    cases: list[SourceCase] = field(default_factory=list)
    bad: list[BadInput] = field(default_factory=list)

    def extend(self, other: "ScanResult") -> None:
        self.cases.extend(other.cases)
        self.bad.extend(other.bad)


def _dicom_series_files(folder: Path) -> list[list[str]]:
    """File lists of the DICOM series in ``folder`` (not recursive); [] when there are none."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader
    warnings_shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # "No Series were found" is an answer here, not a warning
    try:
        ids = reader.GetGDCMSeriesIDs(str(folder))
        return [list(reader.GetGDCMSeriesFileNames(str(folder), sid)) for sid in ids]
    except RuntimeError:
        return []
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warnings_shown)


def _suffix_of(name: str) -> str:
    lower = name.lower()
    for s in sorted(VOLUME_SUFFIXES + _DETACHED_DATA_SUFFIXES, key=len, reverse=True):
        if lower.endswith(s):
            return s
    return Path(name).suffix or "(none)"


def scan_input(path: Path) -> ScanResult:
    """Cases and problems of one ``-i`` argument (folder, or one volume file)."""
    result = ScanResult()
    origin = f"-i {path}"
    try:
        is_folder = check_input_path(path)
    except GenesisUserError as e:
        result.bad.append(_bad(path, e))
        return result
    if not is_folder:
        if has_volume_suffix(path):
            result.cases.append(SourceCase((path,), origin))
        else:
            result.bad.append(BadInput(str(path), _unknown_extension(path.name)))
        return result
    for folder, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        folder = Path(folder)
        files = []
        for f in sorted(f for f in filenames if not f.startswith(".")):
            try:  # a FIFO, device, dangling symlink or loop: named here, never opened
                check_input_path(folder / f)
                files.append(f)
            except GenesisUserError as e:
                result.bad.append(_bad(folder / f, e))
        special = len(files) < len([f for f in filenames if not f.startswith(".")])
        volume_files = [f for f in files if has_volume_suffix(f)]
        others = [f for f in files if not has_volume_suffix(f)]
        has_header = any(f.lower().endswith(_HEADER_SUFFIXES) for f in files)
        if has_header:  # .raw/.zraw next to .mhd/.nhdr headers are read through the header
            others = [f for f in others if not f.lower().endswith(_DETACHED_DATA_SUFFIXES)]
        for f in volume_files:
            result.cases.append(SourceCase((folder / f,), origin))
        if others and not special:  # GDCM opens every file of the folder, a FIFO too
            series = _dicom_series_files(folder)
            in_series = {os.path.basename(p) for files_ in series for p in files_}
            if len(series) == 1:
                result.cases.append(SourceCase((folder,), origin))
            elif len(series) > 1:
                result.bad.append(BadInput(
                    str(folder), f"holds {len(series)} DICOM series; put each series in its own folder"))
            for f in others:
                if f not in in_series:
                    result.bad.append(BadInput(str(folder / f), (
                        "a DICOM file that GDCM could not read as a slice of the series in its folder (the file "
                        "is damaged or truncated)") if series and is_dicom_file(folder / f) else _unknown_extension(f)))
    if not result.cases and not result.bad:
        result.bad.append(BadInput(str(path), "empty folder: it holds no volumes"))
    return result


def _bad(path: Path, error: GenesisUserError) -> BadInput:
    """A refusal of ``check_input_path`` as a line of the list of bad inputs."""
    text, prefix = str(error), f"{path}: "
    return BadInput(str(path), text[len(prefix):] if text.startswith(prefix) else text)


def _unknown_extension(name: str) -> str:
    return (f"unknown extension '{_suffix_of(name)}' (readable: "
            f"{', '.join(VOLUME_SUFFIXES)}, or a folder holding one DICOM series)")


def resolve_raw_dataset(name_or_path: str) -> Path:
    """A raw dataset folder from a path, a dataset name or an id (looked up in nnUNet_raw)."""
    p = Path(name_or_path)
    if p.is_dir():
        if not (p / "dataset.json").is_file():
            raise GenesisUserError(f"-d {name_or_path}: folder has no dataset.json, so it is not an nnU-Net raw dataset.")
        return p
    from nnunetv2.paths import nnUNet_raw

    if not nnUNet_raw:
        raise GenesisUserError(
            f"-d {name_or_path}: not a folder, and nnUNet_raw is not set to look the dataset up by "
            f"name or id. Give the dataset folder's path or set nnUNet_raw.")
    candidates = []
    if name_or_path.isdigit():
        prefix = f"Dataset{int(name_or_path):03d}_"
        candidates = sorted(d for d in Path(nnUNet_raw).glob(prefix + "*") if d.is_dir())
    elif (Path(nnUNet_raw) / name_or_path).is_dir():
        candidates = [Path(nnUNet_raw) / name_or_path]
    if len(candidates) != 1 or not (candidates[0] / "dataset.json").is_file():
        found = ", ".join(c.name for c in candidates) or "none"
        raise GenesisUserError(
            f"-d {name_or_path}: no unique nnU-Net raw dataset of that name or id with a dataset.json "
            f"in nnUNet_raw={nnUNet_raw} (found: {found}).")
    return candidates[0]


def scan_raw_dataset(name_or_path: str) -> ScanResult:
    """All images (imagesTr and imagesTs) of an nnU-Net raw dataset, grouped into cases.

    Not nnU-Net's ``get_filenames_of_train_images_and_targets``: that lists imagesTr only, needs
    a label per case and accepts a case that lacks a channel file; pretraining reads unlabelled
    test images too and names every incomplete case."""
    folder = resolve_raw_dataset(name_or_path)
    try:
        meta = json.loads((folder / "dataset.json").read_text())
    except (OSError, ValueError) as e:
        raise GenesisUserError(f"{folder / 'dataset.json'}: cannot be read as JSON ({e}).") from None
    if not isinstance(meta, dict):
        raise GenesisUserError(f"{folder / 'dataset.json'}: holds a JSON {type(meta).__name__}, not an object "
                               f"(nnU-Net v2 format: channel_names, labels, numTraining, file_ending).")
    channels = meta.get("channel_names") or meta.get("modality")
    ending = meta.get("file_ending")
    if not isinstance(channels, dict) or not channels or not isinstance(ending, str):
        raise GenesisUserError(
            f"{folder / 'dataset.json'}: needs 'channel_names' and 'file_ending' (nnU-Net v2 format).")
    if sorted(channels, key=lambda k: (len(k), k)) != [str(i) for i in range(len(channels))]:
        raise GenesisUserError(f"{folder / 'dataset.json'}: the keys of channel_names must be the channel numbers "
                               f"\"0\", \"1\", ... (found {sorted(channels)}).")
    names = tuple(str(channels[k]) for k in sorted(channels, key=int))
    result = ScanResult()
    pattern = re.compile(r"^(.+)_(\d{4})" + re.escape(ending) + "$")
    explicit = meta.get("dataset")
    if isinstance(explicit, dict):  # images listed in dataset.json instead of the folder layout
        origin = f"-d {folder.name} (dataset.json)"
        for key in sorted(explicit):
            entry = explicit[key]
            if not isinstance(entry, dict) or not isinstance(entry.get("images", []), list) or not all(
                    isinstance(i, str) for i in entry.get("images", [])):
                raise GenesisUserError(f"{folder / 'dataset.json'}: its 'dataset' entry {key!r} must be an object "
                                       f"with an 'images' list of file names.")
            images = [Path(os.path.expandvars(i)) for i in entry.get("images", [])]
            images = [i if i.is_absolute() else folder / i for i in images]
            result.extend(_group_checked({key: {str(c): img for c, img in enumerate(images)}}, names, origin))
    sub_folders = ("imagesTs",) if isinstance(explicit, dict) else ("imagesTr", "imagesTs")
    for sub in sub_folders:
        d = folder / sub
        if not d.is_dir():
            continue
        origin = f"-d {folder.name} ({sub})"
        groups: dict[str, dict[str, Path]] = {}
        for f in sorted(os.listdir(d)):
            if f.startswith("."):
                continue
            m = pattern.match(f)
            if not m:
                result.bad.append(BadInput(
                    str(d / f), f"name does not follow CASE_XXXX{ending} (file_ending of dataset.json)"))
                continue
            groups.setdefault(m.group(1), {})[str(int(m.group(2)))] = d / f
        result.extend(_group_checked(groups, names, origin))
    if not result.cases and not result.bad:
        result.bad.append(BadInput(str(folder), "empty dataset: imagesTr and imagesTs hold no images"))
    return result


def _group_checked(groups: dict[str, dict[str, Path]], names: tuple[str, ...], origin: str) -> ScanResult:
    result = ScanResult()
    n = len(names)
    for case, files in sorted(groups.items()):
        missing = [f"{i:04d}" for i in range(n) if str(i) not in files]
        extra = sorted(set(files) - {str(i) for i in range(n)})
        if missing or extra:
            first = next(iter(files.values()))
            detail = []
            if missing:
                detail.append(f"lacks channel file(s) {', '.join(missing)}")
            if extra:
                detail.append(f"has channel file(s) {', '.join(f'{int(e):04d}' for e in extra)} beyond the {n} in dataset.json")
            result.bad.append(BadInput(str(first.parent / case) + "_XXXX", f"case {'; '.join(detail)}"))
            continue
        result.cases.append(SourceCase(tuple(files[str(i)] for i in range(n)), origin, names))
    return result


def check_channel_counts(cases: list[SourceCase], expected: int | None) -> tuple[list[SourceCase], list[BadInput]]:
    """Split off cases whose channel count differs from ``expected`` (or from the majority).

    All volumes of a pretraining run feed the same network input, so they must have the same
    number of channels.
    """
    if not cases:
        return cases, []
    counts: dict[int, int] = {}
    for c in cases:
        counts[len(c.channels)] = counts.get(len(c.channels), 0) + 1
    if expected is None:
        expected = max(sorted(counts), key=lambda k: counts[k])
        why = f"the majority of the volumes have {expected}"
    else:
        why = f"the plans' network takes {expected}"
    good = [c for c in cases if len(c.channels) == expected]
    bad = [BadInput(c.label, f"mixed channel counts: has {len(c.channels)} channel(s) but {why}")
           for c in cases if len(c.channels) != expected]
    return good, bad
