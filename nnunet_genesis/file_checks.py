"""The byte-level checks of one volume file, run before SimpleITK reads it.

SimpleITK zero-fills a truncated gzip stream, turns NaN voxels of a NIfTI file into 0 and
normalises a NIfTI pixdim of 0, negative or NaN. These checks read the header's own spacing and
stream the compressed or raw payload once (constant memory) to prove it complete and, for NIfTI
floats, finite. ``volumes.read_image`` is their one caller for files.
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

_CHUNK = 1 << 22  # bytes per step of the streaming check (4 MiB: constant memory on large files)


def error_detail(e: Exception) -> str:
    """The last non-empty line of an exception (SimpleITK puts the reason there)."""
    lines = [line for line in str(e).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(e).__name__


def damaged(path: Path, problem: str) -> GenesisUserError:
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
        raise damaged(path, f"its {codec} stream ends early (the file is truncated)") from None
    except (gzip.BadGzipFile, OSError, zlib.error) as e:
        raise damaged(path, f"its {codec} stream is corrupt ({error_detail(e)})") from None


def _check_length(path: Path, count: _PayloadCount, expected: int) -> None:
    if count.n_bytes < expected:
        raise damaged(path, f"it holds {count.n_bytes:,} bytes of voxel data where its header announces "
                             f"{expected:,} (the file is truncated)")


def check_spacing(path: Path, spacing, where: str) -> None:
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
            raise damaged(path, "its gzip stream ends inside the header (the file is truncated)") from None
        except (gzip.BadGzipFile, OSError, zlib.error) as e:
            raise damaged(path, f"its gzip stream is corrupt ({error_detail(e)})") from None
        if len(head) < 348:
            raise damaged(path, f"it is {len(head)} bytes long, shorter than a NIfTI header (the file is truncated)")
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
        check_spacing(path, header["pixdim"][1:min(len(dims), 3) + 1], "NIfTI header (pixdim)")
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


def numbers_in(text: str) -> list[float]:
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
        norms = [float(np.linalg.norm(numbers_in(v))) if numbers_in(v) else float("nan") for v in vectors]
        check_spacing(path, norms, "NRRD header (space directions)")
    elif "spacings" in fields:
        check_spacing(path, [v for v in numbers_in(fields["spacings"]) if not np.isnan(v)] or [float("nan")],
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
        check_spacing(path, numbers_in(fields["elementspacing"]), "MetaImage header (ElementSpacing)")
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
                raise damaged(target, f"its compressed data is corrupt ({error_detail(e)})") from None
            if not decoder.eof:
                raise damaged(target, "its compressed data ends early (the file is truncated)")
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
