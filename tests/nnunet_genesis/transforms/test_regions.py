import numpy as np
import pytest

from nnunet_genesis.transforms import GenesisConfig
from nnunet_genesis.transforms.painting import sample_paint_boxes
from nnunet_genesis.transforms.regions import Region


def region_mask(region, spatial_shape):
    """Boolean (X, Y, Z) volume, true on the region's runs."""
    flat = np.zeros(int(np.prod(spatial_shape)) + 1, np.int8)
    np.add.at(flat, region.first, 1)
    np.add.at(flat, region.stop, -1)
    return (np.cumsum(flat[:-1]) > 0).reshape(spatial_shape)


def test_whole_volume_is_one_run():
    r = Region.whole((4, 5, 6))
    assert r.first.tolist() == [0] and r.stop.tolist() == [120] and r.size == 120
    assert region_mask(r, (4, 5, 6)).all()


@pytest.mark.parametrize("outpaint", [True, False])
def test_kept_and_noise_regions_split_the_volume_along_the_boxes(outpaint, boxes_mask):
    shape = (20, 22, 18)
    for seed in range(10):
        boxes = sample_paint_boxes(shape, outpaint, np.random.default_rng(seed), GenesisConfig())
        inside = boxes_mask(boxes, shape)
        kept, noise = boxes.kept_region(shape), boxes.noise_region(shape)
        assert np.array_equal(region_mask(kept, shape), inside if outpaint else ~inside)
        assert np.array_equal(region_mask(noise, shape), ~region_mask(kept, shape))
        assert kept.size + noise.size == np.prod(shape)


def test_copy_writes_only_the_region_and_rejects_wrong_arrays():
    image = np.random.default_rng(0).standard_normal((2, 6, 7, 8)).astype(np.float32)
    region = Region.of_boxes((6, 7, 8), np.array([[1, 2, 3], [4, 0, 0]]), np.array([[2, 3, 4], [2, 2, 8]]))
    inside = region_mask(region, (6, 7, 8))
    assert inside.sum() == region.size == 2 * 3 * 4 + 2 * 2 * 8
    out = np.full_like(image, 7.0)
    region.copy(image, out)
    assert np.array_equal(out[:, inside], image[:, inside]) and np.all(out[:, ~inside] == 7.0)
    out = np.zeros_like(image)
    Region.whole((6, 7, 8)).copy(image, out)
    assert np.array_equal(out, image)
    with pytest.raises(ValueError, match="float32"):
        region.copy(image, np.zeros(image.shape))
    with pytest.raises(ValueError, match="contiguous"):
        region.copy(image, np.zeros((2, 6, 7, 16), np.float32)[..., ::2])
