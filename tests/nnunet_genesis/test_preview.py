import os

import numpy as np
import pytest

from nnunet_genesis.cli import main

CT = "ibsi_STS_002_CT_image.nii.gz"
SMALL = ["--crop", "24", "48", "48"]


def read_png(path):
    import matplotlib.image

    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    return matplotlib.image.imread(path)


def test_preview_writes_a_grid_png_deterministically(ct_dir, tmp_path, capsys):
    out = tmp_path / "sub" / "preview.png"
    assert main(["preview", str(ct_dir / CT), "-o", str(out), "--seed", "3", *SMALL]) == 0
    assert "wrote" in capsys.readouterr().out
    a = read_png(out)
    assert a.shape[0] > 2 * a.shape[1]  # 8 rows x 3 columns
    assert a[..., :3].std() > 0.05  # not a blank image
    again = tmp_path / "again.png"
    assert main(["preview", str(ct_dir / CT), "-o", str(again), "--seed", "3", *SMALL]) == 0
    assert np.array_equal(a, read_png(again))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.png", "sub"]
    assert os.listdir(tmp_path / "sub") == ["preview.png"]  # no temporary files left


def test_preview_reads_nrrd_and_two_channels(ct_dir, tmp_path):
    nrrd = ct_dir / "pyradiomics_lung1_ct.nrrd"
    out = tmp_path / "p.png"
    assert main(["preview", str(nrrd), str(nrrd), "--channel", "1", "-o", str(out), *SMALL]) == 0
    read_png(out)


def test_unreadable_file_is_a_user_error(tmp_path, capsys):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not an image")
    out = tmp_path / "x.png"
    assert main(["preview", str(bad), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "broken.nii.gz" in err and "Traceback" not in err
    assert not out.exists() and sorted(os.listdir(tmp_path)) == ["broken.nii.gz"]


@pytest.mark.parametrize("extra, message", [(["--channel", "1"], "channel"), (["--crop", "0", "4", "4"], "crop")])
def test_bad_options_are_user_errors(ct_dir, tmp_path, capsys, extra, message):
    out = tmp_path / "x.png"
    assert main(["preview", str(ct_dir / CT), "-o", str(out), *extra]) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_output_must_be_png_and_shapes_must_match(ct_dir, tmp_path, capsys):
    assert main(["preview", str(ct_dir / CT), "-o", str(tmp_path / "x.jpg")]) == 2
    assert ".png" in capsys.readouterr().err
    other = ct_dir / "ibsi_STS_008_CT_image.nii.gz"
    assert main(["preview", str(ct_dir / CT), str(other), "-o", str(tmp_path / "x.png")]) == 2
    assert "same shape" in capsys.readouterr().err


def test_missing_file_is_a_user_error(tmp_path, capsys):
    assert main(["preview", str(tmp_path / "nope.nii.gz"), "-o", str(tmp_path / "x.png")]) == 2
    assert "nope.nii.gz" in capsys.readouterr().err
