"""``nnunet-genesis attach`` on the real preprocessed hippocampus subset."""

from __future__ import annotations

import json

import pytest

from nnunet_genesis.checkpoint import sha256_of
from nnunet_genesis.cli import main


@pytest.fixture()
def preprocessed(hippocampus_preprocessed, monkeypatch):
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(name, str(hippocampus_preprocessed[name]))
    return hippocampus_preprocessed["nnUNet_preprocessed"] / hippocampus_preprocessed["dataset_name"]


def test_attach_writes_variant_reusing_preprocessed_data(preprocessed, make_genesis_checkpoint, tmp_path, capsys):
    ckpt = make_genesis_checkpoint(tmp_path / "genesis.pth")
    rc = main(["attach", "-d", "4", "-c", str(ckpt), "-n", "nnUNetPlans_attachTestA"])
    out = capsys.readouterr().out
    assert rc == 0, out
    source = json.loads((preprocessed / "nnUNetPlans.json").read_text())
    variant = json.loads((preprocessed / "nnUNetPlans_attachTestA.json").read_text())
    assert variant["plans_name"] == "nnUNetPlans_attachTestA"
    # everything but the name and the genesis block is the source plans: same data_identifier etc.
    assert variant["configurations"] == source["configurations"]
    assert {k: v for k, v in variant.items() if k not in ("plans_name", "genesis")} == \
        {k: v for k, v in source.items() if k != "plans_name"}
    block = variant["genesis"]
    assert block["checkpoint"] == str(ckpt.resolve())
    assert block["sha256"] == sha256_of(ckpt)
    assert block["source_plans"] == "nnUNetPlans"
    assert block["checkpoint_metadata"]["source"] == "pretrain"
    # only the 3D configuration is checked; same architecture -> everything transfers
    assert block["transfer_check"] == {"3d_fullres": {"encoder_fraction": 1.0, "decoder_fraction": 1.0}}
    assert "100.0% of encoder" in out and "nnUNetPlans_attachTestA" in out


def test_attach_refuses_to_replace_a_different_variant_without_force(preprocessed, make_genesis_checkpoint,
                                                                     tmp_path, capsys):
    first = make_genesis_checkpoint(tmp_path / "a.pth", seed=1)
    second = make_genesis_checkpoint(tmp_path / "b.pth", seed=2)
    args = ["attach", "-d", "Dataset004_Hippocampus", "-n", "nnUNetPlans_attachTestB"]
    assert main(args + ["-c", str(first)]) == 0
    assert main(args + ["-c", str(first)]) == 0  # same checkpoint again: fine
    capsys.readouterr()
    assert main(args + ["-c", str(second)]) == 2
    err = capsys.readouterr().err
    assert "already exists and differs" in err and str(first.resolve()) in err
    target = preprocessed / "nnUNetPlans_attachTestB.json"
    assert json.loads(target.read_text())["genesis"]["sha256"] == sha256_of(first)
    assert main(args + ["-c", str(second), "--force"]) == 0
    assert json.loads(target.read_text())["genesis"]["sha256"] == sha256_of(second)
    assert not [p for p in preprocessed.iterdir() if p.name.endswith(".tmp")]


def test_attach_never_overwrites_the_source_plans(preprocessed, make_genesis_checkpoint, tmp_path, capsys):
    ckpt = make_genesis_checkpoint(tmp_path / "genesis.pth")
    before = (preprocessed / "nnUNetPlans.json").read_bytes()
    assert main(["attach", "-d", "4", "-c", str(ckpt), "-n", "nnUNetPlans", "--force"]) == 2
    assert "never overwrites the source plans" in capsys.readouterr().err
    assert (preprocessed / "nnUNetPlans.json").read_bytes() == before


def test_attach_refuses_an_incompatible_checkpoint_up_front(preprocessed, make_genesis_checkpoint, tmp_path, capsys):
    ckpt = make_genesis_checkpoint(tmp_path / "narrow.pth", features=[16, 32, 64, 128])
    assert main(["attach", "-d", "4", "-c", str(ckpt), "-n", "nnUNetPlans_attachTestC"]) == 2
    err = capsys.readouterr().err
    assert "cannot be transferred onto configuration '3d_fullres'" in err
    assert "shape" in err and "Traceback" not in err
    assert not (preprocessed / "nnUNetPlans_attachTestC.json").exists()
    # --skip-check only loads and hashes (the trainer then refuses it, see test_nnunet_commands)
    assert main(["attach", "-d", "4", "-c", str(ckpt), "-n", "nnUNetPlans_attachTestC", "--skip-check"]) == 0
    assert json.loads((preprocessed / "nnUNetPlans_attachTestC.json").read_text())["genesis"]["transfer_check"] is None


def test_attach_reports_missing_and_unsafe_checkpoints(preprocessed, tmp_path, capsys):
    import torch

    assert main(["attach", "-d", "4", "-c", str(tmp_path / "nope.pth"), "-n", "nnUNetPlans_attachTestD"]) == 2
    assert "does not exist" in capsys.readouterr().err

    marker = tmp_path / "code_ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"network_weights": {}, "x": Payload()}, tmp_path / "evil.pth")
    assert main(["attach", "-d", "4", "-c", str(tmp_path / "evil.pth"), "-n", "nnUNetPlans_attachTestD"]) == 2
    assert "refused" in capsys.readouterr().err
    assert not marker.exists()
    assert not (preprocessed / "nnUNetPlans_attachTestD.json").exists()


def test_attach_unknown_dataset_is_a_user_error(preprocessed, make_genesis_checkpoint, tmp_path, capsys):
    ckpt = make_genesis_checkpoint(tmp_path / "genesis.pth")
    assert main(["attach", "-d", "987", "-c", str(ckpt)]) == 2
    assert "987" in capsys.readouterr().err
