"""Compiled inner loops of the NumPy corruption path (numba, nopython mode, cached on disk).

Why compiled: local shuffling moves 2-3 million voxels through 10,000 independent random
permutations per 128^3 patch, and the intensity mapping and painting touch every voxel. In
NumPy each of these is several passes over index arrays as large as the volume; here each is
one pass, with no temporary arrays (see docs/transforms.md, "Speed"). The loops that read at
data-dependent places (the mapping's lookup table, the shuffle's permuted source) are plain
scalar loops: hand-written vector gathers did not pay for themselves in the data pipeline
(docs/transforms.md, "The hand-written gathers").

Regions: the mapping, copies and noise work on a list of flat voxel intervals
``[first, stop)`` of the C-order volume (``box_intervals``): the whole volume is one interval,
a union of boxes (or its complement) one or a few per row. So out-painting maps and copies only
its kept boxes and writes noise only around them, with no volume-sized mask.

Randomness: a kernel that needs random numbers takes a 64-bit ``seed`` drawn from the caller's
``numpy.random.Generator`` and reads the SplitMix64 sequence (Steele, Lea and Flood, OOPSLA
2014) started from it, whose n-th value is a hash of ``seed + n * golden``: any position can
be computed directly, so the loops that draw them vectorise. Results are reproducible from the
Generator's seed, and there is no global random state (numba's own ``np.random`` inside kernels
is global per process; it is not used).

Indices: numba wraps negative indices around (``a[-1]``), so every access with a signed index
that LLVM cannot prove non-negative gets a compare and select, which slows the loops that move
voxels (docs/transforms.md, "Speed"). Those loops therefore index with unsigned integers;
likewise integer work meant for 32-bit lanes is cast back to 32 bits after each step (numba
computes int32 arithmetic in 64 bits, and 64-bit lanes halve the vector width).

Compilation takes a few seconds on the first call in a fresh environment and is cached in
``__pycache__`` (or numba's user cache when the package folder is read-only); later processes
load the machine code, in a fraction of a second. ``compile_kernels()`` does it up front, e.g.
before nnU-Net forks its data-augmentation workers.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_U30, _U27, _U31, _U32, _U40 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(32), np.uint64(40)


def draw_seed(rng: np.random.Generator) -> np.uint64:
    """The 64-bit seed a kernel's random stream starts from, one draw of the caller's generator."""
    return rng.integers(0, 2 ** 64, dtype=np.uint64)


@njit(inline="always")
def _splitmix64(state):
    """(next state, 64 random bits)."""
    state = state + _GOLDEN
    z = state
    z = (z ^ (z >> _U30)) * _MIX1
    z = (z ^ (z >> _U27)) * _MIX2
    return state, z ^ (z >> _U31)


@njit(inline="always")
def _splitmix_at(seed, n):
    """The n-th (n >= 1) 64-bit value of the SplitMix64 sequence started at ``seed``."""
    _, r = _splitmix64(seed + (n - np.uint64(1)) * _GOLDEN)
    return r


@njit(inline="always")
def _order_key(bits):
    """Signed int32 that orders like the float32 with these bits (an involution).

    Every step is cast back to int32: numba types int32 arithmetic as int64, and on 64-bit
    lanes the min/max in ``flipped_copies`` would vectorise at half the width.
    """
    return np.int32(bits ^ np.int32(np.int32(bits >> np.int32(31)) & np.int32(0x7FFFFFFF)))


@njit(cache=True, nogil=True)
def flipped_copies(src, shape, flip, dst, dst2, both):
    """dst (and dst2 if ``both``) = src flipped along the spatial axes with ``flip[a]``; per-channel range.

    All arrays are (C, N) int32 views of C-order float32 volumes of ``shape`` (X, Y, Z): bits
    are copied, not values. Returns (lo, hi) int32 (C,): the bits of each channel's minimum and
    maximum (view them as float32). They are found on order keys (``_order_key``), integers that
    sort like the floats, on which NaN and Inf sort beyond every finite value, so a non-finite
    voxel shows in the range. One pass over ``src``.
    """
    X, Y, Z = shape[0], shape[1], shape[2]
    C = src.shape[0]
    lo = np.empty(C, np.int32)
    hi = np.empty(C, np.int32)
    for c in range(C):
        s, d, d2 = src[c], dst[c], dst2[c]
        mn, mx = np.int32(0x7FFFFFFF), np.int32(-0x80000000)
        for x in range(X):
            sx = X - 1 - x if flip[0] else x
            for y in range(Y):
                sy = Y - 1 - y if flip[1] else y
                row, srow = np.uint64((x * Y + y) * Z), np.uint64((sx * Y + sy) * Z)  # unsigned: see module doc
                if flip[2]:
                    for z in range(np.uint64(Z)):
                        b = s[srow + np.uint64(Z - 1) - z]
                        d[row + z] = b
                        k = _order_key(b)
                        mn, mx = np.int32(min(mn, k)), np.int32(max(mx, k))
                else:
                    for z in range(np.uint64(Z)):
                        b = s[srow + z]
                        d[row + z] = b
                        k = _order_key(b)
                        mn, mx = np.int32(min(mn, k)), np.int32(max(mx, k))
                if both:
                    for z in range(np.uint64(Z)):
                        d2[row + z] = d[row + z]
        lo[c], hi[c] = _order_key(mn), _order_key(mx)  # the key map is its own inverse
    return lo, hi


@njit(cache=True, nogil=True)
def box_intervals(shape, starts, ends, inside):
    """Flat voxel intervals (first, stop) covering the union of boxes, or the rest of the volume.

    ``shape`` = (X, Y, Z) of a C-order volume; box b spans ``starts[b]`` to ``ends[b]``
    (exclusive, (n, 3) int64). ``inside``: the union of the boxes, else its complement.
    Intervals do not overlap and come in increasing order: one per maximal run along z.
    """
    X, Y, Z = shape[0], shape[1], shape[2]
    n = starts.shape[0]
    first = np.empty(X * Y * (n + 1), np.int64)
    stop = np.empty(X * Y * (n + 1), np.int64)
    lo_z = np.empty(n, np.int64)
    hi_z = np.empty(n, np.int64)
    q = 0
    for x in range(X):
        for y in range(Y):
            k = 0  # the boxes' z-intervals on this row, sorted by start (insertion sort)
            for b in range(n):
                if starts[b, 0] <= x < ends[b, 0] and starts[b, 1] <= y < ends[b, 1]:
                    i = k
                    while i > 0 and lo_z[i - 1] > starts[b, 2]:
                        lo_z[i], hi_z[i] = lo_z[i - 1], hi_z[i - 1]
                        i -= 1
                    lo_z[i], hi_z[i] = starts[b, 2], ends[b, 2]
                    k += 1
            row = (x * Y + y) * Z
            z = 0  # end of the covered part seen so far
            i = 0
            while i < k:
                a, e = lo_z[i], hi_z[i]
                i += 1
                while i < k and lo_z[i] <= e:  # merge touching or overlapping intervals
                    e = max(e, hi_z[i])
                    i += 1
                if inside:
                    first[q], stop[q] = row + a, row + e
                    q += 1
                elif a > z:
                    first[q], stop[q] = row + z, row + a
                    q += 1
                z = e
            if not inside and z < Z:
                first[q], stop[q] = row + z, row + Z
                q += 1
    return first[:q].copy(), stop[:q].copy()


@njit(cache=True, nogil=True)
def copy_intervals(src, dst, first, stop):
    """dst[c, v] = src[c, v] for v in every interval, (C, N) float32 arrays."""
    for c in range(src.shape[0]):
        s, d = src[c], dst[c]
        for q in range(first.shape[0]):
            for v in range(np.uint64(first[q]), np.uint64(stop[q])):
                d[v] = s[v]


@njit(cache=True, nogil=True, fastmath=True)  # inputs are finite (corrupt checks): NaN rules not needed
def map_intervals(src, dst, first, stop, lo, hi, scale, a, b):
    """dst[c, v] = mapping_c(src[c, v]) for v in every interval, (C, N) float32 (may be the same array).

    ``lo``, ``hi``, ``scale`` (C,) and ``a``, ``b`` (C, K) float32 are the per-channel lookup
    tables (``IntensityMapping.kernel_tables``): on bin i = floor((x - lo) * scale) the mapping
    is a[i] + b[i] * (x - lo), clipped to [lo, hi].
    """
    last = a.shape[1] - 1
    for c in range(src.shape[0]):
        s, d = src[c], dst[c]
        l, h, sc, ac, bc = lo[c], hi[c], scale[c], a[c], b[c]
        for q in range(first.shape[0]):
            for v in range(np.uint64(first[q]), np.uint64(stop[q])):
                u = s[v] - l
                k = np.uint64(min(max(np.int64(np.int32(u * sc)), 0), last))
                y = ac[k] + bc[k] * u
                d[v] = min(max(y, l), h)


@njit(cache=True, nogil=True, fastmath=True)
def noise_intervals(dst, first, stop, offset, step, seed):
    """dst[c, v] = offset[c] + step[c] * u for v in every interval, u uniform in 0..2**24-1.

    ``step`` = range / 2**24 (24 random bits per voxel, as ``Generator.random(dtype=float32)``);
    u is the top of SplitMix64 value c * N + v + 1 of ``seed``'s sequence, so each voxel's
    noise depends only on the seed and the voxel and the loop vectorises.
    """
    for c in range(dst.shape[0]):
        d, o, st = dst[c], offset[c], step[c]
        start = np.uint64(c * dst.shape[1] + 1)
        for q in range(first.shape[0]):
            for v in range(np.uint64(first[q]), np.uint64(stop[q])):
                d[v] = o + np.float32(_splitmix_at(seed, start + v) >> _U40) * st


@njit(cache=True, nogil=True)
def bezier_table(x1, x2, y1, y2, size, samples):
    """y(u) at ``size`` equally spaced u in [0, 1] on the cubic Bezier (0,0), (x1,y1), (x2,y2), (1,1).

    The curve is sampled at ``samples`` equally spaced t; y(u) is interpolated linearly
    between the samples whose x bracket u (as ``np.interp``), in one merge walk. Needs
    0 <= x1 <= x2 <= 1 (x non-decreasing in t).
    """
    xs = np.empty(samples)
    ys = np.empty(samples)
    for q in range(samples):
        t = q / (samples - 1)
        s = 1.0 - t
        w1, w2, w3 = 3.0 * s * s * t, 3.0 * s * t * t, t * t * t
        xs[q] = w1 * x1 + w2 * x2 + w3
        ys[q] = w1 * y1 + w2 * y2 + w3
    table = np.empty(size)
    j = 0
    for i in range(size):
        u = i / (size - 1)
        while j < samples - 2 and xs[j + 1] <= u:
            j += 1
        if u >= xs[samples - 1]:
            table[i] = ys[samples - 1]
        elif u <= xs[0]:
            table[i] = ys[0]
        else:
            table[i] = ys[j] + (ys[j + 1] - ys[j]) / (xs[j + 1] - xs[j]) * (u - xs[j])
    return table


@njit(cache=True, nogil=True)
def visible_blocks(starts, sizes, box_starts, box_ends, outpaint):
    """Which blocks (``starts``, ``sizes`` (n, 3)) can show after painting boxes ``box_starts``..``box_ends``.

    Out-painting: the blocks that intersect a kept box; in-painting: all but those lying
    entirely inside one painted box. Returns a bool (n,) array.
    """
    n = starts.shape[0]
    hit = np.zeros(n, np.uint8)
    s0, s1, s2 = starts[:, 0].copy(), starts[:, 1].copy(), starts[:, 2].copy()
    e0, e1, e2 = s0 + sizes[:, 0], s1 + sizes[:, 1], s2 + sizes[:, 2]
    for b in range(box_starts.shape[0]):  # per box, a branch-free loop over the blocks (vectorises)
        p0, p1, p2 = box_starts[b, 0], box_starts[b, 1], box_starts[b, 2]
        q0, q1, q2 = box_ends[b, 0], box_ends[b, 1], box_ends[b, 2]
        if outpaint:
            for k in range(n):
                hit[k] |= (s0[k] < q0) & (e0[k] > p0) & (s1[k] < q1) & (e1[k] > p1) & (s2[k] < q2) & (e2[k] > p2)
        else:
            for k in range(n):
                hit[k] |= (s0[k] >= p0) & (e0[k] <= q0) & (s1[k] >= p1) & (e1[k] <= q1) & (s2[k] >= p2) & (e2[k] <= q2)
    return hit != 0 if outpaint else hit == 0


@njit(cache=True, nogil=True)
def draw_blocks(dims, max_edges, n, seed):
    """(starts, sizes) (n, 3) int64 of n shuffle blocks in a volume of shape ``dims``.

    Edge along axis a uniform in 1..min(max_edges[a], dims[a]), then the start uniform in
    0..dims[a] - edge; 32-bit multiply-shift draws, value 2 * (3 * k + a) + 1 (+1) of
    ``seed``'s SplitMix64 sequence for the edge (start) of block k.
    """
    starts = np.empty((n, 3), np.int64)
    sizes = np.empty((n, 3), np.int64)
    for k in range(n):
        for a in range(3):
            q = np.uint64(2 * (3 * k + a) + 1)
            e = 1 + np.int64(((_splitmix_at(seed, q) >> _U32) * np.uint64(min(max_edges[a], dims[a]))) >> _U32)
            sizes[k, a] = e
            starts[k, a] = np.int64(((_splitmix_at(seed, q + np.uint64(1)) >> _U32) * np.uint64(dims[a] - e + 1)) >> _U32)
    return starts, sizes


@njit(cache=True, nogil=True)
def shuffle_blocks_flat(src, dst, starts, sizes, shape_yz, seed):
    """Local pixel shuffling of (C, N) float32 arrays (C-order volumes of shape (X, Y, Z)).

    Blocks are processed in drawing order; each block's voxels are permuted uniformly at random
    (inside-out Fisher-Yates, 32 random bits per step) with the same permutation for every
    channel, reading ``src`` (the unshuffled image) and writing ``dst``, so a later block
    overwrites an earlier one where they overlap. Block b uses the next ceil(m_b / 2) values of
    ``seed``'s SplitMix64 sequence (two 32-bit halves each); returns where the sequence stops.
    """
    Y, Z = shape_yz[0], shape_yz[1]
    YZ = Y * Z
    n = starts.shape[0]
    largest = 2
    for k in range(n):
        largest = max(largest, sizes[k, 0] * sizes[k, 1] * sizes[k, 2])
    perm = np.empty(largest, dtype=np.int64)  # source voxel of each block voxel (row-major)
    draws = np.empty((largest + 1) // 2, dtype=np.uint64)
    halves = draws.view(np.uint32)
    state = np.uint64(seed)
    for k in range(n):
        base = starts[k, 0] * YZ + starts[k, 1] * Z + starts[k, 2]
        sx, sy, sz = sizes[k, 0], sizes[k, 1], sizes[k, 2]
        m = sx * sy * sz
        h = (m + 1) // 2
        for q in range(h):  # vectorised: each value is a function of its position
            draws[q] = _splitmix_at(state, np.uint64(q + 1))
        state += np.uint64(h) * _GOLDEN
        # inside-out Fisher-Yates; v walks the block's voxels row by row (an odometer over y, z)
        v, ez, ey = base, 0, 0
        for i in range(m):
            j = (np.uint64(halves[i]) * np.uint64(i + 1)) >> _U32
            perm[i] = perm[j]
            perm[j] = v
            v += 1
            ez += 1
            if ez == sz:
                ez = 0
                ey += 1
                v += Z - sz
                if ey == sy:
                    ey = 0
                    v += YZ - sy * Z
        for c in range(src.shape[0]):
            s, d = src[c], dst[c]
            i = np.uint64(0)
            for dx in range(sx):
                for dy in range(sy):
                    row = np.uint64(base + dx * YZ + dy * Z)  # unsigned: see module doc
                    for dz in range(np.uint64(sz)):
                        d[row + dz] = s[np.uint64(perm[i + dz])]
                    i += np.uint64(sz)
    return state


def compile_kernels() -> None:
    """Compile (or load from the cache) every kernel with the types ``corrupt`` uses."""
    img = np.zeros((1, 2, 2, 2), np.float32)
    src, dst = img.reshape(1, -1), np.empty((1, 8), np.float32)
    flipped_copies(src.view(np.int32), np.array([2, 2, 2], np.int64), np.zeros(3, np.bool_), dst.view(np.int32),
                   dst.view(np.int32), True)
    one = np.zeros(1, np.float32)
    box = np.zeros((1, 3), np.int64)
    first, stop = box_intervals(np.array([2, 2, 2], np.int64), box, box + 1, True)
    copy_intervals(src, dst, first, stop)
    table = np.zeros((1, 2), np.float32)
    map_intervals(src, dst, first, stop, one, one, one, table, table)
    noise_intervals(dst, first, stop, one, one, np.uint64(1))
    starts, sizes = draw_blocks(np.array([2, 2, 2], np.int64), np.ones(3, np.int64), 1, np.uint64(1))
    visible_blocks(starts, sizes, box, box + 1, True)
    bezier_table(0.25, 0.75, 0.25, 0.75, 4, 9)
    shuffle_blocks_flat(src, dst, starts, sizes, np.array([2, 2], np.int64), np.uint64(1))
