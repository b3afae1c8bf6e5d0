"""``nnunet-genesis env``: the environment lines stock nnU-Net needs to find the trainers.

nnU-Net v2 looks for trainer classes outside its own package in the folders listed in
``nnUNet_extTrainer`` (``os.pathsep``-separated). This prints the line that adds this
package's ``trainers/ext`` folder, for ``eval "$(nnunet-genesis env)"`` or a shell profile,
plus comment lines on the state of ``nnUNet_raw``, ``nnUNet_preprocessed`` and
``nnUNet_results``.
"""

from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path
from typing import Mapping

EXT_TRAINER_VAR = "nnUNet_extTrainer"
NNUNET_FOLDERS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
SHELLS = ("sh", "fish", "powershell", "cmd")


def ext_trainer_dir() -> Path:
    """Folder of the installed package that ``nnUNet_extTrainer`` must list."""
    import nnunet_genesis.trainers.ext as ext

    return Path(list(ext.__path__)[0]).resolve()


def ext_trainer_value(current: str | None = None) -> str:
    """``nnUNet_extTrainer`` value with this package's folder first, keeping other folders."""
    ours = str(ext_trainer_dir())
    others = [p for p in (current or "").split(os.pathsep)
              if p.strip() and os.path.abspath(p) != ours]
    return os.pathsep.join([ours, *others])


def environment_for_nnunet(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``base`` (default: os.environ) in which nnU-Net finds the Genesis trainers."""
    env = dict(os.environ if base is None else base)
    env[EXT_TRAINER_VAR] = ext_trainer_value(env.get(EXT_TRAINER_VAR))
    return env


def format_assignment(name: str, value: str, shell: str = "sh") -> str:
    if shell == "sh":
        return f"export {name}={shlex.quote(value)}"
    if shell == "fish":
        return f"set -gx {name} {shlex.quote(value)}"
    if shell == "powershell":
        return f"$env:{name} = '{value.replace(chr(39), chr(39) * 2)}'"
    if shell == "cmd":
        return f"set {name}={value}"
    raise ValueError(f"unknown shell {shell!r}; choose from {SHELLS}")


def folder_status(name: str, env: Mapping[str, str]) -> str:
    value = env.get(name)
    if not value:
        return f"{name} is not set: nnU-Net needs it (see nnU-Net's documentation/setting_up_paths.md)"
    if not Path(value).is_dir():
        return f"{name}={value} (folder does not exist yet)"
    return f"{name}={value}"


def environment_lines(shell: str = "sh", env: Mapping[str, str] | None = None) -> list[str]:
    """The printed lines: the assignment, then comments on the nnU-Net folders."""
    env = os.environ if env is None else env
    comment = "REM" if shell == "cmd" else "#"
    lines = [format_assignment(EXT_TRAINER_VAR, ext_trainer_value(env.get(EXT_TRAINER_VAR)), shell)]
    lines += [f"{comment} {folder_status(name, env)}" for name in NNUNET_FOLDERS]
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Print the line that lets stock nnUNetv2_train / nnUNetv2_predict find the Genesis "
        "trainers (nnUNet_extTrainer), and the state of the nnU-Net folders. "
        "Use: eval \"$(nnunet-genesis env)\"")
    parser.add_argument("--shell", choices=SHELLS, default="sh",
                        help="syntax of the printed assignment (default: sh, for bash/zsh)")


def run(args: argparse.Namespace) -> int:
    print("\n".join(environment_lines(args.shell)))
    return 0
