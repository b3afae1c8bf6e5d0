"""The workflows: what composes the layers below into a run (the top layer of the package).

``pipeline`` (a workspace of resumable logged steps), ``nnunet_steps`` (the nnU-Net and
nnunet-genesis commands of one dataset), ``msd_folders`` (Decathlon task folders),
``cpu_plans`` (a schedule plans variant shrunk for CPUs), ``demo/`` and ``recipe/``.
Nothing below this package imports it (docs/architecture.md, held by tests/test_layers.py).
"""
