"""The ``nnunet-genesis`` command.

Each subcommand lives in its own module, which provides ``add_arguments(parser)`` and
``run(args) -> int``. Modules are imported only when their subcommand runs, so
``nnunet-genesis --help`` stays fast and a broken optional part cannot break the others.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from typing import Sequence

from nnunet_genesis import __version__
from nnunet_genesis.errors import GenesisUserError, TrainingRefused

# name -> (module implementing it, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "preview": ("nnunet_genesis.preview", "PNG grid of a volume and its Genesis corruptions"),
    "pretrain": ("nnunet_genesis.pretraining.cli", "pretrain a Genesis network on unlabeled volumes"),
    "inspect": ("nnunet_genesis.inspect_checkpoint", "a checkpoint's kind, architecture and metadata; -d: dry-run its transfer"),
    "attach": ("nnunet_genesis.trainers.attach", "write a plans variant that points at a pretrained checkpoint (any kind)"),
    "import-v1": ("nnunet_genesis.import_v1", "convert official Models Genesis nnU-Net v1 weights"),
    "export": ("nnunet_genesis.export_nnssl", "write a checkpoint for nnU-Net master's pretrained route (--format nnssl)"),
    "evaluate": ("nnunet_genesis.evaluation.evaluate", "Dice and NSD of predictions against references"),
    "compare": ("nnunet_genesis.evaluation.compare", "Genesis-vs-scratch report from results or evaluations"),
    "package-msd": ("nnunet_genesis.evaluation.package_msd", "build a Decathlon submission zip"),
    "demo": ("nnunet_genesis.workflows.demo", "run the whole pipeline end to end on a small dataset"),
    "recipe": ("nnunet_genesis.workflows.recipe.cli", "the Decathlon recipe (train all, select, predict, package) from a checkpoint"),
    "env": ("nnunet_genesis.environment", "print the environment lines nnU-Net needs to find the trainers"),
}


def _load(name: str):
    module_name, _ = SUBCOMMANDS[name]
    return importlib.import_module(module_name)


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnunet-genesis",
        description="Models Genesis self-supervised pretraining for nnU-Net v2.",
    )
    parser.add_argument("--version", action="version", version=f"nnunet-genesis {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Only the chosen subcommand's module is imported to build its full argument list.
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (_, help_text) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            _load(name).add_arguments(sp)
    return parser


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # kill -TERM stops a command as Ctrl-C does: the commands it started are stopped with it
    # (pipeline.run_logged) and partial outputs removed, instead of the process vanishing and its
    # children training on as orphans. Restored on return (tests call main in-process).
    previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        return _main(argv)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str]) -> int:
    try:
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        return int(_load(args.command).run(args) or 0)
    except TrainingRefused as e:  # a trainer's refusal, already printed where nnU-Net would have logged it
        return e.code
    except GenesisUserError as e:
        print(f"nnunet-genesis: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("nnunet-genesis: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
