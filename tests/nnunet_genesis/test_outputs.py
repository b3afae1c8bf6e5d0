"""The one writer and the one output check (nnunet_genesis/outputs.py): OS faults as exit-2 errors with
no temp file left, temp names within the name limit, outputs that never replace what is not ours."""

from __future__ import annotations

import errno
import json
import os

import pytest

from nnunet_genesis import outputs
from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.outputs import (atomic_write_text, check_output_dir, check_output_file, json_object_with,
                                    new_figure, png_written_by_us, save_figure, written_then_renamed)


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "file system is full"), (errno.EROFS, "read-only"),
                                         (errno.EACCES, "permission denied"), (errno.EDQUOT, "quota")])
def test_os_faults_while_writing_are_user_errors_and_leave_no_temp(tmp_path, monkeypatch, code, words):
    def fail(*a, **k):
        raise OSError(code, os.strerror(code))
    monkeypatch.setattr(outputs.os, "replace", fail)
    with pytest.raises(GenesisUserError) as e:
        atomic_write_text(tmp_path / "out.json", "{}")
    assert words in str(e.value) and str(tmp_path / "out.json") in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_os_fault_creating_the_temp_file_is_a_user_error(tmp_path, monkeypatch):
    def fail(*a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))
    monkeypatch.setattr(outputs.tempfile, "mkstemp", fail)
    with pytest.raises(GenesisUserError, match="read-only"):
        atomic_write_text(tmp_path / "out.json", "{}")


def test_a_wrapped_error_on_a_full_disk_says_so(tmp_path, monkeypatch):
    """torch, SimpleITK and zipfile wrap the OS error; the writer looks at the file system."""
    monkeypatch.setattr(outputs, "_disk_full", lambda folder: True)
    with pytest.raises(GenesisUserError, match="file system is full"):
        with written_then_renamed(tmp_path / "c.pth"):
            raise RuntimeError("PytorchStreamWriter failed writing file data/0")
    assert list(tmp_path.iterdir()) == []


def test_other_errors_pass_through_and_remove_the_temp(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with written_then_renamed(tmp_path / "c.pth"):
            1 / 0
    assert list(tmp_path.iterdir()) == []


def test_temp_names_of_long_outputs_stay_within_the_limit(tmp_path):
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    for length in (limit - 5, limit - 14, limit):
        name = "a" * (length - 5) + ".json"
        with written_then_renamed(tmp_path / name) as tmp:
            assert len(tmp.name) <= limit
            tmp.write_text("{}")
        assert (tmp_path / name).read_text() == "{}"
    assert len(list(tmp_path.iterdir())) == 3


def test_an_output_name_over_the_limit_is_refused_before_work(tmp_path):
    with pytest.raises(GenesisUserError, match="bytes long"):
        check_output_file(tmp_path / ("x" * 300 + ".json"), "-o")
    with pytest.raises(GenesisUserError, match="bytes long"):
        check_output_dir(tmp_path / ("x" * 300) / "sub", "-o")


def test_dangling_symlinks_and_files_as_parents_are_refused(tmp_path):
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "file").write_text("x")
    for parent in ("link", "loop"):
        with pytest.raises(GenesisUserError, match="symbolic link"):
            check_output_file(tmp_path / parent / "o.json", "-o")
        with pytest.raises(GenesisUserError, match="symbolic link"):
            check_output_dir(tmp_path / parent, "-o")
    with pytest.raises(GenesisUserError, match="is a file, not a folder"):
        check_output_file(tmp_path / "file" / "o.json", "-o")


def test_reserved_names_and_inputs_are_refused_even_with_overwrite(tmp_path):
    for name in ("dataset.json", "dataset_fingerprint.json", "splits_final.json", "plans.json"):
        with pytest.raises(GenesisUserError, match="nnU-Net uses"):
            check_output_file(tmp_path / name, "-o", overwrite=True)
    src = tmp_path / "in.pth"
    src.write_bytes(b"x")
    with pytest.raises(GenesisUserError, match="is an input"):
        check_output_file(tmp_path / "sub" / ".." / "in.pth", "OUT", overwrite=True, inputs=[src])
    (tmp_path / "alias.pth").symlink_to(src)
    with pytest.raises(GenesisUserError, match="is an input"):
        check_output_file(tmp_path / "alias.pth", "OUT", overwrite=True, inputs=[src])


def test_overwrite_replaces_only_what_ours_recognises(tmp_path):
    ours = json_object_with(format="x/1")
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"format": "x/1"}))
    assert check_output_file(path, "-o", ours=ours) == path
    path.write_text(json.dumps({"mine": True}))
    with pytest.raises(GenesisUserError, match="not written by this command"):
        check_output_file(path, "-o", ours=ours)
    path.write_bytes(b"\xff\x00 binary")
    with pytest.raises(GenesisUserError, match="not written by this command"):
        check_output_file(path, "-o", ours=ours)
    with pytest.raises(GenesisUserError, match="--force"):
        check_output_file(path, "-o", overwrite=False, ours=ours)


def test_our_figures_are_recognised(tmp_path):
    fig = new_figure(figsize=(1, 1))
    fig.subplots()
    save_figure(fig, tmp_path / "f.png")
    assert png_written_by_us(tmp_path / "f.png")
    (tmp_path / "g.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    assert not png_written_by_us(tmp_path / "g.png")
