"""The one verification of network weights (``checkpoint.verify_network_weights``) every route runs, and
the verified load of nnU-Net training checkpoints (``load_training_checkpoint``, used by ``--c``)."""

from __future__ import annotations

import pytest
import torch

from nnunet_genesis.checkpoint import load_training_checkpoint, verify_network_weights
from nnunet_genesis.errors import GenesisUserError


def _bn_state() -> dict[str, torch.Tensor]:
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3), torch.nn.BatchNorm3d(2))
    return dict(net.state_dict())


def test_integer_buffers_pass_and_float_weights_must_be_floats():
    state = _bn_state()
    assert state["1.num_batches_tracked"].dtype == torch.int64
    verify_network_weights(state, "f.pth")  # BatchNorm's step counter may be an integer
    verify_network_weights({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, "f.pth")
    with pytest.raises(GenesisUserError, match=r"f\.pth: 'network_weights' entry '0\.weight' is stored as int32"):
        verify_network_weights({**state, "0.weight": state["0.weight"].int()}, "f.pth")


@pytest.mark.parametrize("value, needle", [(float("nan"), "1 NaN value"), (float("inf"), "1 infinite value")])
def test_non_finite_values_are_named_by_key(value, needle):
    state = _bn_state()
    state["1.bias"] = state["1.bias"].clone()
    state["1.bias"][0] = value
    with pytest.raises(GenesisUserError, match=needle) as e:
        verify_network_weights(state, "f.pth")
    assert "'1.bias'" in str(e.value)


def test_training_checkpoint_keys_and_shapes_are_checked_against_the_network(tmp_path):
    state = _bn_state()
    base = {"optimizer_state": {}, "current_epoch": 3, "init_args": {}, "logging": {}, "_best_ema": None}
    path = tmp_path / "checkpoint_latest.pth"
    torch.save({**base, "network_weights": {f"module.{k}": v for k, v in state.items()}}, path)
    assert load_training_checkpoint(path, state)["current_epoch"] == 3  # DDP's prefix, as nnU-Net drops it
    torch.save({**base, "network_weights": {**state, "0.weight": torch.zeros(4, 1, 3, 3, 3)}}, path)
    with pytest.raises(GenesisUserError, match=r"'0\.weight' has shape \[4, 1, 3, 3, 3\] but this trainer's "
                                               r"network needs \[2, 1, 3, 3, 3\]"):
        load_training_checkpoint(path, state)
    torch.save({**base, "network_weights": {k: v for k, v in state.items() if k != "1.running_var"}}, path)
    with pytest.raises(GenesisUserError, match=r"lacks '1\.running_var'"):
        load_training_checkpoint(path, state)
    torch.save({"network_weights": state}, path)
    with pytest.raises(GenesisUserError, match="is not an nnU-Net training checkpoint"):
        load_training_checkpoint(path, state)
