"""The cascade end to end, on plans nnU-Net itself wrote: a synthetic dataset of 96³ volumes planned
with ``-gpu_memory_target 0.25`` (the fullres patch then covers less than a quarter of the median
image, so nnU-Net plans 3d_lowres and 3d_cascade_fullres, as it does for liver CT), preprocessed,
and ``nnunet-genesis recipe --configurations 3d_cascade_fullres`` with the smoke trainers on CPU:
attach -> 3d_lowres folds 0 and 1 (their validation writes the next stage's inputs) ->
3d_cascade_fullres fold 0 from the Genesis checkpoint -> selection -> prediction of the test
image through both stages -> post-processing. The cascade network's start is checked against
the documented rule (docs/weight_transfer.md): image channel = the checkpoint's filters,
previous-stage segmentation channels = 0.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nnunet_genesis.checkpoint import load_checkpoint, save_checkpoint
from nnunet_genesis.network import arch_from_plans, build_network
from nnunet_genesis.synthetic import SyntheticConfig, write_nnunet_dataset

pytestmark = pytest.mark.slow
DATASET_ID, NAME = 992, "GenesisCascade"
DATASET = f"Dataset{DATASET_ID:03d}_{NAME}"
TRAINER = "nnUNetTrainerGenesis_smoke"
IN_PROJ = "encoder.stages.0.0.convs.0.conv.weight"


def _run(cmd: list[str], env: dict[str, str], root: Path, timeout: int) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=root)
    assert result.returncode == 0, f"{cmd[:4]} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


@pytest.fixture(scope="module")
def cascade_run(tmp_path_factory, cpu_nnunet_env):
    root = tmp_path_factory.mktemp("cascade")
    env = cpu_nnunet_env(root)
    write_nnunet_dataset(root / "nnUNet_raw", SyntheticConfig(n_train=4, n_test=1, shape=(96, 96, 96), seed=3),
                         dataset_id=DATASET_ID, name=NAME)
    bin_dir = Path(sys.executable).parent
    _run([str(bin_dir / "nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-gpu_memory_target", "0.25",
          "-c", "3d_fullres", "3d_lowres", "-np", "1", "1", "--no_pbar"],
         {**env, "nnUNet_n_proc_DA": "1"}, root, timeout=600)  # the planner sets torch's threads to it: 0 is refused
    pre = root / "nnUNet_preprocessed" / DATASET
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    assert {"3d_lowres", "3d_cascade_fullres"} <= set(plans["configurations"]), \
        f"nnU-Net planned no cascade for 96³ volumes at 0.25 GB: {sorted(plans['configurations'])}"
    cases = sorted(p.name[: -len(".nii.gz")] for p in (root / "nnUNet_raw" / DATASET / "labelsTr").iterdir())
    (pre / "splits_final.json").write_text(json.dumps([{"train": cases[:2], "val": cases[2:]},
                                                       {"train": cases[2:], "val": cases[:2]}]))
    meta = arch_from_plans(plans, "3d_fullres", input_channels=1, output_channels=1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        network = build_network(meta, deep_supervision=False)
    checkpoint = save_checkpoint(root / "genesis_final.pth", network.state_dict(), {**meta, "source": "pretrain"})
    result = _run([sys.executable, "-m", "nnunet_genesis.cli", "recipe", "-d", str(DATASET_ID), "-c", str(checkpoint),
                   "--configurations", "3d_cascade_fullres", "--folds", "0", "--trainer", TRAINER,
                   "--device", "cpu"], env, root, timeout=1500)
    return root, checkpoint, result


def test_the_cascade_trains_after_every_lowres_fold_and_predicts_through_both_stages(cascade_run):
    root, _, result = cascade_run
    out = result.stdout
    for label in ("train 3d_lowres fold 0", "train 3d_lowres fold 1", "train 3d_cascade_fullres fold 0",
                  "select the best model/ensemble (genesis)", "apply the selected post-processing"):
        assert label in out, f"no progress line for {label!r}:\n{out}"
    assert out.index("train 3d_lowres fold 1") < out.index("train 3d_cascade_fullres fold 0")
    results = root / "nnUNet_results" / DATASET
    lowres = results / f"{TRAINER}__nnUNetPlans_genesis__3d_lowres"
    next_stage = sorted(p.name.split(".")[0] for p in (lowres / "predicted_next_stage" / "3d_cascade_fullres").iterdir())
    assert sorted(set(next_stage)) == [f"genesisdemo_{i:03d}" for i in range(4)]  # every training case, both folds
    cascade = results / f"{TRAINER}__nnUNetPlans_genesis__3d_cascade_fullres" / "fold_0"
    assert (cascade / "checkpoint_final.pth").is_file()
    report = json.loads((cascade / "genesis_transfer_report.json").read_text())
    assert report["encoder_fraction"] == 1.0 and report["decoder_fraction"] == 1.0
    assert any("previous-stage segmentation (cascade), zero start" in n for n in report["notes"])

    info = json.loads((results / "genesis_recipe" / "selection" / "genesis" / "inference_information.json").read_text())
    assert [m["configuration"] for m in info["best_model_or_ensemble"]["selected_model_or_models"]] == \
        ["3d_cascade_fullres"]
    state = json.loads((results / "genesis_recipe" / "recipe_state.json").read_text())
    predict = state["finished"][f"predict/{TRAINER}__nnUNetPlans_genesis__3d_cascade_fullres"]["command"]
    assert "-prev_stage_predictions" in predict
    prev = Path(predict[predict.index("-prev_stage_predictions") + 1])
    assert sorted(p.name for p in prev.glob("*.nii.gz")) == ["genesisdemo_004.nii.gz"]
    final = results / "genesis_recipe" / "predictions" / "final"
    assert sorted(p.name for p in final.glob("*.nii.gz")) == ["genesisdemo_004.nii.gz"]


def test_the_cascade_starts_from_the_checkpoint_with_zero_segmentation_channels(cascade_run, cpu_nnunet_env,
                                                                                monkeypatch):
    """The start itself, on nnU-Net's own cascade plans (the attach-written variant): the trainer's
    network before any step, compared with the checkpoint."""
    from nnunet_genesis.trainers import variants

    root, checkpoint, _ = cascade_run
    for name, value in cpu_nnunet_env(root).items():
        if name.startswith("nnUNet_"):
            monkeypatch.setenv(name, value)
    pre = root / "nnUNet_preprocessed" / DATASET
    plans = json.loads((pre / "nnUNetPlans_genesis.json").read_text())
    dataset_json = json.loads((pre / "dataset.json").read_text())
    plans["continue_training"] = False
    trainer = variants.nnUNetTrainerGenesis_smoke(plans=plans, configuration="3d_cascade_fullres", fold=1,
                                                 dataset_json=dataset_json, device=torch.device("cpu"))
    assert trainer.is_cascaded
    trainer.initialize()
    trainer.transfer_genesis_weights()
    start = trainer.network.state_dict()
    pretrained = load_checkpoint(checkpoint).network_weights
    n_labels = len(dataset_json["labels"]) - 1
    assert start[IN_PROJ].shape[1] == 1 + n_labels and pretrained[IN_PROJ].shape[1] == 1
    assert torch.equal(start[IN_PROJ][:, :1], pretrained[IN_PROJ])
    assert torch.count_nonzero(start[IN_PROJ][:, 1:]) == 0
    decoder = [k for k in pretrained if k.startswith("decoder.stages.") and k.endswith("conv.weight")]
    assert decoder and all(torch.equal(start[k], pretrained[k]) for k in decoder)
