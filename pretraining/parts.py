"""Preparing a large corpus on several machines: parts, then one merge (docs/pretraining.md,
"Preparing a large corpus on several machines").

* ``pretrain ... --prepare-only --part I --parts N``, on any machine that sees the inputs and OUT:
  scans every source exactly as a one-machine preparation does (the same sorted case list, so the
  same names ``case_00000``, ...), takes share I: the I-th of N contiguous chunks of that list
  (``numpy.array_split`` of the case indices, so the chunks differ in size by at most one case),
  reads, checks and converts those cases, and runs nnU-Net's preprocessing of them with the plans
  a one-machine run would use. It reserves no dataset id and writes only ``OUT/parts/part_I_of_N/``:
  a raw and a preprocessed nnU-Net dataset of its own (``PART_DATASET``, in its own nnU-Net
  folders) and, last and atomically, ``part.json``: the request fingerprint, what the scan found,
  the converted cases and the bad inputs. A finished part is skipped when run again; a folder
  without ``part.json`` (a killed part) is removed when the part runs again.
* ``pretrain ... --parts N`` without ``--part``: the merge. It checks that all N parts are finished
  and were made from the same sources and plan options, then prepares the dataset as a one-machine
  run does (``prepare.prepare_dataset``: reserve the id, publish, plans, fingerprint, split, state
  file), taking the volumes and the preprocessed files from the parts (hard links, copies across
  file systems) instead of reading and preprocessing them, and drops volumes given twice across
  parts as one run does. Then ``OUT/parts`` is removed. The result is the one-machine result, file
  for file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.outputs import write_json_atomic
from nnunet_genesis.pretraining import plans as plans_lib
from nnunet_genesis.pretraining.folders import NnunetFolders
from nnunet_genesis.pretraining.launch import RunState
from nnunet_genesis.pretraining.prepare import (PlansSource, PrepareRequest, check_plans_request,
                                                choose_channel_names, make_plans, prepare_dataset, scan_sources)
from nnunet_genesis.pretraining.raw_dataset import (FILE_ENDING, ConvertedCase, case_from_record, case_identifier,
                                                    case_record, convert_to_raw_dataset, drop_duplicates,
                                                    new_staging, publish, write_dataset_json)
from nnunet_genesis.pretraining.sources import BadInput, SourceCase

PARTS_FOLDER = "parts"
PART_FILE = "part.json"
PART_FORMAT = 1
# The dataset inside a part's own nnU-Net folders (OUT/parts/part_I_of_N/nnUNet_raw, ..._preprocessed).
# nnU-Net's functions take any name that starts with "Dataset"; the real id is reserved by the merge.
PART_DATASET = "Dataset000_GenesisPretrainPart"
# Configuration keys that depend on the data or the schedule, not on how a volume is preprocessed.
_NOT_PREPROCESSING = ("median_image_size_in_voxels", "batch_size")


def part_folder(out: Path, part: int, parts: int) -> Path:
    return Path(out) / PARTS_FOLDER / f"part_{part}_of_{parts}"


def share(num_cases: int, part: int, parts: int) -> list[int]:
    """The case indices of part ``part`` of ``parts``: contiguous chunks, in the scan order."""
    return [int(i) for i in np.array_split(np.arange(num_cases), parts)[part]]


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def request_fingerprint(request: PrepareRequest, source: PlansSource) -> str:
    """What a part's files depend on: the sources (resolved paths, in order), the plan options
    (``--plans-from`` with its -p/-c and the bytes of its plans file, ``--patch-size``, ``--spacing``,
    ``--modality``). Training options, ``--skip-bad``, ``--batch-size``, ``--dataset-id`` and
    ``--workers`` are the merge's and may differ."""
    return _digest({
        "format": PART_FORMAT,
        "inputs": [str(Path(p).resolve()) for p in request.inputs],
        "datasets": [str(Path(d).resolve()) for d in request.datasets],
        "plans_from": source.plans_from,
        "source_plans_sha256": hashlib.sha256(source.plans_file.read_bytes()).hexdigest() if source.plans_file
        else None,
        "patch_size": [int(p) for p in request.patch_size] if request.patch_size else None,
        "spacing": [float(s) for s in request.spacing] if request.spacing else None,
        "modality": [str(m) for m in request.modality] if request.modality else None,
    })


def scan_digest(cases: Sequence[SourceCase], bad: Sequence[BadInput]) -> str:
    """The case list (hence the case names) and the scan's problems: equal in every part unless the
    inputs changed between them."""
    return _digest({"cases": [[[str(p) for p in c.channels], c.origin, c.channel_names] for c in cases],
                    "bad": [[b.path, b.reason] for b in bad]})


def preprocessing_settings(plans: dict, configuration: str) -> dict:
    """What of the plans nnU-Net's preprocessing of a case reads (the reader, axes, spacing,
    normalisation and its intensity properties, resampling, the patch size for blosc2's chunks)."""
    config = {k: v for k, v in plans["configurations"][configuration].items() if k not in _NOT_PREPROCESSING}
    return json.loads(json.dumps({
        "configuration": config, "image_reader_writer": plans.get("image_reader_writer"),
        "transpose_forward": plans.get("transpose_forward"),
        "foreground_intensity_properties_per_channel": plans.get("foreground_intensity_properties_per_channel")}))


@dataclass
class PartJob:
    """One part, planned in the user's nnU-Net environment (``plan_part``), run in its own (``run_part``)."""

    request: PrepareRequest
    source: PlansSource
    part: int
    parts: int
    folder: Path
    cases: list[SourceCase]  # this part's share
    identifiers: list[str]
    scan_bad: list[BadInput]
    fingerprint: str
    scan: str
    num_cases: int

    @property
    def folders(self) -> NnunetFolders:
        """The part's own nnU-Net folders (enter ``nnunet_environment`` with them for ``run_part``)."""
        return NnunetFolders(self.folder / "nnUNet_raw", self.folder / "nnUNet_preprocessed",
                             self.folder / "nnUNet_results")


_RECORD_KEYS = ("format", "part", "parts", "fingerprint", "scan", "num_cases", "identifiers", "scan_bad", "cases",
                "bad", "channel_names", "preprocessing", "data_folder")


def _read_record(path: Path) -> dict | None:
    """A part's record, or None when it cannot be read or is not one this version writes."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != PART_FORMAT or any(k not in record
                                                                                   for k in _RECORD_KEYS):
        return None
    return record


def plan_part(request: PrepareRequest, folders: NnunetFolders, part: int, parts: int) -> PartJob | None:
    """Check the plans options and scan every source (inside ``nnunet_environment(folders)``, the
    user's); None when this part was finished earlier with the same request. A folder a killed
    run of this part left is removed; a finished part made from another request is refused."""
    out = Path(request.out).resolve()
    source = check_plans_request(request, folders)
    cases, scan_bad = scan_sources(request, source)
    fingerprint, scan = request_fingerprint(request, source), scan_digest(cases, scan_bad)
    folder = part_folder(out, part, parts)
    done = folder / PART_FILE
    if done.exists():
        record = _read_record(done)
        if record is not None and record.get("fingerprint") == fingerprint and record.get("scan") == scan:
            print(f"Part {part} of {parts} done earlier ({done}); nothing to do.")
            return None
        if record is None:
            why = "cannot be read"
        elif record["fingerprint"] != fingerprint:
            why = "was made from other sources or plan options"
        else:
            why = "saw another list of input volumes (the inputs changed since)"
        raise GenesisUserError(f"--part {part} --parts {parts}: {done} {why}. Delete {folder} to prepare this part "
                               f"again with these options (or give the options it was made with).")
    if folder.exists():
        shutil.rmtree(folder)
        print(f"Removed {folder}: an interrupted run of part {part} of {parts} left it unfinished.")
    indices = share(len(cases), part, parts)
    return PartJob(request, source, part, parts, folder, [cases[i] for i in indices],
                   [case_identifier(i) for i in indices], scan_bad, fingerprint, scan, len(cases))


def run_part(job: PartJob) -> dict:
    """Convert and preprocess the part's share; ``part.json`` last. Call inside
    ``nnunet_environment(job.folders)``: nnU-Net's functions read its folders from the environment.
    Failed or interrupted, it removes its folder. Returns the part record."""
    request, source = job.request, job.source
    try:
        job.folder.mkdir(parents=True)
        raw = job.folders.raw / PART_DATASET
        staging, converted, read_bad = convert_to_raw_dataset(job.cases, raw, workers=request.workers,
                                                              identifiers=job.identifiers, keep_duplicates=True)
        channel_names = None
        try:
            if converted:
                channel_names = choose_channel_names(request, [c.source for c in converted],
                                                     len(converted[0].source.channels), source.target_names)
                write_dataset_json(staging, PART_DATASET, channel_names, [c.identifier for c in converted])
            publish(staging, raw)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        settings = data_folder = None
        if converted:
            settings, data_folder = _preprocess_part(job, raw, converted, channel_names)
        record = {"format": PART_FORMAT, "part": job.part, "parts": job.parts, "fingerprint": job.fingerprint,
                  "scan": job.scan, "num_cases": job.num_cases, "identifiers": job.identifiers,
                  "scan_bad": [{"path": b.path, "reason": b.reason} for b in job.scan_bad],
                  "cases": [case_record(c) for c in converted],
                  "bad": [{"path": b.path, "reason": b.reason} for b in read_bad],
                  "channel_names": channel_names, "preprocessing": settings, "data_folder": data_folder}
        write_json_atomic(record, job.folder / PART_FILE)
        return record
    except BaseException:
        shutil.rmtree(job.folder, ignore_errors=True)
        try:
            job.folder.parent.rmdir()  # OUT/parts, when no other part is there
        except OSError:
            pass
        raise


def _preprocess_part(job: PartJob, raw: Path, converted: list[ConvertedCase],
                     channel_names: list[str]) -> tuple[dict, str]:
    """The part's plans (those of a one-machine run but for the dataset's name and the universal plan's
    median size, which preprocessing does not read) and nnU-Net's preprocessing of its volumes."""
    request, source, folders = job.request, job.source, job.folders
    if source.plans_file is not None:  # move_plans_between_datasets reads it from nnUNet_preprocessed
        copy = folders.preprocessed / source.plans_from["dataset"] / source.plans_file.name
        copy.parent.mkdir(parents=True)
        shutil.copyfile(source.plans_file, copy)
    plans, plans_identifier, configuration = make_plans(request, folders, PART_DATASET, converted, channel_names,
                                                        source)
    pre = folders.preprocessed / PART_DATASET
    pre.mkdir(parents=True, exist_ok=True)
    (pre / f"{plans_identifier}.json").write_text(json.dumps(plans, indent=2))
    shutil.copyfile(raw / "dataset.json", pre / "dataset.json")
    print(f"Preprocessing part {job.part} of {job.parts}: {len(converted)} volume(s) with nnU-Net "
          f"({plans_identifier}, {configuration}) ...")
    plans_lib.run_preprocessing(PART_DATASET, plans_identifier, configuration, request.workers)
    data_identifier = plans["configurations"][configuration]["data_identifier"]
    return preprocessing_settings(plans, configuration), str((pre / data_identifier).relative_to(job.folder))


def _ranges(numbers: Sequence[int]) -> str:
    return ", ".join(str(n) for n in numbers)


def finished_parts(out: Path, parts: int, fingerprint: str, rerun: Callable[[int], str]) -> list[dict]:
    """The N part records, checked: every part finished, from this request, over the same case list.
    Otherwise one GenesisUserError naming the parts and the commands that (re)make them; nothing
    is written."""
    records, missing, other, unreadable = [], [], [], []
    for i in range(parts):
        path = part_folder(out, i, parts) / PART_FILE
        record = _read_record(path) if path.is_file() else None
        if not path.is_file():
            missing.append(i)
        elif record is None:
            unreadable.append(i)
        elif record.get("fingerprint") != fingerprint:
            other.append(i)
        records.append(record)
    problems = []
    if missing:
        problems.append(f"part(s) {_ranges(missing)} of {parts} are not finished (no {PART_FILE} in "
                        f"{out / PARTS_FOLDER}); run them (on any machine that sees the inputs and OUT)")
    if unreadable:
        problems.append(f"the {PART_FILE} of part(s) {_ranges(unreadable)} cannot be read; delete their folders "
                        f"and run them again")
    if other:
        problems.append(f"part(s) {_ranges(other)} were made from other sources or plan options than this "
                        f"command's; delete their folders ({part_folder(out, other[0], parts)}, ...) and run them "
                        f"again with these options")
    if problems:
        todo = missing + unreadable + other
        commands = "\n".join(f"  {rerun(i)}" for i in todo[:3]) + (
            f"\n  ... (the same with --part {', '.join(map(str, todo[3:]))})" if todo[3:] else "")
        raise GenesisUserError(f"--parts {parts}: cannot merge the parts in {out / PARTS_FOLDER}: "
                               + "; ".join(problems) + f". Nothing was written. Commands:\n{commands}")
    scans = {(r["scan"], r["num_cases"]) for r in records}
    if len(scans) > 1:
        counts = ", ".join(f"part {r['part']}: {r['num_cases']}" for r in records)
        raise GenesisUserError(f"--parts {parts}: the parts in {out / PARTS_FOLDER} saw different lists of input "
                               f"volumes (the inputs changed while they ran; volumes found by {counts}). Delete "
                               f"{out / PARTS_FOLDER} and run every part again. Nothing was written.")
    covered = [ident for r in records for ident in r["identifiers"]]
    if covered != [case_identifier(i) for i in range(records[0]["num_cases"])]:
        raise GenesisUserError(f"--parts {parts}: the shares of the parts in {out / PARTS_FOLDER} do not cover "
                               f"the case list once each; delete {out / PARTS_FOLDER} and run every part again.")
    return records


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link (the part's folder is removed after the merge), a copy across file systems."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def merge_parts(request: PrepareRequest, folders: NnunetFolders, parts: int,
                rerun: Callable[[int], str]) -> RunState:
    """The dataset of a one-machine preparation, from the N finished parts in ``OUT/parts``; then
    ``OUT/parts`` is removed. Call inside ``nnunet_environment(folders)``. ``rerun(i)``: the
    command that makes part i (for the refusal when parts are missing)."""
    out = Path(request.out).resolve()
    source = check_plans_request(request, folders)
    records = finished_parts(out, parts, request_fingerprint(request, source), rerun)
    scan_bad = [BadInput(b["path"], b["reason"]) for b in records[0]["scan_bad"]]

    def convert(raw_folder: Path):
        staging = new_staging(raw_folder)
        try:
            converted, read_bad = [], []
            for record in records:
                base = part_folder(out, record["part"], parts) / "nnUNet_raw" / PART_DATASET
                for entry in record["cases"]:
                    case = case_from_record(entry)
                    names = [f"imagesTr/{case.identifier}_{c:04d}{FILE_ENDING}"
                             for c in range(len(case.source.channels))] + [f"labelsTr/{case.identifier}{FILE_ENDING}"]
                    for name in names:
                        _link_or_copy(base / name, staging / name)
                    converted.append(case)
                read_bad += [BadInput(b["path"], b["reason"]) for b in record["bad"]]
            converted, duplicates = drop_duplicates(converted, staging)
        except FileNotFoundError as e:
            shutil.rmtree(staging, ignore_errors=True)
            raise GenesisUserError(f"--parts {parts}: {e.filename} is missing from its part; delete that part's "
                                   f"folder and run the part again.") from None
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        print(f"Merged the volumes of {parts} part(s): {len(converted)} case(s)")
        return staging, converted, scan_bad + read_bad + duplicates

    def preprocess(dataset_name: str, plans: dict, plans_identifier: str, configuration: str,
                   converted: list[ConvertedCase]) -> None:
        settings = preprocessing_settings(plans, configuration)
        differ = [r["part"] for r in records if r["cases"] and r["preprocessing"] != settings]
        if differ:
            raise GenesisUserError(
                f"--parts {parts}: part(s) {_ranges(differ)} preprocessed their volumes with other settings than "
                f"the merged dataset's plans (normalisation "
                f"{plans['configurations'][configuration].get('normalization_schemes')}: the -d datasets name their "
                f"channels differently?). Give --modality, delete {out / PARTS_FOLDER} and run every part again.")
        data = folders.preprocessed / dataset_name / plans["configurations"][configuration]["data_identifier"]
        data.mkdir(parents=True, exist_ok=True)
        kept = {c.identifier for c in converted}
        for record in records:
            if not record["cases"]:
                continue
            for f in sorted((part_folder(out, record["part"], parts) / record["data_folder"]).iterdir()):
                stem = f.name.split(".")[0]
                if stem.removesuffix("_seg") in kept:
                    _link_or_copy(f, data / f.name)
        lacking = sorted(i for i in kept if not (data / f"{i}.pkl").is_file())
        if lacking:
            raise GenesisUserError(f"--parts {parts}: the preprocessed files of {', '.join(lacking[:5])} are missing "
                                   f"from their parts; delete {out / PARTS_FOLDER} and run every part again.")
        print(f"Took the preprocessed files of {len(converted)} volume(s) from {parts} part(s) ({plans_identifier}, "
              f"{configuration})")

    state = prepare_dataset(request, folders, source, convert, preprocess)
    shutil.rmtree(out / PARTS_FOLDER, ignore_errors=True)
    return state

