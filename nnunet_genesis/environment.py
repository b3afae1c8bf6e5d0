"""``nnunet-genesis env``: the environment lines stock nnU-Net needs to find the trainers.

nnU-Net v2 looks for trainer classes outside its own package in the folders listed in
``nnUNet_extTrainer`` (``os.pathsep``-separated). This prints the line that adds this
package's ``trainers/ext`` folder, for ``eval "$(nnunet-genesis env)"`` or a shell profile,
plus comment lines on the state of ``nnUNet_raw``, ``nnUNet_preprocessed`` and
``nnUNet_results``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
from pathlib import Path
from typing import Mapping

from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.safe_text import printable

EXT_TRAINER_VAR = "nnUNet_extTrainer"
# the folders nnU-Net reads from the environment (the one copy of this tuple)
NNUNET_FOLDERS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
SHELLS = ("sh", "fish", "powershell", "cmd")


EXT_TRAINER_PACKAGE = "nnunet_genesis.trainers.ext"


def ext_trainer_dir() -> Path:
    """Folder of the installed package that ``nnUNet_extTrainer`` must list.

    Located with ``find_spec``, not imported: the trainer modules sit in a layer above this one
    (docs/architecture.md) and only nnU-Net imports them, from this folder."""
    spec = importlib.util.find_spec(EXT_TRAINER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise GenesisUserError(f"The package {EXT_TRAINER_PACKAGE} is not installed; reinstall nnunet-genesis.")
    return Path(list(spec.submodule_search_locations)[0]).resolve()


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


_CMD_SPECIAL = set('&|<>^%"!()')


def format_assignment(name: str, value: str, shell: str = "sh") -> str:
    """One assignment that sets ``name`` to exactly ``value`` in ``shell`` and runs nothing else,
    whatever the value holds (quotes, newlines, ``$``, ``&``, ``;``)."""
    if shell == "sh":  # POSIX single quotes: bash, zsh, dash
        return f"export {name}={shlex.quote(value)}"
    if shell == "fish":  # fish single quotes: only \\ and \' are escapes
        return f"set -gx {name} '" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if shell == "powershell":  # single quotes: only a doubled quote is special
        return f"$env:{name} = '{value.replace(chr(39), chr(39) * 2)}'"
    if shell == "cmd":
        bad = sorted({c for c in value if c in _CMD_SPECIAL or not c.isprintable()})
        if bad:
            raise GenesisUserError(f"{name} holds {' '.join(repr(c) for c in bad)}, which cmd.exe cannot take "
                                   f"safely in a 'set' line; use --shell powershell, or set it by hand.")
        return f'set "{name}={value}"'
    raise ValueError(f"unknown shell {shell!r}; choose from {SHELLS}")


def _comment_safe(value: str, shell: str) -> str:
    """A value shown in a comment line: control characters escaped (a newline would end the
    comment and run the rest), and for cmd its special characters replaced."""
    out = printable(value)
    return "".join("?" if c in _CMD_SPECIAL else c for c in out) if shell == "cmd" else out


def folder_status(name: str, env: Mapping[str, str], shell: str = "sh") -> str:
    value = env.get(name)
    if not value:
        return f"{name} is not set: nnU-Net needs it (see nnU-Net's documentation/setting_up_paths.md)"
    shown = _comment_safe(value, shell)
    if Path(value).is_symlink() and not Path(value).exists():
        return f"{name}={shown} (a symbolic link that leads nowhere, not a folder)"
    if Path(value).exists() and not Path(value).is_dir():
        return f"{name}={shown} (a file, not a folder: nnU-Net cannot use it)"
    if not Path(value).is_dir():
        return f"{name}={shown} (folder does not exist yet)"
    return f"{name}={shown}"


def environment_lines(shell: str = "sh", env: Mapping[str, str] | None = None) -> list[str]:
    """The printed lines: the assignment, then comments on the nnU-Net folders."""
    env = os.environ if env is None else env
    comment = "REM" if shell == "cmd" else "#"
    lines = [format_assignment(EXT_TRAINER_VAR, ext_trainer_value(env.get(EXT_TRAINER_VAR)), shell)]
    lines += [f"{comment} {folder_status(name, env, shell)}" for name in NNUNET_FOLDERS]
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
