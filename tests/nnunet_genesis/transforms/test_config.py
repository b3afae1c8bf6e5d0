import json

import pytest

from nnunet_genesis.transforms import GenesisConfig


def test_defaults_are_the_papers():
    c = GenesisConfig()
    assert (c.flip_rate, c.local_rate, c.nonlinear_rate, c.paint_rate, c.outpaint_rate) == (0.4, 0.5, 0.9, 0.9, 0.8)
    assert c.shuffle_blocks == 10_000 and c.shuffle_max_block_fraction == 0.1
    assert c.inpaint_box_fraction == pytest.approx((1 / 6, 1 / 3))
    assert c.outpaint_box_fraction == pytest.approx((3 / 7, 4 / 7))
    assert c.max_boxes == 5 and c.paint_border == 3 and c.nonlinear_invert_rate == 0.5


def test_dict_roundtrip_through_json():
    c = GenesisConfig(flip_rate=0.1, shuffle_blocks=7, inpaint_box_fraction=(0.2, 0.25))
    d = json.loads(json.dumps(c.to_dict()))
    assert GenesisConfig.from_dict(d) == c
    assert GenesisConfig.from_dict(GenesisConfig().to_dict()) == GenesisConfig()


@pytest.mark.parametrize("kwargs", [
    dict(flip_rate=-0.1), dict(local_rate=1.5), dict(paint_rate=float("nan")), dict(outpaint_rate="0.5"),
    dict(nonlinear_invert_rate=True), dict(shuffle_blocks=-1), dict(shuffle_blocks=1.5),
    dict(max_boxes=0), dict(paint_border=-1), dict(bezier_lut_size=1), dict(shuffle_max_block_fraction=0.0),
    dict(shuffle_max_block_fraction=1.2), dict(inpaint_box_fraction=(0.4, 0.2)), dict(outpaint_box_fraction=(0.0, 0.5)),
    dict(outpaint_box_fraction=(0.5,)), dict(inpaint_box_fraction=(0.1, 1.5)),
])
def test_bad_values_raise_value_error(kwargs):
    with pytest.raises(ValueError, match="GenesisConfig"):
        GenesisConfig(**kwargs)


def test_from_dict_rejects_unknown_keys_and_non_mappings():
    with pytest.raises(ValueError, match="unknown keys"):
        GenesisConfig.from_dict({"flip_rate": 0.4, "flop_rate": 1})
    with pytest.raises(ValueError, match="mapping"):
        GenesisConfig.from_dict([("flip_rate", 0.4)])


def test_presets():
    from nnunet_genesis.transforms.config import PRESETS

    assert GenesisConfig.preset("paper") == GenesisConfig()
    mild = GenesisConfig.preset("mild")
    assert (mild.nonlinear_invert_rate, mild.paint_rate, mild.outpaint_rate) == (0.0, 0.5, 0.3)
    assert mild.local_rate == GenesisConfig().local_rate
    assert GenesisConfig.preset("mild", paint_rate=0.2).paint_rate == 0.2
    assert set(PRESETS) >= {"paper", "mild"}
    with pytest.raises(ValueError, match="unknown GenesisConfig preset"):
        GenesisConfig.preset("strong")
