"""Fine-tuning starts (trainers.genesis.adapt_start and the variants), warm-up scaling, and the
pretraining's time-budget schedule."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet

from nnunet_genesis.pretraining.trainer import TimeBudgetPolyLRScheduler
from nnunet_genesis.trainers import genesis as g
from nnunet_genesis.trainers import starts, variants
from nnunet_genesis.trainers.schedules import WarmupPolyLRScheduler


def _net() -> PlainConvUNet:
    torch.manual_seed(0)
    net = PlainConvUNet(1, 3, (8, 16, 32), torch.nn.Conv3d, 3, (1, 2, 2), 2, 2, 2, (2, 2),
                        norm_op=torch.nn.InstanceNorm3d, norm_op_kwargs={"affine": True},
                        nonlin=torch.nn.LeakyReLU)
    with torch.no_grad():  # what restoration leaves: small scales, negative shifts
        for m in net.modules():
            if isinstance(m, torch.nn.InstanceNorm3d):
                m.weight.uniform_(0.05, 0.6)
                m.bias.uniform_(-0.9, -0.1)
    return net


def _norms(module):
    return [m for m in module.modules() if isinstance(m, torch.nn.InstanceNorm3d)]


def _is_reset(m) -> bool:
    return bool(torch.all(m.weight == 1) and torch.all(m.bias == 0))


@pytest.mark.parametrize("scope", ["last_stage", "decoder", "all"])
def test_norm_reset_scopes(scope):
    net = _net()
    norm_params = {id(p) for m in _norms(net) for p in m.parameters()}
    conv_before = [(p, p.detach().clone()) for p in net.parameters() if id(p) not in norm_params]
    notes = g.adapt_start(net, scope, False)
    assert "reset to scale 1, shift 0" in notes[0]
    inside = {"last_stage": net.decoder.stages[-1], "decoder": net.decoder.stages, "all": net}[scope]
    reset = {id(m) for m in _norms(inside)}
    assert reset and all(_is_reset(m) for m in _norms(inside))
    expected = {"last_stage": 2, "decoder": 2 * len(net.decoder.stages), "all": len(_norms(net))}[scope]
    assert len(reset) == expected and f"of {expected} normalisation" in notes[0]
    if scope != "all":  # the decoder's reference to the encoder must not widen the scope
        assert not any(_is_reset(m) for m in _norms(net.encoder))
    assert all(not _is_reset(m) for m in _norms(net) if id(m) not in reset)
    assert all(torch.equal(p, before) for p, before in conv_before)  # convolutions are kept


def test_no_reset_keeps_everything_and_reinit_changes_only_the_last_stage():
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert g.adapt_start(net, "", False) == []
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    notes = g.adapt_start(net, "", True)
    assert "re-initialised" in notes[0]
    changed = {k for k, v in net.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith(f"decoder.stages.{len(net.decoder.stages) - 1}.") for k in changed)
    with pytest.raises(ValueError, match="reset_norm_affine"):
        g.adapt_start(net, "encoder", False)


def test_variants_change_one_thing_each():
    base = g.nnUNetTrainerGenesis.start  # the default start: the whole network, nothing reset
    assert (base.include_decoder, base.reset_norm_affine, base.reinit_last_decoder_stage) == (True, "", False)
    whole = variants.nnUNetTrainerGenesis_asPretrained.start
    assert (whole.include_decoder, whole.reset_norm_affine, whole.reinit_last_decoder_stage) == (True, "", False)
    assert variants.nnUNetTrainerGenesis_resetDecoderNorm.start.reset_norm_affine == "decoder"
    for variant in (variants.nnUNetTrainerGenesis_resetDecoderNorm, variants.nnUNetTrainerGenesis_resetLastNorm,
                    variants.nnUNetTrainerGenesis_resetAllNorm, variants.nnUNetTrainerGenesis_reinitLastStage,
                    variants.nnUNetTrainerGenesis_headWarmup, variants.nnUNetTrainerGenesis_lowLR):
        assert variant.start.include_decoder, variant.__name__
    assert variants.nnUNetTrainerGenesis_resetLastNorm.start.reset_norm_affine == "last_stage"
    assert variants.nnUNetTrainerGenesis_resetAllNorm.start.reset_norm_affine == "all"
    assert variants.nnUNetTrainerGenesis_reinitLastStage.start.reinit_last_decoder_stage
    assert not variants.nnUNetTrainerGenesis_encoderOnly.start.include_decoder
    assert not variants.nnUNetTrainerGenesis_nnUNetRecipe.start.include_decoder


def test_warmup_scales_with_the_schedule():
    class T:  # the attributes resolved_warmup_epochs reads
        warmup_epochs = None
        warmup_fraction = 0.01
        resolved = g.nnUNetTrainerWarmupPoly.resolved_warmup_epochs

    t = T()
    for epochs, expected in ((1000, 10), (250, 2), (100, 1), (20, 1)):
        t.num_epochs = epochs
        assert t.resolved() == expected
    t.warmup_epochs = 3
    assert t.resolved() == 3
    recipe = variants.nnUNetTrainerGenesis_nnUNetRecipe.__new__(variants.nnUNetTrainerGenesis_nnUNetRecipe)
    recipe.num_epochs, recipe.warmup_epochs = 20, 1
    assert recipe.resolved_warmup_epochs() == 4  # a fifth of the epochs, whatever warmup_epochs says


def test_lr_scale_of_a_param_group_is_kept_by_the_schedule():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [a]}, {"params": [b], "lr_scale": 0.1}], lr=0.01)
    sched = WarmupPolyLRScheduler(opt, 0.01, max_steps=10, warmup_steps=0)
    sched.step(0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)
    assert opt.param_groups[1]["lr"] == pytest.approx(0.001)


def test_time_budget_schedule_decays_with_training_time():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=1e-3)
    elapsed = [0.0]
    sched = TimeBudgetPolyLRScheduler(opt, 1e-3, budget_seconds=100, elapsed=lambda: elapsed[0])
    seen = []
    for t in (0, 25, 50, 99, 150):
        elapsed[0] = t
        sched.step(123)  # the epoch nnU-Net passes is ignored
        seen.append(opt.param_groups[0]["lr"])
    assert seen[0] == pytest.approx(1e-3)
    assert seen[1] == pytest.approx(1e-3 * 0.75 ** 0.9)
    assert all(b < a for a, b in zip(seen, seen[1:4]))
    assert 0 < seen[4] <= seen[3]  # past the budget: a small positive floor


def test_the_registry_names_each_start_once():
    assert len({s.arm for s in starts.STARTS}) == len({s.suffix for s in starts.STARTS}) == len(starts.STARTS)
    assert starts.DEFAULT_START.trainer == "nnUNetTrainerGenesis" and starts.start_named("encoder").suffix == "encoderOnly"
    with pytest.raises(starts.GenesisUserError, match="headwarmup"):
        starts.start_named("nosuchstart")
    with pytest.raises(ValueError, match="frozen"):
        starts.Start("x", "x", "frozen without a length", frozen="encoder")


def test_every_start_comes_in_every_schedule_with_its_scratch_partner():
    for start in starts.STARTS:
        for schedule in starts.SCHEDULES:
            name = starts.trainer_name(start.trainer, schedule)
            cls = variants.TRAINERS[name]
            assert cls.__name__ == name and cls.start is start and issubclass(cls, g.nnUNetTrainerGenesis)
            partner = starts.scratch_partner(name)
            if start.own_schedule:
                assert partner is None
            else:
                assert issubclass(variants.TRAINERS[partner], g.nnUNetTrainerScratch)
                assert not issubclass(variants.TRAINERS[partner], g.nnUNetTrainerGenesis)
                if schedule:  # the identical schedule: the same mixin
                    assert cls.__mro__[1] is variants.TRAINERS[partner].__mro__[1]
    assert starts.scratch_partner("nnUNetTrainerGenesis_nnUNetRecipe") is None
    assert starts.scratch_partner("nnUNetTrainer") is None
    # names users trained with before the registry still exist
    for name in ("nnUNetTrainerGenesis_encoderOnly_smoke", "nnUNetTrainerGenesis_headWarmup_demo",
                 "nnUNetTrainerStock_demo", "nnUNetTrainerScratch_250epochs", "nnUNetTrainerWarmupPoly"):
        assert name in variants.__all__


def test_frozen_and_warmup_lengths_scale_with_the_epochs():
    head, encoder = starts.start_named("headwarmup"), starts.start_named("freezeencoder")
    assert (head.frozen, head.frozen_epochs(1000), head.frozen_epochs(16), head.frozen_epochs(3)) == ("body", 100, 2, 1)
    assert (encoder.frozen, encoder.frozen_epochs(1000)) == ("encoder", 50)
    assert starts.DEFAULT_START.frozen_epochs(1000) == 0 and starts.DEFAULT_START.warmup_epochs(1000) is None
    assert starts.start_named("nnunetrecipe").warmup_epochs(1000) == 200


def test_docs_table_of_starts_is_the_registry():
    """docs/trainers.md shows the registry's own table (regenerate it with markdown_table())."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "trainers.md").read_text(encoding="utf-8")
    assert starts.markdown_table() in page
