"""Models Genesis pretraining on nnU-Net's machinery (installed as ``nnunet_genesis.pretraining``).

Modules, in the order a run uses them:

* ``cli``: the ``nnunet-genesis pretrain`` subcommand;
* ``sources``: finding volumes in ``-i`` folders and ``-d`` nnU-Net raw datasets;
* ``raw_dataset``: reading, checking and writing them as an nnU-Net raw dataset;
* ``plans``: plans transferred with nnU-Net's ``move_plans_between_datasets`` or the universal
  Genesis plan, the split, and nnU-Net's preprocessing;
* ``prepare``: the steps above, end to end;
* ``options``: the run settings stored in the plans (``PretrainOptions``);
* ``restoration_trainer`` (with ``restoration_parts``): ``nnUNetTrainerRestoration``, what any
  corrupt-and-restore pretraining needs on nnU-Net's trainer;
* ``trainer``: ``nnUNetTrainerGenesisPretrain``, its thin Genesis subclass (the corruptions,
  the Genesis checkpoint and PNGs);
* ``validation_patches``, ``plots``, ``metadata``: what the trainer scores, draws and saves;
* ``launch``: one process, DDP processes (NCCL or gloo), or torchrun;
* ``folders``: which nnU-Net folders and dataset id a run uses.

See docs/pretraining.md.
"""
