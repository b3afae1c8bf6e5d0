"""The one verified reader of image volumes (NIfTI, NRRD, MetaImage, DICOM series).

SimpleITK is the reader (as nnU-Net's ``SimpleITKIO``), but it accepts damaged files: it
zero-fills a truncated gzip stream, turns NaN voxels of a NIfTI file into 0, normalises a
NIfTI pixdim of 0, negative or NaN, and reads a DICOM series with a missing slice at an
averaged spacing. So every file is verified before SimpleITK reads it: the header's own
spacing, the compressed or raw data being complete, float voxels being finite (NIfTI, in the
same pass over the stream), and DICOM slice positions being evenly spaced. Every command
(pretrain sources, evaluate, package-msd, preview, the synthetic writer's round trip) reads
through here; a problem is one :class:`GenesisUserError` that names the file.
"""

from __future__ import annotations

import bz2
import gzip
import io
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np

from nnunet_genesis.errors import GenesisUserError

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
_CHUNK = 1 << 22  # bytes per step of the streaming check (4 MiB: constant memory on large files)
DICOM_SPACING_RTOL = 0.01  # slice gaps may differ by 1 % (rounding in ImagePositionPatient)


def has_volume_suffix(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(VOLUME_SUFFIXES)


def error_detail(e: Exception) -> str:
    """The last non-empty line of an exception (SimpleITK puts the reason there)."""
    lines = [line for line in str(e).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(e).__name__


def _damaged(path: Path, problem: str) -> GenesisUserError:
    return GenesisUserError(f"{path}: the file is damaged: {problem}. It was not used; replace it with an "
                            f"intact copy (or remove it from the input).")


# --------------------------------------------------------------------------------------------
# streaming payload checks

class _PayloadCount:
    """Counts payload bytes (and non-finite float values) of a stream, chunk by chunk."""

    def __init__(self, float_dtype: np.dtype | None):
        self.n_bytes = 0
        self.non_finite = 0
        self._dtype = float_dtype
        self._rest = b""

    def feed(self, data: bytes) -> None:
        self.n_bytes += len(data)
        if self._dtype is None or not data:
            return
        data = self._rest + data
        usable = len(data) - len(data) % self._dtype.itemsize
        self._rest = data[usable:]
        values = np.frombuffer(data[:usable], dtype=self._dtype)
        self.non_finite += int(values.size - np.count_nonzero(np.isfinite(values)))


def _stream(path: Path, fileobj, skip: int, count: _PayloadCount, codec: str) -> None:
    """Feed the payload of ``fileobj`` after ``skip`` decoded bytes into ``count``."""
    try:
        if codec == "gzip":
            stream = gzip.GzipFile(fileobj=fileobj, mode="rb")
        elif codec == "bzip2":
            stream = bz2.BZ2File(fileobj, mode="rb")
        else:
            stream = fileobj
        while skip > 0:
            got = stream.read(min(skip, _CHUNK))
            if not got:
                return
            skip -= len(got)
        while True:
            chunk = stream.read(_CHUNK)
            if not chunk:
                return
            count.feed(chunk)
    except EOFError:
        raise _damaged(path, f"its {codec} stream ends early (the file is truncated)") from None
    except (gzip.BadGzipFile, OSError, zlib.error) as e:
        raise _damaged(path, f"its {codec} stream is corrupt ({error_detail(e)})") from None


def _check_length(path: Path, count: _PayloadCount, expected: int) -> None:
    if count.n_bytes < expected:
        raise _damaged(path, f"it holds {count.n_bytes:,} bytes of voxel data where its header announces "
                             f"{expected:,} (the file is truncated)")


def _check_spacing(path: Path, spacing, where: str) -> None:
    spacing = [float(s) for s in spacing]
    if not all(np.isfinite(s) and s > 0 for s in spacing):
        raise GenesisUserError(f"{path}: invalid voxel spacing {tuple(spacing)} in its {where}; every spacing "
                               f"must be a finite positive number of millimetres. Fix the header.")


def _opened(path: Path):
    """The file, gunzipped on the fly when it starts with gzip's magic bytes."""
    raw = open(path, "rb")
    if raw.read(2) == b"\x1f\x8b":
        raw.seek(0)
        return raw, True
    raw.seek(0)
    return raw, False


# --------------------------------------------------------------------------------------------
# per format

def _verify_nifti(path: Path) -> None:
    import nibabel

    raw, gz = _opened(path)
    with raw:
        try:
            head = (gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw).read(540)
        except EOFError:
            raise _damaged(path, "its gzip stream ends inside the header (the file is truncated)") from None
        except (gzip.BadGzipFile, OSError, zlib.error) as e:
            raise _damaged(path, f"its gzip stream is corrupt ({error_detail(e)})") from None
        if len(head) < 348:
            raise _damaged(path, f"it is {len(head)} bytes long, shorter than a NIfTI header (the file is truncated)")
        sizes = {struct.unpack("<i", head[:4])[0], struct.unpack(">i", head[:4])[0]}
        if not (348 in sizes and head[344:347] in (b"n+1", b"ni1")) and not (540 in sizes and head[4:7] in (
                b"n+2", b"ni2")):
            raise GenesisUserError(f"{path}: not a NIfTI file (it does not start with a NIfTI-1 or NIfTI-2 "
                                   f"header{', after gunzipping' if gz else ''}).")
        klass = nibabel.Nifti2Header if 540 in sizes else nibabel.Nifti1Header
        try:
            with warnings.catch_warnings():  # nibabel warns about odd extensions; the checks below decide
                warnings.simplefilter("ignore")
                header = klass.from_fileobj(io.BytesIO(head), check=False)
            dims = [int(d) for d in header["dim"][1:int(header["dim"][0]) + 1]]
            dtype = header.get_data_dtype()
            offset = int(header.get_data_offset())
        except Exception as e:  # nibabel's header errors are of several types
            raise GenesisUserError(f"{path}: not a readable NIfTI header ({error_detail(e)}).") from None
        if not dims or min(dims) < 1:
            raise GenesisUserError(f"{path}: its NIfTI header has invalid dimensions {tuple(dims)}.")
        _check_spacing(path, header["pixdim"][1:min(len(dims), 3) + 1], "NIfTI header (pixdim)")
        raw.seek(0)
        count = _PayloadCount(dtype if dtype.kind == "f" else None)
        _stream(path, raw, offset, count, "gzip" if gz else "raw")
    _check_length(path, count, int(np.prod(dims)) * dtype.itemsize)
    if count.non_finite:
        raise GenesisUserError(f"{path}: contains {count.non_finite} NaN/Inf voxels (SimpleITK would read them as "
                               f"0). Replace them with a finite value first.")


_NRRD_TYPES = {"signed char": 1, "int8": 1, "int8_t": 1, "uchar": 1, "unsigned char": 1, "uint8": 1, "uint8_t": 1,
               "short": 2, "short int": 2, "signed short": 2, "signed short int": 2, "int16": 2, "int16_t": 2,
               "ushort": 2, "unsigned short": 2, "unsigned short int": 2, "uint16": 2, "uint16_t": 2,
               "int": 4, "signed int": 4, "int32": 4, "int32_t": 4, "uint": 4, "unsigned int": 4, "uint32": 4,
               "uint32_t": 4, "longlong": 8, "long long": 8, "long long int": 8, "signed long long": 8,
               "signed long long int": 8, "int64": 8, "int64_t": 8, "ulonglong": 8, "unsigned long long": 8,
               "unsigned long long int": 8, "uint64": 8, "uint64_t": 8, "float": 4, "double": 8}


def _text_header(path: Path, separator: str, stop) -> tuple[dict[str, str], int]:
    """Key/value lines of a text header up to the line where ``stop(key)`` holds; returns the
    fields and the byte offset just after the header."""
    fields: dict[str, str] = {}
    offset = 0
    with open(path, "rb") as f:
        for raw_line in iter(lambda: f.readline(1 << 16), b""):
            offset += len(raw_line)
            line = raw_line.decode("latin-1").rstrip("\r\n")
            if not line.strip() and separator == ":":  # NRRD: a blank line ends the header
                break
            if line.startswith("#") or separator not in line:
                continue
            key, value = line.split(separator, 1)
            key = key.strip().lower()
            fields[key] = value.strip().lstrip("=").strip()
            if stop(key):
                break
            if offset > 1 << 20:
                raise GenesisUserError(f"{path}: no end of its text header in the first MiB; not a valid file.")
    return fields, offset


def _numbers(text: str) -> list[float]:
    return [float(v) for v in text.replace("(", " ").replace(")", " ").replace(",", " ").split()
            if v.lower() not in ("none",)]


def _verify_nrrd(path: Path) -> None:
    with open(path, "rb") as f:
        if not f.read(4) == b"NRRD":
            raise GenesisUserError(f"{path}: does not start with the NRRD magic bytes; not a NRRD file.")
    fields, offset = _text_header(path, ":", lambda key: False)
    try:
        sizes = [int(v) for v in fields["sizes"].split()]
        itemsize = _NRRD_TYPES[fields["type"].lower()]
    except (KeyError, ValueError):
        raise GenesisUserError(f"{path}: its NRRD header lacks valid 'sizes' and 'type' fields.") from None
    if "space directions" in fields:
        vectors = [v for v in fields["space directions"].split() if v.lower() != "none"]
        norms = [float(np.linalg.norm(_numbers(v))) if _numbers(v) else float("nan") for v in vectors]
        _check_spacing(path, norms, "NRRD header (space directions)")
    elif "spacings" in fields:
        _check_spacing(path, [v for v in _numbers(fields["spacings"]) if not np.isnan(v)] or [float("nan")],
                       "NRRD header (spacings)")
    encoding = fields.get("encoding", "raw").lower()
    codec = {"raw": "raw", "gzip": "gzip", "gz": "gzip", "bzip2": "bzip2", "bz2": "bzip2"}.get(encoding)
    if codec is None:
        return  # text/hex encodings: SimpleITK's own parser reports short data
    data_file = fields.get("data file") or fields.get("datafile")
    if data_file:
        if data_file.upper().startswith("LIST") or "%" in data_file:
            return  # multi-file data: left to SimpleITK
        target, skip_bytes = path.parent / data_file, 0
        if not target.is_file():
            raise GenesisUserError(f"{path}: its data file {target} is missing.")
    else:
        target, skip_bytes = path, offset
    count = _PayloadCount(None)  # NaN survives SimpleITK's NRRD reader: checked on the array
    with open(target, "rb") as f:
        f.seek(skip_bytes)
        _stream(target, f, 0, count, codec)
    _check_length(target, count, int(np.prod(sizes)) * itemsize)


_META_TYPES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
               "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4,
               "MET_DOUBLE": 8}


def _verify_metaimage(path: Path) -> None:
    fields, offset = _text_header(path, "=", lambda key: key == "elementdatafile")
    try:
        sizes = [int(v) for v in fields["dimsize"].split()]
        itemsize = _META_TYPES[fields["elementtype"].upper()]
        data_file = fields["elementdatafile"]
    except (KeyError, ValueError):
        raise GenesisUserError(f"{path}: its MetaImage header lacks valid DimSize, ElementType and "
                               f"ElementDataFile fields.") from None
    if "elementspacing" in fields:
        _check_spacing(path, _numbers(fields["elementspacing"]), "MetaImage header (ElementSpacing)")
    channels = int(fields.get("elementnumberofchannels", "1") or 1)
    if data_file.upper() == "LOCAL":
        target, skip_bytes = path, offset
    elif data_file.upper().startswith("LIST") or "%" in data_file:
        return  # multi-file data: left to SimpleITK
    else:
        target, skip_bytes = path.parent / data_file, 0
        if not target.is_file():
            raise GenesisUserError(f"{path}: its data file {target} is missing.")
    compressed = fields.get("compresseddata", "false").lower() == "true"
    count = _PayloadCount(None)
    with open(target, "rb") as f:
        f.seek(skip_bytes)
        if compressed:
            decoder = zlib.decompressobj(zlib.MAX_WBITS | 32)  # zlib or gzip header
            try:
                for chunk in iter(lambda: f.read(_CHUNK), b""):
                    count.feed(decoder.decompress(chunk))
                    if decoder.eof:
                        break
            except zlib.error as e:
                raise _damaged(target, f"its compressed data is corrupt ({error_detail(e)})") from None
            if not decoder.eof:
                raise _damaged(target, "its compressed data ends early (the file is truncated)")
        else:
            _stream(target, f, 0, count, "raw")
    _check_length(target, count, int(np.prod(sizes)) * itemsize * channels)


def verify_file(path: str | os.PathLike) -> None:
    """Check one volume file before SimpleITK reads it (see the module docstring)."""
    path = Path(path)
    name = path.name.lower()
    try:
        if name.endswith((".nii", ".nii.gz")):
            _verify_nifti(path)
        elif name.endswith((".nrrd", ".nhdr")):
            _verify_nrrd(path)
        elif name.endswith((".mha", ".mhd")):
            _verify_metaimage(path)
    except (PermissionError, IsADirectoryError) as e:
        raise GenesisUserError(f"{path}: cannot be read ({e.strerror}).") from None


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
            position = _numbers(reader.GetMetaData("0020|0032").replace("\\", " "))
            if normal is None:
                cosines = _numbers(reader.GetMetaData("0020|0037").replace("\\", " "))
                normal = np.cross(cosines[:3], cosines[3:6])
        except RuntimeError as e:
            raise _damaged(Path(name), f"its DICOM header could not be read ({error_detail(e)})") from None
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
    _check_spacing(path, image.GetSpacing(), "geometry")
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
