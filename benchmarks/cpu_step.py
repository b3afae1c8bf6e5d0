"""Seconds per training iteration of the hippocampus network on one CPU core: why the transfer
benchmark's CPU setting uses a quarter of the feature maps and channels-last weights.

Run:  python benchmarks/cpu_step.py [--repeat 10] [--threads 1] [--bf16]

The Task04_Hippocampus 3d_fullres network as nnU-Net 2.8 plans it (4 stages, 32..256 features,
patch 40x56x40), at full, half and quarter width, each in the default and the channels-last
memory format: forward, deep-supervision loss (MSE as a stand-in, same shapes) and backward with
SGD, batch 2, measured side by side in one process (median of ``--repeat`` steps after two
warm-up steps). ``--bf16`` adds the faster memory format under bfloat16 autocast, the way the
schedule trainers run it with ``cpu_bf16`` (``benchmarks/transfer.py --cpu-bf16 on``): a cheaper
iteration on CPUs with bfloat16 instructions.
"""

from __future__ import annotations

import argparse
import statistics
import time
from nnunet_genesis.network import build_network, universal_genesis_arch


def _network(width: float):
    meta = universal_genesis_arch(1, 3)
    meta["network_kwargs"].update(
        n_stages=4, features_per_stage=[max(8, int(round(f * width))) for f in (32, 64, 128, 256)],
        kernel_sizes=[[3, 3, 3]] * 4, strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
        n_conv_per_stage=[2] * 4, n_conv_per_stage_decoder=[2] * 3)
    return build_network(meta, deep_supervision=True)


def step_seconds(width: float, channels_last: bool, repeat: int, batch: int = 2, bf16: bool = False) -> float:
    import torch

    net = _network(width)
    x = torch.randn(batch, 1, 40, 56, 40)
    if channels_last:
        net = net.to(memory_format=torch.channels_last_3d)
        x = x.contiguous(memory_format=torch.channels_last_3d)
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.99, nesterov=True)
    times = []
    for i in range(repeat + 2):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            outputs = net(x)
        loss = sum(o.float().square().mean() for o in outputs)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--bf16", action="store_true", help="also time bfloat16 autocast")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    print(f"seconds per iteration (batch 2, patch 40x56x40, {args.threads} thread(s), median of {args.repeat})")
    extra = f" {'bf16 (faster format)':>21s} {'vs fp32':>8s}" if args.bf16 else ""
    print(f"{'width':>6s} {'features':>16s} {'default':>9s} {'channels-last':>14s} {'speed-up':>9s}{extra}")
    for width in (1.0, 0.5, 0.25):
        default, last = step_seconds(width, False, args.repeat), step_seconds(width, True, args.repeat)
        features = [max(8, int(round(f * width))) for f in (32, 64, 128, 256)]
        line = f"{width:6.2f} {str(features):>16s} {default:9.3f} {last:14.3f} {default / last:8.2f}x"
        if args.bf16:
            best = min(default, last)
            half = step_seconds(width, last < default, args.repeat, bf16=True)
            line += f" {half:21.3f} {best / half:7.2f}x"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
