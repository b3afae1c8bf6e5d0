"""Every pretrained checkpoint that attach, inspect and the trainers accept, recognised by content.

``read_pretrained(path)`` loads the file once with ``checkpoint.safe_torch_load``
(``weights_only=True``: tensors, plain containers, numbers, ``torch.device`` and checked numeric
numpy scalars; nothing in the file runs) and decides its kind from what it holds, never from its
name:

* ``genesis``: ``network_weights`` plus the ``genesis`` metadata block (pretrain, import-v1);
* ``nnunet``: an nnU-Net v2 training checkpoint (``checkpoint_final.pth`` / ``checkpoint_best.pth``
  of any dataset): ``network_weights`` with ``init_args`` / ``trainer_name``; the architecture is the
  configuration's in the plans (``init_args['plans']``, else the ``plans.json`` beside it in its
  results folder, or ``source_plans`` when it was moved; ``inherits_from`` resolved by nnU-Net's
  ``PlansManager``), checked tensor by tensor against the weights;
* ``nnssl``: ``network_weights`` plus an ``nnssl_adaptation_plan`` (nnssl, nnU-Net master's pretrained
  route): the architecture from its ``architecture_plans`` (the named preset ResEncL as its
  dynamic-network-architectures kwargs), the encoder and stem from its ``key_to_encoder`` /
  ``key_to_stem`` (renamed to the network's own), the decoder where the weights hold one that fits;
* ``models-genesis-v1``: the official Models Genesis nnU-Net v1 file, converted in memory as
  ``import-v1`` converts it.

Each comes back as a ``GenesisCheckpoint`` in the Genesis schema (``REQUIRED_METADATA`` filled from
the source's own architecture), so ``network.build_network`` and ``weight_transfer`` take every kind
unchanged; ``metadata["kind"]`` and ``metadata["description"]`` say what was found. Anything else
(none of the kinds, plans that cannot be found, a plan whose fields are missing or contradict the
weights, a file holding only a segmentation head) is a ``GenesisUserError`` naming the file.
"""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from nnunet_genesis.blocks import read_json
from nnunet_genesis.checkpoint import (GenesisCheckpoint, checkpoint_from_object, safe_torch_load,
                                       strip_prefixes, verify_network_weights)
from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.import_v1 import convert_v1_state_dict, holds_v1_network, v1_state_dict
from nnunet_genesis.network import (NNUNET_3D_BLOCK_KWARGS, PLAIN_CONV_UNET, REQUIRES_IMPORT, RESIDUAL_ENCODER_UNET,
                                    build_skeleton, network_family)
from nnunet_genesis.safe_text import printable
from nnunet_genesis.weight_transfer import HEAD_PREFIX, in_projection_key

KINDS = ("genesis", "nnunet", "nnssl", "models-genesis-v1")
ACCEPTED = ("a Genesis checkpoint (nnunet-genesis pretrain or import-v1), an nnU-Net v2 training checkpoint "
            "(checkpoint_final.pth / checkpoint_best.pth), an nnssl checkpoint (network_weights with an "
            "nnssl_adaptation_plan) or the official Models Genesis v1 file")
NNSSL_PLAN = "nnssl_adaptation_plan"
# nnssl's named CNN preset, as dynamic-network-architectures kwargs (the network nnU-Net master builds for it)
RESENC_L_KWARGS: dict[str, Any] = {
    "n_stages": 6,
    "features_per_stage": [32, 64, 128, 256, 320, 320],
    "conv_op": "torch.nn.modules.conv.Conv3d",
    "kernel_sizes": [[3, 3, 3]] * 6,
    "strides": [[1, 1, 1]] + [[2, 2, 2]] * 5,
    "n_blocks_per_stage": [1, 3, 4, 6, 6, 6],
    "n_conv_per_stage_decoder": [1] * 5,
    **NNUNET_3D_BLOCK_KWARGS,
}
# NoSkipResEncL is nnssl's ResEnc-L encoder with a decoder of its own: its decoder never fits and is dropped
_NNSSL_PRESETS = {"ResEncL": RESENC_L_KWARGS, "NoSkipResEncL": RESENC_L_KWARGS}


def read_pretrained(path: str | os.PathLike, source_plans: str | os.PathLike | None = None,
                    require_description: bool = True) -> GenesisCheckpoint:
    """The weights and Genesis metadata of any accepted checkpoint (module docstring), read once, safely.

    ``source_plans``: the plans.json an nnU-Net checkpoint was trained with (attach --source-plans), for a
    checkpoint moved out of its results folder. ``require_description=False`` (inspect) returns bare weights
    with empty metadata instead of refusing them.
    """
    path = Path(path)
    obj = safe_torch_load(path, "Checkpoint")
    kind = checkpoint_kind(obj)
    if source_plans is not None and kind not in ("nnunet", None):
        raise GenesisUserError(
            f"--source-plans {source_plans} names the plans of an nnU-Net training checkpoint, but checkpoint "
            f"{path} is a {kind} checkpoint, which describes its network itself. Drop --source-plans.")
    if kind is None:
        return _undescribed(obj, path, require_description)
    if kind == "genesis":  # inspect shows incomplete metadata too (it names what is missing)
        ckpt = _genesis(obj, path, require_description)
    else:
        ckpt = {"nnunet": _nnunet, "nnssl": _nnssl, "models-genesis-v1": _models_genesis_v1}[kind](obj, path,
                                                                                                  source_plans)
    ckpt.metadata["kind"] = kind
    # names from the file reach logs and terminals (the trainers print it): no control character passes
    ckpt.metadata["description"] = printable(ckpt.metadata.get("description", ""))
    return ckpt


def checkpoint_kind(obj: Any) -> str | None:
    """Which of ``KINDS`` a loaded torch object is, from its keys (None: none of them)."""
    if isinstance(obj, dict):
        if NNSSL_PLAN in obj:
            return "nnssl"
        if "genesis" in obj:
            return "genesis"
        if isinstance(obj.get("network_weights"), dict) and ("init_args" in obj or "trainer_name" in obj):
            return "nnunet"
    return "models-genesis-v1" if holds_v1_network(obj) else None


def architecture_summary(metadata: Mapping[str, Any]) -> str:
    """One line: family, class, stages, features and channels of a metadata network block."""
    cls = str(metadata.get("network_class", "?"))
    kwargs = metadata.get("network_kwargs") if isinstance(metadata.get("network_kwargs"), Mapping) else {}
    family = network_family(cls)
    parts = [cls.rsplit(".", 1)[-1] + (f" ({family})" if family != cls.rsplit(".", 1)[-1] else "")]
    if kwargs.get("n_stages") is not None:
        parts.append(f"{kwargs['n_stages']} stages")
    if isinstance(kwargs.get("features_per_stage"), list):
        parts.append("features " + "-".join(map(str, kwargs["features_per_stage"])))
    parts.append(f"{metadata.get('input_channels', '?')} input / {metadata.get('output_channels', '?')} output "
                 f"channels")
    return ", ".join(parts)


# --- the four readers --------------------------------------------------------------------------------------

def _genesis(obj: dict, path: Path, require_metadata: bool = True) -> GenesisCheckpoint:
    ckpt = checkpoint_from_object(obj, path, require_metadata=require_metadata)
    _refuse_head_only(ckpt.network_weights, f"Checkpoint {path}")
    ckpt.metadata["description"] = (f"Genesis checkpoint (source {ckpt.metadata.get('source')}): "
                                    f"{architecture_summary(ckpt.metadata)}")
    return ckpt


def _nnunet(obj: dict, path: Path, source_plans: str | os.PathLike | None) -> GenesisCheckpoint:
    where = f"nnU-Net training checkpoint {path}"
    weights = _verified_weights(obj.get("network_weights"), where)
    init_args = obj.get("init_args") if isinstance(obj.get("init_args"), dict) else {}
    plans, plans_from = _nnunet_plans(path, init_args, source_plans)
    configuration = init_args.get("configuration")
    if not isinstance(configuration, str):
        raise GenesisUserError(
            f"{where} does not say which configuration of its plans it was trained with (its init_args hold no "
            f"'configuration'), so the network its weights belong to is unknown. Use the checkpoint as "
            f"nnUNetv2_train wrote it.")
    meta = _configuration_architecture(plans, configuration, plans_from, where)
    meta.update(_channels_from_weights(meta, weights, where))
    trainer = obj.get("trainer_name") if isinstance(obj.get("trainer_name"), str) else "?"
    epoch = obj.get("current_epoch")
    meta.update(source="nnunet", trainer_name=trainer, configuration=configuration, architecture_from=plans_from,
                plans_name=str(plans.get("plans_name", "?")), dataset_name=str(plans.get("dataset_name", "?")))
    _check_against_architecture(weights, meta, where, f"the network of configuration {configuration!r} in "
                                                      f"{plans_from}", trainer)
    meta["description"] = (f"nnU-Net v2 training checkpoint of {meta['dataset_name']} (trainer {trainer}, plans "
                           f"{meta['plans_name']}, configuration {configuration}"
                           + (f", epoch {epoch}" if isinstance(epoch, int) else "")
                           + f"; architecture from {plans_from}): {architecture_summary(meta)}; its segmentation "
                             f"head is never transferred")
    return GenesisCheckpoint(weights, meta, path)


def _nnssl(obj: dict, path: Path, source_plans: None) -> GenesisCheckpoint:
    where = f"nnssl checkpoint {path}"
    plan = obj[NNSSL_PLAN]
    if not isinstance(plan, dict):
        raise GenesisUserError(f"{where}: its {NNSSL_PLAN} is a {type(plan).__name__}, not the dict nnssl writes.")
    weights = _verified_weights(obj.get("network_weights"), where)
    arch_plans = _field(plan, "architecture_plans", dict, where)
    name = _field(arch_plans, "arch_class_name", str, where, "architecture_plans.")
    encoder_key = _field(plan, "key_to_encoder", str, where)
    stem_key = _field(plan, "key_to_stem", str, where)
    in_proj = _field(plan, "keys_to_in_proj", (list, tuple), where)
    channels = _field(plan, "pretrain_num_input_channels", int, where)
    if not in_proj or not all(isinstance(k, str) for k in in_proj) or isinstance(channels, bool) or channels < 1:
        raise GenesisUserError(f"{where}: its {NNSSL_PLAN} has keys_to_in_proj {printable(repr(in_proj))} and "
                               f"pretrain_num_input_channels {channels!r}; expected module paths of the first conv "
                               f"and a channel count of at least 1.")
    for prefix, field_name in ((encoder_key, "key_to_encoder"), (stem_key, "key_to_stem")):
        if not any(_under(k, prefix) for k in weights):
            raise GenesisUserError(
                f"{where}: its {NNSSL_PLAN}'s {field_name} {printable(repr(prefix))} selects none of its "
                f"network_weights (they begin e.g. with {printable(repr(next(iter(weights), '')))}); the plan and "
                f"the weights contradict each other.")
    for key in in_proj:
        w = weights.get(f"{key}.weight")
        if w is None or w.dim() < 3 or w.shape[1] != channels:
            found = "is missing" if w is None else f"has shape {list(w.shape)}"
            raise GenesisUserError(
                f"{where}: its {NNSSL_PLAN} names the input projection {printable(repr(key))} with "
                f"pretrain_num_input_channels {channels}, but network_weights entry {printable(repr(key + '.weight'))} "
                f"{found}; the plan and the weights contradict each other.")
    family = network_family(name)
    pretrain = _pretrain_patch(plan)
    if family == "Primus":  # never built here: no CNN plan takes a transformer's weights (weight_transfer refuses)
        meta = {"network_class": "dynamic_network_architectures.architectures.primus.Primus",
                "network_kwargs": dict(arch_plans.get("arch_kwargs") or {}),
                "network_kwargs_requires_import": list(arch_plans.get("arch_kwargs_requiring_import") or []),
                "input_channels": channels, "output_channels": 1}
        kept = "its transformer weights"
    else:
        meta = _nnssl_cnn_architecture(name, arch_plans, channels, where)
        meta["output_channels"] = _channels_from_weights(meta, weights, where)["output_channels"]
        weights, kept = _nnssl_cnn_weights(weights, meta, encoder_key, stem_key, where, name)
    meta.update(source="nnssl", nnssl_architecture=name, **pretrain)
    if isinstance(obj.get("trainer_name"), str):
        meta["trainer_name"] = obj["trainer_name"]
    _same_network_as_genesis_block(obj, meta, where)
    if _json_like(obj.get("genesis")):  # written by export: its pretraining record rides along
        meta = {**obj["genesis"], **meta}
    trainer = f", trainer {meta['trainer_name']}" if "trainer_name" in meta else ""
    meta["description"] = (f"nnssl checkpoint ({name.rsplit('.', 1)[-1]}{trainer}): {architecture_summary(meta)}; "
                           f"{kept}")
    return GenesisCheckpoint(weights, meta, path)


def _models_genesis_v1(obj: Any, path: Path, source_plans: None) -> GenesisCheckpoint:
    state, extras = v1_state_dict(obj, path)
    weights, meta = convert_v1_state_dict(state, str(path))
    meta.update(source="models-genesis-v1", **extras)
    meta["description"] = (f"official Models Genesis v1 checkpoint (an nnU-Net v1 Generic_UNet), converted in "
                           f"memory to the universal Genesis PlainConvUNet as import-v1 converts it: "
                           f"{architecture_summary(meta)}")
    return GenesisCheckpoint(strip_prefixes(weights), meta, path)


def _undescribed(obj: Any, path: Path, require_description: bool) -> GenesisCheckpoint:
    """Bare weights: inspect shows them; everything else refuses them (the network is unknown)."""
    if isinstance(obj, dict) and isinstance(obj.get("network_weights"), dict):
        if not require_description:
            return checkpoint_from_object(obj, path, require_metadata=False)
        verify_network_weights(obj["network_weights"], f"Checkpoint {path}")
        raise GenesisUserError(
            f"Checkpoint {path} has network weights but no 'genesis' metadata block, no nnU-Net init_args or "
            f"trainer_name and no {NNSSL_PLAN}, so the network they belong to is unknown. Accepted: {ACCEPTED}.")
    keys = sorted(map(str, obj))[:8] if isinstance(obj, dict) else "-"
    raise GenesisUserError(f"Checkpoint {path} is not a Genesis/nnU-Net checkpoint or any other kind nnunet-genesis "
                           f"accepts: it holds a {type(obj).__name__} with keys {printable(str(keys))}. Accepted: "
                           f"{ACCEPTED}.")


# --- helpers ------------------------------------------------------------------------------------------------

def _verified_weights(weights: Any, where: str) -> dict[str, torch.Tensor]:
    """The file's ``network_weights``: a verified dict of tensors that holds more than a segmentation head."""
    if not isinstance(weights, dict):
        raise GenesisUserError(f"{where} has no 'network_weights' dict of tensors (found "
                               f"{type(weights).__name__}).")
    verify_network_weights(weights, where)
    weights = strip_prefixes(weights)
    _refuse_head_only(weights, where)
    return weights


def _refuse_head_only(weights: Mapping[str, torch.Tensor], where: str) -> None:
    if not any(not k.startswith(HEAD_PREFIX) for k in weights):
        raise GenesisUserError(
            f"{where} holds {'only segmentation-head tensors (' + HEAD_PREFIX + '*)' if weights else 'no tensors'}; "
            f"the head is never transferred (its labels are another task's), so there is nothing to start from.")


def _json_like(value: Any) -> bool:
    """A dict of plain JSON values (what may go into plans and reports)."""
    try:
        return isinstance(value, dict) and json.loads(json.dumps(value)) == value
    except (TypeError, ValueError, RecursionError):
        return False


def _under(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith(prefix + ".")


def _field(block: Mapping[str, Any], name: str, types, where: str, path: str = "") -> Any:
    """A required field of an nnssl plan, of the expected type."""
    if name not in block:
        raise GenesisUserError(f"{where}: its {NNSSL_PLAN} lacks {path}{name}, which nnssl writes and the transfer "
                               f"needs (architecture_plans, key_to_encoder, key_to_stem, keys_to_in_proj, "
                               f"pretrain_num_input_channels).")
    value = block[name]
    if not isinstance(value, types):
        wanted = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
        raise GenesisUserError(f"{where}: its {NNSSL_PLAN}'s {path}{name} is a {type(value).__name__}, not a "
                               f"{wanted}.")
    return value


def _pretrain_patch(plan: Mapping[str, Any]) -> dict[str, Any]:
    """The pretraining patch and spacing (the plan's first configuration) and the recommended downstream patch,
    where the plan has them (recorded, not needed for the transfer)."""
    out: dict[str, Any] = {}
    configurations = (plan.get("pretrain_plan") or {}).get("configurations") \
        if isinstance(plan.get("pretrain_plan"), dict) else None
    if isinstance(configurations, dict) and configurations:
        first = next(iter(configurations.values()))
        if isinstance(first, dict):
            for key in ("patch_size", "spacing"):
                if _numbers(first.get(key)):
                    out[f"pretrain_{key}"] = [float(v) if key == "spacing" else int(v) for v in first[key]]
    if _numbers(plan.get("recommended_downstream_patchsize")):
        out["recommended_downstream_patchsize"] = [int(v) for v in plan["recommended_downstream_patchsize"]]
    return out


def _numbers(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)


def _nnssl_cnn_architecture(name: str, arch_plans: Mapping[str, Any], channels: int, where: str) -> dict[str, Any]:
    """The Genesis network block of an nnssl CNN: a named preset's kwargs, or the plan's own for the dynamic
    ResidualEncoderUNet / PlainConvUNet (dotted names ending so count, as in nnU-Net master)."""
    if name in _NNSSL_PRESETS:
        cls, kwargs = RESIDUAL_ENCODER_UNET, copy.deepcopy(_NNSSL_PRESETS[name])
        requires = [k for k in REQUIRES_IMPORT if k in kwargs]
    elif network_family(name) in ("ResidualEncoderUNet", "PlainConvUNet"):
        kwargs = arch_plans.get("arch_kwargs")
        if not isinstance(kwargs, dict) or not kwargs:
            raise GenesisUserError(
                f"{where}: its {NNSSL_PLAN} names the dynamic architecture {printable(repr(name))} but holds no "
                f"architecture_plans.arch_kwargs (the stages, features, kernels and strides); only the named presets "
                f"{sorted(_NNSSL_PRESETS)} come without them.")
        short = name.rsplit(".", 1)[-1]
        cls = name if "." in name else (RESIDUAL_ENCODER_UNET if short == "ResidualEncoderUNet" else PLAIN_CONV_UNET)
        requires = arch_plans.get("arch_kwargs_requiring_import")
        requires = list(requires) if isinstance(requires, (list, tuple)) else [k for k in REQUIRES_IMPORT if k in kwargs]
        kwargs = copy.deepcopy(kwargs)
    else:
        raise GenesisUserError(
            f"{where}: its {NNSSL_PLAN} names the architecture {printable(repr(name))}, which is none of nnssl's "
            f"presets (ResEncL, NoSkipResEncL, PrimusS/B/M/L) or the dynamic ResidualEncoderUNet / PlainConvUNet.")
    return {"network_class": cls, "network_kwargs": kwargs, "network_kwargs_requires_import": requires,
            "input_channels": channels, "output_channels": 1}


def _nnssl_cnn_weights(weights: dict[str, torch.Tensor], meta: Mapping[str, Any], encoder_key: str, stem_key: str,
                       where: str, name: str) -> tuple[dict[str, torch.Tensor], str]:
    """The weights under the network's own names: the plan's stem and encoder prefixes renamed to the
    architecture's (strict: every tensor of both must be there, in its shape), the decoder kept only where the
    file holds all of it in the architecture's shapes. Returns the weights and what was kept, in words."""
    try:
        skeleton = build_skeleton(meta)
    except GenesisUserError as e:
        raise GenesisUserError(f"{where}: {e}") from None
    own_encoder, own_stem = getattr(skeleton, "key_to_encoder", None), getattr(skeleton, "key_to_stem", None)
    if not (isinstance(own_encoder, str) and isinstance(own_stem, str)):
        raise GenesisUserError(f"{where}: its architecture {printable(repr(name))} builds a {type(skeleton).__name__}, which does "
                               f"not name its encoder and stem; weights transfer into U-Nets only.")
    renamed: dict[str, torch.Tensor] = {}
    for key, value in weights.items():
        for src, dst in sorted(((stem_key, own_stem), (encoder_key, own_encoder)), key=lambda p: -len(p[0])):
            if _under(key, src):
                key = dst + key[len(src):]
                break
        renamed[key] = value
    # each tensor once, under its first name (DNA lists convs twice, .conv and .all_modules.0, and the decoder
    # holds the encoder again): the aliases are neither required nor refused
    expected = dict(skeleton.named_parameters())
    expected.update((k, v) for k, v in skeleton.named_buffers() if k not in expected)
    aliases = set(skeleton.state_dict()) - set(expected)
    in_encoder = [k for k in expected if _under(k, own_encoder) or _under(k, own_stem)]
    encoder = {k: v for k, v in renamed.items() if (_under(k, own_encoder) or _under(k, own_stem))
               and k not in aliases}
    verify_network_weights(encoder, where, expected={k: expected[k] for k in in_encoder},
                           expected_name=f"the encoder of the {printable(name)} its {NNSSL_PLAN} describes")
    decoder = [k for k in expected if k not in encoder and not k.startswith(HEAD_PREFIX)]
    fits = all(k in renamed and renamed[k].shape == expected[k].shape for k in decoder)
    # what the architecture holds, in its shapes (aliases included, so a file written from a state dict reads
    # back identical); the decoder only as a whole; anything else (projection heads of a pretraining) dropped
    everything = skeleton.state_dict()
    kept = {k: v for k, v in renamed.items() if k in everything and v.shape == everything[k].shape
            and (fits or _under(k, own_encoder) or _under(k, own_stem) or k.startswith(HEAD_PREFIX))}
    return kept, ("stem, encoder and decoder" if fits else
                  "stem and encoder (the file holds no decoder of this architecture; the decoder starts random)")


def _channels_from_weights(meta: Mapping[str, Any], weights: Mapping[str, torch.Tensor],
                           where: str) -> dict[str, int]:
    """Input channels from the first conv, output channels from the last segmentation layer (the weights know
    them for any trainer, a cascade's segmentation inputs included)."""
    try:
        skeleton = build_skeleton(dict(meta, input_channels=meta.get("input_channels", 1), output_channels=1))
    except GenesisUserError as e:
        raise GenesisUserError(f"{where}: {e}") from None
    first = in_projection_key(skeleton, list(skeleton.state_dict()))
    heads = sorted((k for k in weights if k.startswith(HEAD_PREFIX) and k.endswith(".weight")),
                   key=lambda k: int(k[len(HEAD_PREFIX):].split(".")[0]) if k[len(HEAD_PREFIX):].split(".")[0]
                   .isdigit() else -1)
    out = {"input_channels": int(meta.get("input_channels", 1)), "output_channels": 1}
    if first in weights and weights[first].dim() >= 3:
        out["input_channels"] = int(weights[first].shape[1])
    if heads and weights[heads[-1]].dim() >= 2:
        out["output_channels"] = int(weights[heads[-1]].shape[0])
    return out


def _nnunet_plans(path: Path, init_args: Mapping[str, Any], source_plans) -> tuple[dict, str]:
    """The plans an nnU-Net checkpoint was trained with: ``source_plans``, else its own ``init_args['plans']``,
    else the plans.json of its results folder (TRAINER__PLANS__CONFIGURATION/plans.json beside fold_N/)."""
    if source_plans is not None:
        plans = read_json(source_plans, "Source plans (--source-plans)")
        if not isinstance(plans, dict):
            raise GenesisUserError(f"Source plans (--source-plans) {source_plans} hold a {type(plans).__name__}, "
                                   f"not nnU-Net plans.")
        return plans, str(Path(source_plans))
    if isinstance(init_args.get("plans"), dict):
        return init_args["plans"], f"the plans stored in {path.name} (init_args)"
    beside = [path.parent / "plans.json", path.parent.parent / "plans.json"]
    for candidate in beside:
        if candidate.is_file():
            plans = read_json(candidate, "Plans beside the checkpoint")
            if isinstance(plans, dict):
                return plans, str(candidate)
    raise GenesisUserError(
        f"nnU-Net training checkpoint {path} carries no plans (its init_args hold none) and no plans.json lies "
        f"beside it ({beside[0]} or {beside[1]}), so the network its weights belong to is unknown. Give the plans "
        f"it was trained with: --source-plans FILE (the plans.json of its results folder, "
        f"DATASET/TRAINER__PLANS__CONFIGURATION/plans.json).")


def _configuration_architecture(plans: Mapping[str, Any], configuration: str, plans_from: str,
                                where: str) -> dict[str, Any]:
    """The network block of one configuration, ``inherits_from`` resolved by nnU-Net's PlansManager."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    try:
        cm = PlansManager(copy.deepcopy(dict(plans))).get_configuration(configuration)
        arch = {"network_class": cm.network_arch_class_name,
                "network_kwargs": copy.deepcopy(dict(cm.network_arch_init_kwargs)),
                "network_kwargs_requires_import": list(cm.network_arch_init_kwargs_req_import)}
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as e:
        raise GenesisUserError(
            f"{where}: its plans ({plans_from}) have no configuration {configuration!r} with an architecture "
            f"nnU-Net 2.8 can read ({type(e).__name__}: {printable(str(e))[:200]}). Give the plans it was trained "
            f"with: --source-plans FILE.") from None
    if not isinstance(arch["network_class"], str):
        raise GenesisUserError(f"{where}: configuration {configuration!r} of its plans ({plans_from}) names no "
                               f"network class.")
    return arch


def _check_against_architecture(weights: Mapping[str, torch.Tensor], meta: Mapping[str, Any], where: str,
                                 name: str, trainer: str) -> None:
    """Every tensor of the network the plans describe, in its shape, and no other (a custom trainer may build
    another network than its plans say: refused here, not half-transferred later)."""
    try:
        expected = build_skeleton(meta).state_dict()
        verify_network_weights(weights, where, expected=expected, expected_name=name)
    except GenesisUserError as e:
        raise GenesisUserError(f"{e} The weights (trainer {printable(trainer)}) are not the network its plans describe; give "
                               f"the plans it was trained with: --source-plans FILE.") from None


def _same_network_as_genesis_block(obj: Mapping[str, Any], meta: Mapping[str, Any], where: str) -> None:
    """A file with both an nnssl plan and a Genesis block is read by its plan; the two must name one network."""
    block = obj.get("genesis")
    if not isinstance(block, dict) or "network_class" not in block:
        return
    if network_family(block["network_class"]) != network_family(meta["network_class"]) or any(
            block.get(k) != meta.get(k) for k in ("input_channels",) if k in block):
        raise GenesisUserError(
            f"{where}: its {NNSSL_PLAN} describes a {network_family(meta['network_class'])} with "
            f"{meta.get('input_channels')} input channel(s) but its 'genesis' block a "
            f"{network_family(str(block['network_class']))} with {block.get('input_channels')}; the two "
            f"contradict each other.")

