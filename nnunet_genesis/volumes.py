"""The one verified reader of image volumes (NIfTI, NRRD, MetaImage, DICOM series).

SimpleITK is the reader (as nnU-Net's ``SimpleITKIO``), but it accepts damaged files: it
zero-fills a truncated gzip stream, turns NaN voxels of a NIfTI file into 0, normalises a
NIfTI pixdim of 0, negative or NaN, and reads a DICOM series with a missing slice at an
averaged spacing. So every file is verified before SimpleITK reads it (``file_checks``: the
header's own spacing, the payload being complete, float voxels being finite) and DICOM slice
positions must be evenly spaced (here). Every command (pretrain sources, evaluate,
package-msd, preview, the synthetic writer's round trip) reads through here; a problem is one
:class:`GenesisUserError` that names the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.file_checks import check_spacing, damaged, error_detail, numbers_in, verify_file

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
DICOM_SPACING_RTOL = 0.01  # slice gaps may differ by 1 % (rounding in ImagePositionPatient)


def has_volume_suffix(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(VOLUME_SUFFIXES)


# --------------------------------------------------------------------------------------------
# DICOM series and geometry

def dicom_series_files(folder: Path) -> list[str]:
    """The files of the one DICOM series in ``folder``, in slice order."""
    import SimpleITK as sitk

    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise GenesisUserError(f"{folder}: folder holds no DICOM series.")
    if len(series) > 1:
        raise GenesisUserError(f"{folder}: folder holds {len(series)} DICOM series; expected one per folder.")
    return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0]))


def check_dicom_slice_positions(folder: Path, files: list[str]) -> None:
    """Refuse a series whose slices are not evenly spaced (a missing or duplicated slice):
    SimpleITK would read it at an averaged spacing with only a warning."""
    import SimpleITK as sitk

    if len(files) < 2:
        raise GenesisUserError(f"{folder}: the DICOM series has {len(files)} slice; expected a 3D volume.")
    positions, normal = [], None
    reader = sitk.ImageFileReader()
    for name in files:
        reader.SetFileName(name)
        try:
            reader.ReadImageInformation()
            position = numbers_in(reader.GetMetaData("0020|0032").replace("\\", " "))
            if normal is None:
                cosines = numbers_in(reader.GetMetaData("0020|0037").replace("\\", " "))
                normal = np.cross(cosines[:3], cosines[3:6])
        except RuntimeError as e:
            raise damaged(Path(name), f"its DICOM header could not be read ({error_detail(e)})") from None
        positions.append(float(np.dot(position[:3], normal)))
    gaps = np.diff(np.sort(positions))
    step = float(np.median(gaps))
    if step <= 0 or np.any(gaps <= step * DICOM_SPACING_RTOL):
        raise GenesisUserError(f"{folder}: the DICOM series has two slices at the same position; remove the "
                               f"duplicate.")
    uneven = np.abs(gaps - step) > DICOM_SPACING_RTOL * step
    if uneven.any():
        i = int(np.argmax(uneven))
        raise GenesisUserError(
            f"{folder}: the DICOM slices are not evenly spaced (a gap of {gaps[i]:.3g} mm where the series "
            f"steps {step:.3g} mm, after slice {i + 1} of {len(files)}: a slice is missing). SimpleITK would "
            f"read it at an averaged spacing; supply the complete series.")


def check_geometry(path: Path, image) -> None:
    """Spacing finite and positive, direction invertible (what SimpleITK reports)."""
    check_spacing(path, image.GetSpacing(), "geometry")
    dim = image.GetDimension()
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(dim, dim)
    if not np.all(np.isfinite(direction)) or abs(np.linalg.det(direction)) < 1e-6:
        raise GenesisUserError(f"{path}: its direction matrix is not invertible ({direction.ravel().tolist()}). "
                               f"Fix the header.")


def read_image(path: str | os.PathLike):
    """Read one image (file, or folder holding one DICOM series) as a SimpleITK image,
    after verifying it."""
    import SimpleITK as sitk

    path = Path(path)
    if not path.exists():
        raise GenesisUserError(f"{path}: does not exist.")
    try:
        if path.is_dir():
            files = dicom_series_files(path)
            check_dicom_slice_positions(path, files)
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(files)
            image = reader.Execute()
        else:
            verify_file(path)
            image = sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise GenesisUserError(f"{path}: SimpleITK could not read it ({error_detail(e)}).") from None
    check_geometry(path, image)
    return image


def read_volume(path: str | os.PathLike) -> tuple[np.ndarray, tuple[float, ...]]:
    """Read one verified 3D volume.

    Returns ``(array, spacing)``: a float32 array of shape ``(1, Z, Y, X)`` (numpy axis
    order, as nnU-Net uses) and the spacing in the same axis order.
    """
    import SimpleITK as sitk

    path = Path(path)
    image = read_image(path)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise GenesisUserError(f"{path}: has {image.GetNumberOfComponentsPerPixel()} components per voxel; expected a scalar 3D image.")
    if image.GetDimension() != 3:
        raise GenesisUserError(f"{path}: is a {image.GetDimension()}D image; expected 3D.")
    array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    if min(array.shape) < 2:
        raise GenesisUserError(f"{path}: shape {array.shape} is a 2D slice stored as 3D; expected a 3D volume.")
    if not np.isfinite(array).all():
        n = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise GenesisUserError(f"{path}: contains {n} NaN/Inf voxels. Replace them with a finite value first.")
    return array[None], tuple(float(s) for s in image.GetSpacing()[::-1])


def read_label_map(path: str | os.PathLike):
    """Read a verified label map; returns ``(SimpleITK image, numpy array in z, y, x order)``.

    Refuses files that are not a scalar 3D image or hold non-finite or non-integer values.
    """
    import SimpleITK as sitk

    path = Path(path)
    image = read_image(path)
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise GenesisUserError(
            f"{path}: is a {image.GetDimension()}D image with {image.GetNumberOfComponentsPerPixel()} "
            f"component(s) per voxel; a segmentation must be a scalar 3D label map.")
    array = sitk.GetArrayFromImage(image)
    if np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(array)
        if not finite.all():
            raise GenesisUserError(f"{path}: holds {int(array.size - np.count_nonzero(finite))} NaN/Inf values; a "
                                   f"segmentation must hold integer labels.")
        if not np.array_equal(array, np.round(array)):
            bad = array[array != np.round(array)]
            raise GenesisUserError(
                f"{path}: holds non-integer values (e.g. {float(bad.flat[0]):g}); a segmentation must hold "
                f"integer labels, not probabilities.")
    return image, array


def write_volume(array: np.ndarray, spacing: tuple[float, ...], path: str | os.PathLike) -> None:
    """Write a (Z, Y, X) array with its spacing (same axis order) as compressed NIfTI, then read
    it back through the verified reader: a short write (full disk) fails here, not at use."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in spacing[::-1]))  # SimpleITK uses (x, y, z)
    sitk.WriteImage(image, str(path), useCompression=True)
    read_image(path)
