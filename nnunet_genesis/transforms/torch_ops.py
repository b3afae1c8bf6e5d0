"""The Genesis corruptions for a batch of tensors (B, C, X, Y, Z), on any device.

Same semantics as the NumPy path (``corrupt``): per sample, independently, random flips
along spatial axes (input and target), local pixel shuffling (10,000 blocks read from the
unshuffled image, later blocks win), a range-aware monotone Bezier intensity curve
(inverted half of the time), then out- or in-painting with uniform noise in the sample's own
per-channel range, boxes off the border. The random streams differ from the NumPy path
(torch generator vs NumPy generator); the distributions agree, which the tests check.

Built for a training step on GPU: everything is batched tensor algebra (no Python loop over
blocks or samples, a loop over at most ``max_boxes`` boxes), and nothing waits for the
device (no ``.item()``, no data-dependent shapes): each sample's block voxels live in a
buffer of fixed capacity computed on the host from the shape and the config (the sum of
10,000 random block volumes exceeds it with probability below 1e-12; the blocks past the
end would then be shuffled only partly). Work for corruptions a sample did not draw is still
done and discarded, which is cheap on a GPU.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from nnunet_genesis.transforms.config import CorruptionDecisions, GenesisConfig
from nnunet_genesis.transforms.painting import box_edge_range

KEY_BITS = 40  # random bits of the shuffle sort keys; the block number sits above them


def check_images(images: object, generator: object, config: object) -> None:
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a torch.Tensor of shape (B, C, X, Y, Z), got {type(images).__name__}.")
    if images.ndim != 5:
        raise ValueError(f"images must have 5 dimensions (B, C, X, Y, Z), got shape {tuple(images.shape)}.")
    if not images.is_floating_point():
        raise ValueError(f"images must have a floating dtype, got {images.dtype}.")
    if images.numel() == 0:
        raise ValueError(f"images is empty (shape {tuple(images.shape)}).")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}.")
        if torch.device(generator.device).type != images.device.type:
            raise ValueError(f"generator lives on {generator.device} but images on {images.device}; "
                             f"create it with torch.Generator(device=images.device).")
    if not isinstance(config, GenesisConfig):
        raise ValueError(f"config must be a GenesisConfig, got {type(config).__name__}.")


@lru_cache(maxsize=64)
def shuffle_capacity(spatial_shape: tuple[int, int, int], n_blocks: int, max_fraction: float) -> tuple[tuple[int, ...], int]:
    """(max edges, voxel capacity per sample) with P(sum of block volumes > capacity) < 1e-12.

    Bernstein's inequality for the sum of n i.i.d. volumes in [1, kmax].
    """
    edges = tuple(max(1, math.floor(d * max_fraction + 1e-9)) for d in spatial_shape)
    mean = math.prod((m + 1) / 2 for m in edges)
    second = math.prod((m + 1) * (2 * m + 1) / 6 for m in edges)
    var = max(second - mean * mean, 0.0)
    kmax = math.prod(edges)
    log_term = math.log(1e12)
    a = 2 * log_term * kmax / 3
    t = (a + math.sqrt(a * a + 8 * log_term * n_blocks * var)) / 2
    return edges, int(min(n_blocks * kmax, math.ceil(n_blocks * mean + t)))


def _none_on_cpu(mask: torch.Tensor) -> bool:
    """True when ``mask`` is known to be all false without waiting for a device (CPU only)."""
    return mask.device.type == "cpu" and not bool(mask.any())


def _rand(shape, g, device) -> torch.Tensor:
    return torch.rand(shape, generator=g, device=device, dtype=torch.float32)


def flip_samples(x: torch.Tensor, flips: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Flip sample b along spatial axis d where flips[d][b] (three bool (B,) masks)."""
    B = x.shape[0]
    for d, flip in enumerate(flips):
        x = torch.where(flip.view(B, 1, 1, 1, 1), x.flip(2 + d), x)
    return x


def shuffle_samples(x: torch.Tensor, active: torch.Tensor, g, config: GenesisConfig) -> torch.Tensor:
    """Local pixel shuffling of the samples where ``active`` (bool (B,)); others unchanged.

    On the CPU (where reading a mask costs nothing) only the active samples are processed;
    on other devices all are, and the inactive ones discarded, so nothing waits.
    """
    if x.device.type == "cpu" and not bool(active.all()):
        out = x.clone()
        if bool(active.any()):
            out[active] = shuffle_samples(x[active], active[active], g, config)
        return out
    B, C, X, Y, Z = x.shape
    N = X * Y * Z
    dev = x.device
    n = config.shuffle_blocks
    if n == 0:
        return x
    edges, cap = shuffle_capacity((X, Y, Z), n, config.shuffle_max_block_fraction)
    dims = torch.tensor([X, Y, Z], device=dev)
    u = _rand((2, B, n, 3), g, dev)
    sizes = 1 + (u[0] * torch.tensor(edges, device=dev, dtype=torch.float32)).long()
    sizes = torch.minimum(sizes, dims)
    starts = (u[1] * (dims - sizes + 1).float()).long()
    starts = torch.minimum(starts, dims - sizes)  # float rounding guard
    volume = sizes.prod(dim=2)  # (B, n)
    ends = volume.cumsum(dim=1)
    slots = torch.arange(cap, device=dev).expand(B, cap).contiguous()
    block = torch.searchsorted(ends, slots, right=True)  # (B, cap); == n past the last block
    valid = block < n
    block_c = block.clamp(max=n - 1)
    j = slots - (ends - volume).gather(1, block_c)
    sz = sizes.gather(1, block_c.unsqueeze(2).expand(B, cap, 3))
    st = starts.gather(1, block_c.unsqueeze(2).expand(B, cap, 3))
    dz = j % sz[..., 2]
    dy = (j // sz[..., 2]) % sz[..., 1]
    dx = j // (sz[..., 2] * sz[..., 1])
    dst = ((st[..., 0] + dx) * Y + (st[..., 1] + dy)) * Z + (st[..., 2] + dz)
    dst = torch.where(valid, dst, torch.full_like(dst, N))  # N = scratch voxel
    # uniform permutation inside each block: sort by (block, random key)
    rnd = torch.randint(0, 1 << KEY_BITS, (B, cap), generator=g, device=dev, dtype=torch.int64)
    order = torch.sort((block << KEY_BITS) | rnd, dim=1).indices
    src = dst.gather(1, order)
    # later blocks win: keep only the writes of the highest-numbered block covering a voxel
    winner = torch.full((B, N + 1), -1, device=dev, dtype=torch.int64)
    winner.scatter_reduce_(1, dst, torch.where(valid, block, -1), reduce="amax")
    keep = valid & (winner.gather(1, dst) == block) & active.view(B, 1)
    dst = torch.where(keep, dst, torch.full_like(dst, N))
    flat = torch.cat([x.reshape(B, C, N), x.new_zeros(B, C, 1)], dim=2)
    values = flat.gather(2, src.unsqueeze(1).expand(B, C, cap))
    out = flat.clone()
    out.scatter_(2, dst.unsqueeze(1).expand(B, C, cap), values)  # repeated index only at N
    return out[:, :, :N].reshape(B, C, X, Y, Z)


def bezier_tables(u: torch.Tensor, size: int) -> torch.Tensor:
    """Normalised monotone curves y(u) on ``size`` points, from control draws u (..., 5)."""
    x12 = torch.sort(u[..., 0:2], dim=-1).values.double()
    y12 = torch.sort(u[..., 2:4], dim=-1).values.double()
    t = torch.linspace(0.0, 1.0, 8 * size + 1, device=u.device, dtype=torch.float64)
    s = 1.0 - t
    w1, w2, w3 = 3 * s * s * t, 3 * s * t * t, t * t * t
    xs = w1 * x12[..., :1] + w2 * x12[..., 1:2] + w3  # (..., T) non-decreasing
    ys = w1 * y12[..., :1] + w2 * y12[..., 1:2] + w3
    grid = torch.linspace(0.0, 1.0, size, device=u.device, dtype=torch.float64).expand(*xs.shape[:-1], size)
    hi = torch.searchsorted(xs.contiguous(), grid.contiguous(), right=False).clamp(1, xs.shape[-1] - 1)
    x0, x1 = xs.gather(-1, hi - 1), xs.gather(-1, hi)
    y0, y1 = ys.gather(-1, hi - 1), ys.gather(-1, hi)
    w = torch.where(x1 > x0, (grid - x0) / (x1 - x0).clamp_min(1e-300), torch.zeros_like(grid))
    table = y0 + w.clamp(0, 1) * (y1 - y0)
    table[..., 0] = 0.0
    table[..., -1] = 1.0
    return table


def map_intensities(x: torch.Tensor, active: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, g,
                    config: GenesisConfig) -> torch.Tensor:
    """Bezier curve per (sample, channel) over [lo, hi], decreasing with nonlinear_invert_rate."""
    B, C = x.shape[:2]
    K = config.bezier_lut_size
    u = _rand((B, C, 5), g, x.device)
    if _none_on_cpu(active):
        return x
    table = bezier_tables(u, K)
    table = torch.where((u[..., 4] < config.nonlinear_invert_rate).unsqueeze(-1), 1.0 - table, table)
    lo64, hi64 = lo.double().view(B, C, 1), hi.double().view(B, C, 1)
    span = (hi64 - lo64)
    ok = span > 0
    scale = torch.where(ok, (K - 1) / span.clamp_min(1e-300), torch.zeros_like(span))
    slope = torch.diff(table, dim=-1)
    slope = torch.cat([slope, slope[..., -1:]], dim=-1)
    i = torch.arange(K, device=x.device, dtype=torch.float64)
    a = (lo64 + span * (table - i * slope)).float()  # f(x) = a[i] + b[i] * (x - lo) on bin i
    b = ((K - 1) * slope).float()
    flat = x.reshape(B, C, -1)
    rel = flat - lo.view(B, C, 1)
    idx = (rel * scale.float()).long().clamp_(0, K - 1)
    y = a.gather(2, idx) + b.gather(2, idx) * rel
    y = torch.minimum(torch.maximum(y, lo.view(B, C, 1)), hi.view(B, C, 1))
    use = active.view(B, 1, 1) & ok
    return torch.where(use, y, flat).reshape(x.shape)


def paint_samples(x: torch.Tensor, paint: torch.Tensor, outpaint: torch.Tensor, lo: torch.Tensor,
                  hi: torch.Tensor, g, config: GenesisConfig) -> torch.Tensor:
    """Out-painting (where outpaint) or in-painting (elsewhere) for samples where ``paint``."""
    B, C, X, Y, Z = x.shape
    dev = x.device
    border = config.paint_border
    if min(X, Y, Z) - 2 * border < 1 or _none_on_cpu(paint):
        return x
    rng_in = torch.tensor([box_edge_range(d, config.inpaint_box_fraction, border) for d in (X, Y, Z)], device=dev)
    rng_out = torch.tensor([box_edge_range(d, config.outpaint_box_fraction, border) for d in (X, Y, Z)], device=dev)
    edge_range = torch.where(outpaint.view(B, 1, 1), rng_out, rng_in)  # (B, 3, 2)
    nb = config.max_boxes
    u = _rand((B, 1 + 2 * nb * 3), g, dev)
    count = 1 + (u[:, 0] * nb).long().clamp_(max=nb - 1)
    us = u[:, 1:1 + nb * 3].view(B, nb, 3)
    up = u[:, 1 + nb * 3:].view(B, nb, 3)
    lo_e, hi_e = edge_range[..., 0].unsqueeze(1), edge_range[..., 1].unsqueeze(1)
    sizes = torch.minimum(lo_e + (us * (hi_e - lo_e + 1).float()).long(), hi_e)
    avail = torch.tensor([X, Y, Z], device=dev) - 2 * border
    starts = border + torch.minimum((up * (avail - sizes + 1).float()).long(), avail - sizes)
    ends = starts + sizes
    inside = torch.zeros((B, X, Y, Z), dtype=torch.bool, device=dev)
    coords = [torch.arange(d, device=dev) for d in (X, Y, Z)]
    for k in range(nb):
        use = (k < count).view(B, 1, 1, 1)
        ax = [(c >= starts[:, k, i:i + 1]) & (c < ends[:, k, i:i + 1]) for i, c in enumerate(coords)]
        box = ax[0].view(B, X, 1, 1) & ax[1].view(B, 1, Y, 1) & ax[2].view(B, 1, 1, Z)
        inside |= box & use
    noise = _rand(x.shape, g, dev)
    span = (hi - lo).view(B, C, 1, 1, 1)
    noise = torch.minimum(lo.view(B, C, 1, 1, 1) + noise * span, hi.view(B, C, 1, 1, 1))
    replace = torch.where(outpaint.view(B, 1, 1, 1), ~inside, inside) & paint.view(B, 1, 1, 1)
    return torch.where(replace.unsqueeze(1), noise, x)


def corrupt_batch(images: torch.Tensor, generator: torch.Generator | None = None,
                  config: GenesisConfig = GenesisConfig(), *,
                  check_finite: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Corrupt a batch (B, C, X, Y, Z): returns (network input, restoration target), float32.

    Each sample draws its own corruptions. ``generator`` must live on ``images.device``
    (None: torch's default generator for that device). ``check_finite`` (default: on CPU
    only, because on a GPU the check waits for the device) raises ValueError for NaN/Inf.
    """
    check_images(images, generator, config)
    x = images.float()
    B = x.shape[0]
    dev = x.device
    g = generator
    flat = x.reshape(B, x.shape[1], -1)
    lo, hi = flat.amin(dim=2), flat.amax(dim=2)
    if check_finite if check_finite is not None else dev.type == "cpu":
        if not bool(torch.isfinite(lo).all() & torch.isfinite(hi).all()):
            raise ValueError(f"images contain {int((~torch.isfinite(x)).sum())} NaN/Inf voxels; "
                             f"corruptions need finite intensities.")
    d = CorruptionDecisions.from_uniforms(_rand((B, CorruptionDecisions.count()), g, dev), config)
    target = flip_samples(x, d.flips)
    if target is x:
        target = x.clone()
    out = shuffle_samples(target, d.shuffle, g, config)
    out = map_intensities(out, d.curve, lo, hi, g, config)
    out = paint_samples(out, d.paint, d.outpaint, lo, hi, g, config)
    return out.contiguous(), target.contiguous()
