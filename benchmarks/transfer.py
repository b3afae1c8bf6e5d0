"""Label efficiency: does Genesis pretraining beat training from scratch when labels are few?

    python benchmarks/transfer.py --msd-task ../shared/data/Task04_Hippocampus --labelled 5 20 --seeds 0 1 2
    python benchmarks/transfer.py --msd-task DIR --labelled 2 5 10 20 --seeds 0 1 2 --device cuda --setting full

1. The Decathlon task is converted (``nnUNetv2_convert_MSD_dataset``), planned and preprocessed;
   a fixed, seeded draw (``--split-seed``) sets aside the evaluation cases (never trained on)
   and a few validation cases for nnU-Net's monitoring; the rest is the training pool.
2. ``nnunet-genesis pretrain`` runs once on ALL images of the task (labels never read); the
   one checkpoint serves every seed and K; ``nnunet-genesis attach`` names it in the plans.
3. Units: one per (K, seed, arm). Each seed draws its own K training cases from the pool,
   nested across K (the 5 cases of K=5 are among the 20 of K=20), and its own initialisation
   (the schedule seeds nnU-Net per fold; one fold per (K, seed)). All arms of a seed train on
   the same cases, from the same random init of what they do not transfer, and see the same
   patches (0 augmentation workers). A unit trains with ``nnUNetv2_train``, predicts the
   evaluation cases with ``nnUNetv2_predict``, scores them with ``nnunet-genesis evaluate``
   (Dice, NSD) and writes ``units/<unit>.json``; finished units are skipped on a re-run, so a
   long protocol can be completed over several invocations (new K, seeds or arms too).
4. ``transfer_results.json`` (``runs``: one record per unit; ``summary``: per K and label each
   arm against scratch with mean difference, 95 % bootstrap CI over seeds x cases and the
   Wilcoxon p), ``transfer_dice_vs_k.png`` and a console table.

Arms (``--arms``): every fine-tuning start of the registry (``genesis``, the default start of
``nnUNetTrainerGenesis``, ``encoder`` and the ablation starts: docs/trainers.md), ``scratch``
(random init, the same warm-up schedule) and ``stock`` (plain nnU-Net schedule). ``--checkpoint
NAME=PATH`` (repeatable) adds an arm NAME fine-tuned from PATH with the default start: any file
``nnunet-genesis attach`` accepts, attached onto the benchmark's plans; it needs no pretraining here.

The protocol itself (settings, arms, draws, steps, units) is ``transfer_protocol.py`` beside this
script; its statistics are ``nnunet_genesis.evaluation.label_efficiency``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from nnunet_genesis.errors import GenesisUserError, script_exit_code
from nnunet_genesis.evaluation.label_efficiency import BASELINE, criteria, plot, summarize, table, unfair_runs
from transfer_protocol import (ARMS, CHECKPOINT_FREE_ARMS, DEFAULT_ARMS, QUICK, SETTINGS, Setting, TransferBenchmark,
                               attach_step, import_runs, importable_runs, load_runs, pending_units,
                               read_checkpoint_arms, refuse_mixed_checkpoints, unit_name)
from nnunet_genesis.workflows.msd_folders import check_msd_folder
from nnunet_genesis.outputs import write_json_atomic
from nnunet_genesis.run_identity import refuse_other_identity
from nnunet_genesis.pinned_jobs import run_pinned
from nnunet_genesis.workflows.pipeline import format_seconds, run_steps
from nnunet_genesis.cpu_speed import cpu_has_native_bf16

CONFIG_FILE = "benchmark_config.json"
RESULTS_FILE = "transfer_results.json"
PLOT_FILE = "transfer_dice_vs_k.png"

def run_units(bench: TransferBenchmark, todo: list[tuple[int, int, str]], folds: dict[str, int]) -> None:
    """Run the pending units, ``bench.jobs`` at a time (each pinned to its own CPUs); a progress line each."""
    from tqdm import tqdm

    def work(item, cpus, stop):
        k, seed, arm = item
        log = bench.ws.logs / "units" / f"{unit_name(k, seed, arm)}.log"
        return bench.run_unit(k, seed, arm, folds[f"K{k}_seed{seed}"], cpus, log, stop)

    t_start = time.monotonic()
    with tqdm(total=len(todo), desc="units", unit="unit", dynamic_ncols=True, disable=None) as bar:
        for (k, seed, arm), record, seconds in run_pinned(todo, bench.jobs, work):
            dice = " / ".join(f"{v['dice']:.3f}" if v["dice"] is not None else "n/a" for v in record["labels"].values())
            bar.update(1)
            tqdm.write(f"  K={k:<3} seed {seed:<3} {arm:<14} Dice {dice}   {format_seconds(seconds)} "
                       f"(elapsed {format_seconds(time.monotonic() - t_start)})")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--msd-task", type=Path, required=True, help="Decathlon task folder (MSD layout)")
    p.add_argument("--labelled", type=int, nargs="+", default=[5, 20], metavar="K",
                   help="numbers of labelled training cases")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], metavar="S",
                   help="seeds: each draws its own training cases (nested across K) and initialisation")
    p.add_argument("--arms", nargs="+", default=list(DEFAULT_ARMS), choices=list(ARMS), metavar="ARM",
                   help=f"fine-tuning arms ({', '.join(ARMS)}); '{BASELINE}' is always added")
    p.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH",
                   help="(repeatable) one more arm NAME (a new name: letters, digits, _ and -) fine-tuned from the "
                        "checkpoint PATH with the default start, as the genesis arm is from the benchmark's "
                        "pretraining; PATH is any file attach accepts, read and verified before anything runs and "
                        "recorded by sha256 (finished units of NAME from another file are refused, not mixed)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--setting", choices=sorted(SETTINGS), default=None,
                   help="cpu: reduced plan and short schedule; full: nnU-Net's plan (default: cpu on cpu, "
                        "full on cuda)")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="output folder (default: benchmarks/output/transfer_<task>_<setting>)")
    p.add_argument("--split-seed", type=int, default=0, help="seeds the evaluation/validation draw and the pretraining")
    p.add_argument("--jobs", type=int, default=None,
                   help="units run side by side, each pinned to its share of the CPUs (default: 2 on a CPU "
                        "with at least 2 cores, else 1)")
    p.add_argument("--eval-cases", type=int, help="held-out labelled cases evaluated (default: the setting's)")
    p.add_argument("--val-cases", type=int, help="labelled cases for nnU-Net's validation (default: the setting's)")
    p.add_argument("--max-cases", type=int, help="use only the first N labelled cases of the task")
    p.add_argument("--pretrain-minutes", type=float, help="pretraining time budget (0: use the epochs)")
    p.add_argument("--finetune-epochs", type=int)
    p.add_argument("--finetune-iterations", type=int)
    p.add_argument("--preset", choices=("mild", "paper"), help="the pretraining's corruption preset")
    p.add_argument("--training-mirroring", choices=("on", "off"),
                   help="mirroring augmentation while fine-tuning (default: the setting's; cpu: off)")
    p.add_argument("--cpu-bf16", choices=("on", "off"),
                   help="fine-tuning's forward pass under bfloat16 autocast on a CPU (default: the setting's where "
                        "this CPU has bfloat16 instructions, float32 elsewhere; --device cpu only)")
    p.add_argument("--import-runs", type=Path, metavar="RESULTS_JSON",
                   help=f"copy the records of {', '.join(CHECKPOINT_FREE_ARMS)} (they never read the checkpoint) from "
                        f"another run's transfer_results.json with the same settings instead of training them again "
                        f"(e.g. after a new pretraining); each copied record names its source")
    p.add_argument("--quick", action="store_true", help="a few iterations only: checks that every phase runs")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: write the JSON, PNG and table from the units finished so far (a protocol "
                        "completed over several invocations can be read at any point; the folder is not changed "
                        "except for those three outputs)")
    return p.parse_args(argv)


def resolve_cpu_bf16(setting: Setting, requested: str | None, device: str) -> tuple[Setting, str | None, str | None]:
    """The setting with its bfloat16 forward pass decided for this machine, the line that says which
    precision runs, and a warning where an explicit choice is slow.

    bfloat16 is a speed option: without ``--cpu-bf16`` a setting's bfloat16 runs only where the CPU
    has bfloat16 instructions (AVX512-BF16 or AMX) and float32 elsewhere, where bfloat16 would be
    emulated and many times slower. ``--cpu-bf16 on|off`` decides instead. The decision is part of
    the setting's values, so the run folder and results of the two stay apart."""
    if device != "cpu":
        return replace(setting, cpu_bf16=False), None, None
    native = cpu_has_native_bf16()
    if requested is not None:
        setting = replace(setting, cpu_bf16=requested == "on")
        why = f"--cpu-bf16 {requested}"
    elif setting.cpu_bf16 and not native:
        setting = replace(setting, cpu_bf16=False)
        why = "this CPU has no bfloat16 instructions (AVX512-BF16 or AMX); --cpu-bf16 on forces the slower emulation"
    else:
        why = "this CPU has bfloat16 instructions" if setting.cpu_bf16 else "the setting's"
    precision = f"{'bfloat16 forward pass' if setting.cpu_bf16 else 'float32'} ({why})"
    warning = ("--cpu-bf16 on, but this CPU has no bfloat16 instructions (AVX512-BF16 or AMX): fine-tuning will be "
               "slower than in float32." if setting.cpu_bf16 and not native else None)
    return setting, precision, warning


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    import signal

    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)  # a kill stops the running commands too
    args = parse_args(argv)
    return script_exit_code("transfer.py", lambda: run(args),
                            "interrupted; finished units are kept, re-run the same command to continue.")


def run(args: argparse.Namespace) -> int:
    """The benchmark of ``args``; user errors raise ``GenesisUserError`` (exit 2, one paragraph)."""
    setting_name = args.setting or ("cpu" if args.device == "cpu" else "full")
    setting = SETTINGS[setting_name]
    if args.quick:
        setting = replace(setting, **QUICK)
    overrides = {k: v for k, v in dict(eval_cases=args.eval_cases, val_cases=args.val_cases,
                                       pretrain_minutes=args.pretrain_minutes, finetune_epochs=args.finetune_epochs,
                                       finetune_iterations=args.finetune_iterations,
                                       preset=args.preset,
                                       training_mirroring=None if args.training_mirroring is None
                                       else args.training_mirroring == "on").items() if v is not None}
    setting = replace(setting, **overrides)
    default_bf16 = setting.cpu_bf16
    msd = args.msd_task.expanduser().resolve()
    ks = sorted(set(args.labelled))
    seeds = sorted(set(args.seeds))
    arms = sorted(set(args.arms) | {BASELINE}, key=list(ARMS).index)
    jobs = args.jobs if args.jobs is not None else (2 if args.device == "cpu" and (os.cpu_count() or 1) >= 2 else 1)
    check_msd_folder(msd, args.max_cases)
    if min(ks) < 1:
        raise GenesisUserError("--labelled values must be at least 1.")
    if jobs < 1:
        raise GenesisUserError(f"--jobs {jobs}: must be at least 1.")
    checkpoint_arms = read_checkpoint_arms(args.checkpoint)  # every file read and verified up front
    arms += list(checkpoint_arms)
    if args.device == "cuda":
        import torch

        if args.cpu_bf16 == "on":
            raise GenesisUserError("--cpu-bf16 on: only for --device cpu (on a GPU nnU-Net already trains "
                                   "under float16 autocast).")
        if not torch.cuda.is_available():
            raise GenesisUserError("--device cuda: PyTorch sees no CUDA GPU here.")
        jobs = 1
    setting, precision, warning = resolve_cpu_bf16(setting, args.cpu_bf16, args.device)
    if precision:
        print(f"transfer.py: fine-tuning precision: {precision}")
    if warning:
        print(f"transfer.py: warning: {warning}", file=sys.stderr)
    # a float32 run where the setting's default is bfloat16 gets a folder of its own: results stay apart
    suffix = ("_quick" if args.quick else "") + ("_float32" if default_bf16 and not setting.cpu_bf16 else "")
    out = (args.output or Path(__file__).resolve().parent / "output" /
           f"transfer_{msd.name}_{setting_name}{suffix}").resolve()
    # what determines every unit's result; K, seeds and arms may grow between invocations
    config = {"msd_task": str(msd), "device": args.device, "setting": setting_name, "values": asdict(setting),
              "split_seed": args.split_seed, "max_cases": args.max_cases}
    config_file = out / CONFIG_FILE
    refuse_other_identity(json.loads(config_file.read_text()) if config_file.is_file() else None, config, out,
                          "a benchmark run", "Choose another -o folder or delete that one, or repeat that run's "
                          "options (--labelled, --seeds and --arms may change between runs of one folder).")
    if out.is_dir() and any(out.iterdir()) and not config_file.is_file():
        raise GenesisUserError(f"{out} is not empty and is not a benchmark folder; choose another -o.")
    refuse_mixed_checkpoints(out, checkpoint_arms, [arm for arm in arms if arm in ARMS])
    bench = TransferBenchmark(out, msd, args.device, setting_name, setting, args.split_seed, args.max_cases, jobs,
                              checkpoint_arms)
    t0 = time.monotonic()
    units = [(k, s, a) for k in ks for s in seeds for a in arms]
    if args.report_only:
        if args.import_runs is not None:
            raise GenesisUserError("--import-runs writes records; it cannot be combined with --report-only.")
        if not bench.cases_file.is_file():
            raise GenesisUserError(f"--report-only: {out} holds no prepared benchmark ({bench.cases_file} is "
                                   f"missing); run without --report-only first.")
        durations = {n: float(bench.ws.done_info(n).get("seconds", 0.0)) for n in ("convert", "preprocess",
                     "pretrain", "attach", *map(attach_step, checkpoint_arms))
                     if bench.ws.is_done(n)}
        missing = pending_units(out, units)
        if missing:
            print(f"--report-only: {len(missing)} of {len(units)} unit(s) not finished yet, reported without: "
                  + ", ".join(unit_name(*u) for u in missing))
    else:
        imported = source = None
        if args.import_runs is not None:  # refused before anything runs
            source = args.import_runs.expanduser().resolve()
            imported = importable_runs(source, {"task": msd.name, "device": args.device, "setting": setting_name,
                                                "setting_values": asdict(setting), "split_seed": args.split_seed})
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(config, config_file)
        bench.ws.make()
        print(f"transfer benchmark in {out} (logs: {bench.ws.logs}); K {ks}, seeds {seeds}, arms {arms}, "
              f"{jobs} job(s) at a time")
        for arm in checkpoint_arms.values():
            print(f"  arm {arm.name}: {arm.kind} checkpoint {arm.path} (sha256 {arm.sha256[:16]}...), "
                  f"the default start")
        # the pretraining only where an arm reads it (a --checkpoint arm does not)
        pretrain = any(ARMS[arm][1] for arm in arms if arm in ARMS)
        durations = run_steps(bench.ws, bench.shared_steps(pretrain), "transfer").seconds
        folds = bench.register_folds(ks, seeds)
        if imported is not None:
            names = import_runs(imported, source, out, bench.cases()["pool"], units)
            print(f"imported from {args.import_runs}: " + (", ".join(names) if names else "nothing (no pending "
                  f"{'/'.join(CHECKPOINT_FREE_ARMS)} unit there)"))
        todo = pending_units(out, units)
        print(f"{len(units) - len(todo)} of {len(units)} unit(s) done earlier (skipped); {len(todo)} to run")
        run_units(bench, todo, folds)
    runs = [r for r in load_runs(out) if r["K"] in ks and r["seed"] in seeds and r["arm"] in arms]
    cases = bench.cases()
    results = {"task": msd.name, "setting": setting_name, "device": args.device, "setting_values": asdict(setting),
               "split_seed": args.split_seed, "plan": cases["plan"], "schedule": cases["schedule"],
               "n_eval": len(cases["evaluation"]), "n_val": len(cases["val"]), "labelled": ks, "seeds": seeds,
               "arms": arms, "checkpoint_arms": {name: arm.to_dict() for name, arm in checkpoint_arms.items()},
               "shared_seconds": {n: round(v, 1) for n, v in durations.items()},
               "this_invocation_seconds": round(time.monotonic() - t0, 1),
               "summary": summarize(runs, arm_order=arms),
               "criteria": [c for arm in arms if bench.reads_checkpoint(arm) for c in criteria(runs, arm)],
               "unfair_runs": unfair_runs(runs),
               "runs": runs}
    write_json_atomic(results, out / RESULTS_FILE)
    plot(results, out / PLOT_FILE, arm_order=arms)
    print()
    print(table(results))
    print(f"\nresults: {out / RESULTS_FILE}\nplot:    {out / PLOT_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
