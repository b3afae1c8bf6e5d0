"""Compiled inner loops of the NumPy corruption path (numba, nopython mode, cached on disk).

Why compiled: local shuffling moves 2-3 million voxels through 10,000 independent random
permutations per 128^3 patch, and the intensity mapping and painting touch every voxel. In
NumPy each of these is several passes over index arrays as large as the volume; here each is
one pass, with no temporary arrays (see docs/transforms.md, "Speed").

Randomness: a kernel that needs random numbers takes a 64-bit ``seed`` drawn from the caller's
``numpy.random.Generator`` and runs a SplitMix64 stream from it (Steele, Lea and Flood, OOPSLA
2014), returning the stream's final state. So results are reproducible from the Generator's
seed, and there is no global random state (numba's own ``np.random`` inside kernels is global
per process; it is not used).

Compilation takes a few seconds on the first call in a fresh environment and is cached in
``__pycache__`` (or numba's user cache when the package folder is read-only); later processes
load the machine code (about 0.4 s per process, measured). ``compile_kernels()`` does it up front, e.g. before
nnU-Net forks its data-augmentation workers.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_U30, _U27, _U31, _U32, _U40 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(32), np.uint64(40)


@njit(inline="always")
def _splitmix64(state):
    """(next state, 64 random bits)."""
    state = state + _GOLDEN
    z = state
    z = (z ^ (z >> _U30)) * _MIX1
    z = (z ^ (z >> _U27)) * _MIX2
    return state, z ^ (z >> _U31)


@njit(inline="always", fastmath=True)
def _mapped(x, lo, hi, scale, ab, last):
    """Lookup-table value of ``x``: ab[i, 0] + ab[i, 1] * (x - lo) on bin i, clipped to [lo, hi]."""
    d = x - lo
    i = min(max(np.int64(d * scale), 0), last)
    return min(max(ab[i, 0] + ab[i, 1] * d, lo), hi)


@njit(cache=True, nogil=True, fastmath=True)  # inputs are finite (corrupt checks): NaN rules not needed
def map_box(src, dst, shape_yz, box, lo, hi, scale, ab):
    """dst[c, box] = mapping_c(src[c, box]) for (C, N) float32 arrays (may be the same).

    The arrays are C-order volumes (X, Y, Z) flattened; ``box`` = (x0, x1, y0, y1, z0, z1).
    ``lo``, ``hi``, ``scale`` (C,) and ``ab`` (C, K, 2) float32 are the per-channel lookup
    tables (``IntensityMapping.kernel_tables``): on bin i = floor((x - lo) * scale) the mapping
    is ab[i, 0] + ab[i, 1] * (x - lo), clipped to [lo, hi]. A and B of a bin are stored side by
    side: one cache line per lookup.
    """
    Y, Z = shape_yz[0], shape_yz[1]
    last = ab.shape[1] - 1
    for c in range(src.shape[0]):
        l, h, s = lo[c], hi[c], scale[c]
        t = ab[c]
        si, so = src[c], dst[c]
        if box[1] - box[0] == src.shape[1] // (Y * Z) and box[3] - box[2] == Y and box[5] - box[4] == Z:
            for v in range(si.shape[0]):  # the whole volume: one flat loop
                so[v] = _mapped(si[v], l, h, s, t, last)
            continue
        for x in range(box[0], box[1]):
            for y in range(box[2], box[3]):
                row = (x * Y + y) * Z
                for v in range(row + box[4], row + box[5]):
                    so[v] = _mapped(si[v], l, h, s, t, last)


@njit(cache=True, nogil=True)
def shuffle_blocks_flat(src, dst, starts, sizes, shape_yz, seed):
    """Local pixel shuffling of (C, N) float32 arrays (C-order volumes of shape (X, Y, Z)).

    Blocks are processed in drawing order; each block's voxels are permuted uniformly at random
    (inside-out Fisher-Yates, 32 random bits per swap) with the same permutation for every
    channel, reading ``src`` (the unshuffled image) and writing ``dst``, so a later block
    overwrites an earlier one where they overlap. Returns the final random state.
    """
    Y, Z = shape_yz[0], shape_yz[1]
    YZ = Y * Z
    n = starts.shape[0]
    largest = 1
    for k in range(n):
        largest = max(largest, sizes[k, 0] * sizes[k, 1] * sizes[k, 2])
    off = np.empty(largest, dtype=np.int64)  # flat index of each block voxel, row-major
    perm = np.empty(largest, dtype=np.int64)  # the same indices, permuted
    state = np.uint64(seed)
    low32 = np.uint64(0xFFFFFFFF)
    for k in range(n):
        base = starts[k, 0] * YZ + starts[k, 1] * Z + starts[k, 2]
        m = 0
        for dx in range(sizes[k, 0]):
            for dy in range(sizes[k, 1]):
                row = base + dx * YZ + dy * Z
                for dz in range(sizes[k, 2]):
                    off[m] = row + dz
                    m += 1
        perm[0] = off[0]
        i = 1
        while i < m:  # two swaps per 64-bit draw; j uniform in 0..i (multiply-shift)
            state, r = _splitmix64(state)
            j = np.int64(((r >> _U32) * np.uint64(i + 1)) >> _U32)
            perm[i] = perm[j]
            perm[j] = off[i]
            i += 1
            if i < m:
                j = np.int64(((r & low32) * np.uint64(i + 1)) >> _U32)
                perm[i] = perm[j]
                perm[j] = off[i]
                i += 1
        for c in range(src.shape[0]):
            s, d = src[c], dst[c]
            for i in range(m):
                d[off[i]] = s[perm[i]]
    return state


@njit(cache=True, nogil=True)
def fill_noise_flat(dst, mask, where, offset, step, seed):
    """dst[c, v] = offset[c] + step[c] * u for every v with mask[v] == where; u in 0..2**24-1.

    ``dst`` (C, N) float32, ``mask`` (N,) bool; ``step`` = range / 2**24 (24 random bits per
    voxel, as ``Generator.random(dtype=float32)``). Returns the final random state.
    """
    state = np.uint64(seed)
    for c in range(dst.shape[0]):
        o, st = offset[c], step[c]
        d = dst[c]
        for v in range(mask.shape[0]):
            if mask[v] == where:
                state, r = _splitmix64(state)
                d[v] = o + np.float32(r >> _U40) * st
    return state


def compile_kernels() -> None:
    """Compile (or load from the cache) every kernel with the types ``corrupt`` uses."""
    img = np.zeros((1, 2, 2, 2), np.float32)
    out = np.empty_like(img)
    one = np.zeros(1, np.float32)
    map_box(img.reshape(1, -1), out.reshape(1, -1), np.array([2, 2], np.int64), np.array([0, 2, 0, 2, 0, 2], np.int64),
            one, one, one, np.zeros((1, 2, 2), np.float32))
    shuffle_blocks_flat(img.reshape(1, -1), out.reshape(1, -1), np.zeros((1, 3), np.int64), np.ones((1, 3), np.int64),
                        np.array([2, 2], np.int64), np.uint64(1))
    fill_noise_flat(out.reshape(1, -1), np.zeros(8, bool), False, one, one, np.uint64(1))
