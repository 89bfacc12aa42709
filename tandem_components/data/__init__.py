"""Where the data comes in: raw documents, the BPE tokenizer, token shards, and the loaders that draw
α-weighted batches (pretraining windows, SFT examples) as the ``Batch`` every loss reads."""

from tandem_components.data.batch import IGNORE_INDEX, Batch
from tandem_components.data.corpus_sources import DEFAULT_TEXT_FIELD, check_source, iter_documents, resolve_files
from tandem_components.data.loader import (
    PerDomainSampler,
    ProbeSchedule,
    WeightedDomainLoader,
    domains_per_probe,
    eval_windows,
    probe_budget,
)
from tandem_components.data.sft_data import (
    ChatFormat,
    Example,
    TokenizedExample,
    chat_format,
    load_category,
    subset_examples,
    tokenize_category,
    tokenize_example,
)
from tandem_components.data.sft_loader import PerCategorySampler, WeightedExampleLoader, eval_example_batches
from tandem_components.data.shards import (
    SPLITS,
    TARGET_SPLITS,
    ShardedCorpus,
    SplitStats,
    building_dataset_dir,
    check_vocab_fits,
    make_index,
    shard_dtype,
    write_index,
    write_split,
)
from tandem_components.data.tokenizer import (
    DEFAULT_SAMPLE_BYTES_PER_DOMAIN,
    DEFAULT_VOCAB_SIZE,
    TandemTokenizer,
    copy_tokenizer,
    tandem_tokenizer,
    tokenizer_sha256,
    train_bpe,
)

__all__ = [
    "IGNORE_INDEX",
    "Batch",
    "DEFAULT_TEXT_FIELD",
    "check_source",
    "iter_documents",
    "resolve_files",
    "TandemTokenizer",
    "tandem_tokenizer",
    "tokenizer_sha256",
    "train_bpe",
    "ShardedCorpus",
    "make_index",
    "write_index",
    "write_split",
    "WeightedDomainLoader",
    "PerDomainSampler",
    "ProbeSchedule",
    "domains_per_probe",
    "eval_windows",
    "probe_budget",
    "ChatFormat",
    "Example",
    "TokenizedExample",
    "chat_format",
    "load_category",
    "subset_examples",
    "tokenize_category",
    "tokenize_example",
    "WeightedExampleLoader",
    "PerCategorySampler",
    "eval_example_batches",
    "SPLITS",
    "TARGET_SPLITS",
    "SplitStats",
    "building_dataset_dir",
    "check_vocab_fits",
    "shard_dtype",
    "DEFAULT_SAMPLE_BYTES_PER_DOMAIN",
    "DEFAULT_VOCAB_SIZE",
    "copy_tokenizer",
]
