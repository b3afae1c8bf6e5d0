"""Does nnU-Net master's own nnssl route read what ``nnunet-genesis export --format nnssl`` writes?
(docs/weight_transfer.md, "Two routes into nnU-Net").

    python benchmarks/nnunet_master_check.py --nnunet-src NNUNET_MASTER_CHECKOUT \\
        --checkpoint genesis_run/genesis_final.pth --msd-task ../shared/data/Task04_Hippocampus -o OUT

nnU-Net master (not released; 2.8.1 has no nnssl route) is not installed here: ``--nnunet-src`` is
a source checkout (``git clone https://github.com/MIC-DKFZ/nnUNet``), put first on the path of its
commands only, so this environment's packages serve both. Steps, each resumable (a re-run skips
the finished ones), all in OUT's own nnU-Net folders:

1. the Decathlon task converted; the checkpoint exported to nnssl (this package's ``export``);
2. master's ``nnUNetv2_extract_fingerprint`` and ``nnUNetv2_plan_experiment`` (its base plan);
3. workflow B: master's ``nnUNetv2_preprocess_like_nnssl -am like_pretrained``, then its
   ``PretrainedTrainer`` built and initialised as ``nnUNetv2_train_pretrained`` does it;
4. workflow A: a base plan with the checkpoint's architecture (master's dynamic route needs the
   encoder's shapes to match for a PlainConvUNet), master's ``nnUNetv2_plan_like_dynamic``, then its
   ``DynamicPretrainedTrainer`` initialised.

After each initialisation every encoder and decoder tensor is compared with the exported file.
Pass (exit 0): master's "Loaded Network" line, every encoder tensor equal, and the file's
citations (the Models Genesis papers for Genesis pretraining) in the trainer's log; master loads
stem and encoder only, so the decoder is reported, not required. Exit 1 otherwise;
exit 2 on bad input. Results: OUT/master_check.json.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

from nnunet_genesis.checkpoint import sha256_of
from nnunet_genesis.errors import GenesisUserError, script_exit_code
from nnunet_genesis.outputs import write_json_atomic
from nnunet_genesis.run_identity import refuse_other_identity
from nnunet_genesis.workflows.nnunet_steps import NnunetSteps
from nnunet_genesis.workflows.pipeline import Step, StepContext, Workspace, genesis_command, run_steps

RESULTS_FILE = "master_check.json"
CONFIG_FILE = "check_config.json"  # what the folder's finished steps were made from
EXPORT_FILE = "checkpoint_nnssl.pth"
NAME = "genesis_check"
BASE_PLANS = "nnUNetPlans_checkpoint_arch"  # workflow A's base plan: nnU-Net's, with the checkpoint's network
CONFIGURATION = "3d_fullres"
MASTER_MARKER = Path("nnunetv2") / "experiment_planning" / "like_nnssl.py"

# Runs under master's nnunetv2: builds the trainer as nnUNetv2_train_pretrained does, initialises it
# (which loads the pretrained weights) and compares its tensors with the exported file.
LOAD_CHECK = """
import json, sys, torch
from nnunetv2.run.run_training_from_pretrained import get_trainer_from_args
dataset, plans, trainer_name, ckpt, out = sys.argv[1:6]
trainer = get_trainer_from_args(dataset, "3d_fullres", 0, trainer_name, plans, device=torch.device("cpu"))
trainer.initialize()
state = trainer.network.state_dict()
exported = torch.load(ckpt, weights_only=True)
source, citations = exported["network_weights"], exported.get("citations") or []
def count(prefix):  # the decoder holds the encoder too (decoder.encoder.*): counted once, as encoder
    keys = [k for k in state if k.startswith(prefix) and not k.startswith("decoder.encoder.")]
    return sum(k in source and source[k].shape == state[k].shape and torch.equal(source[k], state[k]) for k in keys), len(keys)
log = open(trainer.log_file).read()
json.dump({"trainer": trainer_name, "plans": plans, "network": type(trainer.network).__name__,
           "encoder_equal": count("encoder."), "decoder_equal": count("decoder."),
           "citations": [c["name"] for c in citations], "cited": all(c["name"] in log for c in citations),
           "loaded_line": "Loaded Network" in log}, open(out, "w"))
"""


def master_entry(module: str, function: str, *args: str) -> list[str]:
    """A console script of master's nnunetv2 (its entry point, called as the script would be)."""
    code = f"import sys; from {module} import {function} as f; sys.argv[0] = {function!r}; sys.exit(f())"
    return [sys.executable, "-c", code, *args]


def master_commit(src: Path) -> str:
    found = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True)
    return found.stdout.strip() if found.returncode == 0 else "unknown (not a git checkout)"


def checked_master_source(src: Path) -> Path:
    src = src.expanduser().resolve()
    if not (src / MASTER_MARKER).is_file():
        raise GenesisUserError(
            f"{src} is not an nnU-Net source checkout with the nnssl route: {MASTER_MARKER} is missing. "
            f"Pass --nnunet-src a clone of https://github.com/MIC-DKFZ/nnUNet at master (commit 0e495086 "
            f"or later); the released nnunetv2 2.8.1 has no such route.")
    return src


def task_dataset_id(msd_task: Path) -> int:
    match = re.match(r"Task(\d+)_", msd_task.name)
    if not match or not (msd_task / "dataset.json").is_file():
        raise GenesisUserError(f"{msd_task} is not a Decathlon task folder (TaskNN_Name with a dataset.json); "
                               f"pass --msd-task such a folder.")
    return int(match.group(1))


def base_plans_with_checkpoint_architecture(plans: dict, adaptation_plan: dict) -> dict:
    """nnU-Net's plans with the 3d_fullres network replaced by the checkpoint's (workflow A's base)."""
    arch = adaptation_plan["architecture_plans"]
    out = json.loads(json.dumps(plans))
    out["plans_name"] = BASE_PLANS
    out["configurations"][CONFIGURATION]["architecture"] = {
        "network_class_name": arch["arch_class_name"], "arch_kwargs": arch["arch_kwargs"],
        "_kw_requires_import": list(arch["arch_kwargs_requiring_import"])}
    return out


class MasterCheck:
    def __init__(self, out: Path, src: Path, checkpoint: Path, msd_task: Path, dataset_id: int,
                 patch_size: list[int] | None = None):
        self.ws, self.src, self.checkpoint, self.msd_task = Workspace(out), src, checkpoint, msd_task
        self.patch_size = patch_size
        self.nnunet = NnunetSteps(self.ws, dataset_id, CONFIGURATION, "cpu")
        self.dataset_id = str(dataset_id)
        self.exported = self.ws.root / EXPORT_FILE

    def steps(self) -> list[Step]:
        return [
            Step("convert", "nnUNetv2_convert_MSD_dataset", lambda ctx: {"dataset": self.nnunet.convert_msd(ctx, self.msd_task)},
                 self.nnunet.raw_partial),
            Step("export", "nnunet-genesis export --format nnssl", self._export, lambda: [self.exported]),
            Step("plan", "master: extract_fingerprint + plan_experiment", self._plan, self.nnunet.preprocessed_partial),
            Step("workflow_b", "master: preprocess_like_nnssl + PretrainedTrainer", self._workflow_b),
            Step("workflow_a", "master: plan_like_dynamic + DynamicPretrainedTrainer", self._workflow_a),
        ]

    def _master(self, ctx: StepContext, cmd: list[str]) -> None:
        ctx.command(cmd, {"PYTHONPATH": str(self.src)})

    def _export(self, ctx: StepContext) -> dict:
        patch = ["--patch-size", *map(str, self.patch_size)] if self.patch_size else []
        ctx.command(genesis_command("export", str(self.checkpoint), "--format", "nnssl", "-o", str(self.exported),
                                    *patch))
        return {}

    def _plan(self, ctx: StepContext) -> dict:
        e = "nnunetv2.experiment_planning.plan_and_preprocess_entrypoints"
        self._master(ctx, master_entry(e, "extract_fingerprint_entry", "-d", self.dataset_id, "-np", "1"))
        self._master(ctx, master_entry(e, "plan_experiment_entry", "-d", self.dataset_id))
        return {}

    def _load(self, ctx: StepContext, plans: str, trainer: str) -> dict:
        result = self.ws.root / f"load_{trainer}.json"
        self._master(ctx, [sys.executable, "-c", LOAD_CHECK, self.dataset_id, plans, trainer, str(self.exported),
                           str(result)])
        return json.loads(result.read_text())

    def _workflow_b(self, ctx: StepContext) -> dict:
        self._master(ctx, master_entry("nnunetv2.experiment_planning.like_nnssl", "preprocess_like_nnssl_entrypoint",
                                       "-d", self.dataset_id, "-n", NAME, "-pc", str(self.exported),
                                       "-am", "like_pretrained", "-np", "1"))
        pre = self.ws.preprocessed / self.nnunet.dataset_name
        plans = sorted(pre.glob(f"ptPlans__{NAME}__*.json"))
        if len(plans) != 1:
            raise GenesisUserError(f"nnUNetv2_preprocess_like_nnssl wrote {len(plans)} ptPlans__{NAME}__*.json in {pre}, "
                                   f"expected 1; see {ctx.log}.", exit_code=1)
        return self._load(ctx, plans[0].stem, "PretrainedTrainer")

    def _workflow_a(self, ctx: StepContext) -> dict:
        import torch

        pre = self.ws.preprocessed / self.nnunet.dataset_name
        adaptation = torch.load(self.exported, weights_only=True)["nnssl_adaptation_plan"]
        plans = json.loads((pre / "nnUNetPlans.json").read_text())
        write_json_atomic(base_plans_with_checkpoint_architecture(plans, adaptation), pre / f"{BASE_PLANS}.json")
        self._master(ctx, master_entry("nnunetv2.experiment_planning.like_nnssl", "plan_like_dynamic_entrypoint",
                                       "-d", self.dataset_id, "-n", NAME, "-pc", str(self.exported), "-pl", BASE_PLANS))
        return self._load(ctx, f"ptPlans_dynamic__{NAME}", "DynamicPretrainedTrainer")


def passed(load: dict) -> bool:
    equal, total = load["encoder_equal"]
    return total > 0 and equal == total and load["cited"] and load["loaded_line"]


def run(args: argparse.Namespace) -> int:
    src = checked_master_source(args.nnunet_src)
    msd_task = args.msd_task.expanduser().resolve()
    dataset_id = task_dataset_id(msd_task)
    checkpoint = args.checkpoint.expanduser().resolve()
    if not checkpoint.is_file():
        raise GenesisUserError(f"{checkpoint}: no such checkpoint file; pass --checkpoint any file "
                               f"'nnunet-genesis attach' accepts.")
    out = args.output.expanduser().resolve()
    config = {"nnunet_src": str(src), "nnunet_commit": master_commit(src), "checkpoint_sha256": sha256_of(checkpoint),
              "msd_task": str(msd_task), "patch_size": args.patch_size}
    recorded = out / CONFIG_FILE
    refuse_other_identity(json.loads(recorded.read_text()) if recorded.is_file() else None, config, out,
                          "a master check", "Choose another -o folder or repeat that run's options.")
    if out.is_dir() and any(out.iterdir()) and not recorded.is_file():
        raise GenesisUserError(f"{out} is not empty and is not a master-check folder; choose another -o.")
    check = MasterCheck(out, src, checkpoint, msd_task, dataset_id, args.patch_size)
    check.ws.make()
    write_json_atomic(config, recorded)
    run_steps(check.ws, check.steps(), "nnU-Net master's nnssl route")
    loads = {name: check.ws.done_info(name) for name in ("workflow_b", "workflow_a")}
    results = {**config, "checkpoint": str(checkpoint), "exported": str(check.exported), "workflows": loads, "passed": all(passed(v) for v in loads.values())}
    write_json_atomic(results, check.ws.root / RESULTS_FILE)
    print(f"\nnnU-Net master {results['nnunet_commit']} reading {check.exported.name}:")
    for name, v in loads.items():
        (ee, et), (de, dt) = v["encoder_equal"], v["decoder_equal"]
        print(f"  {name}: {v['trainer']} ({v['network']}): encoder {ee}/{et} tensors equal to the file, decoder "
              f"{de}/{dt} (master loads stem and encoder only), citations "
              f"{', '.join(v['citations']) or 'none in the file'}: {'printed' if v['cited'] else 'NOT printed'}"
              f" -> {'ok' if passed(v) else 'FAILED'}")
    print(f"results: {check.ws.root / RESULTS_FILE}")
    return 0 if results["passed"] else 1


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nnunet-src", type=Path, required=True, help="a source checkout of nnU-Net master")
    p.add_argument("--checkpoint", type=Path, required=True, help="any file 'nnunet-genesis attach' accepts")
    p.add_argument("--msd-task", type=Path, required=True, help="a Decathlon task folder (MSD layout)")
    p.add_argument("--patch-size", type=int, nargs=3, metavar=("Z", "Y", "X"),
                   help="export's recommended downstream patch (needed where the file records none: "
                        "an nnU-Net training checkpoint, the v1 file)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder (its own nnU-Net folders)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    return script_exit_code("nnunet_master_check.py", lambda: run(args),
                            "interrupted; re-run the same command to continue.")


if __name__ == "__main__":
    sys.exit(main())
