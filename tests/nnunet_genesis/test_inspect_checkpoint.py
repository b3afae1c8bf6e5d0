"""``nnunet-genesis inspect``: metadata and a per-module parameter summary of a checkpoint."""

from __future__ import annotations

import json

import torch

from nnunet_genesis.checkpoint import save_checkpoint
from nnunet_genesis.cli import main
from nnunet_genesis.inspect_checkpoint import group_name, parameter_summary
from nnunet_genesis.network import build_network, universal_genesis_arch


def _small_network_checkpoint(path):
    meta = universal_genesis_arch(1, 1)
    meta["network_kwargs"]["features_per_stage"] = [2, 4, 4, 4, 4, 4]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = build_network(meta, deep_supervision=False)
    meta.update(source="pretrain", patch_size=[32, 64, 64], sources=[f"/data/v{i}.nii.gz" for i in range(25)],
                genesis_config={"flip_rate": 0.4})
    save_checkpoint(path, net.state_dict(), meta)
    return net, meta


def test_group_names_stop_at_the_first_index():
    assert group_name("encoder.stages.0.0.convs.1.conv.weight") == "encoder.stages.0"
    assert group_name("decoder.encoder.stages.3.0.convs.0.norm.bias") == "decoder.encoder.stages.3"
    assert group_name("decoder.transpconvs.2.weight") == "decoder.transpconvs.2"
    assert group_name("head.weight") == "head"


def test_summary_counts_shared_tensors_once():
    a = torch.zeros(3, 4)
    s = parameter_summary({"x.0.w": a, "x.0.alias": a, "y.1.w": torch.zeros(5), "z.0.w": a})
    assert s["total_tensors"] == 4 and s["unique_tensors"] == 2
    assert s["total_values"] == 12 * 3 + 5 and s["unique_values"] == 12 + 5
    z = next(g for g in s["groups"] if g["name"] == "z.0")
    assert z["shared_tensors"] == 1 and z["shares_with"] == ["x.0"]


def test_inspect_prints_metadata_and_parameter_summary(tmp_path, capsys):
    path = tmp_path / "genesis.pth"
    net, meta = _small_network_checkpoint(path)
    assert main(["inspect", str(path)]) == 0
    text = capsys.readouterr().out
    assert "network_class: dynamic_network_architectures.architectures.unet.PlainConvUNet" in text
    assert "features_per_stage: [2, 4, 4, 4, 4, 4]" in text
    assert "sources: (25 items)" in text and "... 15 more" in text
    assert "encoder.stages.5" in text and "repeat(s) of encoder.stages.0" in text
    n_params = sum(p.numel() for p in net.parameters())
    assert f"{n_params:,} values" in text

    assert main(["inspect", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["metadata"] == {**meta, "format_version": 1}
    assert doc["parameters"]["unique_values"] == n_params
    assert doc["parameters"]["total_tensors"] == len(net.state_dict())
    names = [g["name"] for g in doc["parameters"]["groups"]]
    assert names[:6] == [f"encoder.stages.{i}" for i in range(6)]


def test_inspect_without_metadata_and_on_non_checkpoints(tmp_path, capsys):
    plain = tmp_path / "plain.pth"
    torch.save({"network_weights": {"conv.weight": torch.ones(2, 2)}}, plain)
    assert main(["inspect", str(plain)]) == 0
    assert "Metadata: none" in capsys.readouterr().out
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    assert main(["inspect", str(junk)]) == 2
    assert str(junk) in capsys.readouterr().err
    assert main(["inspect", str(tmp_path / "missing.pth")]) == 2
