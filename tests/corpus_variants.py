"""Derived token corpora for recipe tests: a subset of a prepared corpus, plus synthetic domains."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from tandem_components.data.shards import SPLITS, ShardedCorpus, building_dataset_dir, make_index, write_index, write_split


def derive_corpus(
    source: Path,
    out: Path,
    domains: list[str],
    extra: dict[str, dict[str, np.ndarray]] | None = None,
    max_tokens: int | None = None,
) -> Path:
    """Write a prepared dataset with ``domains`` of ``source`` (optionally cut to ``max_tokens`` per split)
    followed by ``extra`` domains given as token arrays, keeping the source's tokenizer."""
    src = ShardedCorpus.open(source)
    with building_dataset_dir(out) as build:
        for name in ("tokenizer.json", "tokenizer_config.json"):
            if (src.path / name).exists():
                shutil.copy(src.path / name, build / name)
        splits: dict = {}
        arrays = {d: {s: np.asarray(src.tokens(d, s)[:max_tokens]) for s in SPLITS} for d in domains}
        for name, by_split in (extra or {}).items():  # an extra domain without a test split tests on its val
            arrays[name] = {"test": by_split["val"], **by_split}
        for domain, by_split in arrays.items():
            splits[domain] = {
                split: write_split(build, domain, split, [([arr.tolist()], int(arr.size))], src.dtype)
                for split, arr in by_split.items()
            }
        index = make_index(
            dtype_name=src.dtype.name if src.dtype.name in ("uint16", "uint32") else "uint16",
            eos_id=src.eos_id, vocab_size=src.vocab_size, tokenizer_sha256=src.tokenizer_sha256,
            splits_by_domain=splits,
        )
        write_index(build, index)
    return out


def uniform_random_tokens(n: int, vocab_size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab_size, size=n, dtype=np.int64)
