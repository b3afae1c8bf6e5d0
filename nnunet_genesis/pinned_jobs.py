"""Independent jobs side by side, each pinned to its own CPUs, stopped together on interrupt.

The benchmark trains several small models at once on a CPU machine: each job's commands run
under ``taskset`` on its share of the cores (nnU-Net otherwise starts one thread per machine
CPU in each process, and the processes fight over the cores). When one job fails or the run is
interrupted, every running job's command is told to stop.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Callable, Iterator, Sequence, TypeVar

import numpy as np

from nnunet_genesis.errors import GenesisUserError

T = TypeVar("T")
R = TypeVar("R")


class JobsStopped(Exception):
    """Raised inside a job's command loop (``raise_if_stopped``) once the jobs are stopped."""


def raise_if_stopped(stop: threading.Event | None) -> None:
    if stop is not None and stop.is_set():
        raise JobsStopped()


def cpu_sets(jobs: int) -> list[str | None]:
    """One CPU set per parallel job (``taskset -c``), or None (no pinning) for one job."""
    if jobs <= 1 or not hasattr(os, "sched_getaffinity"):
        return [None]
    cpus = sorted(os.sched_getaffinity(0))
    if jobs > len(cpus):
        raise GenesisUserError(f"--jobs {jobs}: only {len(cpus)} CPU(s) are available to this process.")
    groups = np.array_split(np.asarray(cpus), jobs)
    return [",".join(str(c) for c in g) for g in groups]


def run_pinned(items: Sequence[T], jobs: int, work: Callable[[T, str | None, threading.Event], R]
               ) -> Iterator[tuple[T, R, float]]:
    """Run ``work(item, cpus, stop)`` for every item, ``jobs`` at a time, each with a CPU set of its
    own; yields (item, result, seconds) as jobs finish. A failing job or an interrupt (Ctrl-C,
    SIGTERM raised as KeyboardInterrupt) sets ``stop`` for the running ones and is re-raised."""
    slots = cpu_sets(jobs)
    free = list(slots)
    lock = threading.Lock()
    stop = threading.Event()

    def one(item: T):
        with lock:
            cpus = free.pop()
        try:
            t0 = time.monotonic()
            return item, work(item, cpus, stop), time.monotonic() - t0
        finally:
            with lock:
                free.append(cpus)

    pool = ThreadPoolExecutor(max_workers=len(slots))
    futures = [pool.submit(one, item) for item in items]
    try:
        for future in as_completed(futures):
            yield future.result()
    except BaseException:
        # the other jobs' commands stop too; they write no result
        stop.set()
        for f in futures:
            f.cancel()
        raise
    finally:
        pool.shutdown(wait=True)
