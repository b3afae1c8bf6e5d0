"""``python -m nnunet_genesis.workflows.recipe.selection DATASET -m TRAINER PLANS CONFIGURATION ... -f FOLDS``:
nnU-Net's model selection over an explicit list of models.

``nnUNetv2_find_best_configuration`` combines every -tr with every -p and every -c and stops
at the first combination without a results folder, so it cannot select among models that use
different trainers *and* plans for different configurations (the recipe's 2D model is plain,
its 3D ones are Genesis). nnU-Net's own function ``find_best_configuration`` takes the models
as a list of dicts; this calls it with exactly the trained ones. Everything else (ensembling
of every pair, post-processing, ``inference_information.json`` and
``inference_instructions.txt`` in ``nnUNet_results/DATASET``) is nnU-Net's.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m nnunet_genesis.workflows.recipe.selection", description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset_name_or_id")
    parser.add_argument("-m", dest="models", nargs=3, action="append", required=True,
                        metavar=("TRAINER", "PLANS", "CONFIGURATION"), help="one trained model (repeat)")
    parser.add_argument("-f", dest="folds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("-np", dest="num_processes", type=int, default=None,
                        help="processes for ensembling and post-processing (default: nnU-Net's default_num_processes)")
    parser.add_argument("--disable_ensembling", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from nnunetv2.configuration import default_num_processes
    from nnunetv2.evaluation.find_best_configuration import find_best_configuration
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    models = tuple({"plans": p, "configuration": c, "trainer": t} for t, p, c in args.models)
    find_best_configuration(maybe_convert_to_dataset_name(args.dataset_name_or_id), models,
                            allow_ensembling=not args.disable_ensembling,
                            num_processes=args.num_processes or default_num_processes, overwrite=True,
                            folds=tuple(args.folds), strict=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
