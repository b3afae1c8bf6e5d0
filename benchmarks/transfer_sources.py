"""Extra pretraining sources for ``benchmarks/transfer.py --checkpoint NAME=PATH``, and the check that
two arms trained alike (docs/benchmark_transfer.md, "Any checkpoint as an arm").

    python benchmarks/transfer_sources.py supervised -o SOURCES/supervised
    python benchmarks/transfer_sources.py same-arms OUT genesis genesis_nnssl

``supervised``: a supervised nnU-Net model of ANOTHER dataset, as a pretraining source: stock
nnU-Net (``nnUNetTrainerStock_demo``: nnU-Net's SGD and poly schedule) trained on the demo's
synthetic dataset (``nnunet_genesis.synthetic``: ellipsoid and torus labels; never hippocampus
labels, which would give the K-case arms labels beyond K) with nnU-Net's own plans for it, reduced
as the benchmark's ``cpu`` setting reduces the hippocampus plans (``transfer_protocol.SETTINGS``:
a quarter of the feature maps per stage, at least 8, batch 2, patch at most 64^3), so its stages
have the feature counts of the benchmark's CPU network (8, 16, 32, 64) and transfer stage by stage.
It prints the ``--checkpoint supervised=...`` option of its ``checkpoint_final.pth``; nnU-Net
writes the ``plans.json`` beside it, which attach reads. A re-run continues the unfinished steps;
other settings in the same folder are refused.

``same-arms``: whether two arms of one benchmark folder gave identical records on every (K, seed)
they share (per-case Dice and NSD, pseudo Dice per epoch): the Genesis checkpoint exported to nnssl
and read back (``--checkpoint genesis_nnssl=...``) must equal the ``genesis`` arm. Exit 0 when
identical, 1 when not (the differences are printed), 2 when there is nothing to compare.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from nnunet_genesis.checkpoint import sha256_of
from nnunet_genesis.cpu_speed import cpu_has_native_bf16
from nnunet_genesis.errors import GenesisUserError, script_exit_code
from nnunet_genesis.outputs import write_json_atomic
from nnunet_genesis.run_identity import refuse_other_identity
from nnunet_genesis.splits import seeded_chunks, write_splits
from nnunet_genesis.synthetic import DEFAULT_DATASET_ID, SyntheticConfig, write_nnunet_dataset
from nnunet_genesis.trainers.short_schedule import ShortSchedule
from nnunet_genesis.trainers.starts import SHORT_SCHEDULE, STOCK_TRAINER, trainer_name
from nnunet_genesis.workflows.cpu_plans import write_schedule_plans
from nnunet_genesis.workflows.msd_folders import labelled_cases
from nnunet_genesis.workflows.nnunet_steps import NnunetSteps
from nnunet_genesis.workflows.pipeline import Step, StepContext, Workspace, run_steps
from transfer_protocol import CONFIGURATION, SETTINGS, load_runs, unit_name

CONFIG_FILE = "source_config.json"
SOURCE_FILE = "source.json"
PLANS = "nnUNetPlans_source_cpu"
TRAINER = trainer_name(STOCK_TRAINER, SHORT_SCHEDULE)  # nnUNetTrainerStock_demo
FOLD = 0


@dataclass(frozen=True)
class SupervisedSource:
    """What determines the supervised source model (recorded in OUT/source_config.json)."""

    cases: int = 40  # labelled synthetic cases (imagesTr / labelsTr)
    val_cases: int = 4  # of them, for nnU-Net's validation
    size: int = 40  # cube side in voxels (1 mm)
    seed: int = 0  # the synthetic cases, the split and the training
    epochs: int = 16  # the benchmark's CPU fine-tuning schedule: 16 x 100
    iterations: int = 100
    device: str = "cpu"
    cpu_bf16: bool = False  # the forward pass under bfloat16 autocast (CPU only)

    def schedule(self) -> ShortSchedule:
        return ShortSchedule(epochs=self.epochs, iterations_per_epoch=self.iterations,
                             val_iterations_per_epoch=min(5, max(1, self.iterations // 10)),
                             warmup_epochs=0, seed=self.seed, test_time_mirroring=False, training_mirroring=False,
                             cpu_bf16=self.cpu_bf16)


QUICK = dict(cases=8, val_cases=2, epochs=2, iterations=3)


class Supervised:
    """The steps of ``supervised`` on one output folder (a workspace with its own nnU-Net folders)."""

    def __init__(self, out: Path, source: SupervisedSource):
        self.out, self.source = out, source
        self.ws = Workspace(out)
        self.nnunet = NnunetSteps(self.ws, DEFAULT_DATASET_ID, CONFIGURATION, source.device)

    @property
    def checkpoint(self) -> Path:
        return self.nnunet.run_folder(TRAINER, PLANS) / f"fold_{FOLD}" / "checkpoint_final.pth"

    def steps(self) -> list[Step]:
        return [
            Step("dataset", "synthetic dataset (ellipsoid, torus)", self._dataset, self.nnunet.raw_partial),
            Step("preprocess", "nnUNetv2_plan_and_preprocess + CPU plans + split", self._preprocess,
                 self.nnunet.preprocessed_partial),
            Step("train", f"nnUNetv2_train {TRAINER}", self._train,
                 lambda: [self.nnunet.run_folder(TRAINER, PLANS) / f"fold_{FOLD}"]),
        ]

    def _dataset(self, ctx: StepContext) -> dict:
        s = self.source
        config = SyntheticConfig(n_train=s.cases, n_test=0, shape=(s.size,) * 3, seed=s.seed)
        return {"dataset": write_nnunet_dataset(self.ws.raw, config).name}

    def _preprocess(self, ctx: StepContext) -> dict:
        s, cpu = self.source, SETTINGS["cpu"]
        raw = self.nnunet.plan_and_preprocess(ctx)
        val, train = seeded_chunks(labelled_cases(raw), [s.val_cases], s.seed)
        pre = self.ws.preprocessed / raw.name
        write_splits(pre, [(train, val)])
        plans = write_schedule_plans(pre, PLANS, s.schedule(), "nnUNetPlans", CONFIGURATION,
                                     batch_size=cpu.batch_size, max_patch_voxels=cpu.max_patch_voxels, width=cpu.width)
        config = json.loads(plans.read_text())["configurations"][CONFIGURATION]
        return {"features_per_stage": config["architecture"]["arch_kwargs"]["features_per_stage"],
                "patch_size": config["patch_size"], "train": len(train), "val": len(val)}

    def _train(self, ctx: StepContext) -> dict:
        env = {"nnUNet_n_proc_DA": "0"} if self.source.device == "cpu" else {}
        ctx.command(self.nnunet.train_command(FOLD, TRAINER, PLANS), env)
        if not self.checkpoint.is_file():
            raise GenesisUserError(f"nnUNetv2_train finished without writing {self.checkpoint}; see {ctx.log}.",
                                   exit_code=1)
        return {"checkpoint": str(self.checkpoint)}


def supervised(args: argparse.Namespace) -> int:
    source = SupervisedSource(device=args.device, seed=args.seed,
                              cpu_bf16=args.device == "cpu" and (args.cpu_bf16 == "on" if args.cpu_bf16
                                                                 else SETTINGS["cpu"].cpu_bf16 and cpu_has_native_bf16()))
    if args.quick:
        source = replace(source, **QUICK)
    out = args.output.expanduser().resolve()
    config_file = out / CONFIG_FILE
    config = asdict(source)
    refuse_other_identity(json.loads(config_file.read_text()) if config_file.is_file() else None, config, out,
                          "a supervised source run", "Choose another -o folder or repeat that run's options.")
    if out.is_dir() and any(out.iterdir()) and not config_file.is_file():
        raise GenesisUserError(f"{out} is not empty and is not a source folder; choose another -o.")
    run = Supervised(out, source)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(config, config_file)
    run.ws.make()
    run_steps(run.ws, run.steps(), "supervised source")
    info = run.ws.done_info("preprocess")
    record = {"kind": "nnU-Net v2 training checkpoint, supervised on the synthetic dataset (not hippocampus)",
              "checkpoint": str(run.checkpoint), "sha256": sha256_of(run.checkpoint), "trainer": TRAINER,
              "plans": PLANS, "features_per_stage": info.get("features_per_stage"),
              "patch_size": info.get("patch_size"), "settings": config}
    write_json_atomic(record, out / SOURCE_FILE)
    print(f"\nsupervised source: {run.checkpoint}\n  features per stage {record['features_per_stage']}, patch "
          f"{record['patch_size']}, sha256 {record['sha256']}\n"
          f"  benchmark option: --checkpoint supervised={run.checkpoint}")
    return 0


def compare_arms(runs: list[dict], a: str, b: str) -> list[dict]:
    """Per (K, seed) that both arms have: whether their records are identical, and the largest
    absolute difference of per-case Dice / NSD and of the pseudo Dice curve."""
    index = {(r["K"], r["seed"], r["arm"]): r for r in runs}
    out = []
    for k, seed in sorted({(k, s) for k, s, arm in index if arm == a} & {(k, s) for k, s, arm in index if arm == b}):
        ra, rb = index[(k, seed, a)], index[(k, seed, b)]
        largest = {"dice": 0.0, "nsd": 0.0, "pseudo_dice": 0.0}
        same = set(ra["cases"]) == set(rb["cases"])
        for case in sorted(set(ra["cases"]) & set(rb["cases"])):
            for label, values in ra["cases"][case].items():
                for metric in ("dice", "nsd"):
                    x, y = values.get(metric), rb["cases"][case].get(label, {}).get(metric)
                    if x is None or y is None:
                        same = same and x is y
                    else:
                        largest[metric] = max(largest[metric], abs(x - y))
        pa, pb = ra.get("pseudo_dice") or [], rb.get("pseudo_dice") or []
        same = same and len(pa) == len(pb) and all(len(u) == len(v) for u, v in zip(pa, pb))
        for u, v in zip(pa, pb):
            for x, y in zip(u, v):
                largest["pseudo_dice"] = max(largest["pseudo_dice"], abs(x - y))
        out.append({"K": k, "seed": seed, "identical": same and not any(largest.values()), "max_abs_diff": largest})
    return out


def same_arms(args: argparse.Namespace) -> int:
    out = args.folder.expanduser().resolve()
    rows = compare_arms(load_runs(out), args.arm_a, args.arm_b)
    if not rows:
        raise GenesisUserError(f"{out}: no (K, seed) has finished units of both {args.arm_a!r} and {args.arm_b!r} "
                               f"(records in {out / 'units'}); nothing to compare.")
    for row in rows:
        d = row["max_abs_diff"]
        print(f"K={row['K']:<3} seed {row['seed']:<3} {unit_name(row['K'], row['seed'], args.arm_a)} vs "
              f"{args.arm_b}: " + ("identical" if row["identical"] else
                                   f"DIFFER (largest |difference|: Dice {d['dice']:.2g}, NSD {d['nsd']:.2g}, "
                                   f"pseudo Dice {d['pseudo_dice']:.2g})"))
    same = all(row["identical"] for row in rows)
    print(f"{args.arm_a} and {args.arm_b}: " + ("identical on every (K, seed)" if same else "NOT identical"))
    return 0 if same else 1


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("supervised", help="stock nnU-Net trained on the synthetic dataset, for --checkpoint")
    s.add_argument("-o", "--output", type=Path, required=True, help="output folder (its own nnU-Net folders)")
    s.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    s.add_argument("--seed", type=int, default=0, help="the synthetic cases, the split and the training")
    s.add_argument("--cpu-bf16", choices=("on", "off"),
                   help="bfloat16 forward pass on a CPU (default: where the CPU has bfloat16 instructions)")
    s.add_argument("--quick", action="store_true", help="a few cases and iterations: checks that every step runs")
    s.set_defaults(run=supervised)
    c = sub.add_parser("same-arms", help="whether two arms of a benchmark folder gave identical records")
    c.add_argument("folder", type=Path, help="the benchmark's output folder (-o of transfer.py)")
    c.add_argument("arm_a")
    c.add_argument("arm_b")
    c.set_defaults(run=same_arms)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    return script_exit_code("transfer_sources.py", lambda: args.run(args),
                            "interrupted; re-run the same command to continue.")


if __name__ == "__main__":
    sys.exit(main())
