"""``nnunet-genesis recipe``: the Decathlon recipe (every fold and configuration, selection,
ensemble, post-processing, submission zip) as one resumable command; see ``cli`` and docs/recipe.md."""
