"""Fault injection for checkpoints, table-driven: every route that reads a checkpoint (attach, inspect,
inspect --json, import-v1) refuses a file whose weights cannot be trusted, with exit 2, a message
naming the file and the problem, no traceback and nothing written.

The damage: a bit flipped inside a tensor (the zip member's CRC no longer matches; the weight
becomes ~1e36), NaN and Inf weights, weights stored as int64 or bool, a zero-size dimension
(import-v1's conv with no input channels), and a pickle that carries code (the refused global is
named; torch's advice to load it with weights_only=False is never passed on). Control characters
in metadata and key names: inspect succeeds and prints them escaped (plain tests at the end).
The trainers' routes (--c, -pretrained_weights) are in tests/trainers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import pytest
import torch

from nnunet_genesis.checkpoint import _refused_global, load_checkpoint, safe_torch_load
from nnunet_genesis.cli import main
from nnunet_genesis.errors import GenesisUserError

from damage import bit_flipped
from fault_harness import Case, World, check_case, ckpt_with, registry, torch_file

CASES, case = registry()
FIRST_CONV = "encoder.stages.0.0.convs.0.conv.weight"
V1_FIRST_CONV = "conv_blocks_context.0.blocks.0.conv.weight"
CONTROL = "enc\x1b[2J\x1b]0;owned\x07oder\x9b31m"  # clear screen, set the window title, a C1 CSI


class _RunsShell:
    """Unpickling it would run a shell command (pickled as the global posix.system)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _one(value: float) -> Callable[[dict], None]:
    def damage(obj: dict) -> None:
        t = obj["network_weights"][FIRST_CONV].clone()
        t.view(-1)[1] = value
        obj["network_weights"][FIRST_CONV] = t
    return damage


def _all(dtype: torch.dtype) -> Callable[[dict], None]:
    def damage(obj: dict) -> None:
        obj["network_weights"] = {k: v.to(dtype) for k, v in obj["network_weights"].items()}
    return damage


# the damaged Genesis checkpoints: name -> (make(world, tmp) -> path, needles)
DAMAGED: dict[str, tuple[Callable[[World, Path], Path], tuple[str, ...]]] = {
    "crc-bitflip": (lambda w, t: bit_flipped(w.ckpt, t / "flipped.pth"), ("fails its CRC check",)),
    "nan-weight": (lambda w, t: ckpt_with(w, t / "nan.pth", _one(float("nan"))), ("1 NaN", FIRST_CONV)),
    "inf-weight": (lambda w, t: ckpt_with(w, t / "inf.pth", _one(float("-inf"))), ("1 infinite", FIRST_CONV)),
    "all-int64": (lambda w, t: ckpt_with(w, t / "int.pth", _all(torch.int64)), ("stored as int64",)),
    "all-bool": (lambda w, t: ckpt_with(w, t / "bool.pth", _all(torch.bool)), ("stored as bool",)),
    "zero-size-dim": (lambda w, t: ckpt_with(w, t / "zero.pth", lambda o: o["network_weights"].update(
        {FIRST_CONV: torch.zeros(4, 0, 3, 3, 3)})), ("size 0", FIRST_CONV)),
    "code-posix-system": (lambda w, t: torch_file(t / "evil.pth", {"network_weights": {}, "x": _RunsShell(t / "ran")}),
                          ("holds the global posix.system", "nothing in it ran")),
    "control-chars-in-key-nan": (lambda w, t: ckpt_with(w, t / "ctl.pth", lambda o: o["network_weights"].update(
        {CONTROL + ".weight": torch.tensor([float("nan")])})), (repr(CONTROL)[1:-1],)),
}


def _env(w: World) -> dict[str, str]:
    return {"nnUNet_preprocessed": str(w.nnunet["nnUNet_preprocessed"]), "nnUNet_raw": str(w.nnunet["nnUNet_raw"])}


ROUTES: dict[str, Callable[[World, Path, Path], Case]] = {
    "attach": lambda w, t, src: Case(["attach", "-d", "4", "-c", str(src), "-n", "nnUNetPlans_faults"], (), env=_env(w)),
    "inspect": lambda w, t, src: Case(["inspect", str(src)], ()),
    "inspect-json": lambda w, t, src: Case(["inspect", str(src), "--json"], ()),
}

for _route, _argv in ROUTES.items():
    for _name, (_make, _needles) in DAMAGED.items():
        def _make_case(w, t, _argv=_argv, _make=_make, _needles=_needles):
            src = _make(w, t)
            c = _argv(w, t, src)
            c.needles = (*_needles, str(src.resolve()) if c.argv[0] == "attach" else str(src))
            return c
        case(f"{_route}/{_name}")(_make_case)


# import-v1: nnU-Net v1 training checkpoints ({"state_dict": ...}) --------------------------------

def _v1(state: dict, **extra) -> dict:
    return {"state_dict": {V1_FIRST_CONV: torch.full((32, 1, 3, 3, 3), 0.01), **state}, "epoch": 1000, **extra}


V1_DAMAGED: dict[str, tuple[Callable[[World, Path], Path], tuple[str, ...]]] = {
    "crc-bitflip": (lambda w, t: bit_flipped(torch_file(t / "src" / "v1.model", _v1({})), t / "flipped.model"),
                    ("fails its CRC check",)),
    "nan-weight": (lambda w, t: torch_file(t / "nan.model", _v1({"seg_outputs.0.weight": torch.tensor(
        [[[[[float("nan")]]]]])})), ("NaN", "seg_outputs.0.weight")),
    "inf-weight": (lambda w, t: torch_file(t / "inf.model", _v1({"seg_outputs.0.weight": torch.tensor(
        [[[[[float("inf")]]]]])})), ("infinite", "seg_outputs.0.weight")),
    "all-int64": (lambda w, t: torch_file(t / "int.model", {"state_dict": {V1_FIRST_CONV: torch.ones(
        32, 1, 3, 3, 3, dtype=torch.int64)}}), ("stored as int64", V1_FIRST_CONV)),
    "all-bool": (lambda w, t: torch_file(t / "bool.model", {"state_dict": {V1_FIRST_CONV: torch.ones(
        32, 1, 3, 3, 3, dtype=torch.bool)}}), ("stored as bool", V1_FIRST_CONV)),
    "zero-input-channels": (lambda w, t: torch_file(t / "zero.model", {"state_dict": {V1_FIRST_CONV: torch.zeros(
        32, 0, 3, 3, 3)}}), ("size 0", V1_FIRST_CONV)),
    "code-posix-system": (lambda w, t: torch_file(t / "evil.model", {"state_dict": {}, "x": _RunsShell(t / "ran")}),
                          ("holds the global posix.system",)),
    "control-chars-in-key": (lambda w, t: torch_file(t / "ctl.model", _v1({CONTROL: torch.zeros(1)})),
                             (repr(CONTROL)[1:-1],)),
}

for _name, (_make, _needles) in V1_DAMAGED.items():
    def _make_v1_case(w, t, _make=_make, _needles=_needles):
        src = _make(w, t)
        return Case(["import-v1", str(src), str(t / "out" / "g.pth")], (*_needles, str(src)))
    case(f"import-v1/{_name}")(_make_v1_case)


@pytest.mark.parametrize("name", sorted(CASES))
def test_fault(name, world, tmp_path, capsys, monkeypatch):
    work = tmp_path / "case"
    work.mkdir()
    check_case(CASES[name](world, work), world, work, capsys, monkeypatch)


# plain tests: what the table's check does not look at -----------------------------------------

def _raw_controls(text: str) -> list[str]:
    return sorted({c for c in text if not c.isprintable() and c not in "\n"})


@pytest.mark.parametrize("json_out", [False, True])
def test_inspect_prints_control_characters_escaped(world, tmp_path, capsys, json_out):
    """Metadata values and keys and weight names with escape sequences: inspect succeeds, and what it
    prints holds no raw control character (text: escaped as repr writes them; JSON: \\u escapes)."""
    def damage(obj):
        obj["genesis"].update({"notes": "title\x1b]0;owned\x07 \x1b[2J\x7f\u202e", CONTROL: "key from the file"})
        obj["network_weights"][CONTROL + ".weight"] = torch.zeros(2)
    src = ckpt_with(world, tmp_path / "ctl.pth", damage)
    argv = ["inspect", str(src)] + (["--json"] if json_out else [])
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert _raw_controls(out + err) == []
    if json_out:
        doc = json.loads(out)
        assert doc["metadata"]["notes"] == "title\x1b]0;owned\x07 \x1b[2J\x7f\u202e"  # the data itself is intact
        assert CONTROL in doc["metadata"]
    else:
        assert "title\\x1b]0;owned\\x07 \\x1b[2J\\x7f\\u202e" in out and repr(CONTROL)[1:-1] in out


def test_a_refused_pickle_never_passes_on_torchs_advice(world, tmp_path, capsys):
    src = torch_file(tmp_path / "evil.pth", {"network_weights": {}, "x": _RunsShell(tmp_path / "ran")})
    for argv in (["inspect", str(src)], ["import-v1", str(src), str(tmp_path / "o.pth")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "posix.system" in err and "weights_only=False" not in err and "Re-running" not in err
        assert "damaged" not in err
    assert not (tmp_path / "ran").exists()


def test_the_refused_global_is_named_whatever_torchs_wording(tmp_path):
    """torch's message differs between versions: without a name in it, the pickle itself is read
    (without running it) for the first global the safe unpickler does not allow."""
    src = torch_file(tmp_path / "evil.pth", {"w": torch.zeros(1), "x": _RunsShell(tmp_path / "ran")})
    assert _refused_global("Weights only load failed. (a future wording)", src, b"PK") == "posix.system"
    legacy = tmp_path / "legacy.pth"
    torch.save({"x": _RunsShell(tmp_path / "ran")}, legacy, _use_new_zipfile_serialization=False)
    assert _refused_global("", legacy, b"\x80") == "posix.system"
    with pytest.raises(GenesisUserError, match="posix.system"):
        safe_torch_load(legacy)
    assert not (tmp_path / "ran").exists()


def test_the_intact_checkpoint_passes_every_check(world):
    ckpt = load_checkpoint(world.ckpt)
    assert ckpt.network_weights.keys() == world.weights.keys()
