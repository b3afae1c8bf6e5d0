import math

import numpy as np
import pytest

from nnunet_genesis.transforms import GenesisConfig, corrupt
from nnunet_genesis.transforms.corrupt import sample_parameters
from nnunet_genesis.transforms.painting import box_edge_range, noise_scale, sample_paint_boxes

INPAINT = GenesisConfig(flip_rate=0.0, local_rate=0.0, nonlinear_rate=0.0, paint_rate=1.0, outpaint_rate=0.0)
OUTPAINT = GenesisConfig(flip_rate=0.0, local_rate=0.0, nonlinear_rate=0.0, paint_rate=1.0, outpaint_rate=1.0)


@pytest.mark.parametrize("outpaint", [False, True])
def test_boxes_have_the_papers_sizes_and_avoid_the_border(outpaint):
    shape = (64, 64, 32)
    low, high = GenesisConfig().outpaint_box_fraction if outpaint else GenesisConfig().inpaint_box_fraction
    counts = set()
    for seed in range(200):
        b = sample_paint_boxes(shape, outpaint, np.random.default_rng(seed), GenesisConfig())
        counts.add(len(b.starts))
        frac = b.sizes / np.array(shape)
        assert np.all(frac >= low - 1e-9) and np.all(frac <= high + 1e-9)
        assert np.all(b.starts >= 3) and np.all(b.starts + b.sizes <= np.array(shape) - 3)
    assert counts == {1, 2, 3, 4, 5}


def border_mask(shape, width=3):
    m = np.ones(shape, bool)
    m[width:-width, width:-width, width:-width] = False
    return m


def replayed_boxes(shape, seed, outpaint, cfg):
    """The boxes corrupt() draws with this seed (its draws are sample_parameters')."""
    boxes = sample_parameters((1, *shape), np.random.default_rng(seed), cfg).boxes
    assert boxes.outpaint == outpaint
    return boxes


def test_inpainting_fills_exactly_the_boxes_with_noise_in_range(ct_z, boxes_mask):
    image = ct_z
    lo, hi = image.min(), image.max()
    border = border_mask(image.shape[1:])
    fractions = []
    for seed in range(30):
        out, target = corrupt(image, np.random.default_rng(seed), INPAINT)
        changed = out[0] != target[0]
        assert not changed[border].any()
        assert out.min() >= lo and out.max() <= hi
        inside = boxes_mask(replayed_boxes(image.shape[1:], seed, False, INPAINT), image.shape[1:])
        assert not changed[~inside].any()
        assert (inside & ~changed).sum() <= 2  # noise can hit a voxel's own value (p ~ 2**-24)
        fractions.append(changed.mean())
    assert 0.003 < np.mean(fractions) < 5 / 27


def test_outpainting_keeps_boxes_and_fills_the_rest_with_noise(ct_z, boxes_mask):
    image = ct_z
    lo, hi = float(image.min()), float(image.max())
    border = border_mask(image.shape[1:])
    for seed in range(20):
        out, target = corrupt(image, np.random.default_rng(seed), OUTPAINT)
        kept = out[0] == target[0]
        inside = boxes_mask(replayed_boxes(image.shape[1:], seed, True, OUTPAINT), image.shape[1:])
        assert kept[inside].all()
        assert (kept & ~inside).sum() <= 2  # noise can hit a voxel's own value (p ~ 2**-24)
        assert not inside[border].any()
        kept = inside
        k = np.argwhere(kept)
        extent = k.max(axis=0) - k.min(axis=0) + 1
        assert np.all(extent >= np.floor(3 / 7 * np.array(image.shape[1:])))
        noise = out[0][~kept]
        assert noise.min() >= lo and noise.max() <= hi
        # uniform in [lo, hi]: mean and spread of a uniform distribution
        assert abs(noise.mean() - (lo + hi) / 2) < 0.02 * (hi - lo)
        assert abs(noise.std() - (hi - lo) / math.sqrt(12)) < 0.02 * (hi - lo)
        assert (noise < 0).mean() > 0.05  # noise follows the z-scored range, negatives included


def test_thin_volumes_are_not_painted():
    assert sample_paint_boxes((6, 40, 40), True, np.random.default_rng(0), GenesisConfig()) is None
    image = np.random.default_rng(0).standard_normal((1, 6, 40, 40)).astype(np.float32)
    out, target = corrupt(image, np.random.default_rng(0), INPAINT)
    assert np.array_equal(out, target)


def test_edge_range_and_noise_scale_edge_cases():
    assert box_edge_range(64, (1 / 6, 1 / 3), 3) == (11, 21)
    assert box_edge_range(7, (3 / 7, 4 / 7), 3) == (1, 1)  # capped to dim - 2 * border
    for lo, hi in [(-1000.0, 3071.0), (-3.2, 7.9), (0.0, 1.0), (5.0, 5.0), (-1e-3, 2e-3)]:
        off, scale = noise_scale(lo, hi)
        top = np.float32(off) + np.float32(1 - 2 ** -24) * scale
        assert np.float32(off) >= np.float32(lo) and top <= np.float32(hi)


def test_visible_blocks_match_a_voxel_level_check(boxes_mask):
    from nnunet_genesis.transforms.local_shuffle import sample_blocks

    shape = (20, 22, 18)
    cfg = GenesisConfig(shuffle_blocks=300, shuffle_max_block_fraction=0.3)
    for outpaint in (True, False):
        boxes = sample_paint_boxes(shape, outpaint, np.random.default_rng(1), cfg)
        blocks = sample_blocks(shape, np.random.default_rng(2), cfg)
        inside = boxes_mask(boxes, shape)
        expected = []
        for st, sz in zip(blocks.starts, blocks.sizes):
            region = inside[tuple(slice(s, s + e) for s, e in zip(st, sz))]
            expected.append(region.any() if outpaint else not any(
                np.all((st >= b0) & (st + sz <= b0 + bs)) for b0, bs in zip(boxes.starts, boxes.sizes)))
        assert np.array_equal(boxes.visible_blocks(blocks), np.array(expected))


def test_kept_boxes_are_mapped_once_where_they_overlap(unique_volume, boxes_mask):
    """Out-painting with the curve: every kept voxel is f(original), one f for the whole patch."""
    cfg = GenesisConfig(flip_rate=0.0, local_rate=0.0, nonlinear_rate=1.0, paint_rate=1.0, outpaint_rate=1.0)
    image = unique_volume((1, 30, 30, 30), seed=2)
    overlapping = 0
    for seed in range(20):
        out, target = corrupt(image, np.random.default_rng(seed), cfg)
        boxes = sample_parameters(image.shape, np.random.default_rng(seed), cfg).boxes  # corrupt's draws
        assert boxes.outpaint
        mask = boxes_mask(boxes, image.shape[1:])
        overlapping += int(mask.sum() < boxes.sizes.prod(axis=1).sum())
        x, y = target[0][mask], out[0][mask]
        d = np.diff(y[np.argsort(x)])
        assert np.all(d >= 0) or np.all(d <= 0), f"seed {seed}: the kept voxels are not one monotone mapping"
    assert overlapping >= 3  # the check ran on patches whose boxes overlap
