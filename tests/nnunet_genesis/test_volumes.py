"""The verified reader: damaged files are refused (SimpleITK alone accepts them), intact ones
read exactly as SimpleITK reads them."""

from __future__ import annotations

import gzip
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.volumes import read_image, read_label_map, read_volume


def _image(dtype=np.int16, shape=(12, 14, 16), spacing=(0.8, 0.9, 1.5)) -> sitk.Image:
    rng = np.random.default_rng(0)
    image = sitk.GetImageFromArray((rng.normal(0, 100, shape)).astype(dtype))
    image.SetSpacing(spacing)
    return image


def _write(image, path: Path, compress: bool = True) -> Path:
    sitk.WriteImage(image, str(path), useCompression=compress)
    return path


def _truncate(path: Path, fraction: float = 0.6) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * fraction)])
    return path


def _refused(path, *needles):
    with pytest.raises(GenesisUserError) as e:
        read_volume(path)
    message = str(e.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message, message
    return message


def test_simpleitk_alone_zero_fills_a_truncated_nifti_and_the_reader_refuses_it(ct_dir, tmp_path):
    """The reason this reader exists, measured on a real CT: a 60 % prefix."""
    path = tmp_path / "ct.nii.gz"
    shutil.copy(ct_dir / "ibsi_STS_002_CT_image.nii.gz", path)
    full = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    _truncate(path)
    try:
        truncated = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    except RuntimeError:
        truncated = None  # a SimpleITK that refuses by itself is fine too
    if truncated is not None:
        assert truncated.shape == full.shape and (truncated == 0).mean() > (full == 0).mean() + 0.2
    _refused(path, "damaged", "truncated")


@pytest.mark.parametrize("fraction", [0.01, 0.3, 0.9, 0.999])
def test_truncated_gzip_nifti_at_any_length(tmp_path, fraction):
    path = _truncate(_write(_image(), tmp_path / "v.nii.gz"), fraction)
    _refused(path, "truncated")


def test_corrupt_gzip_checksum(tmp_path):
    path = _write(_image(), tmp_path / "v.nii.gz")
    data = bytearray(path.read_bytes())
    data[-6] ^= 0xFF  # inside the CRC32 trailer
    path.write_bytes(bytes(data))
    _refused(path, "damaged")


def test_truncated_uncompressed_nifti(tmp_path):
    path = _truncate(_write(_image(), tmp_path / "v.nii", compress=False), 0.7)
    _refused(path, "bytes of voxel data", "truncated")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_float_nifti(tmp_path, bad):
    array = np.zeros((8, 9, 10), np.float32)
    array[3, 4, 5] = bad
    path = _write(sitk.GetImageFromArray(array), tmp_path / "v.nii.gz")
    _refused(path, "1 NaN/Inf")


def _set_pixdim(path: Path, axis: int, value: float) -> Path:
    raw = bytearray(gzip.decompress(path.read_bytes()))
    struct.pack_into("<f", raw, 76 + 4 * axis, value)  # pixdim[axis] of the NIfTI-1 header
    path.write_bytes(gzip.compress(bytes(raw)))
    return path


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan")])
def test_nifti_pixdim_that_simpleitk_would_normalise(tmp_path, value):
    path = _set_pixdim(_write(_image(), tmp_path / "v.nii.gz"), 2, value)
    _refused(path, "invalid voxel spacing", "pixdim")


def test_nrrd_gzip_and_raw_truncated(tmp_path):
    gz = _truncate(_write(_image(), tmp_path / "v.nrrd"), 0.8)
    _refused(gz, "truncated")
    raw = _truncate(_write(_image(), tmp_path / "r.nrrd", compress=False), 0.8)
    _refused(raw, "truncated")


def test_real_nrrd_truncated(ct_dir, tmp_path):
    path = tmp_path / "lung.nrrd"
    shutil.copy(ct_dir / "pyradiomics_lung1_ct.nrrd", path)
    _refused(_truncate(path, 0.6), "truncated")


def test_nrrd_zero_spacing(tmp_path):
    path = _write(_image(), tmp_path / "v.nrrd")
    data = path.read_bytes()
    end = data.index(b"\n\n")
    header = data[:end].decode("latin-1").splitlines()
    header = [("space directions: (0,0,0) (0,0.9,0) (0,0,1.5)" if line.startswith("space directions") else line)
              for line in header]
    path.write_bytes("\n".join(header).encode("latin-1") + data[end:])
    _refused(path, "invalid voxel spacing")


def test_metaimage_compressed_and_raw_truncated(tmp_path):
    _refused(_truncate(_write(_image(), tmp_path / "v.mha"), 0.7), "truncated")
    _refused(_truncate(_write(_image(), tmp_path / "r.mha", compress=False), 0.7), "truncated")


def test_detached_metaimage_with_missing_data_file(tmp_path):
    header = _write(_image(), tmp_path / "v.mhd", compress=False)
    for raw in tmp_path.glob("v.*raw"):
        raw.unlink()
    _refused(header, "missing")


def _dicom_copy(ct_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "series"
    shutil.copytree(ct_dir / "totalseg_ct_dicom_series", target)
    return target


def _slices_in_order(folder: Path) -> list[str]:
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0]))


def test_dicom_series_with_a_missing_slice(ct_dir, tmp_path):
    folder = _dicom_copy(ct_dir, tmp_path)
    files = _slices_in_order(folder)
    Path(files[len(files) // 2]).unlink()
    _refused(folder, "not evenly spaced", "missing")


def test_dicom_series_with_a_duplicated_slice(ct_dir, tmp_path):
    folder = _dicom_copy(ct_dir, tmp_path)
    n = len(_slices_in_order(folder))
    slice_file = Path(_slices_in_order(folder)[3])
    shutil.copy(slice_file, folder / f"copy_of_{slice_file.name}")
    assert len(_slices_in_order(folder)) == n + 1  # the copy joins the series
    _refused(folder, "same position")


def test_intact_real_volumes_read_exactly_as_simpleitk_reads_them(ct_dir, liver_dir, hippocampus_dir):
    paths = sorted(p for p in ct_dir.iterdir() if p.is_file()) + sorted(liver_dir.glob("*.nii.gz")) \
        + sorted((hippocampus_dir / "imagesTr").glob("*.nii.gz"))[:3]
    assert len(paths) >= 10
    for path in paths:
        array, spacing = read_volume(path)
        plain = sitk.ReadImage(str(path))
        np.testing.assert_array_equal(array[0], sitk.GetArrayFromImage(plain).astype(np.float32))
        assert spacing == tuple(plain.GetSpacing()[::-1])
    series = read_image(ct_dir / "totalseg_ct_dicom_series")
    assert series.GetSize()[2] == len(_slices_in_order(ct_dir / "totalseg_ct_dicom_series"))


def test_label_map_with_nan_is_refused(tmp_path):
    array = np.zeros((8, 9, 10), np.float32)
    array[1, 1, 1] = 1
    array[2, 2, 2] = np.nan
    path = _write(sitk.GetImageFromArray(array), tmp_path / "seg.nii.gz")
    with pytest.raises(GenesisUserError, match="NaN/Inf"):
        read_label_map(path)


def test_missing_and_non_volume_files(tmp_path):
    _refused(tmp_path / "absent.nii.gz", "does not exist")
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"not an image at all" * 40)
    with pytest.raises(GenesisUserError) as e:
        read_volume(junk)
    assert str(junk) in str(e.value)
