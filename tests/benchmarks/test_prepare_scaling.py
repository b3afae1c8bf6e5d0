"""benchmarks/prepare_scaling.py: the derived corpus and the fit (the preparations themselves are the
benchmark's to run)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def scaling():
    spec = importlib.util.spec_from_file_location("prepare_scaling", ROOT / "benchmarks" / "prepare_scaling.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_derived_volumes_are_seeded_crops_of_the_real_cts(scaling, ct_dir, tmp_path):
    from nnunet_genesis.volumes import read_volume

    sources = [ct_dir / "totalseg_abdomen_ct_3mm.nii.gz"]  # 122 x 101 x 30 voxels: the smallest
    first = scaling.derive_corpus(sources, 2, tmp_path / "a", seed=3)
    again = scaling.derive_corpus(sources, 2, tmp_path / "b", seed=3)
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in again]
    (a, spacing), (b, _) = read_volume(first[0]), read_volume(first[1])
    assert spacing == read_volume(sources[0])[1]
    for volume in (a, b):  # sub-boxes of 96-160 voxels, the whole extent where the CT is smaller (30 slices)
        assert volume.shape[1] == 30 and 96 <= volume.shape[2] <= 101 and 96 <= volume.shape[3] <= 122
    assert a.shape != b.shape or not np.array_equal(a, b)


def test_the_fit_extrapolates_to_ten_thousand_volumes_and_to_parts(scaling):
    fit = scaling.fit_and_extrapolate([16, 64, 256], [10 + 2 * n for n in (16, 64, 256)])
    assert fit["a_seconds"] == pytest.approx(10) and fit["b_seconds_per_volume"] == pytest.approx(2)
    assert fit["one_machine"]["seconds"] == pytest.approx(10 + 2 * 10_000)
    assert [p["seconds"] for p in fit["per_part"]] == pytest.approx([10 + 2 * 1250, 10 + 2 * 312.5])
    assert scaling.fit_and_extrapolate([16], [40.0]) == {}
