"""``nnunet-genesis demo``: the whole pipeline end to end on a small dataset.

dataset -> nnUNetv2_plan_and_preprocess -> nnunet-genesis pretrain (labels unused) -> attach ->
nnUNetv2_train (Genesis and, with the identical schedule, from scratch) -> nnUNetv2_predict ->
evaluate -> compare -> package-msd.

By default the dataset is the package's own SYNTHETIC one (``nnunet_genesis.synthetic``), so
nothing has to be downloaded; ``--msd-task DIR`` uses a Decathlon task folder instead. Every
nnU-Net folder lives under the output folder, never in the user's nnU-Net environment. Each
step logs to ``OUT/logs`` and leaves a marker in ``OUT/state`` when it is complete: running
the demo again with the same settings skips the finished steps (and redoes an interrupted
one from its start); other settings are refused unless ``--force``. See docs/demo.md.

Modules: ``settings`` (what determines the results), ``folder`` (the output folder: lock,
settings check), ``steps`` (the steps, composed from ``nnunet_genesis.workflows.nnunet_steps``),
``summary`` (the one-screen result) and ``cli``.
"""

from nnunet_genesis.workflows.demo.cli import add_arguments, run  # noqa: F401  (the subcommand's entry points)
