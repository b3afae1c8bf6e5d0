"""evaluation of nnunet-genesis (installed as nnunet_genesis.evaluation)."""
