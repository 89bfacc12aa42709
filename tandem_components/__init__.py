"""tandem: TANDEM data-mixture optimization (twin networks) as composable torchtune-style parts.

Where things live (one concern per module):
- ``errors``          the one user-facing error type and the recipe exit wrapper
- ``torchtune_api``   the only module that imports torchtune (the narrow surface we depend on)
- ``tokenizer``       BPE training and the torchtune-interface tokenizer
- ``corpus_sources``  reading a domain's raw documents (jsonl/json/parquet/text/HF dataset)
- ``shards``          memory-mappable token shards and their index
- ``mixture``         α on the simplex: projection / exponentiated-gradient steps, history
- ``loader``          the α-weighted multi-domain loader (weights change mid-run, exact resume)
- ``twins``           proxy u and reference w, and ``sync()`` (w <- u)
- ``domain_loss``     per-domain losses from one forward pass (segment reduction)
- ``estimators``      hypergradient Δ per domain (TANDEM, fixed; baselines)
- ``export``          the mixture YAML that stage 2 reads
- ``evaluation``      per-domain validation loss / perplexity tables
- ``plots``           the α trajectory plot
"""

__version__ = "0.1.0"
