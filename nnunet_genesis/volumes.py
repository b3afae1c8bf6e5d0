"""The one verified reader of image volumes (NIfTI, NRRD, MetaImage, DICOM series).

SimpleITK is the reader (as nnU-Net's ``SimpleITKIO``), but it accepts damaged files: it
zero-fills a truncated gzip stream, turns NaN voxels of a NIfTI file into 0, normalises a
NIfTI pixdim of 0, negative or NaN, replaces NaN origins and directions, and reads a DICOM
series with a missing slice at an averaged spacing. So every file is verified before SimpleITK
reads it (``file_checks``: a regular file, every spatial header field finite and consistent,
the payload complete, float voxels finite) and a DICOM series must have readable,
evenly spaced slices of one geometry (here). Every command (pretrain sources, evaluate,
package-msd, preview, the synthetic writer's round trip) reads through here; a problem is one
:class:`GenesisUserError` that names the file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.file_checks import check_input_path, check_spacing, dicom_slice_geometry, error_detail, verify_file

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
DICOM_SPACING_RTOL = 0.01  # slice gaps may differ by 1 % (rounding in ImagePositionPatient)
# one grid: a prediction and its reference, the channels of one case (Geometry.differences)
SPACING_ATOL_MM, ORIGIN_ATOL_MM, DIRECTION_ATOL = 1e-3, 1e-3, 1e-4


def has_volume_suffix(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(VOLUME_SUFFIXES)


# --------------------------------------------------------------------------------------------
# DICOM series and geometry

def dicom_series_files(folder: Path) -> list[str]:
    """The files of the one DICOM series in ``folder``, in slice order. Every entry of the
    folder must be a regular file first (GDCM opens them all; a FIFO would block it), and a
    file GDCM left out of the series (a truncated slice) is named."""
    import SimpleITK as sitk

    entries = sorted(os.scandir(folder), key=lambda e: e.name)
    for entry in entries:
        if not entry.is_dir():
            check_input_path(Path(entry.path))
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise GenesisUserError(f"{folder}: folder holds no DICOM series.")
    if len(series) > 1:
        raise GenesisUserError(f"{folder}: folder holds {len(series)} DICOM series; expected one per folder.")
    files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0]))
    taken = {os.path.basename(f) for f in files}
    for entry in entries:
        if not entry.is_dir() and entry.name not in taken and is_dicom_file(Path(entry.path)):
            raise GenesisUserError(
                f"{entry.path}: a DICOM file that GDCM could not read as a slice of the series in {folder} (the "
                f"file is damaged or truncated); the series would be read without it. Replace it with an intact "
                f"copy.")
    return files


def is_dicom_file(path: Path) -> bool:
    """Whether the file carries DICOM's magic bytes ('DICM' after the 128-byte preamble)."""
    with open(path, "rb") as f:
        return f.read(132)[128:] == b"DICM"


def check_dicom_slice_positions(folder: Path, files: list[str]) -> None:
    """Refuse a series whose slices are not evenly spaced (a missing or duplicated slice):
    SimpleITK would read it at an averaged spacing with only a warning. Each slice's position,
    orientation and pixel spacing are read by pydicom (``dicom_slice_geometry``) and must agree
    across the series (SimpleITK takes the first slice's)."""
    if len(files) < 2:
        raise GenesisUserError(f"{folder}: the DICOM series has {len(files)} slice; expected a 3D volume.")
    geometry = [dicom_slice_geometry(Path(name)) for name in files]
    first_cosines, first_spacing = geometry[0][1], geometry[0][2]
    for name, (_, cosines, spacing) in zip(files, geometry):
        if not np.allclose(cosines, first_cosines, atol=DIRECTION_ATOL * 10):
            raise GenesisUserError(f"{name}: its ImageOrientationPatient {cosines.tolist()} differs from the first "
                                   f"slice {files[0]} ({first_cosines.tolist()}) of the series in {folder}.")
        if not np.allclose(spacing, first_spacing, rtol=DICOM_SPACING_RTOL, atol=0):
            raise GenesisUserError(f"{name}: its PixelSpacing {spacing.tolist()} differs from the first slice "
                                   f"{files[0]} ({first_spacing.tolist()}) of the series in {folder}.")
    normal = np.cross(first_cosines[:3], first_cosines[3:6])
    positions = np.array([g[0] for g in geometry]) @ normal
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


@dataclass(frozen=True)
class Geometry:
    """Spatial layout of an image in ITK terms (x, y, z order), first three axes only."""

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]  # row-major 3x3

    @classmethod
    def of(cls, image) -> "Geometry":
        """Geometry of a SimpleITK image or ImageFileReader (after ReadImageInformation)."""
        dim = image.GetDimension()
        size = tuple(int(s) for s in image.GetSize())
        direction = np.asarray(image.GetDirection(), dtype=float).reshape(dim, dim)
        k = min(dim, 3)
        return cls(size[:k], tuple(float(s) for s in image.GetSpacing()[:k]),
                   tuple(float(o) for o in image.GetOrigin()[:k]),
                   tuple(direction[:k, :k].ravel().tolist()))

    @property
    def spacing_zyx(self) -> tuple[float, ...]:
        """Spacing in numpy axis order (as SimpleITK's GetArrayFromImage returns arrays)."""
        return tuple(reversed(self.spacing))

    def differences(self, other: "Geometry") -> list[str]:
        """Human-readable differences from ``other`` (empty when they match)."""
        out = []
        if self.size != other.size:
            out.append(f"size {self.size} vs {other.size}")
            return out
        if not np.allclose(self.spacing, other.spacing, rtol=0, atol=SPACING_ATOL_MM):
            out.append(f"spacing {_fmt(self.spacing)} vs {_fmt(other.spacing)}")
        if not np.allclose(self.origin, other.origin, rtol=0, atol=ORIGIN_ATOL_MM):
            out.append(f"origin {_fmt(self.origin)} vs {_fmt(other.origin)}")
        if not np.allclose(self.direction, other.direction, rtol=0, atol=DIRECTION_ATOL):
            out.append(f"direction {_fmt(self.direction)} vs {_fmt(other.direction)}")
        return out


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


def check_geometry(path: Path, image) -> None:
    """Spacing finite and positive, origin finite, direction invertible (what SimpleITK
    reports: the last guard after the header checks)."""
    check_spacing(path, image.GetSpacing(), "geometry")
    origin = np.asarray(image.GetOrigin(), dtype=float)
    if not np.isfinite(origin).all():
        raise GenesisUserError(f"{path}: its origin {origin.tolist()} is not finite. Fix the header.")
    dim = image.GetDimension()
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(dim, dim)
    if not np.all(np.isfinite(direction)) or abs(np.linalg.det(direction)) < 1e-6:
        raise GenesisUserError(f"{path}: its direction matrix is singular ({direction.ravel().tolist()}). "
                               f"Fix the header.")


def read_image(path: str | os.PathLike):
    """Read one image (file, or folder holding one DICOM series) as a SimpleITK image,
    after verifying it."""
    import SimpleITK as sitk

    path = Path(path)
    is_folder = check_input_path(path)
    try:
        if is_folder:
            files = dicom_series_files(path)
            check_dicom_slice_positions(path, files)
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(files)
            image = reader.Execute()
        else:
            verify_file(path)
            image = sitk.ReadImage(str(path))
    except RuntimeError as e:
        detail = error_detail(e)
        if "orthonormal" in str(e) or re.fullmatch(r"[-+0-9.eE ]+", detail):  # ITK prints the matrix
            raise GenesisUserError(f"{path}: its direction matrix is singular (SimpleITK: "
                                   f"{' '.join(str(e).split())[-160:]}); fix the header.") from None
        raise GenesisUserError(f"{path}: SimpleITK could not read it ({detail}).") from None
    check_geometry(path, image)
    return image


def read_volume(path: str | os.PathLike) -> tuple[np.ndarray, tuple[float, ...]]:
    """Read one verified 3D volume.

    Returns ``(array, spacing)``: a float32 array of shape ``(1, Z, Y, X)`` (numpy axis
    order, as nnU-Net uses) and the spacing in the same axis order.
    """
    array, geometry = read_volume_and_geometry(path)
    return array, geometry.spacing_zyx


def read_volume_and_geometry(path: str | os.PathLike) -> tuple[np.ndarray, Geometry]:
    """``read_volume`` with the whole geometry (the channels of one case must share it)."""
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
    return array[None], Geometry.of(image)


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
