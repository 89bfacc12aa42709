"""tandem: TANDEM data-mixture optimization (twin networks) as composable torchtune-style parts.

Packages follow the data path, and imports only run down this list (tests/test_import_layers.py):

- at the top, used by every layer: ``errors`` (the one user-facing error), ``atomic`` (atomic file
  output), ``torchtune_api`` (the only module that imports torchtune)
- ``data``          raw documents, tokenizer, token shards, the α-weighted loaders and their ``Batch``
- ``models``        the decoder builder, model weights, HF checkpoints in and out
- ``distributed``   collectives (α identical on every rank), FSDP2, compile, float8
- ``mixture``       α on the simplex and its step, named mixtures, the export stage 2 reads, plots
- ``training``      twins u and w, per-domain losses, evaluation, training checkpoints, cost model
- ``estimators``    the hypergradient Δ per domain (TANDEM; DoReMi, DoGE, fixed)
- commands over all of it: ``config_validation`` (every config key), ``verdict`` (learned vs baseline),
  ``cli`` (``tandem ls`` / ``tandem cp``: the recipes and configs shipped in the wheel)
"""

__version__ = "0.1.0"
