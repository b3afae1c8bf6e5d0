"""Helpers of the pretraining tests: small real CT crops and bad volumes written to tmp."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


def _write(array: np.ndarray, path: Path, spacing=(1.0, 1.0, 1.0)) -> Path:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    image.SetSpacing(list(spacing)[: image.GetDimension()])
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), True)
    return path


@pytest.fixture(scope="session")
def ct_crops(ct_dir, tmp_path_factory) -> list[Path]:
    """Three crops (24 x 48 x 48 voxels) of real CT volumes, HU, with their spacing."""
    import SimpleITK as sitk

    out = tmp_path_factory.mktemp("ct_crops")
    paths = []
    for name in ("totalseg_abdomen_ct_3mm.nii.gz", "ibsi_STS_019_CT_image.nii.gz", "totalseg_abdomen_ct.nii.gz"):
        image = sitk.ReadImage(str(ct_dir / name))
        array = sitk.GetArrayFromImage(image)
        z0, y0, x0 = (max(0, (s - c) // 2) for s, c in zip(array.shape, (24, 48, 48)))
        crop = array[z0:z0 + 24, y0:y0 + 48, x0:x0 + 48].astype(np.int16)
        paths.append(_write(crop, out / name, image.GetSpacing()))
    return paths


@pytest.fixture()
def bad_volumes(tmp_path, ct_crops) -> dict[str, Path]:
    """One file or folder per kind of bad input, keyed by the word its message must contain."""
    root = tmp_path / "bad_sources"
    root.mkdir()
    (root / "corrupt.nii.gz").write_bytes(b"this is not a NIfTI file " * 40)
    _write(np.zeros((20, 20), np.float32), root / "slice2d.nii.gz")
    import SimpleITK as sitk

    four_d = sitk.Image([8, 8, 8, 3], sitk.sitkFloat32)
    sitk.WriteImage(four_d, str(root / "series4d.nii.gz"))
    nan = np.zeros((8, 8, 8), np.float32)
    nan[2, 3, 4] = np.nan
    nan[5, 5, 5] = np.inf
    _write(nan, root / "nan_voxels.nii.gz")
    (root / "notes.txt").write_text("not an image")
    intact = ct_crops[1].read_bytes()  # a real CT crop, cut short: SimpleITK alone zero-fills it
    (root / "truncated_ct.nii.gz").write_bytes(intact[:len(intact) * 6 // 10])
    (root / "zz_copy_of_crop0.nii.gz").write_bytes(ct_crops[0].read_bytes())  # the same volume twice
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    # an nnU-Net raw dataset whose case has two channels: mixed with the one-channel volumes
    two = tmp_path / "Dataset777_TwoChannels"
    (two / "imagesTr").mkdir(parents=True)
    for c in range(2):
        _write(np.full((16, 16, 16), 100.0 * c, np.float32), two / "imagesTr" / f"pair_{c:04d}.nii.gz")
    (two / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT", "1": "CT"}, "labels": {"background": 0}, "numTraining": 1,
        "file_ending": ".nii.gz"}))
    return {
        "not a NIfTI file": root / "corrupt.nii.gz",
        "truncated": root / "truncated_ct.nii.gz",
        "duplicate": root / "zz_copy_of_crop0.nii.gz",
        "2D image": root / "slice2d.nii.gz",
        "4D image": root / "series4d.nii.gz",
        "NaN/Inf": root / "nan_voxels.nii.gz",
        "unknown extension": root / "notes.txt",
        "empty folder": empty,
        "mixed channel counts": two,
    }
