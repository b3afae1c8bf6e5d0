"""Reading image volumes (NIfTI, NRRD, MetaImage, DICOM series) with SimpleITK."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from nnunet_genesis.errors import GenesisUserError

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def has_volume_suffix(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(VOLUME_SUFFIXES)


def read_volume(path: str | os.PathLike) -> tuple[np.ndarray, tuple[float, ...]]:
    """Read one 3D volume (file, or folder holding one DICOM series).

    Returns ``(array, spacing)``: a float32 array of shape ``(1, Z, Y, X)`` (numpy axis
    order, as nnU-Net uses) and the spacing in the same axis order. Raises
    GenesisUserError naming the file for unreadable, non-3D or non-finite volumes.
    """
    import SimpleITK as sitk

    path = Path(path)
    try:
        if path.is_dir():
            reader = sitk.ImageSeriesReader()
            series = reader.GetGDCMSeriesIDs(str(path))
            if not series:
                raise GenesisUserError(f"{path}: folder holds no DICOM series.")
            if len(series) > 1:
                raise GenesisUserError(f"{path}: folder holds {len(series)} DICOM series; expected one.")
            reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path), series[0]))
            image = reader.Execute()
        else:
            image = sitk.ReadImage(str(path))
    except GenesisUserError:
        raise
    except RuntimeError as e:
        msg = str(e).strip().splitlines()
        raise GenesisUserError(f"{path}: SimpleITK could not read it ({msg[-1] if msg else 'no detail'}).") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise GenesisUserError(f"{path}: has {image.GetNumberOfComponentsPerPixel()} components per voxel; expected a scalar 3D image.")
    if image.GetDimension() != 3:
        raise GenesisUserError(f"{path}: is a {image.GetDimension()}D image; expected 3D.")
    array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    if min(array.shape) < 2:
        raise GenesisUserError(f"{path}: shape {array.shape} is a 2D slice stored as 3D; expected a 3D volume.")
    if not np.isfinite(array).all():
        n = int((~np.isfinite(array)).sum())
        raise GenesisUserError(f"{path}: contains {n} NaN/Inf voxels.")
    n = _nifti_non_finite_voxels(path)
    if n:
        raise GenesisUserError(f"{path}: contains {n} NaN/Inf voxels (in the file; SimpleITK reads them as 0).")
    return array[None], tuple(float(s) for s in image.GetSpacing()[::-1])


def _nifti_non_finite_voxels(path: Path) -> int:
    """ITK's NIfTI reader silently turns NaN/Inf into 0, so float NIfTI files are checked with nibabel."""
    if path.is_dir() or not str(path).lower().endswith((".nii", ".nii.gz")):
        return 0
    import nibabel

    image = nibabel.load(str(path))
    if not np.issubdtype(image.get_data_dtype(), np.floating):
        return 0  # integer voxels cannot be NaN/Inf
    return int((~np.isfinite(np.asanyarray(image.dataobj))).sum())
