"""Which cases train, validate and test: the one seeded splitter, and nnU-Net's splits file.

Every draw in the package (the demo's train/val/test split, the benchmark's held-out cases and
per-seed training cases, the pretraining's validation volumes) is a seeded permutation of a
case list cut into consecutive, disjoint chunks, so one seed always gives one split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from nnunet_genesis.outputs import write_json_atomic


def seeded_chunks(cases: Sequence[str], sizes: Sequence[int], seed) -> list[list[str]]:
    """``cases`` in the order of ``numpy.random.default_rng(seed).permutation``, cut into chunks
    of ``sizes`` and the rest (last, in the drawn order). ``seed`` is anything ``default_rng``
    takes. Sort ``cases`` first when the caller's order must not matter."""
    if sum(sizes) > len(cases):
        raise ValueError(f"chunks of {list(sizes)} need {sum(sizes)} cases, there are {len(cases)}")
    order = [cases[i] for i in np.random.default_rng(seed).permutation(len(cases))]
    chunks, start = [], 0
    for n in sizes:
        chunks.append(order[start:start + n])
        start += n
    chunks.append(order[start:])
    return chunks


def write_splits(preprocessed_dataset: str | Path, folds: Sequence[tuple[Sequence[str], Sequence[str]]],
                 shared_ok: bool = False) -> Path:
    """nnU-Net's ``splits_final.json``: fold i trains on ``folds[i][0]`` and validates on ``folds[i][1]``.

    ``shared_ok``: cases may be in both (a pretraining on a single volume validates on it)."""
    splits = [{"train": sorted(tr), "val": sorted(val)} for tr, val in folds]
    for i, s in enumerate(splits):
        overlap = set(s["train"]) & set(s["val"])
        if overlap and not shared_ok:
            raise ValueError(f"fold {i}: cases in both train and val: {sorted(overlap)[:5]}")
    path = Path(preprocessed_dataset) / "splits_final.json"
    write_json_atomic(splits, path)
    return path
