"""The Decathlon task table: lookup by name and by nnU-Net dataset name."""

from __future__ import annotations

import pytest

from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.evaluation.msd_tasks import MSD_TASKS, get_task, task_for_dataset_name


def test_all_ten_tasks_are_in_the_table():
    assert [t.number for t in MSD_TASKS.values()] == list(range(1, 11))
    for task in MSD_TASKS.values():
        assert task.labels[0] == "background" and task.foreground_labels
        assert task.nsd_tolerance_mm > 0 and task.prefix


def test_required_tasks():
    liver, hippo = get_task("Task03_Liver"), get_task("task04_hippocampus")
    assert (liver.prefix, sorted(liver.labels), liver.nsd_tolerance_mm) == ("liver", [0, 1, 2], 7.0)
    assert (hippo.prefix, sorted(hippo.labels), hippo.nsd_tolerance_mm) == ("hippocampus", [0, 1, 2], 1.0)
    assert get_task("Hippocampus") is hippo


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(GenesisUserError, match="Task04_Hippocampus"):
        get_task("Task11_Nothing")


def test_dataset_name_matching():
    assert task_for_dataset_name("Dataset004_Hippocampus").name == "Task04_Hippocampus"
    assert task_for_dataset_name("Dataset008_HepaticVessel").name == "Task08_HepaticVessel"
    assert task_for_dataset_name("Dataset123_MyOwnData") is None
    assert task_for_dataset_name("Hippocampus") is None
