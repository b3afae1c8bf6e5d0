"""pretraining of nnunet-genesis (installed as nnunet_genesis.pretraining)."""
