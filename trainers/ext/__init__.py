"""Folder that ``nnUNet_extTrainer`` points to.

nnU-Net imports the modules here by file and drops them from ``sys.modules`` afterwards,
so they only re-export classes whose real code lives in ``nnunet_genesis.trainers``.
"""
