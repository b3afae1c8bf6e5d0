"""Genesis trainers in-process (CPU): where weights come from, schedule, freezing, refusals.

The end-to-end runs through the real nnUNetv2_train / nnUNetv2_predict commands are in
test_nnunet_commands.py.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from damage import bit_flipped
from nnunet_genesis.checkpoint import load_checkpoint, sha256_of
from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.trainers import genesis as g
from nnunet_genesis.trainers import variants
from nnunet_genesis.trainers.schedules import WarmupPolyLRScheduler, warmup_poly_lr


def _plans(source: dict, ckpt=None, name: str = "nnUNetPlans_trainerTest") -> dict:
    plans = copy.deepcopy(source)
    plans["plans_name"] = name
    if ckpt is not None:
        plans["genesis"] = {"checkpoint": str(ckpt), "sha256": sha256_of(ckpt), "source_plans": "nnUNetPlans"}
    plans["continue_training"] = False  # what nnUNetv2_train adds before building the trainer
    return plans


def _trainer(cls, plans, env):
    return cls(plans=plans, configuration="3d_fullres", fold=0, dataset_json=env["dataset_json"],
               device=torch.device("cpu"))


def test_genesis_trainer_without_genesis_block_refuses_before_writing_anything(env, hippocampus_plans):
    with pytest.raises(GenesisUserError) as e:
        _trainer(variants.nnUNetTrainerGenesis_smoke, _plans(hippocampus_plans), env)
    msg = str(e.value)
    assert "no 'genesis' block" in msg and "nnunet-genesis attach" in msg and "nnUNetPlans_trainerTest" in msg
    assert list(env["results"].iterdir()) == []  # no output folder, no log


def test_transfer_loads_every_tensor_but_the_head_and_saves_the_report(env, hippocampus_plans,
                                                                     make_genesis_checkpoint, tmp_path):
    ckpt = make_genesis_checkpoint(tmp_path / "genesis.pth", seed=3)
    trainer = _trainer(variants.nnUNetTrainerGenesis_smoke, _plans(hippocampus_plans, ckpt), env)  # the default start
    trainer.initialize()
    head_before = {k: v.clone() for k, v in trainer.network.state_dict().items() if ".seg_layers." in k}
    report = trainer.transfer_genesis_weights()
    assert report.encoder_fraction == 1.0 and report.decoder_fraction == 1.0
    weights = load_checkpoint(ckpt).network_weights
    state = trainer.network.state_dict()
    compared = 0
    for key, value in state.items():
        if ".seg_layers." in key:
            assert torch.equal(value, head_before[key])  # head never transferred
        elif key in weights and value.shape == weights[key].shape:
            assert torch.equal(value, weights[key]), key
            compared += 1
    assert compared >= 62  # 32 encoder + 30 decoder tensors of the 4-stage plan
    saved = json.loads((env["results"] / "Dataset004_Hippocampus" /
                        "nnUNetTrainerGenesis_smoke__nnUNetPlans_trainerTest__3d_fullres" / "fold_0" /
                        g.TRANSFER_REPORT_NAME).read_text())
    assert saved["encoder_fraction"] == 1.0 and saved["decoder_fraction"] == 1.0


def test_encoder_only_leaves_the_decoder_random(env, hippocampus_plans, make_genesis_checkpoint, tmp_path):
    ckpt = make_genesis_checkpoint(tmp_path / "genesis.pth", seed=4)
    trainer = _trainer(variants.nnUNetTrainerGenesis_encoderOnly, _plans(hippocampus_plans, ckpt), env)
    trainer.initialize()
    report = trainer.transfer_genesis_weights()
    assert report.encoder_fraction == 1.0 and report.decoder_fraction == 0.0
    weights = load_checkpoint(ckpt).network_weights
    net = trainer.network
    assert torch.equal(net.encoder.stages[0][0].convs[0].conv.weight, weights["encoder.stages.0.0.convs.0.conv.weight"])
    assert not torch.equal(net.decoder.stages[0].convs[0].conv.weight, weights["decoder.stages.0.convs.0.conv.weight"])


def test_pretrained_weights_option_cannot_be_combined(env, hippocampus_plans, make_genesis_checkpoint, tmp_path):
    """nnUNetv2_train -pretrained_weights loads into the network after initialize(); refuse it."""
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights

    ckpt = make_genesis_checkpoint(tmp_path / "genesis.pth")
    other = make_genesis_checkpoint(tmp_path / "other.pth", seed=5)
    trainer = _trainer(variants.nnUNetTrainerGenesis_smoke, _plans(hippocampus_plans, ckpt), env)
    trainer.initialize()
    load_pretrained_weights(trainer.network, str(other), verbose=False)  # what run_training does
    with pytest.raises(GenesisUserError, match="-pretrained_weights"):
        trainer.on_train_start()


def test_schedule_and_smoke_settings(env, hippocampus_plans, make_genesis_checkpoint, tmp_path):
    ckpt = make_genesis_checkpoint(tmp_path / "genesis.pth")
    full = _trainer(g.nnUNetTrainerGenesis, _plans(hippocampus_plans, ckpt), env)
    full.initialize()
    assert isinstance(full.lr_scheduler, WarmupPolyLRScheduler)
    assert (full.num_epochs, full.warmup_epochs, full.batch_size) == (1000, 10, 2)
    for epoch in (0, 4, 9, 10, 500, 999):
        full.lr_scheduler.step(epoch)
        assert full.optimizer.param_groups[0]["lr"] == pytest.approx(warmup_poly_lr(epoch, 1e-2, 1000, 10))
    assert full.optimizer.param_groups[0]["lr"] < 1e-3

    smoke = _trainer(variants.nnUNetTrainerScratch_smoke, _plans(hippocampus_plans, name="nnUNetPlans"), env)
    smoke.initialize()  # the scratch baseline needs no genesis block
    assert (smoke.num_epochs, smoke.num_iterations_per_epoch, smoke.num_val_iterations_per_epoch) == (2, 2, 1)
    assert (smoke.warmup_epochs, smoke.batch_size) == (1, 1)
    smoke.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    assert smoke.inference_allowed_mirroring_axes is None
    assert issubclass(variants.nnUNetTrainerGenesis_100epochs, g.nnUNetTrainerGenesis)
    assert _trainer(variants.nnUNetTrainerGenesis_100epochs, _plans(hippocampus_plans, ckpt), env).num_epochs == 100
    assert _trainer(variants.nnUNetTrainerScratch_250epochs, _plans(hippocampus_plans, name="nnUNetPlans"),
                    env).num_epochs == 250


def test_freeze_encoder_keeps_encoder_unchanged_in_frozen_epochs(env, hippocampus_plans,
                                                                 make_genesis_checkpoint, tmp_path):
    ckpt = make_genesis_checkpoint(tmp_path / "genesis.pth")
    trainer = _trainer(variants.nnUNetTrainerGenesis_freezeEncoder, _plans(hippocampus_plans, ckpt), env)
    trainer.initialize()
    assert trainer.frozen_epochs == 50  # 0.05 of 1000 epochs
    trainer.frozen_epochs = 2  # so that the test sees the unfreezing
    net = trainer.network
    encoder_ids = {id(p) for p in net.encoder.parameters()}
    rest = [p for p in net.parameters() if id(p) not in encoder_ids]
    assert rest  # decoder stages, transposed convs and head

    def step():  # the optimizer step of train_step, with a gradient on every parameter
        trainer.optimizer.zero_grad(set_to_none=True)
        for p in net.parameters():
            p.grad = torch.ones_like(p)
        trainer.optimizer.step()

    enc0 = [p.detach().clone() for p in net.encoder.parameters()]
    rest0 = [p.detach().clone() for p in rest]
    for epoch in (0, 1):
        trainer.current_epoch = epoch
        trainer.lr_scheduler.step(epoch)
        step()
    assert all(torch.equal(a, b) for a, b in zip(enc0, net.encoder.parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(rest0, rest))
    trainer.current_epoch = 2
    trainer.lr_scheduler.step(2)
    step()
    assert all(not torch.equal(a, b) for a, b in zip(enc0, net.encoder.parameters()))


def test_weights_are_transferred_only_when_training_starts_fresh(env, hippocampus_plans, make_genesis_checkpoint,
                                                                  tmp_path, monkeypatch):
    """--c (nnU-Net loaded its own checkpoint, current_epoch > 0) never reads the Genesis file."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    started = []
    monkeypatch.setattr(nnUNetTrainer, "on_train_start", lambda self: started.append(self.current_epoch))
    ckpt = make_genesis_checkpoint(tmp_path / "genesis.pth")
    plans = _plans(hippocampus_plans, ckpt)
    ckpt.unlink()
    resumed = _trainer(variants.nnUNetTrainerGenesis_smoke, copy.deepcopy(plans), env)
    resumed.initialize()
    resumed.current_epoch = 1  # as after nnUNetTrainer.load_checkpoint
    resumed.on_train_start()
    assert started == [1] and resumed.genesis_transfer_report is None

    fresh = _trainer(variants.nnUNetTrainerGenesis_smoke, copy.deepcopy(plans), env)
    with pytest.raises(GenesisUserError, match="does not exist"):
        fresh.on_train_start()
    assert started == [1]  # stopped before nnU-Net's own start-up (data loaders, plans copy)


def test_every_shipped_trainer_refuses_pretrained_weights_before_loading(env, hippocampus_plans,
                                                                         make_genesis_checkpoint, tmp_path,
                                                                         monkeypatch):
    """nnU-Net loads -pretrained_weights with weights_only=False right after initialize(): every class of
    this package (the scratch and stock partners included) derives the refusal from nnUNetTrainerSafeLoading."""
    from nnunet_genesis.pretraining.trainer import nnUNetTrainerGenesisPretrain

    assert all(issubclass(cls, g.nnUNetTrainerSafeLoading) for cls in variants.TRAINERS.values())
    assert issubclass(variants.nnUNetTrainerStock_demo, g.nnUNetTrainerSafeLoading)
    assert "-pretrained_weights" in nnUNetTrainerGenesisPretrain.initialize.__doc__  # its own refusal (other layer)
    ckpt = make_genesis_checkpoint(tmp_path / "genesis.pth")
    monkeypatch.setattr("sys.argv", ["nnUNetv2_train", "4", "3d_fullres", "0", "-pretrained_weights", "EVIL"])
    for cls, plans in ((variants.nnUNetTrainerScratch_smoke, _plans(hippocampus_plans, name="nnUNetPlans")),
                       (variants.nnUNetTrainerGenesis_smoke, _plans(hippocampus_plans, ckpt))):
        trainer = _trainer(cls, plans, env)
        with pytest.raises(GenesisUserError, match="-pretrained_weights") as e:
            trainer.initialize()
        assert "weights_only=False" in str(e.value) and not trainer.was_initialized


@pytest.fixture()
def training_checkpoint(env, hippocampus_plans, tmp_path):
    """A scratch trainer, initialised, and the nnU-Net training checkpoint it wrote."""
    trainer = _trainer(variants.nnUNetTrainerScratch_smoke, _plans(hippocampus_plans, name="nnUNetPlans"), env)
    trainer.initialize()
    trainer.current_epoch = 1
    path = tmp_path / "checkpoint_latest.pth"
    trainer.save_checkpoint(str(path))
    return trainer, path


def _resave(path, damage):
    obj = torch.load(path, weights_only=False)  # the test's own file
    damage(obj)
    torch.save(obj, path)


def _nan_first(obj):
    w = obj["network_weights"]
    key = next(k for k, v in w.items() if v.is_floating_point())
    w[key] = w[key].clone().fill_(float("nan"))


def _other_architecture(obj):
    w = obj["network_weights"]
    key = next(k for k in w if k.endswith("conv.weight"))
    w[key] = torch.zeros(7, *w[key].shape[1:])


@pytest.mark.parametrize("damage, needles", [
    (None, ("fails its CRC check",)),
    (lambda o: o.pop("network_weights"), ("lacks ['network_weights']",)),
    (lambda o: o.update(network_weights=[1, 2]), ("'network_weights' is a list",)),
    (_other_architecture, ("has shape [7,", "this trainer's network needs [32,")),
    (lambda o: o["network_weights"].pop(next(iter(o["network_weights"]))), ("lacks 'encoder.",)),
    (_nan_first, ("NaN",)),
    (lambda o: o.update(network_weights={k: v.to(torch.int64) for k, v in o["network_weights"].items()}),
     ("stored as int64",)),
])
def test_continue_verifies_the_training_checkpoint_against_the_network(training_checkpoint, damage, needles):
    """--c: nnU-Net's loader would train on (or fail with a traceback on) whatever the file holds."""
    trainer, path = training_checkpoint
    trainer.current_epoch = 0
    trainer.load_checkpoint(str(path))  # intact: loads
    assert trainer.current_epoch == 2  # nnU-Net saves the epoch to continue with
    if damage is None:
        bit_flipped(path, path)
    else:
        _resave(path, damage)
    with pytest.raises(GenesisUserError) as e:
        trainer.load_checkpoint(str(path))
    assert str(path) in str(e.value) and all(n in str(e.value) for n in needles), str(e.value)


def test_a_full_disk_while_saving_keeps_the_last_complete_checkpoint(env, hippocampus_plans, monkeypatch, capsys):
    """nnU-Net writes checkpoints in place: a full disk left a truncated checkpoint_latest.pth over the
    last complete one. Now the write goes to a temp file, and the stop says how to continue."""
    import errno

    trainer = _trainer(variants.nnUNetTrainerScratch_smoke, _plans(hippocampus_plans, name="nnUNetPlans"), env)
    trainer.initialize()
    latest = Path(trainer.output_folder) / "checkpoint_latest.pth"
    latest.parent.mkdir(parents=True, exist_ok=True)
    latest.write_bytes(b"the last complete checkpoint")

    def full_disk(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device", str(f))

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(SystemExit) as e:
        trainer.save_checkpoint(str(latest))
    assert e.value.code == 2
    assert latest.read_bytes() == b"the last complete checkpoint"
    assert sorted(p.name for p in latest.parent.iterdir() if p.name.endswith(".tmp")) == []
    err = capsys.readouterr().err
    assert "training stopped" in err and "file system is full" in err and "--c" in err


def test_a_full_disk_in_nnunets_own_writes_stops_the_training_with_a_message(env, hippocampus_plans, monkeypatch,
                                                                              capsys):
    """progress.png, logs and validation outputs are written by nnU-Net itself: a full disk there ended
    in a traceback."""
    import errno

    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    trainer = _trainer(variants.nnUNetTrainerScratch_smoke, _plans(hippocampus_plans, name="nnUNetPlans"), env)

    def full_disk(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "progress.png")

    for hook in ("run_training", "perform_actual_validation"):
        monkeypatch.setattr(nnUNetTrainer, hook, full_disk)
        with pytest.raises(SystemExit) as e:
            getattr(trainer, hook)()
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert "training stopped" in err and "progress.png" in err and "--c" in err
