"""import-v1: an nnU-Net v1 Generic_UNet checkpoint becomes an equivalent v2 PlainConvUNet.

Needs the nnU-Net 1.x package (``pip install --no-deps nnunet==1.7.1``; ``make test`` installs
it) to build the real v1 network.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nnunet_genesis.checkpoint import load_checkpoint
from nnunet_genesis.cli import main
from nnunet_genesis.import_v1 import _first_part_lengths, v1_key_to_v2
from nnunet_genesis.network import build_network, universal_genesis_arch

V1_POOLS = [[2, 2, 2]] * 4 + [[1, 2, 2]]


def generic_unet(base_features=32, pools=V1_POOLS, num_classes=2):
    """The network nnU-Net v1's nnUNetTrainerV2 builds for 3D (conv pooling and upsampling)."""
    try:
        from nnunet.network_architecture.generic_UNet import Generic_UNet
        from nnunet.network_architecture.initialization import InitWeights_He
    except ImportError as e:  # a missing test dependency is a failure, not a skip
        pytest.fail(f"nnU-Net v1 is needed for this test: pip install --no-deps nnunet==1.7.1 ({e})")
    return Generic_UNet(
        1, base_features, num_classes, len(pools), 2, 2, nn.Conv3d, nn.InstanceNorm3d,
        {"eps": 1e-5, "affine": True}, nn.Dropout3d, {"p": 0, "inplace": True}, nn.LeakyReLU,
        {"negative_slope": 1e-2, "inplace": True}, True, False, lambda x: x, InitWeights_He(1e-2),
        pools, [[3, 3, 3]] * (len(pools) + 1), False, True, True)


def v1_checkpoint_dict(net) -> dict:
    """What nnU-Net v1's NetworkTrainer.save_checkpoint writes (numpy scalars in the curves)."""
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.99, nesterov=True)
    return {
        "epoch": 10,
        "state_dict": net.state_dict(),
        "optimizer_state_dict": opt.state_dict(),
        "lr_scheduler_state_dict": None,
        "plot_stuff": ([np.float64(0.9), np.float64(0.8)], [np.float64(1.0)], [], [np.float32(0.5)]),
        "best_stuff": (3, np.float64(0.7), np.float64(0.6)),
        "amp_grad_scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                            "growth_interval": 2000, "_growth_tracker": 7},
    }


@pytest.fixture(scope="module")
def v1_model(tmp_path_factory):
    net = generic_unet()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in net.named_parameters():  # random weights, norm affine params included
            if ".instnorm." in name:
                p.copy_(torch.rand(p.shape, generator=g) + 0.5 if name.endswith("weight")
                        else torch.randn(p.shape, generator=g) * 0.1)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * (2.0 / p[0].numel()) ** 0.5)
    path = tmp_path_factory.mktemp("v1") / "genesis_nnunet_luna16_006.model"
    torch.save(v1_checkpoint_dict(net), path)
    return path, net.eval()


def test_converted_network_reproduces_v1_outputs(v1_model, tmp_path):
    path, v1 = v1_model
    out = tmp_path / "genesis_universal.pth"
    assert main(["import-v1", str(path), str(out)]) == 0
    ckpt = load_checkpoint(out)
    meta = ckpt.metadata
    assert meta["source"] == "import-v1" and meta["v1_epoch"] == 10
    assert {k: meta[k] for k in universal_genesis_arch(1, 2)} == universal_genesis_arch(1, 2)

    # every v1 tensor lands, unchanged, on its v2 name (the head included)
    v1_sd = v1.state_dict()
    first = _first_part_lengths(v1_sd)
    for key, value in v1_sd.items():
        assert torch.equal(ckpt.network_weights[v1_key_to_v2(key, first)], value), key

    v2 = build_network(meta, deep_supervision=True)
    v2.load_state_dict(ckpt.network_weights)  # strict: aliases included, nothing missing
    v2.eval()
    v1.do_ds = True
    x = torch.randn(1, 1, 16, 64, 64, generator=torch.Generator().manual_seed(1))  # bottleneck 1x2x2
    with torch.no_grad():
        out_v1, out_v2 = v1(x), v2(x)
    assert len(out_v1) == len(out_v2) == 5
    assert out_v2[0].shape == (1, 2, 16, 64, 64)  # full resolution first in both
    for a, b in zip(out_v1, out_v2):
        assert a.shape == b.shape
        assert (a - b).abs().max().item() < 1e-4
    assert out_v1[0].std() > 0.1  # not a degenerate all-constant comparison


def test_refuses_to_overwrite_without_force(v1_model, tmp_path, capsys):
    path, _ = v1_model
    out = tmp_path / "out.pth"
    out.write_bytes(b"precious")
    assert main(["import-v1", str(path), str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert out.read_bytes() == b"precious"
    assert main(["import-v1", str(path), str(out), "--force"]) == 0
    assert load_checkpoint(out).metadata["source"] == "import-v1"


def test_old_numpy_and_legacy_torch_format_accepted(v1_model, tmp_path):
    """Files from 2020 use torch's legacy format and numpy 1.x names (numpy.core.multiarray)."""
    _, v1 = v1_model
    legacy = tmp_path / "legacy.model"
    torch.save(v1_checkpoint_dict(v1), legacy, _use_new_zipfile_serialization=False)
    raw = legacy.read_bytes()
    assert b"numpy._core.multiarray" in raw
    legacy.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert main(["import-v1", str(legacy), str(tmp_path / "out.pth")]) == 0


def test_malicious_pickle_refused_without_running(tmp_path, capsys):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "evil.model"
    torch.save({"state_dict": {"conv_blocks_context.0.blocks.0.conv.weight": torch.zeros(1)},
                "epoch": Payload()}, bad)
    out = tmp_path / "out.pth"
    assert main(["import-v1", str(bad), str(out)]) == 2
    err = capsys.readouterr().err
    assert "refused" in err and str(bad) in err and "Traceback" not in err
    assert not marker.exists() and not out.exists()
    torch.load(bad, weights_only=False)  # the payload is live: an unsafe load would run it
    assert marker.exists()


def test_other_layout_names_first_key_and_shapes(tmp_path, capsys):
    small = generic_unet(base_features=8, pools=[[2, 2, 2]] * 2)
    path = tmp_path / "small.model"
    torch.save({"state_dict": small.state_dict(), "epoch": 1}, path)
    out = tmp_path / "out.pth"
    assert main(["import-v1", str(path), str(out)]) == 2
    err = capsys.readouterr().err
    assert "conv_blocks_context.0.blocks.0.conv.weight" in err
    assert "[8, 1, 3, 3, 3]" in err and "[32, 1, 3, 3, 3]" in err
    assert not out.exists()


def test_not_a_v1_checkpoint(tmp_path, capsys):
    path = tmp_path / "weird.model"
    torch.save({"weights": [1, 2, 3]}, path)
    assert main(["import-v1", str(path), str(tmp_path / "o.pth")]) == 2
    assert "state_dict" in capsys.readouterr().err
    assert main(["import-v1", str(tmp_path / "missing.model"), str(tmp_path / "o.pth")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_the_official_file_is_read_directly_by_content(v1_model, tmp_path):
    """attach, inspect and the trainers take the v1 file as it is (converted in memory as import-v1 converts it),
    whatever its name."""
    from nnunet_genesis.pretrained_sources import read_pretrained

    path, _ = v1_model
    renamed = tmp_path / "weights.bin"
    renamed.write_bytes(path.read_bytes())
    direct = read_pretrained(renamed)
    assert direct.metadata["kind"] == "models-genesis-v1" and direct.metadata["v1_epoch"] == 10
    assert main(["import-v1", str(path), str(tmp_path / "g.pth")]) == 0
    converted = load_checkpoint(tmp_path / "g.pth")
    assert direct.network_weights.keys() == converted.network_weights.keys()
    assert all(torch.equal(direct.network_weights[k], converted.network_weights[k]) for k in direct.network_weights)
    assert direct.metadata["network_kwargs"] == converted.metadata["network_kwargs"]
