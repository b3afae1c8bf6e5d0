"""Fault injection for headers and OS-level inputs (issue 31, items 2 and 5), table-driven as
test_fault_injection.py: every spatial header field is verified, never guessed (vox_offset inside
the header, NaN origin / quaternion / sform, NaN NRRD 'space origin' and MHA Offset, garbage
NRRD / MHA / DICOM fields, DICOM PixelSpacing 0, singular directions, a short MetaImage data
file, a truncated DICOM slice), inputs that are not regular files (FIFO, device, dangling
symlink, symlink loop) are refused before they are opened, and the channels of one case must
share one geometry. Each damaged file goes through every command that reads it: preview,
evaluate (prediction and reference), package-msd (prediction and test image), pretrain -i.
"""

from __future__ import annotations

import gzip
import json
import locale
import os
import shutil
import struct
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import SimpleITK as sitk

from fault_harness import TASK, Case, World, check_case, folder_copy, registry

CASES, case = registry()


# ---------------------------------------------------------------------------------------------
# damage helpers (bytes for NIfTI, header text for NRRD / MetaImage / DICOM written by SimpleITK)

def nifti_with(src: Path, dst: Path, *patches: tuple[str, int, tuple]) -> Path:
    """A copy of a gzipped NIfTI-1 file with header fields overwritten: (struct format, byte offset, values)."""
    raw = bytearray(gzip.decompress(src.read_bytes()))
    for fmt, offset, values in patches:
        struct.pack_into(fmt, raw, offset, *values)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(gzip.compress(bytes(raw)))
    return dst


NAN = float("nan")
NIFTI_DAMAGE: dict[str, tuple[tuple, str]] = {  # name -> (patches, needle)
    "vox-offset-0": ((("<f", 108, (0.0,)),), "vox_offset is 0"),
    "vox-offset-100": ((("<f", 108, (100.0,)),), "vox_offset is 100"),
    "nan-qoffset": ((("<h", 252, (1,)), ("<f", 268, (NAN,))), "qoffset_x"),
    "nan-quaternion": ((("<h", 252, (1,)), ("<f", 260, (NAN,))), "quatern_c"),
    "nan-sform-origin": ((("<h", 254, (1,)), ("<f", 292, (NAN,))), "srow_x"),
    "singular-sform": ((("<h", 252, (0,)), ("<h", 254, (1,)), ("<4f", 280, (0.0, 0.0, 0.0, 0.0))),
                       "direction matrix is singular"),
}


def _image_from(src: Path) -> sitk.Image:
    image = sitk.ReadImage(str(src))
    image.SetOrigin((10.0, -20.0, 30.0))
    return image


def text_header_with(src: Path, dst: Path, key: str, value: str | None, separator: str) -> Path:
    """SimpleITK writes ``src`` as ``dst`` (NRRD or MetaImage); then the header line ``key`` is
    replaced by ``key<separator>value`` (added before the data when absent, dropped when None)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(_image_from(src), str(dst), True)
    data = dst.read_bytes()
    end = data.index(b"\n\n") + 1 if dst.suffix == ".nrrd" else data.index(b"ElementDataFile")
    lines = data[:end].decode("latin-1").splitlines()
    new = f"{key}{separator}{value}"
    found = [i for i, line in enumerate(lines) if line.split(separator.strip())[0].strip() == key]
    if found:
        lines[found[0]] = new
    else:
        lines.insert(2, new)
    lines = [line for line in lines if value is not None or line != new]
    dst.write_bytes(("\n".join(lines) + "\n").encode("latin-1") + data[end:])
    return dst


def nrrd_with(key: str, value: str | None):
    return lambda src, dst: text_header_with(src, dst.with_suffix("").with_suffix(".nrrd"), key, value, ": ")


def mha_with(key: str, value: str | None):
    return lambda src, dst: text_header_with(src, dst.with_suffix("").with_suffix(".mha"), key, value, " = ")


def nrrd_spacings(src: Path, dst: Path) -> Path:
    """'spacings' instead of 'space directions', with garbage in it."""
    path = text_header_with(src, dst.with_suffix("").with_suffix(".nrrd"), "spacings", "abc 1 1", ": ")
    data = path.read_bytes()
    end = data.index(b"\n\n")
    lines = [line for line in data[:end].decode().splitlines() if not line.startswith("space")]
    path.write_bytes("\n".join(lines).encode() + data[end:])
    return path


def mhd_short_raw(src: Path, dst: Path) -> Path:
    header = dst.with_suffix("").with_suffix(".mhd")
    header.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(_image_from(src), str(header), False)
    raw = header.with_suffix(".raw")
    raw.write_bytes(raw.read_bytes()[:1000])
    return header


def dicom_series(src: Path, folder: Path) -> Path:
    """A DICOM series written by SimpleITK, one file per slice (as its DICOM series example).

    GDCM's writer leaves the process in the C locale (ASCII text I/O for every later test):
    the locale is restored."""
    saved = locale.setlocale(locale.LC_ALL)
    try:
        return _write_dicom_series(src, folder)
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _write_dicom_series(src: Path, folder: Path) -> Path:
    image = sitk.ReadImage(str(src))
    folder.mkdir(parents=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    direction = image.GetDirection()
    tags = [("0008|0060", "CT"), ("0020|000e", "1.2.826.0.1.3680043.2.1125.1.31"), ("0020|000d", "1.2.826.0.1.2"),
            ("0020|0037", "\\".join(f"{v}" for v in (direction[0], direction[3], direction[6], direction[1],
                                                     direction[4], direction[7])))]
    for i in range(image.GetDepth()):
        piece = image[:, :, i]
        for tag, value in tags:
            piece.SetMetaData(tag, value)
        piece.SetMetaData("0008|0018", f"1.2.826.0.1.3680043.2.1125.1.31.{i + 1}")
        piece.SetMetaData("0020|0013", str(i + 1))
        piece.SetMetaData("0020|0032", "\\".join(map(str, image.TransformIndexToPhysicalPoint((0, 0, i)))))
        piece.SetMetaData("0028|0030", "\\".join(map(str, image.GetSpacing()[:2])))
        writer.SetFileName(str(folder / f"slice_{i:03d}.dcm"))
        writer.Execute(piece)
    return folder


def _dicom_tag_value(path: Path, group: int, element: int, text: str) -> None:
    """Overwrite one text value in place (same length, space padded), explicit or implicit VR."""
    data = bytearray(path.read_bytes())
    at = data.index(struct.pack("<HH", group, element), 132)
    if data[at + 4:at + 6].isalpha():
        length, start = struct.unpack_from("<H", data, at + 6)[0], at + 8
    else:
        length, start = struct.unpack_from("<I", data, at + 4)[0], at + 8
    value = text.encode().ljust(length, b" ")
    assert len(value) == length, (text, length)
    data[start:start + length] = value
    path.write_bytes(bytes(data))


def dicom_with(damage: Callable[[Path], None]):
    def make(src: Path, dst: Path) -> Path:
        folder = dicom_series(src, dst.parent / "series")
        damage(sorted(folder.iterdir())[5])
        return folder
    return make


SOURCE_DAMAGE: dict[str, tuple[Callable[[Path, Path], Path], str]] = {  # name -> (make(src, dst), needle)
    "nrrd-nan-space-origin": (nrrd_with("space origin", "(nan,-20,30)"), "'space origin'"),
    "nrrd-garbage-space-directions": (nrrd_with("space directions", "(abc,0,0) (0,1,0) (0,0,1)"),
                                      "'space directions'"),
    "nrrd-garbage-spacings": (nrrd_spacings, "'spacings'"),
    "nrrd-singular-space-directions": (nrrd_with("space directions", "(1,0,0) (2,0,0) (0,0,1)"),
                                       "direction matrix is singular"),
    "mha-nan-offset": (mha_with("Offset", "nan -20 30"), "Offset"),
    "mha-garbage-element-spacing": (mha_with("ElementSpacing", "abc 1 1"), "ElementSpacing"),
    "mha-garbage-number-of-channels": (mha_with("ElementNumberOfChannels", "abc"), "ElementNumberOfChannels"),
    "mha-singular-transform": (mha_with("TransformMatrix", "1 0 0 1 0 0 0 0 1"), "direction matrix is singular"),
    "mhd-short-data-file": (mhd_short_raw, "shorter than the header needs"),
    "dicom-pixel-spacing-0": (dicom_with(lambda p: _dicom_tag_value(p, 0x28, 0x30, "0\\0")), "PixelSpacing"),
    "dicom-position-abc": (dicom_with(lambda p: _dicom_tag_value(p, 0x20, 0x32, "abc")), "ImagePositionPatient"),
    "dicom-position-two-values": (dicom_with(lambda p: _dicom_tag_value(p, 0x20, 0x32, "1\\2")),
                                  "ImagePositionPatient"),
    "dicom-truncated-slice": (dicom_with(lambda p: p.write_bytes(p.read_bytes()[:300])), "truncated"),
}


def _named(src: Path, damaged: Path) -> str:
    """The name a message must carry: the damaged slice of a series, else the file."""
    if damaged.is_dir():
        return sorted(damaged.iterdir())[5].name
    return damaged.name


# ---------------------------------------------------------------------------------------------
# OS-level inputs: not regular files

def fifo(dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(dst)
    return dst


def device(dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink("/dev/zero", dst)
    return dst


def dangling(dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(dst.parent / "gone.nii.gz", dst)
    return dst


def loop(dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    other = dst.parent / ("other_" + dst.name)
    os.symlink(other, dst)
    os.symlink(dst, other)
    return dst


OS_DAMAGE: dict[str, tuple[Callable[[Path], Path], str]] = {
    "fifo": (fifo, "FIFO"),
    "device": (device, "character device"),
    "dangling-symlink": (dangling, "dangling symlink"),
    "symlink-loop": (loop, "symlink loop"),
}


# ---------------------------------------------------------------------------------------------
# routes

def _no_nnunet_env() -> dict[str, str]:
    return {"nnUNet_raw": "", "nnUNet_preprocessed": "", "nnUNet_results": ""}


def _preview(src: Path, t: Path) -> list[str]:
    return ["preview", str(src), "-o", str(t / "out" / "preview.png")]


def _pretrain(t: Path, *sources: str) -> list[str]:
    return ["pretrain", *sources, "-o", str(t / "run"), "--device", "cpu", "--workers", "1", "--spacing", "6", "6",
            "6", "--patch-size", "32", "32", "32", "--prepare-only"]


def _evaluate(pred: Path, ref: Path, t: Path) -> list[str]:
    return ["evaluate", "--pred", str(pred), "--ref", str(ref), "-o", str(t / "out.json"), "--task", TASK]


def _package(pred: Path, images: Path, t: Path) -> list[str]:
    return ["package-msd", "--task", TASK, "--pred", str(pred), "--images", str(images), "-o",
            str(t / "submission.zip")]


def nifti_routes(name: str, patches: tuple, needle: str) -> None:
    def preview(w: World, t: Path) -> Case:
        src = nifti_with(w.ct, t / "ct.nii.gz", *patches)
        return Case(_preview(src, t), (needle, str(src)))

    def pretrain(w: World, t: Path) -> Case:
        src = nifti_with(w.ct, t / "src" / "ct.nii.gz", *patches)
        return Case(_pretrain(t, "-i", str(src)), (needle, str(src)), env=_no_nnunet_env())

    def evaluate_prediction(w: World, t: Path) -> Case:
        pred = folder_copy(w.pred, t / "pred")
        victim = sorted(pred.iterdir())[1]
        nifti_with(w.pred / victim.name, victim, *patches)
        return Case(_evaluate(pred, w.ref, t), (needle, victim.name))

    def evaluate_reference(w: World, t: Path) -> Case:
        ref = folder_copy(w.ref, t / "ref")
        victim = sorted(ref.iterdir())[1]
        nifti_with(w.ref / victim.name, victim, *patches)
        return Case(_evaluate(w.pred, ref, t), (needle, victim.name))

    def package_prediction(w: World, t: Path) -> Case:
        pred = folder_copy(w.test_pred, t / "pred")
        victim = sorted(pred.iterdir())[3]
        nifti_with(w.test_pred / victim.name, victim, *patches)
        return Case(_package(pred, w.images, t), (needle, victim.name))

    def package_test_image(w: World, t: Path) -> Case:
        images = folder_copy(w.images, t / "images")
        victim = sorted(images.iterdir())[3]
        nifti_with(w.images / victim.name, victim, *patches)
        return Case(_package(w.test_pred, images, t), (needle, victim.name))

    for route, make in [("preview", preview), ("pretrain", pretrain), ("evaluate-prediction", evaluate_prediction),
                        ("evaluate-reference", evaluate_reference), ("package-msd-prediction", package_prediction),
                        ("package-msd-test-image", package_test_image)]:
        case(f"{route}/nifti-{name}")(make)


for _name, (_patches, _needle) in NIFTI_DAMAGE.items():
    nifti_routes(_name, _patches, _needle)


for _name, (_make, _needle) in SOURCE_DAMAGE.items():
    def _preview_case(w, t, _make=_make, _needle=_needle):
        src = _make(w.ct, t / "in" / "ct.nii.gz")
        return Case(_preview(src, t), (_needle, _named(w.ct, src)))

    def _pretrain_case(w, t, _make=_make, _needle=_needle):
        src = _make(w.ct, t / "src" / "ct.nii.gz")
        return Case(_pretrain(t, "-i", str(t / "src")), (_needle, _named(w.ct, src)), env=_no_nnunet_env())

    case(f"preview/{_name}")(_preview_case)
    case(f"pretrain/{_name}")(_pretrain_case)


for _name, (_make, _needle) in OS_DAMAGE.items():
    def _preview_case(w, t, _make=_make, _needle=_needle):
        src = _make(t / "in" / "ct.nii.gz")
        return Case(_preview(src, t), (_needle, str(src)))

    def _pretrain_file(w, t, _make=_make, _needle=_needle):
        src = _make(t / "src" / "ct.nii.gz")
        return Case(_pretrain(t, "-i", str(src)), (_needle, str(src)), env=_no_nnunet_env())

    def _pretrain_in_folder(w, t, _make=_make, _needle=_needle):
        shutil.copytree(w.raw_dataset / "imagesTr", t / "src")
        src = _make(t / "src" / "notes")  # no volume suffix: the folder's DICOM scan would open it
        return Case(_pretrain(t, "-i", str(t / "src")), (_needle, str(src)), env=_no_nnunet_env())

    def _evaluate_prediction(w, t, _make=_make, _needle=_needle):
        shutil.copytree(w.pred, t / "pred")
        src = _make(t / "pred" / "hippocampus_999.nii.gz")  # used to be skipped as if it were not there
        return Case(_evaluate(t / "pred", w.ref, t), (_needle, str(src)))

    case(f"preview/{_name}")(_preview_case)
    case(f"pretrain/{_name}")(_pretrain_file)
    case(f"pretrain/{_name}-in-folder")(_pretrain_in_folder)
    case(f"evaluate/prediction-{_name}")(_evaluate_prediction)


@case("preview/fifo-in-dicom-folder")
def _(w, t):
    folder = dicom_series(w.ct, t / "series")
    pipe = fifo(folder / "pipe")
    return Case(_preview(folder, t), ("FIFO", str(pipe)))


# ---------------------------------------------------------------------------------------------
# the channels of one case share one geometry

def _two_channel_dataset(w: World, t: Path, change: Callable[[sitk.Image], None]) -> tuple[Path, Path]:
    raw = folder_copy(w.raw_dataset, t / "Dataset557_Channels")
    (raw / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT", "1": "CT2"},
                                                  "labels": {"background": 0}, "numTraining": 1,
                                                  "file_ending": ".nii.gz"}))
    image = sitk.ReadImage(str(raw / "imagesTr" / "case_0000.nii.gz"))
    change(image)
    second = raw / "imagesTr" / "case_0001.nii.gz"
    sitk.WriteImage(image, str(second), True)
    return raw, second


for _name, _change, _needle in [
    ("spacing", lambda im: im.SetSpacing([s * 1.5 for s in im.GetSpacing()]), "spacing"),
    ("origin", lambda im: im.SetOrigin([o + 5.0 for o in im.GetOrigin()]), "origin"),
    ("direction", lambda im: im.SetDirection((0, 1, 0, 1, 0, 0, 0, 0, 1)), "direction"),
]:
    def _channel_case(w, t, _change=_change, _needle=_needle):
        raw, second = _two_channel_dataset(w, t, _change)
        return Case(_pretrain(t, "-d", str(raw)), (_needle, str(second), str(raw / "imagesTr" / "case_0000.nii.gz")),
                    env=_no_nnunet_env())
    case(f"pretrain/second-channel-other-{_name}")(_channel_case)


# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(CASES))
def test_fault(name, world, tmp_path, capsys, monkeypatch):
    work = tmp_path / "case"
    work.mkdir()
    check_case(CASES[name](world, work), world, work, capsys, monkeypatch)
