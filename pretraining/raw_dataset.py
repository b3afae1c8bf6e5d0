"""Reading, checking and writing the volumes as an nnU-Net raw dataset.

Every volume is read once (``nnunet_genesis.volumes.read_volume_and_geometry`` checks it:
readable, 3D, scalar, finite; the channels of a case must share one geometry) and written as NIfTI into a staging folder next to the final dataset folder.
Only when every volume is fine (or ``--skip-bad`` drops the bad ones) is the staging folder
renamed into place, so a failed run leaves no half-written dataset behind.

nnU-Net's preprocessing needs a label file per training case (its data loader reads the
class locations it samples from). Pretraining has no labels, so each case gets an
all-background placeholder label (uint8 zeros, a few kB compressed) and the dataset.json
declares only ``background``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.volumes import read_volume_and_geometry, write_volume
from nnunet_genesis.pretraining.sources import BadInput, SourceCase

FILE_ENDING = ".nii.gz"
SOURCES_FILE = "genesis_sources.json"


@dataclass(frozen=True)
class ConvertedCase:
    identifier: str
    source: SourceCase
    shape: tuple[int, ...]  # numpy axis order (Z, Y, X)
    spacing: tuple[float, ...]
    digest: str = ""  # of the voxels and spacing: finds a volume given twice


def _convert_case(identifier: str, case: SourceCase, staging: Path) -> ConvertedCase | BadInput:
    """Read every channel of one case; the channels must share one grid (shape, spacing, origin,
    direction): nnU-Net stacks them voxel by voxel, so a channel of another spacing or origin
    would be trained on misaligned."""
    arrays, spacing, first = [], None, None
    for channel in case.channels:
        try:
            array, geometry = read_volume_and_geometry(channel)
        except GenesisUserError as e:
            text = str(e)
            prefix = f"{channel}: "
            return BadInput(str(channel), text[len(prefix):] if text.startswith(prefix) else text)
        except MemoryError:
            return BadInput(str(channel), "too large to read into memory")
        if arrays and array.shape != arrays[0].shape:
            return BadInput(str(channel), f"shape {array.shape[1:]} differs from channel 0 {case.channels[0]} "
                                          f"({arrays[0].shape[1:]}) of the same case")
        differences = geometry.differences(first) if first is not None else []
        if differences:
            return BadInput(str(channel), f"its geometry differs from channel 0 {case.channels[0]} of the same case "
                                          f"(this channel vs channel 0: {'; '.join(differences)}); the channels of "
                                          f"one case must share spacing, origin and direction")
        first = first or geometry
        spacing = spacing or geometry.spacing_zyx
        arrays.append(array)
    for c, array in enumerate(arrays):
        write_volume(array[0], spacing, staging / "imagesTr" / f"{identifier}_{c:04d}{FILE_ENDING}")
    write_volume(np.zeros(arrays[0].shape[1:], dtype=np.uint8), spacing,
                 staging / "labelsTr" / f"{identifier}{FILE_ENDING}")
    digest = hashlib.blake2b(repr((arrays[0].shape, tuple(spacing))).encode(), digest_size=16)
    for array in arrays:
        digest.update(np.ascontiguousarray(array).data)
    return ConvertedCase(identifier, case, tuple(arrays[0].shape[1:]), tuple(spacing), digest.hexdigest())


def case_identifier(index: int) -> str:
    """The case name of the ``index``-th scanned case (0-based, in the sorted scan order): the same on
    one machine and in every part of a preparation split across machines."""
    return f"case_{index:05d}"


def case_record(case: ConvertedCase) -> dict:
    """A converted case as JSON (a part's ``part.json``); :func:`case_from_record` reads it back."""
    return {"identifier": case.identifier, "files": [str(p) for p in case.source.channels],
            "origin": case.source.origin,
            "channel_names": list(case.source.channel_names) if case.source.channel_names is not None else None,
            "shape": [int(s) for s in case.shape], "spacing": [float(s) for s in case.spacing], "digest": case.digest}


def case_from_record(record: dict) -> ConvertedCase:
    names = record["channel_names"]
    source = SourceCase(tuple(Path(f) for f in record["files"]), str(record["origin"]),
                        tuple(str(n) for n in names) if names is not None else None)
    return ConvertedCase(str(record["identifier"]), source, tuple(int(s) for s in record["shape"]),
                         tuple(float(s) for s in record["spacing"]), str(record["digest"]))


def drop_duplicates(converted: list[ConvertedCase], staging: Path) -> tuple[list[ConvertedCase], list[BadInput]]:
    """Keep the first of volumes with identical voxels: a volume given twice (two folders, a
    copy under another name) would be two pretraining cases, and one of them could be the
    validation case, so validation would score a volume trained on."""
    first: dict[str, ConvertedCase] = {}
    kept, bad = [], []
    for case in sorted(converted, key=lambda c: c.identifier):
        original = first.setdefault(case.digest, case)
        if original is case:
            kept.append(case)
            continue
        for f in list((staging / "imagesTr").glob(f"{case.identifier}_*")) + [
                staging / "labelsTr" / f"{case.identifier}{FILE_ENDING}"]:
            f.unlink(missing_ok=True)
        bad.append(BadInput(case.source.label, f"holds the same voxels as {original.source.label} (a duplicate; "
                                               f"it would leak into validation)"))
    return kept, bad


def new_staging(dataset_folder: Path) -> Path:
    """An empty staging folder (``imagesTr``, ``labelsTr``) next to ``dataset_folder``, hidden and
    named after it (so the dataset id stays taken while it exists)."""
    dataset_folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dataset_folder.name}.", suffix=".staging",
                                    dir=dataset_folder.parent))
    (staging / "imagesTr").mkdir()
    (staging / "labelsTr").mkdir()
    return staging


def convert_to_raw_dataset(cases: list[SourceCase], dataset_folder: Path, workers: int = 1,
                           identifiers: Sequence[str] | None = None,
                           keep_duplicates: bool = False) -> tuple[Path, list[ConvertedCase], list[BadInput]]:
    """Read and check every case, writing NIfTI copies into a staging folder.

    Returns ``(staging_folder, converted, bad)``. The caller either publishes the staging folder
    with :func:`publish` or removes it (``shutil.rmtree``) when there were bad volumes.
    ``identifiers``: the cases' names (default ``case_00000``, ... in order); a part of a preparation
    split across machines passes its share's global names and ``keep_duplicates`` (the merge drops
    duplicates across all parts).
    """
    staging = new_staging(dataset_folder)
    identifiers = list(identifiers) if identifiers is not None else [case_identifier(i) for i in range(len(cases))]
    converted: list[ConvertedCase] = []
    bad: list[BadInput] = []
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            results = pool.map(_convert_case, identifiers, cases, [staging] * len(cases))
            for r in tqdm(results, total=len(cases), desc="Reading and checking volumes", unit="vol"):
                (converted if isinstance(r, ConvertedCase) else bad).append(r)
        if not keep_duplicates:
            converted, duplicates = drop_duplicates(converted, staging)
            bad.extend(duplicates)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging, converted, bad


def write_dataset_json(staging: Path, dataset_name: str, channel_names: list[str], identifiers: list[str]) -> dict:
    """nnU-Net's dataset.json, with the files listed explicitly (nnU-Net's ``dataset`` key).

    Listing them spares nnU-Net its folder scan (a 12-process pool) and pins the case set.
    """
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    generate_dataset_json(
        str(staging), {str(i): n for i, n in enumerate(channel_names)}, {"background": 0}, len(identifiers),
        FILE_ENDING, dataset_name=dataset_name, converted_by="nnunet-genesis pretrain",
        description="Unlabeled volumes for Models Genesis pretraining (nnunet-genesis pretrain). The labels "
                    "are all-background placeholders that nnU-Net's preprocessing needs.",
        dataset={i: {"images": [f"imagesTr/{i}_{c:04d}{FILE_ENDING}" for c in range(len(channel_names))],
                     "label": f"labelsTr/{i}{FILE_ENDING}"} for i in identifiers})
    return json.loads((staging / "dataset.json").read_text())


def sources_record(converted: list[ConvertedCase], skipped: list[BadInput]) -> dict:
    """What each case was made from (kept with the dataset and copied into the checkpoint)."""
    return {
        "num_volumes": len(converted),
        "cases": {c.identifier: {"files": [str(p) for p in c.source.channels], "origin": c.source.origin,
                                 "shape": list(c.shape), "spacing": list(c.spacing)} for c in converted},
        "skipped": [{"path": b.path, "reason": b.reason} for b in skipped],
    }


def publish(staging: Path, dataset_folder: Path) -> None:
    """Rename the finished staging folder into its final place."""
    if dataset_folder.exists():
        raise GenesisUserError(f"{dataset_folder} appeared while the volumes were converted; not overwriting it.")
    os.replace(staging, dataset_folder)
