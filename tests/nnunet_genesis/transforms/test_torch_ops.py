"""The torch batch path: properties, and agreement in distribution with the NumPy path."""

import math

import numpy as np
import pytest
import torch

from nnunet_genesis.transforms import GenesisConfig, corrupt, corrupt_batch
from nnunet_genesis.transforms.local_shuffle import max_block_edges
from nnunet_genesis.transforms.torch_ops import shuffle_capacity

NONE = dict(flip_rate=0.0, local_rate=0.0, nonlinear_rate=0.0, paint_rate=0.0)
FLIPS = [(), (1,), (2,), (3,), (1, 2), (1, 3), (2, 3), (1, 2, 3)]


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_shapes_dtypes_target_and_determinism(ct_z):
    ct_z = np.ascontiguousarray(ct_z[:, :16, :40, :32])
    x = torch.from_numpy(np.concatenate([ct_z[None]] * 3))  # (3, 1, 16, 40, 32)
    a, t = corrupt_batch(x, gen(0))
    b, u = corrupt_batch(x, gen(0))
    c, _ = corrupt_batch(x, gen(1))
    assert a.shape == t.shape == x.shape and a.dtype == t.dtype == torch.float32
    assert torch.equal(a, b) and torch.equal(t, u) and not torch.equal(a, c)
    for i in range(3):
        assert any(np.array_equal(np.flip(ct_z, f), t[i].numpy()) for f in FLIPS)
    assert torch.equal(x, torch.from_numpy(np.concatenate([ct_z[None]] * 3)))  # input untouched
    # samples draw independently
    assert not all(torch.equal(a[0], a[i]) for i in (1, 2))


def test_shuffle_moves_values_only_within_block_reach_same_for_all_channels(unique_volume):
    shape = (2, 24, 24, 16)
    one = unique_volume((1,) + shape[1:], seed=3)
    img = np.concatenate([one, 2 * one + 7])
    cfg = GenesisConfig(**{**NONE, "local_rate": 1.0})
    out, target = corrupt_batch(torch.from_numpy(np.stack([img, img])), gen(2), cfg)
    reach = max_block_edges(shape[1:], cfg)
    position = {v: np.unravel_index(i, shape[1:]) for i, v in enumerate(one.ravel().tolist())}
    for s in range(2):
        o = out[s].numpy()
        assert np.array_equal(o[1], 2 * o[0] + 7)
        moved = np.argwhere(o[0] != one[0])
        assert len(moved) > 0.3 * one[0].size
        assert np.isin(o[0], one[0]).all()
        for p in moved[::40]:
            q = position[float(o[0][tuple(p)])]
            assert np.all(np.abs(np.array(q) - p) < reach)
        assert not np.array_equal(o[0], out[1 - s, 0].numpy())


def test_range_border_and_no_collapse_on_z_scored_ct(ct_z):
    x = torch.from_numpy(np.stack([ct_z] * 4))
    lo, hi = float(ct_z.min()), float(ct_z.max())
    inpaint = GenesisConfig(**{**NONE, "paint_rate": 1.0, "outpaint_rate": 0.0})
    out, t = corrupt_batch(x, gen(5), inpaint)
    changed = (out != t)[:, 0].numpy()
    border = np.ones(changed.shape[1:], bool)
    border[3:-3, 3:-3, 3:-3] = False
    assert changed.any() and not changed[:, border].any()
    full = GenesisConfig(flip_rate=0.5, local_rate=1.0, nonlinear_rate=1.0, paint_rate=1.0, outpaint_rate=0.5)
    out, _ = corrupt_batch(x, gen(6), full)
    assert out.min() >= lo and out.max() <= hi
    for s in range(4):
        o = out[s].numpy()
        assert np.unique(o[o < 0]).size > 1000 and (o == o.min()).mean() < 0.01


def test_bad_input_raises_value_error():
    ok = torch.zeros(1, 1, 8, 8, 8)
    for bad, msg in [(torch.zeros(1, 8, 8, 8), "5 dimensions"), (torch.zeros(1, 1, 8, 8, 8, dtype=torch.int16), "floating"),
                     (np.zeros((1, 1, 8, 8, 8), np.float32), "torch.Tensor"), (torch.zeros(0, 1, 8, 8, 8), "empty")]:
        with pytest.raises(ValueError, match=msg):
            corrupt_batch(bad, gen(0))
    with pytest.raises(ValueError, match="Generator"):
        corrupt_batch(ok, np.random.default_rng(0))
    with pytest.raises(ValueError, match="GenesisConfig"):
        corrupt_batch(ok, gen(0), {"flip_rate": 0.4})
    nan = ok.clone()
    nan[0, 0, 1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN/Inf"):
        corrupt_batch(nan, gen(0))
    corrupt_batch(nan, gen(0), check_finite=False)  # the caller may opt out (as on GPU)


def test_capacity_bound_is_generous_but_finite():
    edges, cap = shuffle_capacity((128, 128, 128), 10_000, 0.1)
    assert edges == (12, 12, 12)
    mean = 10_000 * 6.5 ** 3
    assert mean < cap < 1.2 * mean
    assert shuffle_capacity((4, 4, 4), 10, 0.1) == ((1, 1, 1), 10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_runs_on_cuda_with_a_cuda_generator(ct_z):
    x = torch.from_numpy(np.stack([ct_z] * 2)).cuda()
    g = torch.Generator(device="cuda").manual_seed(0)
    out, t = corrupt_batch(x, g)
    assert out.device.type == "cuda" and out.shape == x.shape
    assert out.min() >= x.min() and out.max() <= x.max()
    with pytest.raises(ValueError, match="lives on"):
        corrupt_batch(x, gen(0))


# ---------------------------------------------------------------- agreement in distribution
BATCH = 100
# samples per path: more where a sample is cheap (no shuffling)
N_SAMPLES = {"flip": 600, "shuffle": 300, "curve": 800, "paint": 600, "all": 300}


def per_sample_stats(image, out, target):
    """Statistics of one corrupted sample (C=1)."""
    x, o, t = image[0], out[0], target[0]
    flips = next(f for f in FLIPS if np.array_equal(np.flip(x, [a - 1 for a in f]) if f else x, t))
    lo, hi = x.min(), x.max()
    changed = o != t
    d = float(changed.mean())
    return {
        **{f"flip{a}": float(a in flips) for a in (1, 2, 3)},
        "any_change": float(d > 0),
        "changed": d,
        "mostly_changed": float(d > 0.5),
        "in_range": float(o.min() >= lo and o.max() <= hi),
        "decreasing": float(o.ravel()[t.argmax()] < o.ravel()[t.argmin()]) if d > 0 else 0.0,
        "level": float(((o - lo) / (hi - lo)).mean()),
    }


def collect(image, cfg, n):
    rows_np = []
    for seed in range(n):
        o, t = corrupt(image, np.random.default_rng(seed), cfg)
        rows_np.append(per_sample_stats(image, o, t))
    rows_t = []
    x = torch.from_numpy(image).expand(BATCH, *image.shape).contiguous()
    g = gen(12345)
    for _ in range(n // BATCH):
        o, t = corrupt_batch(x, g, cfg)
        rows_t += [per_sample_stats(image, o[i].numpy(), t[i].numpy()) for i in range(BATCH)]
    keys = rows_np[0].keys()
    return ({k: np.array([r[k] for r in rows_np]) for k in keys},
            {k: np.array([r[k] for r in rows_t]) for k in keys})


def assert_same_mean(a, b, name, floor=1e-3):
    se = math.sqrt(a.var() / a.size + b.var() / b.size + floor ** 2)
    assert abs(a.mean() - b.mean()) < 5 * se, f"{name}: numpy {a.mean():.4f} vs torch {b.mean():.4f} (se {se:.4f})"


def assert_rate(a, p, name):
    assert abs(a.mean() - p) < 4.5 * math.sqrt(p * (1 - p) / a.size) + 1e-9, f"{name}: {a.mean():.3f} vs {p}"


CONFIGS = {
    "flip": GenesisConfig(**{**NONE, "flip_rate": 0.4}),
    "shuffle": GenesisConfig(**{**NONE, "local_rate": 0.5}),
    "curve": GenesisConfig(**{**NONE, "nonlinear_rate": 0.9}),
    "paint": GenesisConfig(**{**NONE, "paint_rate": 0.9, "outpaint_rate": 0.8}),
    "all": GenesisConfig(),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_numpy_and_torch_paths_agree_in_distribution(smooth_small, name):
    cfg = CONFIGS[name]
    a, b = collect(smooth_small, cfg, N_SAMPLES[name])
    for s in (a, b):
        assert s["in_range"].all()
        for axis in (1, 2, 3):
            assert_rate(s[f"flip{axis}"], cfg.flip_rate, f"flip axis {axis}")
    for key in a:
        assert_same_mean(a[key], b[key], f"{name}/{key}")
    if name == "shuffle":
        for s in (a, b):
            assert_rate(s["any_change"], cfg.local_rate, "shuffle applied")
        assert_same_mean(a["changed"][a["any_change"] > 0], b["changed"][b["any_change"] > 0], "changed|shuffled")
    if name == "curve":
        for s in (a, b):
            assert_rate(s["any_change"], cfg.nonlinear_rate, "curve applied")
            assert_rate(s["decreasing"][s["any_change"] > 0], 0.5, "curve inverted")
    if name == "paint":
        for s in (a, b):
            assert_rate(s["any_change"], cfg.paint_rate, "painted")
            assert_rate(s["mostly_changed"][s["any_change"] > 0], cfg.outpaint_rate, "out-painting")
        for mode in (0.0, 1.0):
            sel_a = (a["any_change"] > 0) & (a["mostly_changed"] == mode)
            sel_b = (b["any_change"] > 0) & (b["mostly_changed"] == mode)
            assert_same_mean(a["changed"][sel_a], b["changed"][sel_b], f"painted fraction (outpaint={mode})")
