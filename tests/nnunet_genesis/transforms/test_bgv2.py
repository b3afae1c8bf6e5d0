import multiprocessing as mp
import pickle

import numpy as np
import pytest
import torch
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms

from nnunet_genesis.transforms import GenesisConfig, GenesisCorruptionTransform, corrupt


def sample(ct_z):
    return {"image": torch.from_numpy(ct_z.copy()), "segmentation": torch.zeros(ct_z.shape, dtype=torch.int16)}


def test_sets_image_and_regression_target_exactly_like_corrupt(ct_z):
    t = GenesisCorruptionTransform(GenesisConfig(), seed=3)
    rng = np.random.default_rng(3)  # the transform's stream: corrupt's with the same seed, call after call
    for _ in range(3):
        d = t(**sample(ct_z))
        assert set(d) == {"image", "regression_target", "segmentation"}
        x, y = corrupt(ct_z, rng)
        assert np.array_equal(d["image"].numpy(), x) and np.array_equal(d["regression_target"].numpy(), y)
        assert torch.equal(d["segmentation"], torch.zeros(ct_z.shape, dtype=torch.int16))


def test_get_parameters_then_apply_is_the_call(ct_z):
    a, b = GenesisCorruptionTransform(seed=4), GenesisCorruptionTransform(seed=4)
    params = a.get_parameters(**sample(ct_z))
    assert set(params) == {"corruption"}
    d = a.apply(sample(ct_z), **params)
    e = b(**sample(ct_z))
    assert torch.equal(d["image"], e["image"]) and torch.equal(d["regression_target"], e["regression_target"])
    with pytest.raises(ValueError, match="shape"):  # parameters drawn for another shape
        a.apply({"image": torch.zeros(1, 4, 4, 4)}, **params)


def test_sets_image_and_target_like_corrupt(ct_z):
    t = GenesisCorruptionTransform(GenesisConfig(), seed=3, target_key="target")  # the key earlier versions wrote
    assert isinstance(t, BasicTransform)
    d = t(**sample(ct_z))
    assert set(d) == {"image", "target", "segmentation"}
    assert d["image"].dtype == d["target"].dtype == torch.float32
    assert d["image"].shape == d["target"].shape == ct_z.shape
    assert any(np.array_equal(np.flip(ct_z, f), d["target"].numpy())
               for f in [(), (1,), (2,), (3,), (1, 2), (1, 3), (2, 3), (1, 2, 3)])
    assert torch.equal(d["segmentation"], torch.zeros(ct_z.shape, dtype=torch.int16))


def test_seeded_stream_is_reproducible_and_advances(ct_z):
    a, b = GenesisCorruptionTransform(seed=7), GenesisCorruptionTransform(seed=7)
    first = [a(**sample(ct_z))["image"] for _ in range(2)]
    second = [b(**sample(ct_z))["image"] for _ in range(2)]
    assert all(torch.equal(x, y) for x, y in zip(first, second))
    assert not torch.equal(first[0], first[1])


def test_works_inside_compose_transforms(ct_z):
    pipeline = ComposeTransforms([GenesisCorruptionTransform(seed=0)])
    d = pipeline(**sample(ct_z))
    assert "regression_target" in d and d["image"].shape == ct_z.shape


_BARRIER = None  # set in pool workers: each waits for the other, so the two tasks run in two processes


def _init_worker(barrier):
    global _BARRIER
    _BARRIER = barrier


def _worker(args):
    transform, image = args
    if _BARRIER is not None:
        _BARRIER.wait(timeout=120)
    return transform(image=torch.from_numpy(image))["image"].numpy()


@pytest.mark.parametrize("seed", [None, 5])
def test_worker_processes_get_different_streams(seed):
    image = np.random.default_rng(0).standard_normal((1, 12, 12, 12)).astype(np.float32)
    cfg = GenesisConfig(flip_rate=0.0, local_rate=1.0, nonlinear_rate=1.0, paint_rate=1.0)
    transform = GenesisCorruptionTransform(cfg, seed=seed)
    here = _worker((transform, image))
    ctx = mp.get_context("fork")
    with ctx.Pool(2, initializer=_init_worker, initargs=(ctx.Barrier(2),)) as pool:  # forked copies of the transform
        outs = pool.map(_worker, [(transform, image)] * 2, chunksize=1)
    assert not np.array_equal(outs[0], outs[1])
    assert not any(np.array_equal(o, here) for o in outs) or seed is None


def test_pickling_drops_the_generator_state():
    t = GenesisCorruptionTransform(seed=1)
    t.generator()
    state = pickle.loads(pickle.dumps(t))
    assert state._rng is None and state.seed == 1


@pytest.mark.parametrize("kwargs, msg", [({"config": {"flip_rate": 0.4}}, "GenesisConfig"),
                                         ({"seed": -1}, "seed"), ({"seed": 1.5}, "seed")])
def test_bad_arguments(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        GenesisCorruptionTransform(**kwargs)


def test_target_can_replace_the_segmentation_for_stock_nnunet_loaders(ct_z):
    d = GenesisCorruptionTransform(seed=1, target_key="segmentation")(**sample(ct_z))
    assert set(d) == {"image", "segmentation"}
    assert d["segmentation"].dtype == torch.float32 and d["segmentation"].shape == ct_z.shape
    with pytest.raises(ValueError, match="target_key"):
        GenesisCorruptionTransform(target_key="label")


def test_missing_image_is_an_error():
    with pytest.raises(ValueError, match="image"):
        GenesisCorruptionTransform(seed=0)(segmentation=torch.zeros(1, 4, 4, 4))
