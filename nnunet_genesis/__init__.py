"""nnunet-genesis: Models Genesis self-supervised pretraining for nnU-Net v2."""

__version__ = "0.1.0"
