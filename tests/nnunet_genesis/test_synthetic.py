"""The synthetic demo dataset: geometry, labels, determinism, nnU-Net raw layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from nnunet_genesis.synthetic import (LABELS, SyntheticConfig, case_id, dataset_folder_name, make_case,
                                      write_nnunet_dataset)

SMALL = SyntheticConfig(n_train=3, n_test=2, shape=(28, 32, 36), spacing=(1.5, 1.0, 0.8), seed=7)


@pytest.mark.parametrize("index", range(6))
def test_case_has_both_structures_separate_and_inside(index):
    case = make_case(SMALL, index)
    assert case.image.shape == SMALL.shape and case.label.shape == SMALL.shape
    assert case.image.dtype == np.float32 and case.label.dtype == np.uint8
    assert np.isfinite(case.image).all()
    assert set(np.unique(case.label)) == {0, LABELS["ellipsoid"], LABELS["torus"]}
    for value in (LABELS["ellipsoid"], LABELS["torus"]):
        mask = case.label == value
        assert mask.sum() >= 30, f"label {value} has only {mask.sum()} voxels"
        # each structure is one connected object (the rejection sampling keeps them apart)
        assert ndimage.label(mask)[1] == 1
    # a torus has a hole: filling holes slice-wise is not needed, its bounding box is not full
    torus = case.label == LABELS["torus"]
    zz, yy, xx = np.nonzero(torus)
    box = (np.ptp(zz) + 1) * (np.ptp(yy) + 1) * (np.ptp(xx) + 1)
    assert torus.sum() < 0.6 * box


def test_structures_are_visible_in_the_image():
    """Labelled voxels differ in intensity from their surroundings (the task is learnable)."""
    contrasts = []
    for index in range(6):
        case = make_case(SMALL, index)
        for value in (1, 2):
            mask = case.label == value
            ring = ndimage.binary_dilation(mask, iterations=3) & ~ndimage.binary_dilation(mask, iterations=1)
            contrasts.append(abs(case.image[mask].mean() - case.image[ring].mean()))
    assert np.median(contrasts) > 2 * SMALL.noise_std


def test_deterministic_per_seed_and_index():
    a, b = make_case(SMALL, 1), make_case(SMALL, 1)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label)
    # a case does not depend on how many cases are generated
    bigger = SyntheticConfig(**{**SMALL.__dict__, "n_train": 10})
    assert np.array_equal(make_case(bigger, 1).label, a.label)
    other_seed = SyntheticConfig(**{**SMALL.__dict__, "seed": 8})
    assert not np.array_equal(make_case(other_seed, 1).label, a.label)
    assert not np.array_equal(make_case(SMALL, 2).label, a.label)


def test_config_rejects_tiny_shapes():
    with pytest.raises(ValueError):
        SyntheticConfig(shape=(16, 32, 32))
    with pytest.raises(ValueError):
        SyntheticConfig(n_train=0)


def test_written_dataset_is_a_valid_nnunet_raw_dataset(tmp_path):
    folder = write_nnunet_dataset(tmp_path, SMALL, dataset_id=991, name="SynthTest")
    assert folder == tmp_path / dataset_folder_name(991, "SynthTest")
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["labels"] == LABELS and meta["numTraining"] == 3 and meta["file_ending"] == ".nii.gz"
    assert "SYNTHETIC" in meta["description"]
    train = sorted(p.name for p in (folder / "imagesTr").iterdir())
    assert train == [f"{case_id(i)}_0000.nii.gz" for i in range(3)]
    assert sorted(p.name for p in (folder / "labelsTs").iterdir()) == [f"{case_id(i)}.nii.gz" for i in (3, 4)]

    image = sitk.ReadImage(str(folder / "imagesTr" / f"{case_id(0)}_0000.nii.gz"))
    label = sitk.ReadImage(str(folder / "labelsTr" / f"{case_id(0)}.nii.gz"))
    assert image.GetSize() == SMALL.shape[::-1] and label.GetSize() == SMALL.shape[::-1]
    assert np.allclose(image.GetSpacing(), SMALL.spacing[::-1])
    assert np.array_equal(sitk.GetArrayFromImage(label), make_case(SMALL, 0).label)
    assert np.allclose(sitk.GetArrayFromImage(image), make_case(SMALL, 0).image)

    # nnU-Net's own integrity check accepts it (labels, geometry, dataset.json)
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    verify_dataset_integrity(str(folder), num_processes=1)

    with pytest.raises(FileExistsError):
        write_nnunet_dataset(tmp_path, SMALL, dataset_id=991, name="SynthTest")
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # no staging folder left behind
