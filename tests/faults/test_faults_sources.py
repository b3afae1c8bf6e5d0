"""Fault injection for the foreign checkpoint kinds (issue 32, section 5), table-driven: a file of none of the
accepted kinds, a truncated or code-carrying nnU-Net checkpoint, an nnU-Net checkpoint whose plans cannot be
found or do not describe its weights, an nnssl plan with missing or contradicting fields, a file holding only a
segmentation head, and a network family that cannot map (ResEnc or Primus into nnU-Net's default PlainConvUNet
plan). attach and inspect (-d) refuse each with exit 2, a message naming the file and the problem, no traceback
and nothing written (``fault_harness.check_case``)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Callable

import pytest

from nnunet_genesis.network import build_network

from fault_harness import Case, World, _RunsCode, check_case, registry, torch_file, truncated
from pretrained_files import (PRIMUS_KEYS, nnssl_checkpoint, nnssl_plan, nnunet_training_checkpoint,
                              primus_like_weights, resenc_arch)

CASES, case = registry()
VARIANT = "nnUNetPlans_faultsSources"


def _env(w: World) -> dict[str, str]:
    return {"nnUNet_preprocessed": str(w.nnunet["nnUNet_preprocessed"]), "nnUNet_raw": str(w.nnunet["nnUNet_raw"])}


def _plans(w: World, **kwargs_changes) -> dict:
    """The hippocampus plans with 3d_fullres building the world's small network (as a source's plans)."""
    folder = Path(w.nnunet["nnUNet_preprocessed"]) / w.nnunet["dataset_name"]
    plans = json.loads((folder / "nnUNetPlans.json").read_text())
    plans["configurations"]["3d_fullres"]["architecture"] = {
        "network_class_name": w.metadata["network_class"],
        "arch_kwargs": dict(copy.deepcopy(w.metadata["network_kwargs"]), **kwargs_changes),
        "_kw_requires_import": w.metadata["network_kwargs_requires_import"]}
    return plans


def _nnunet(w: World, path: Path, weights=None, plans=True, configuration="3d_fullres", **changes) -> Path:
    return nnunet_training_checkpoint(path, w.weights if weights is None else weights,
                                      _plans(w, **changes) if plans else None, configuration)


def _resenc_weights() -> tuple[dict, dict]:
    arch = resenc_arch([4, 8, 16])
    return build_network(arch).state_dict(), arch["network_kwargs"]


def _nnssl(t: Path, change: Callable[[dict], None] = lambda plan: None, **extra) -> Path:
    weights, kwargs = _resenc_weights()
    plan = nnssl_plan("ResidualEncoderUNet", kwargs)
    change(plan)
    return nnssl_checkpoint(t / "nnssl.pth", weights, plan, **extra)


def _set(**values) -> Callable[[dict], None]:
    return lambda plan: plan.update(values)


# name -> (make(world, tmp) -> checkpoint, needles)
SOURCES: dict[str, tuple[Callable[[World, Path], Path], tuple[str, ...]]] = {
    "none-of-the-kinds": (lambda w, t: torch_file(t / "model.pth", {"model": dict(w.weights)}),
                          ("or any other kind nnunet-genesis accepts", "nnssl checkpoint")),
    "nnunet-truncated": (lambda w, t: truncated(_nnunet(w, t / "src" / "checkpoint_final.pth"), t / "cut.pth"),
                         ("truncated",)),
    "nnunet-code-in-init-args": (lambda w, t: torch_file(t / "evil.pth", {
        "network_weights": dict(w.weights), "trainer_name": "nnUNetTrainer", "init_args": {"plans": _RunsCode(
            t / "ran")}}), ("holds the global", "nothing in it ran")),
    "nnunet-plans-not-found": (lambda w, t: _nnunet(w, t / "fold_0" / "checkpoint_final.pth", plans=False),
                               ("carries no plans", "--source-plans FILE")),
    "nnunet-plans-of-another-network": (lambda w, t: _nnunet(w, t / "c.pth", features_per_stage=[4, 8, 32]),
                                        ("not the network its plans describe", "--source-plans")),
    "nnunet-no-configuration": (lambda w, t: _nnunet(w, t / "c.pth", configuration=None),
                                ("which configuration",)),
    "head-only": (lambda w, t: _nnunet(w, t / "c.pth", weights={k: v for k, v in w.weights.items()
                                                                 if k.startswith("decoder.seg_layers.")}),
                  ("only segmentation-head tensors", "nothing to start from")),
    "nnssl-plan-not-a-dict": (lambda w, t: torch_file(t / "p.pth", {"network_weights": dict(w.weights),
                                                                    "nnssl_adaptation_plan": ["ResEncL"]}),
                              ("is a list",)),
    "nnssl-missing-key-to-encoder": (lambda w, t: _nnssl(t, lambda plan: plan.pop("key_to_encoder")),
                                     ("lacks key_to_encoder",)),
    "nnssl-missing-architecture-name": (lambda w, t: _nnssl(t, lambda plan: plan["architecture_plans"].pop(
        "arch_class_name")), ("lacks architecture_plans.arch_class_name",)),
    "nnssl-channels-contradict-weights": (lambda w, t: _nnssl(t, _set(pretrain_num_input_channels=3)),
                                          ("pretrain_num_input_channels 3", "contradict")),
    "nnssl-encoder-prefix-selects-nothing": (lambda w, t: _nnssl(t, _set(key_to_encoder="backbone.stages")),
                                             ("'backbone.stages' selects none", "contradict")),
    "nnssl-unknown-architecture": (lambda w, t: _nnssl(t, lambda plan: plan["architecture_plans"].update(
        arch_class_name="SwinUNETR")), ("'SwinUNETR'", "none of nnssl's presets")),
    "nnssl-dynamic-without-kwargs": (lambda w, t: _nnssl(t, lambda plan: plan["architecture_plans"].update(
        arch_kwargs=None)), ("holds no architecture_plans.arch_kwargs",)),
    "nnssl-plan-describes-other-features": (lambda w, t: _nnssl(t, lambda plan: plan["architecture_plans"][
        "arch_kwargs"].update(features_per_stage=[4, 8, 32])), ("its nnssl_adaptation_plan describes",)),
    "nnssl-genesis-block-contradicts": (lambda w, t: _nnssl(t, genesis=dict(w.metadata)),
                                        ("ResidualEncoderUNet", "PlainConvUNet", "contradict each other")),
    "nnssl-resenc-into-plainconv-plan": (lambda w, t: _nnssl(t),
                                         ("ResidualEncoderUNet", "PlainConvUNet", "-pl nnUNetPlannerResEncL")),
    "nnssl-primus-into-cnn-plan": (lambda w, t: nnssl_checkpoint(t / "primus.pth", primus_like_weights(),
                                                                 nnssl_plan("PrimusM", None, PRIMUS_KEYS)),
                                   ("Primus", "transformer", "PlainConvUNet", "PretrainedTrainer_Primusx")),
}

ROUTES: dict[str, Callable[[World, Path], list[str]]] = {
    "attach": lambda w, src: ["attach", "-d", "4", "-c", str(src), "-n", VARIANT],
    "inspect-d": lambda w, src: ["inspect", str(src), "-d", "4"],
}

for _route, _argv in ROUTES.items():
    for _name, (_make, _needles) in SOURCES.items():
        def _make_case(w, t, _argv=_argv, _make=_make, _needles=_needles):
            src = _make(w, t)
            shown = str(src.resolve()) if _argv is ROUTES["attach"] else str(src)
            return Case(_argv(w, src), (*_needles, shown), env=_env(w))
        case(f"{_route}/{_name}")(_make_case)


@case("attach/source-plans-missing")
def _(w, t):
    src = _nnunet(w, t / "moved.pth", plans=False)
    return Case(["attach", "-d", "4", "-c", str(src), "-n", VARIANT, "--source-plans", str(t / "absent.json")],
                ("does not exist", str((t / "absent.json").resolve())), env=_env(w))


@case("attach/source-plans-for-a-genesis-checkpoint")
def _(w, t):
    plans = t / "plans.json"
    plans.write_text(json.dumps(_plans(w)))
    return Case(["attach", "-d", "4", "-c", str(w.ckpt), "-n", VARIANT, "--source-plans", str(plans)],
                ("Drop --source-plans", str(w.ckpt.resolve())), env=_env(w))


@case("inspect/none-of-the-kinds")
def _(w, t):
    src = torch_file(t / "list.pth", [dict(w.weights)])
    return Case(["inspect", str(src)], ("or any other kind nnunet-genesis accepts", str(src)))


@pytest.mark.parametrize("name", sorted(CASES))
def test_fault(name, world, tmp_path, capsys, monkeypatch):
    work = tmp_path / "case"
    work.mkdir()
    check_case(CASES[name](world, work), world, work, capsys, monkeypatch)
