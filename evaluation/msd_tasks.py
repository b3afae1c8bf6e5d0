"""The ten Medical Segmentation Decathlon tasks, as data.

One row per task: folder name, case-file prefix, label set and the NSD tolerance the
challenge used. ``evaluate`` takes its labels and tolerance from here, ``package-msd`` its
naming and label checks. Adding a task means adding one row.

Sources: label sets are those of each task's ``dataset.json`` in the Decathlon release
(Simpson et al., arXiv:1902.09063, 2019). NSD tolerances are the task-specific thresholds
of the challenge's assessment (Antonelli et al., "The Medical Segmentation Decathlon",
Nat Commun 13:4128, 2022, Methods). See docs/evaluation.md for the table and caveats.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from nnunet_genesis.errors import GenesisUserError


@dataclass(frozen=True)
class MSDTask:
    """One Decathlon task: what its files are called and how it is scored."""

    name: str  # folder name, e.g. "Task04_Hippocampus"
    prefix: str  # case names are "<prefix>_<N>", e.g. "hippocampus_026"
    labels: dict[int, str] = field(default_factory=dict)  # label value -> name, background included
    nsd_tolerance_mm: float = 1.0

    @property
    def number(self) -> int:
        return task_number(self.name)

    @property
    def short_name(self) -> str:
        """The part after ``TaskXX_``, e.g. ``Hippocampus``."""
        return self.name.split("_", 1)[1]

    @property
    def foreground_labels(self) -> list[int]:
        return sorted(v for v in self.labels if v != 0)


def task_number(name: str) -> int:
    """XX of a Decathlon task name ``TaskXX_Name`` (what ``nnUNetv2_convert_MSD_dataset`` expects)."""
    m = re.fullmatch(r"Task(\d{2})_.+", name)
    if not m:
        raise ValueError(f"{name!r} is not named like a Decathlon task (TaskXX_Name, e.g. Task04_Hippocampus)")
    return int(m.group(1))


_TASKS = (
    MSDTask("Task01_BrainTumour", "BRATS",
            {0: "background", 1: "edema", 2: "non-enhancing tumor", 3: "enhancing tumour"},
            5.0),
    MSDTask("Task02_Heart", "la", {0: "background", 1: "left atrium"}, 4.0),
    MSDTask("Task03_Liver", "liver", {0: "background", 1: "liver", 2: "cancer"}, 7.0),
    MSDTask("Task04_Hippocampus", "hippocampus", {0: "background", 1: "Anterior", 2: "Posterior"},
            1.0),
    MSDTask("Task05_Prostate", "prostate", {0: "background", 1: "PZ", 2: "TZ"}, 4.0),
    MSDTask("Task06_Lung", "lung", {0: "background", 1: "cancer"}, 2.0),
    MSDTask("Task07_Pancreas", "pancreas", {0: "background", 1: "pancreas", 2: "cancer"}, 5.0),
    MSDTask("Task08_HepaticVessel", "hepaticvessel", {0: "background", 1: "Vessel", 2: "Tumour"},
            3.0),
    MSDTask("Task09_Spleen", "spleen", {0: "background", 1: "spleen"}, 3.0),
    MSDTask("Task10_Colon", "colon", {0: "background", 1: "colon cancer primaries"}, 4.0),
)

MSD_TASKS: dict[str, MSDTask] = {t.name: t for t in _TASKS}

# Not a Decathlon task: the SYNTHETIC dataset of ``nnunet-genesis demo`` (nnunet_genesis/synthetic.py,
# cases ``genesisdemo_N``), so the demo can evaluate and package it with the same commands.
# ``get_task`` finds it; ``MSD_TASKS`` (the ten Decathlon tasks) does not list it.
DEMO_TASK = MSDTask("Task99_GenesisDemo", "genesisdemo", {0: "background", 1: "ellipsoid", 2: "torus"},
                    1.0)


def get_task(name: str) -> MSDTask:
    """Look a task up by ``Task04_Hippocampus``, ``task04_hippocampus`` or ``Hippocampus``."""
    key = name.strip().lower()
    for task in (*_TASKS, DEMO_TASK):
        if key in (task.name.lower(), task.short_name.lower()):
            return task
    raise GenesisUserError(
        f"Unknown Decathlon task {name!r}. Known tasks: {', '.join(MSD_TASKS)}."
    )


def task_for_dataset_name(dataset_name: str) -> MSDTask | None:
    """The Decathlon task an nnU-Net dataset was converted from, judged by its name.

    ``nnUNetv2_convert_MSD_dataset`` names Task04_Hippocampus ``Dataset004_Hippocampus``;
    the name part after ``DatasetXXX_`` is matched against the task names. None if no match.
    """
    m = re.fullmatch(r"Dataset\d{3}_(.+)", dataset_name.strip())
    if not m:
        return None
    wanted = m.group(1).lower()
    for task in _TASKS:
        if task.short_name.lower() == wanted:
            return task
    return None
