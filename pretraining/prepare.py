"""From source folders to a planned and preprocessed nnU-Net pretraining dataset.

1. find the volumes (``sources``) and check the plans to transfer, if any;
2. read and check every volume, writing NIfTI copies into a staging folder (``raw_dataset``);
   every bad file is reported in one message (exit 2) unless ``--skip-bad``;
3. publish the raw dataset ``DatasetXXX_GenesisPretrain`` (all-background placeholder labels);
4. plans: nnU-Net's ``move_plans_between_datasets`` from the target dataset, or the universal
   Genesis plan; the run settings go into the plans (``options``);
5. nnU-Net's preprocessing (resampling, normalisation, blosc2) of the one configuration;
6. ``OUT/pretrain_state.json`` records where all of it is, for training and ``--resume``.

``prepare_run`` runs them on this machine; ``parts.merge_parts`` runs steps 3-6 on the volumes and
preprocessed files of a preparation split into parts (``--part I --parts N``). Both go through
``prepare_dataset`` (reservation, publishing, plans, split, clean-up) and ``make_plans``.
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.pretraining import plans as plans_lib
from nnunet_genesis.outputs import write_json_atomic
from nnunet_genesis.pretraining.folders import (DATASET_SUFFIX, NnunetFolders, read_claim, release_claim,
                                                reserve_dataset_name)
from nnunet_genesis.pretraining.launch import RunState
from nnunet_genesis.pretraining.options import PLANS_KEY, PretrainOptions
from nnunet_genesis.pretraining.raw_dataset import (SOURCES_FILE, ConvertedCase, convert_to_raw_dataset, publish,
                                                    sources_record, write_dataset_json)
from nnunet_genesis.pretraining.sources import (BadInput, ScanResult, SourceCase, check_channel_counts,
                                                scan_input, scan_raw_dataset)

FOLD = 0
# Names the dataset a preparation is creating, until its state file exists: a killed preparation
# leaves it, and the next run into the same OUT removes that dataset's folders first.
CLAIM_FILE = "pretrain_preparing.json"


def remove_interrupted_preparation(out: Path) -> None:
    """Remove what a preparation into ``out`` killed before it finished (``kill -9`` during
    conversion or nnU-Net's preprocessing) left: its raw, preprocessed and results dataset
    folders, its staging folder and its reservation of the dataset id.

    Only while that id is still reserved by the same run (the claim in ``nnUNet_raw`` names the
    run token ``out``'s claim file holds): a dataset another run holds now is never touched."""
    claim_file = out / CLAIM_FILE
    if not claim_file.is_file():
        return
    try:
        claim = json.loads(claim_file.read_text())
        name, folders = claim["dataset_name"], NnunetFolders.from_dict(claim["folders"])
        run = claim.get("run")
    except (OSError, ValueError, KeyError, TypeError):
        raise GenesisUserError(f"{claim_file}: a killed preparation left this file, but it cannot be read; "
                               f"delete it (and any {out / 'nnunet_work'}) and run again.") from None
    if not re.fullmatch(r"Dataset\d{3}_" + DATASET_SUFFIX, str(name)):
        raise GenesisUserError(f"{claim_file}: names {name!r}, not a pretraining dataset; delete the file.")
    reservation = read_claim(folders, name)
    if run is None or reservation is None or reservation.get("run") != run:
        claim_file.unlink()
        print(f"An interrupted preparation in {out} had reserved {name}; that id is no longer this run's "
              f"(another run holds it, or its reservation is gone), so nothing of {name} was removed.")
        return
    removed = []
    for base in (folders.raw, folders.preprocessed, folders.results):
        for leftover in [base / name, *base.glob(f".{name}.*.staging")]:
            if leftover.exists():
                shutil.rmtree(leftover)
                removed.append(str(leftover))
    release_claim(folders, name, run)
    claim_file.unlink()
    print(f"Removed what an interrupted preparation in {out} left: " + (", ".join(removed) or "nothing but its claim"))


@dataclass
class PrepareRequest:
    out: Path
    inputs: Sequence[Path] = ()
    datasets: Sequence[str] = ()
    plans_from: str | None = None
    plans_identifier: str = "nnUNetPlans"
    configuration: str = plans_lib.CONFIGURATION
    patch_size: Sequence[int] | None = None
    spacing: Sequence[float] | None = None
    batch_size: int | None = None
    modality: Sequence[str] | None = None
    skip_bad: bool = False
    workers: int = 1
    dataset_id: int | None = None
    val_fraction: float = 0.1
    options: PretrainOptions = field(default_factory=PretrainOptions)


def bad_inputs_message(bad: list[BadInput]) -> str:
    lines = "\n".join(f"  - {b.line()}" for b in sorted(bad, key=lambda b: b.path))
    return (f"{len(bad)} input(s) cannot be used for pretraining; nothing was trained or kept. Fix or "
            f"remove them, or pass --skip-bad to continue without them:\n{lines}")


def _target_channel_names(preprocessed: Path, dataset_name: str) -> list[str]:
    meta = json.loads((preprocessed / dataset_name / "dataset.json").read_text())
    names = meta.get("channel_names") or meta.get("modality") or {}
    return [str(names[k]) for k in sorted(names, key=int)]


def choose_channel_names(request: PrepareRequest, cases, n_channels: int, target_names: list[str] | None) -> list[str]:
    if target_names is not None:
        return target_names
    if request.modality:
        names = list(request.modality)
        if len(names) == 1:
            names = names * n_channels
        if len(names) != n_channels:
            raise GenesisUserError(f"--modality gives {len(names)} names but the volumes have {n_channels} channels.")
        return names
    from_dataset = next((c.channel_names for c in cases if c.channel_names), None)
    return list(from_dataset) if from_dataset else ["CT"] * n_channels


@dataclass(frozen=True)
class PlansSource:
    """Step 1's answer: where the plans come from. ``plans_from`` (``{dataset, plans, configuration}``),
    the target dataset's channel names and its plans file with ``--plans-from``, all None for the
    universal plan; ``batch_size``: the global batch the plans will have."""

    plans_from: dict | None
    target_names: list[str] | None
    plans_file: Path | None
    batch_size: int


def check_plans_request(request: PrepareRequest, folders: NnunetFolders) -> PlansSource:
    """The plans options checked (a 2D configuration, a patch size, --spacing with --plans-from)
    before any volume is read. Call inside ``nnunet_environment`` (nnU-Net looks the dataset up)."""
    if request.plans_from is None:
        plans_lib.check_universal_request(request.patch_size, request.spacing)
        return PlansSource(None, None, None, int(request.batch_size or plans_lib.DEFAULT_UNIVERSAL_BATCH))
    source_name, plans_file = plans_lib.source_plans_file(request.plans_from, request.plans_identifier,
                                                          request.configuration, folders.preprocessed)
    if request.spacing is not None:
        raise GenesisUserError("--spacing only applies to the universal plan; with --plans-from the "
                               "target dataset's spacing is used.")
    single = plans_lib.single_configuration(json.loads(plans_file.read_text()), request.configuration,
                                            request.batch_size, request.patch_size)
    return PlansSource({"dataset": source_name, "plans": request.plans_identifier,
                        "configuration": request.configuration},
                       _target_channel_names(folders.preprocessed, source_name), plans_file,
                       int(single["configurations"][request.configuration]["batch_size"]))


def scan_sources(request: PrepareRequest, source: PlansSource) -> tuple[list[SourceCase], list[BadInput]]:
    """Every case of the sources in their one order (``-i`` then ``-d``, each sorted), and the problems
    found without reading a volume (missing files, mixed channel counts)."""
    scan = ScanResult()
    for path in request.inputs:
        scan.extend(scan_input(Path(path)))
    for dataset in request.datasets:
        scan.extend(scan_raw_dataset(str(dataset)))
    cases, channel_bad = check_channel_counts(scan.cases, len(source.target_names) if source.target_names else None)
    return cases, scan.bad + channel_bad


# (raw dataset folder) -> (staging folder, converted cases, every bad input): how the volumes get there
Convert = Callable[[Path], tuple[Path, list[ConvertedCase], list[BadInput]]]
# (dataset name, plans, plans identifier, configuration, converted cases): fills the preprocessed data folder
Preprocess = Callable[[str, dict, str, str, list[ConvertedCase]], None]


def prepare_run(request: PrepareRequest, folders: NnunetFolders) -> RunState:
    """Steps 1-6 above on this machine; returns the state that ``launch.train`` runs.

    nnU-Net reads its folders from the environment: call inside
    ``pretraining.folders.nnunet_environment(folders)`` (the CLI entry point does), with ``request.datasets``
    already resolved against the user's own nnUNet_raw (``sources.resolve_raw_dataset``).
    """
    source = check_plans_request(request, folders)
    cases, bad = scan_sources(request, source)

    def convert(raw_folder: Path):
        staging, converted, read_bad = convert_to_raw_dataset(cases, raw_folder, workers=request.workers)
        return staging, converted, bad + read_bad

    def preprocess(dataset_name: str, plans: dict, plans_identifier: str, configuration: str, converted) -> None:
        print(f"Preprocessing {len(converted)} volume(s) of {dataset_name} with nnU-Net "
              f"({plans_identifier}, {configuration}) ...")
        plans_lib.run_preprocessing(dataset_name, plans_identifier, configuration, request.workers)

    return prepare_dataset(request, folders, source, convert, preprocess)


def prepare_dataset(request: PrepareRequest, folders: NnunetFolders, source: PlansSource, convert: Convert,
                    preprocess: Preprocess) -> RunState:
    """Steps 2-6 for the volumes ``convert`` delivers (read here, or assembled from the parts of a
    preparation split across machines): reserve the dataset id, publish the raw dataset, plans,
    fingerprint, split, ``preprocess``, state file. Refused, failed or interrupted, it leaves nothing:
    its folders and its claim are removed (``kill -9`` leaves the claim, which the next run clears)."""
    out = Path(request.out).resolve()
    remove_interrupted_preparation(out)
    run = uuid.uuid4().hex
    folders.make()
    dataset_name = reserve_dataset_name(folders, request.dataset_id, run, out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic({"dataset_name": dataset_name, "folders": folders.to_dict(), "run": run}, out / CLAIM_FILE)
    except BaseException:
        release_claim(folders, dataset_name, run)
        raise
    try:
        state = _convert_plan_and_preprocess(request, out, folders, dataset_name, source, convert, preprocess)
    except BaseException:  # refused, failed or interrupted: its folders are gone, so is its claim (kill -9 leaves it)
        release_claim(folders, dataset_name, run)
        (out / CLAIM_FILE).unlink(missing_ok=True)
        raise
    release_claim(folders, dataset_name, run)  # from here on the dataset's own folders hold the id
    return state


def usable_cases(request: PrepareRequest, converted: list[ConvertedCase], bad: list[BadInput],
                 source: PlansSource) -> list[str]:
    """Refuse bad inputs (one message) unless --skip-bad, and an empty corpus; returns the channel names."""
    if bad and not request.skip_bad:
        raise GenesisUserError(bad_inputs_message(bad))
    if bad:
        print(f"--skip-bad: continuing without {len(bad)} input(s):\n" +
              "\n".join(f"  - {b.line()}" for b in sorted(bad, key=lambda b: b.path)))
    if not converted:
        raise GenesisUserError("No usable volume is left to pretrain on"
                               + (" after skipping the bad inputs." if bad else "; give -i folders or -d datasets."))
    n_channels = len(converted[0].source.channels)
    return choose_channel_names(request, [c.source for c in converted], n_channels, source.target_names)


def _convert_plan_and_preprocess(request: PrepareRequest, out: Path, folders: NnunetFolders, dataset_name: str,
                                 source: PlansSource, convert: Convert, preprocess: Preprocess) -> RunState:
    raw_folder = folders.raw / dataset_name
    staging, converted, bad = convert(raw_folder)
    try:
        converted.sort(key=lambda c: c.identifier)
        channel_names = usable_cases(request, converted, bad, source)
        write_dataset_json(staging, dataset_name, channel_names, [c.identifier for c in converted])
        record = sources_record(converted, bad)
        (staging / SOURCES_FILE).write_text(json.dumps(record, indent=2))
        publish(staging, raw_folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    pre = folders.preprocessed / dataset_name
    try:
        return _plan_and_preprocess(request, out, folders, dataset_name, converted, channel_names,
                                    source, raw_folder, pre, preprocess)
    except BaseException:  # no half-prepared dataset left behind: both folders are this run's own
        shutil.rmtree(raw_folder, ignore_errors=True)
        shutil.rmtree(pre, ignore_errors=True)
        raise


# A resampled volume above this many voxels (4 GiB as float32) is an absurd spacing, not data.
MAX_RESAMPLED_VOXELS = 2 ** 30


def check_resampled_sizes(converted, target_spacing) -> None:
    """Refuse, before nnU-Net resamples anything, volumes whose spacing would resample them to
    less than one voxel along an axis or to an absurd size (a 16^3 volume at 100 mm made
    nnU-Net allocate 15 GiB; 1e-6 mm ended in a 'zero-size array')."""
    problems = []
    for c in converted:
        size = np.asarray(c.shape, float) * np.asarray(c.spacing, float) / np.asarray(target_spacing, float)
        if np.any(size < 1) or np.prod(size) > MAX_RESAMPLED_VOXELS:
            problems.append(f"{c.source.label}: {tuple(c.shape)} voxels at spacing {tuple(c.spacing)} mm would be "
                            f"resampled to {tuple(int(round(s)) for s in size)} voxels at {tuple(target_spacing)} mm")
    if problems:
        raise GenesisUserError(
            f"{len(problems)} volume(s) have a voxel spacing that does not fit the target spacing (check their "
            f"headers, or choose --spacing):\n" + "\n".join(f"  - {p}" for p in problems))


def make_plans(request: PrepareRequest, folders: NnunetFolders, dataset_name: str, converted, channel_names,
               source: PlansSource) -> tuple[dict, str, str]:
    """``(plans, plans identifier, configuration)`` of ``dataset_name`` (its raw dataset published in
    ``folders.raw``): the target dataset's moved with nnU-Net's ``move_plans_between_datasets``, or the
    universal plan; the volumes' spacing checked against the plans' before nnU-Net resamples them.
    The universal plan's median spacing and shape are a record only: preprocessing does not use them."""
    if source.plans_from is not None:
        plans = plans_lib.transfer_plans(source.plans_from["dataset"], request.plans_identifier,
                                         request.configuration, dataset_name, folders.preprocessed)
        plans = plans_lib.single_configuration(plans, request.configuration, request.batch_size, request.patch_size)
        plans_identifier, configuration = plans_lib.TRANSFERRED_PLANS, request.configuration
    else:
        plans = plans_lib.universal_plans(dataset_name, channel_names, [c.shape for c in converted],
                                          [c.spacing for c in converted], request.patch_size,
                                          request.spacing, request.batch_size)
        plans_identifier, configuration = plans_lib.UNIVERSAL_PLANS, plans_lib.CONFIGURATION
    check_resampled_sizes(converted, plans["configurations"][configuration]["spacing"])
    return plans, plans_identifier, configuration


def _plan_and_preprocess(request: PrepareRequest, out: Path, folders: NnunetFolders, dataset_name: str,
                         converted, channel_names, source: PlansSource, raw_folder: Path, pre: Path,
                         preprocess: Preprocess) -> RunState:
    pre.mkdir(parents=True, exist_ok=True)
    shapes = [c.shape for c in converted]
    spacings = [c.spacing for c in converted]
    plans, plans_identifier, configuration = make_plans(request, folders, dataset_name, converted, channel_names,
                                                        source)
    options = request.options
    options.plans_from = source.plans_from or {}
    options.export_folder = str(out)
    plans[PLANS_KEY] = options.to_dict()
    (pre / f"{plans_identifier}.json").write_text(json.dumps(plans, indent=2))
    shutil.copyfile(raw_folder / "dataset.json", pre / "dataset.json")
    shutil.copyfile(raw_folder / SOURCES_FILE, pre / SOURCES_FILE)
    plans_lib.write_fingerprint(pre / "dataset_fingerprint.json", shapes, spacings,
                                plans.get("foreground_intensity_properties_per_channel", {}))
    plans_lib.write_split(pre, [c.identifier for c in converted],
                          request.val_fraction, options.seed)
    preprocess(dataset_name, plans, plans_identifier, configuration, converted)
    state = RunState(dataset_name, plans_identifier, configuration, FOLD, folders.to_dict())
    state.save(out)
    (out / CLAIM_FILE).unlink(missing_ok=True)
    return state
