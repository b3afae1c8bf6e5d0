"""The byte-level checks of one volume file, run before SimpleITK reads it.

SimpleITK zero-fills a truncated gzip stream, turns NaN voxels of a NIfTI file into 0,
normalises a NIfTI pixdim of 0, negative or NaN, reads a NIfTI ``vox_offset`` of 0 as voxels
taken from the header bytes, replaces a NaN origin, quaternion or ``Offset`` by 0 or a default
direction and a DICOM PixelSpacing of 0 by 1. So the header is parsed by a kept reader where one
exists (nibabel for NIfTI, pynrrd for NRRD, pydicom for DICOM tags; MetaImage by hand, field by
field) and every spatial field must be finite and consistent; then the compressed or raw payload
is streamed once (constant memory) to prove it complete and, for NIfTI floats, finite. Anything
that is not a regular file (a FIFO would block the reader forever) is refused before it is
opened. ``volumes`` is their one caller.
"""

from __future__ import annotations

import bz2
import errno
import gzip
import io
import os
import stat
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


def field_error(path: Path, where: str, field: str, value, problem: str) -> GenesisUserError:
    """One header field that is not usable: named, with its value, never guessed."""
    return GenesisUserError(f"{path}: its {where} field {field} is {value} ({problem}). A spatial field is not "
                            f"guessed (SimpleITK would replace or misread it), so the file was not used; fix the "
                            f"header.")


def check_input_path(path: Path) -> bool:
    """Refuse what is not a regular file or folder before anything opens it (a FIFO or device
    would block the reader; a dangling symlink or a loop would be reported as missing).
    Returns True for a folder."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise GenesisUserError(f"{path}: is a symlink loop (its links lead back to themselves, so it names no "
                                   f"file); point it at the real file.") from None
        if isinstance(e, FileNotFoundError) and os.path.islink(path):
            raise GenesisUserError(f"{path}: is a dangling symlink: it points to {os.readlink(path)}, which does not "
                                   f"exist. Fix the link or give the file itself.") from None
        if isinstance(e, FileNotFoundError):
            raise GenesisUserError(f"{path}: does not exist.") from None
        raise GenesisUserError(f"{path}: cannot be read ({e.strerror}).") from None
    if stat.S_ISDIR(mode):
        return True
    if not stat.S_ISREG(mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode)
                else "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "special")
        raise GenesisUserError(f"{path}: is {kind}, not a regular file; it was not opened (reading it could block "
                               f"forever). Give the volume file itself.")
    return False


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


def _check_length(path: Path, target: Path, count: _PayloadCount, expected: int) -> None:
    if count.n_bytes >= expected:
        return
    if target != path:
        raise GenesisUserError(f"{path}: its data file {target} is shorter than the header needs: it holds "
                               f"{count.n_bytes:,} bytes of voxel data where the header announces {expected:,} (the "
                               f"data file is truncated). It was not used; replace it with an intact copy.")
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
        _check_nifti_space(path, header, offset, 544 if klass is nibabel.Nifti2Header else 352)
        raw.seek(0)
        count = _PayloadCount(dtype if dtype.kind == "f" else None)
        _stream(path, raw, offset, count, "gzip" if gz else "raw")
    _check_length(path, path, count, int(np.prod(dims)) * dtype.itemsize)
    if count.non_finite:
        raise GenesisUserError(f"{path}: contains {count.non_finite} NaN/Inf voxels (SimpleITK would read them as "
                               f"0). Replace them with a finite value first.")


_NIFTI_SPACE_FIELDS = ("quatern_b", "quatern_c", "quatern_d", "qoffset_x", "qoffset_y", "qoffset_z", "srow_x",
                       "srow_y", "srow_z")


def _check_nifti_space(path: Path, header, offset: int, header_size: int) -> None:
    """vox_offset past the header (else SimpleITK reads header bytes as voxels); origin,
    quaternion and sform finite (else read as 0 or a default direction); a used quaternion a
    rotation and a used sform invertible."""
    if offset < header_size:
        raise GenesisUserError(f"{path}: its NIfTI header field vox_offset is {offset}, inside the {header_size}-byte "
                               f"header: SimpleITK would read the header bytes as voxels. The file was not used; fix "
                               f"vox_offset (at least {header_size}).")
    where = "NIfTI header"
    qfac = float(header["pixdim"][0])
    if not np.isfinite(qfac):
        raise field_error(path, where, "pixdim[0] (qfac)", qfac, "not a finite number")
    for name in _NIFTI_SPACE_FIELDS:
        value = np.asarray(header[name], dtype=float)
        if not np.isfinite(value).all():
            raise field_error(path, where, name, value.tolist() if value.ndim else float(value), "not finite")
    if int(header["qform_code"]) > 0:
        b, c, d = (float(header[f"quatern_{k}"]) for k in "bcd")
        if b * b + c * c + d * d > 1 + 1e-4:
            raise field_error(path, where, "quatern_b/c/d", (b, c, d), f"b\u00b2+c\u00b2+d\u00b2 = "
                              f"{b * b + c * c + d * d:.4g} > 1, not a rotation")
    if int(header["sform_code"]) > 0:
        matrix = np.array([header["srow_x"][:3], header["srow_y"][:3], header["srow_z"][:3]], dtype=float)
        if _singular(matrix):
            raise GenesisUserError(f"{path}: its direction matrix is singular (the NIfTI sform srow_x/y/z rotation "
                                   f"part {matrix.round(6).tolist()} has no inverse), so it does not place the "
                                   f"voxels in space. The file was not used; fix the header.")


def _singular(vectors: np.ndarray) -> bool:
    """Whether the rows (axis vectors) are zero or linearly dependent, scale apart."""
    norms = np.linalg.norm(vectors, axis=1)
    if not np.all(norms > 0):
        return True
    unit = vectors / norms[:, None]
    return bool(np.linalg.svd(unit, compute_uv=False).min() < 1e-6)


_NRRD_TYPES = {"signed char": 1, "int8": 1, "int8_t": 1, "uchar": 1, "unsigned char": 1, "uint8": 1, "uint8_t": 1,
               "short": 2, "short int": 2, "signed short": 2, "signed short int": 2, "int16": 2, "int16_t": 2,
               "ushort": 2, "unsigned short": 2, "unsigned short int": 2, "uint16": 2, "uint16_t": 2,
               "int": 4, "signed int": 4, "int32": 4, "int32_t": 4, "uint": 4, "unsigned int": 4, "uint32": 4,
               "uint32_t": 4, "longlong": 8, "long long": 8, "long long int": 8, "signed long long": 8,
               "signed long long int": 8, "int64": 8, "int64_t": 8, "ulonglong": 8, "unsigned long long": 8,
               "unsigned long long int": 8, "uint64": 8, "uint64_t": 8, "float": 4, "double": 8}


def _nrrd_header(path: Path) -> tuple[dict, int]:
    """The header parsed by pynrrd and the byte offset after it; a field pynrrd cannot parse
    is named (each line is parsed alone to find it)."""
    import nrrd

    with open(path, "rb") as f:
        if f.read(4) != b"NRRD":
            raise GenesisUserError(f"{path}: does not start with the NRRD magic bytes; not a NRRD file.")
        f.seek(0)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                header = nrrd.read_header(f)
            return header, f.tell()
        except (nrrd.NRRDError, ValueError, TypeError, IndexError, UnicodeError) as e:
            problem = error_detail(e)
        f.seek(0)
        lines = f.read(1 << 20).split(b"\n\n", 1)[0].decode("latin-1").splitlines()
    for line in lines[1:]:
        try:
            nrrd.read_header([lines[0], line])
        except (nrrd.NRRDError, ValueError, TypeError, IndexError) as e:
            field, _, value = line.partition(":")
            raise field_error(path, "NRRD header", f"'{field.strip()}'", repr(value.lstrip("=").strip()[:80]),
                              f"not parsable: {error_detail(e)}") from None
    raise GenesisUserError(f"{path}: its NRRD header cannot be parsed ({problem}).")


def _verify_nrrd(path: Path) -> None:
    header, offset = _nrrd_header(path)
    where = "NRRD header"
    try:
        sizes = [int(v) for v in header["sizes"]]
        itemsize = _NRRD_TYPES[str(header["type"]).lower()]
    except (KeyError, ValueError, TypeError):
        raise GenesisUserError(f"{path}: its NRRD header lacks valid 'sizes' and 'type' fields.") from None
    if "space directions" in header:
        rows = np.asarray(header["space directions"], dtype=float)
        if rows.ndim != 2 or len(rows) != len(sizes):
            raise field_error(path, where, "'space directions'", rows.tolist(), f"{len(rows)} vectors where 'sizes' "
                              f"has {len(sizes)} axes")
        spatial = rows[~np.isnan(rows).all(axis=1)]  # 'none' rows: non-spatial axes
        if not np.isfinite(spatial).all():
            raise field_error(path, where, "'space directions'", spatial.tolist(), "not finite")
        check_spacing(path, np.linalg.norm(spatial, axis=1) if len(spatial) else [float("nan")],
                      "NRRD header (space directions)")
        if _singular(spatial):
            raise GenesisUserError(f"{path}: its direction matrix is singular (the NRRD 'space directions' "
                                   f"{spatial.tolist()} are linearly dependent), so it does not place the voxels "
                                   f"in space. The file was not used; fix the header.")
    elif "spacings" in header:
        spacings = np.asarray(header["spacings"], dtype=float)
        check_spacing(path, spacings[~np.isnan(spacings)].tolist() or [float("nan")], "NRRD header (spacings)")
    if "space origin" in header:
        origin = np.asarray(header["space origin"], dtype=float)
        if not np.isfinite(origin).all():
            raise field_error(path, where, "'space origin'", origin.tolist(), "not finite")
    encoding = str(header.get("encoding", "raw")).lower()
    codec = {"raw": "raw", "gzip": "gzip", "gz": "gzip", "bzip2": "bzip2", "bz2": "bzip2"}.get(encoding)
    if codec is None:
        return  # text/hex encodings: SimpleITK's own parser reports short data
    data_file = header.get("data file") or header.get("datafile")
    if data_file:
        data_file = str(data_file)
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
    _check_length(path, target, count, int(np.prod(sizes)) * itemsize)


_META_TYPES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
               "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4,
               "MET_DOUBLE": 8}


def _metaimage_header(path: Path) -> tuple[dict[str, tuple[str, str]], int]:
    """``key = value`` lines up to ElementDataFile (which ends a MetaImage header); returns
    {lower-case key: (key, value)} and the byte offset just after the header."""
    fields: dict[str, tuple[str, str]] = {}
    offset = 0
    with open(path, "rb") as f:
        for raw_line in iter(lambda: f.readline(1 << 16), b""):
            offset += len(raw_line)
            line = raw_line.decode("latin-1").rstrip("\r\n")
            if "=" in line and not line.startswith("#"):
                key, value = line.split("=", 1)
                fields[key.strip().lower()] = (key.strip(), value.strip())
                if key.strip().lower() == "elementdatafile":
                    break
            if offset > 1 << 20:
                raise GenesisUserError(f"{path}: no ElementDataFile line in the first MiB; not a MetaImage file.")
    return fields, offset


def _meta_numbers(path: Path, fields, key: str, count: int | None, kind=float) -> np.ndarray | None:
    """The numbers of one MetaImage field (None when absent); refused, named, when they do not
    parse, are not finite or are not ``count`` many."""
    if key not in fields:
        return None
    name, text = fields[key]
    try:
        values = np.array([kind(v) for v in text.split()], dtype=float)
    except ValueError:
        raise field_error(path, "MetaImage header", name, repr(text[:80]), "not a list of numbers") from None
    if count is not None and values.size != count:
        raise field_error(path, "MetaImage header", name, repr(text[:80]), f"{values.size} values where NDims "
                          f"needs {count}")
    if not np.isfinite(values).all():
        raise field_error(path, "MetaImage header", name, repr(text[:80]), "not finite")
    return values


def _verify_metaimage(path: Path) -> None:
    fields, offset = _metaimage_header(path)
    try:
        itemsize = _META_TYPES[fields["elementtype"][1].upper()]
        data_file = fields["elementdatafile"][1]
        sizes = _meta_numbers(path, fields, "dimsize", None, int)
        fields["dimsize"]
    except KeyError:
        raise GenesisUserError(f"{path}: its MetaImage header lacks valid DimSize, ElementType and "
                               f"ElementDataFile fields.") from None
    ndims = _meta_numbers(path, fields, "ndims", 1, int)
    n = int(ndims[0]) if ndims is not None else sizes.size
    if sizes is None or sizes.size != n or not np.all(sizes >= 1):
        raise GenesisUserError(f"{path}: its MetaImage header field DimSize ({fields['dimsize'][1]!r}) does not "
                               f"give {n} sizes of at least 1.")
    for key in ("elementspacing", "elementsize"):
        spacing = _meta_numbers(path, fields, key, n)
        if spacing is not None:
            check_spacing(path, spacing, f"MetaImage header ({fields[key][0]})")
    for key in ("offset", "origin", "position", "centerofrotation"):
        _meta_numbers(path, fields, key, n)
    for key in ("transformmatrix", "rotation", "orientation"):
        matrix = _meta_numbers(path, fields, key, n * n)
        if matrix is not None and _singular(matrix.reshape(n, n)):
            raise GenesisUserError(f"{path}: its direction matrix is singular (MetaImage {fields[key][0]} "
                                   f"{matrix.tolist()} has linearly dependent rows), so it does not place the voxels "
                                   f"in space. The file was not used; fix the header.")
    channels = _meta_numbers(path, fields, "elementnumberofchannels", 1, int)
    channels = int(channels[0]) if channels is not None else 1
    if channels < 1:
        raise field_error(path, "MetaImage header", fields["elementnumberofchannels"][0], channels, "not at least 1")
    if data_file.upper() == "LOCAL":
        target, skip_bytes = path, offset
    elif data_file.upper().startswith("LIST") or "%" in data_file:
        return  # multi-file data: left to SimpleITK
    else:
        target, skip_bytes = path.parent / data_file, 0
        if not target.is_file():
            raise GenesisUserError(f"{path}: its data file {target} is missing.")
    compressed = fields.get("compresseddata", ("", "false"))[1].lower() == "true"
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
    _check_length(path, target, count, int(np.prod(sizes)) * itemsize * channels)


def dicom_slice_geometry(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ImagePositionPatient, ImageOrientationPatient, PixelSpacing)`` of one DICOM slice, read
    by pydicom; refused, named, when missing, not parsable, of the wrong count or not finite,
    or with a spacing that is not positive (SimpleITK reads a PixelSpacing of 0 as 1)."""
    import pydicom

    try:
        with warnings.catch_warnings():  # pydicom warns about invalid values and keeps them as text: refused below
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=True)
    except pydicom.errors.InvalidDicomError:  # pydicom's own text advises force=True: not passed on
        raise damaged(path, "it is not a DICOM file (it has no DICOM preamble and file meta information)") from None
    except (OSError, ValueError, EOFError, KeyError, TypeError) as e:
        raise damaged(path, f"its DICOM header could not be read ({error_detail(e)})") from None
    out = []
    for keyword, count in (("ImagePositionPatient", 3), ("ImageOrientationPatient", 6), ("PixelSpacing", 2)):
        try:
            value = ds[keyword].value if keyword in ds else None
        except (ValueError, TypeError, KeyError) as e:
            raise field_error(path, "DICOM header", keyword, "unreadable", error_detail(e)) from None
        items = [] if value is None or value == "" else list(value) if isinstance(value, (list, tuple)) or (
            hasattr(value, "__iter__") and not isinstance(value, (str, bytes))) else [value]
        try:
            numbers = np.array([float(v) for v in items], dtype=float)
        except (ValueError, TypeError):
            raise field_error(path, "DICOM header", keyword, repr("\\".join(map(str, items))[:80]),
                              f"not {count} numbers") from None
        if numbers.size != count:
            raise field_error(path, "DICOM header", keyword, numbers.tolist() if numbers.size else "missing",
                              f"{numbers.size} values where {count} are needed")
        if not np.isfinite(numbers).all():
            raise field_error(path, "DICOM header", keyword, numbers.tolist(), "not finite")
        out.append(numbers)
    position, cosines, spacing = out
    if not np.all(spacing > 0):
        raise field_error(path, "DICOM header", "PixelSpacing", spacing.tolist(), "every spacing must be a positive "
                          "number of millimetres; SimpleITK would read 0 as 1.0")
    if _singular(cosines.reshape(2, 3)):
        raise GenesisUserError(f"{path}: its direction matrix is singular (DICOM ImageOrientationPatient "
                               f"{cosines.tolist()} has parallel or zero row and column vectors). The file was not "
                               f"used; fix the header.")
    return position, cosines, spacing


def verify_file(path: str | os.PathLike) -> None:
    """Check one volume file before SimpleITK reads it (see the module docstring)."""
    path = Path(path)
    name = path.name.lower()
    try:
        if check_input_path(path):
            raise GenesisUserError(f"{path}: is a folder, not a volume file.")
        if name.endswith((".nii", ".nii.gz")):
            _verify_nifti(path)
        elif name.endswith((".nrrd", ".nhdr")):
            _verify_nrrd(path)
        elif name.endswith((".mha", ".mhd")):
            _verify_metaimage(path)
    except (PermissionError, IsADirectoryError) as e:
        raise GenesisUserError(f"{path}: cannot be read ({e.strerror}).") from None
