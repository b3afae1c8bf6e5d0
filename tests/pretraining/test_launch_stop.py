"""A stopped pretraining leaves no DDP rank training on (pretraining.launch.stop_processes)."""

from __future__ import annotations

import multiprocessing as mp
import time

from nnunet_genesis.pretraining.launch import stop_processes


def test_stop_processes_ends_every_rank():
    ctx = mp.get_context("spawn")
    ranks = [ctx.Process(target=time.sleep, args=(300,)) for _ in range(2)]
    for p in ranks:
        p.start()
    t0 = time.monotonic()
    stop_processes(ranks, grace=10)
    assert not any(p.is_alive() for p in ranks)
    assert all(p.exitcode is not None for p in ranks) and time.monotonic() - t0 < 10
