"""trainers of nnunet-genesis (installed as nnunet_genesis.trainers)."""
