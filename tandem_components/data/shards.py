"""Token shards: the on-disk format of a prepared dataset, its writer, and ``ShardedCorpus`` (the reader).

Layout of a prepared dataset directory ``D``::

    D/index.json                      what is in D (below); canonical JSON, sorted keys, no timestamps
    D/tokenizer.json                  the tokenizer that produced the ids (+ D/tokenizer_config.json)
    D/<domain>/train.bin              raw little-endian token ids (uint16 or uint32), every document's
    D/<domain>/val.bin                tokens followed by the EOS id; documents in source order
    D/<domain>/test.bin               the held-out split no method sees (reported in tables only)

``index.json``::

    {"format_version": 1, "dtype": "uint16", "eos_id": 0, "vocab_size": 8192,
     "tokenizer": "tokenizer.json", "tokenizer_sha256": "<hex>",
     "domains": [{"name": "code", "splits": {"train": {"file": "code/train.bin", "documents": N,
                  "bytes": <utf-8 bytes of the raw text>, "tokens": T, "sha256": "<hex of the .bin>"},
                  "val": {...}, "test": {...}}, "test_source": "given" | "carved from val (...)"}, ...]}

A **target** domain (``"role": "target"``) has val and test splits only: text a user wants the mixture
to serve, never trained on. The mixture α covers the other domains (``ShardedCorpus.domains``); the
targets (``ShardedCorpus.targets``) are read by the methods' validation objective and scored by the
evaluation. An index without roles (every corpus before targets) reads as training domains only.

``domains`` is a list so that the domain order survives sorted keys. ``index_sha256`` (sha256 of the
canonical bytes) identifies a prepared dataset in exports.

A dataset is built in a temporary directory next to ``D`` and renamed onto ``D`` only when complete
(``building_dataset_dir``): a failed prepare leaves any older ``D`` untouched and no partial one behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tandem_components.errors import TandemError

FORMAT_VERSION = 1
INDEX_NAME = "index.json"
SPLITS = ("train", "val", "test")
TARGET_SPLITS = ("val", "test")
TARGET_ROLE = "target"
SHARD_DTYPES = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}


def shard_dtype(name: str, *, key: str = "dtype") -> np.dtype:
    """The numpy dtype for a config's dtype name (little-endian)."""
    if not isinstance(name, str) or name not in SHARD_DTYPES:
        raise TandemError(f"{key}: expected one of {sorted(SHARD_DTYPES)}, got {name!r}")
    return SHARD_DTYPES[name]


def check_vocab_fits(dtype_name: str, vocab_size: int, *, tokenizer_file: str | Path) -> None:
    """A token id must fit the shard dtype: vocab_size <= 2**bits."""
    capacity = int(np.iinfo(shard_dtype(dtype_name)).max) + 1
    if vocab_size > capacity:
        raise TandemError(
            f"dtype {dtype_name} {tokenizer_file}: tokenizer vocab_size {vocab_size} does not fit"
            f" (at most {capacity}); use dtype: uint32"
        )


# ----------------------------------------------------------------------------------------------------
# writing


@dataclass
class SplitStats:
    """What ``index.json`` records for one domain split."""

    file: str  # relative to D
    documents: int = 0
    bytes: int = 0  # UTF-8 bytes of the raw text
    tokens: int = 0  # incl. one EOS per document
    sha256: str = ""


def write_split(
    dataset_dir: Path,
    domain: str,
    split: str,
    token_batches: Iterable[tuple[list[list[int]], int]],
    dtype: np.dtype,
) -> SplitStats:
    """Stream batches of encoded documents into ``dataset_dir/<domain>/<split>.bin``.

    Args:
        token_batches: ``(ids_per_document, utf8_bytes_of_batch)``; each document's ids already end in EOS.
        dtype: one of ``SHARD_DTYPES``.
    """
    stats = SplitStats(file=f"{domain}/{split}.bin")
    path = dataset_dir / stats.file
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for ids_per_document, batch_bytes in token_batches:
            flat = np.fromiter(
                itertools.chain.from_iterable(ids_per_document),
                dtype=dtype,
                count=sum(len(ids) for ids in ids_per_document),
            )
            data = flat.tobytes()
            f.write(data)
            digest.update(data)
            stats.documents += len(ids_per_document)
            stats.tokens += len(flat)
            stats.bytes += batch_bytes
    stats.sha256 = digest.hexdigest()
    return stats


def make_index(
    *,
    dtype_name: str,
    eos_id: int,
    vocab_size: int,
    tokenizer_sha256: str,
    splits_by_domain: dict[str, dict[str, SplitStats]],
    test_sources: dict[str, str] | None = None,
    targets: frozenset[str] | set[str] = frozenset(),
) -> dict[str, Any]:
    """The ``index.json`` content (domains in the given order; ``targets``: the target-only domains, marked
    ``"role": "target"``; a training domain carries no role, so an index without targets is unchanged)."""
    return {
        "format_version": FORMAT_VERSION,
        "dtype": dtype_name,
        "eos_id": int(eos_id),
        "vocab_size": int(vocab_size),
        "tokenizer": "tokenizer.json",
        "tokenizer_sha256": tokenizer_sha256,
        "domains": [
            {"name": domain, "splits": {split: asdict(stats) for split, stats in splits.items()},
             **({"test_source": test_sources[domain]} if test_sources and domain in test_sources else {}),
             **({"role": TARGET_ROLE} if domain in targets else {})}
            for domain, splits in splits_by_domain.items()
        ],
    }


def canonical_index_bytes(index: dict[str, Any]) -> bytes:
    """The one byte form of an index: sorted keys, fixed indent, trailing newline."""
    return (json.dumps(index, sort_keys=True, indent=2, ensure_ascii=True) + "\n").encode("utf-8")


def write_index(dataset_dir: Path, index: dict[str, Any]) -> str:
    """Write ``index.json`` atomically; returns its sha256."""
    data = canonical_index_bytes(index)
    tmp = dataset_dir / f".{INDEX_NAME}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, dataset_dir / INDEX_NAME)
    return hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def building_dataset_dir(final_dir: str | Path) -> Iterator[Path]:
    """Yield an empty temp dir next to ``final_dir``; on success it replaces ``final_dir``, on error it is removed.

    The replacement is two renames (old D aside, new D in place) and then deleting the old one, so at no
    point is there a half-written ``D``.
    """
    final_dir = Path(final_dir)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    build_dir = Path(tempfile.mkdtemp(dir=final_dir.parent, prefix=f".{final_dir.name}.building-"))
    try:
        yield build_dir
    except BaseException:
        shutil.rmtree(build_dir, ignore_errors=True)
        raise
    os.chmod(build_dir, 0o755)  # mkdtemp makes it 0700
    old_dir = None
    if final_dir.exists():
        old_dir = Path(tempfile.mkdtemp(dir=final_dir.parent, prefix=f".{final_dir.name}.old-"))
        os.replace(final_dir, old_dir / final_dir.name)
    os.replace(build_dir, final_dir)
    if old_dir is not None:
        shutil.rmtree(old_dir, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------
# reading


class ShardedCorpus:
    """A prepared dataset directory, opened read-only.

    Attributes:
        path: the dataset directory ``D``.
        domains: the training domains' names (those with a train split; α covers them), in index order.
        targets: the target-only domains' names (val and test only), in index order.
        dtype: token dtype of the ``.bin`` files.
        eos_id, vocab_size, tokenizer_sha256: from ``index.json``.
        index_sha256: sha256 of the canonical ``index.json`` bytes (provenance for exports).
    """

    def __init__(self, path: Path, index: dict[str, Any]):
        self.path = path
        self.index = index
        self.domains: list[str] = [d["name"] for d in index["domains"] if d.get("role") != TARGET_ROLE]
        self.targets: list[str] = [d["name"] for d in index["domains"] if d.get("role") == TARGET_ROLE]
        self.dtype: np.dtype = SHARD_DTYPES[index["dtype"]]
        self.eos_id: int = index["eos_id"]
        self.vocab_size: int = index["vocab_size"]
        self.tokenizer_sha256: str = index["tokenizer_sha256"]
        self.index_sha256: str = hashlib.sha256(canonical_index_bytes(index)).hexdigest()
        self._splits = {d["name"]: d["splits"] for d in index["domains"]}
        self._memmaps: dict[tuple[str, str], np.ndarray] = {}

    @classmethod
    def open(cls, path: str | Path) -> "ShardedCorpus":
        """Open ``path`` (a prepared dataset dir), checking the index and every ``.bin``'s size."""
        path = Path(path)
        index = _load_index(path / INDEX_NAME)
        corpus = cls(path, index)
        for domain in [*corpus.domains, *corpus.targets]:
            for split in corpus._splits[domain]:
                corpus._check_bin_size(domain, split)
        return corpus

    def tokens(self, domain: str, split: str) -> np.ndarray:
        """All token ids of one domain split, as a 1-D read-only memmap (documents end in ``eos_id``)."""
        key = (domain, split)
        if key not in self._memmaps:
            entry = self._entry(domain, split)
            if entry["tokens"] == 0:
                empty = np.zeros(0, dtype=self.dtype)
                empty.flags.writeable = False
                self._memmaps[key] = empty
            else:
                self._memmaps[key] = np.memmap(
                    self.path / entry["file"], dtype=self.dtype, mode="r", shape=(entry["tokens"],)
                )
        return self._memmaps[key]

    def num_tokens(self, domain: str, split: str) -> int:
        return int(self._entry(domain, split)["tokens"])

    def stats(self, domain: str, split: str) -> dict[str, Any]:
        """The index entry of one split: file, documents, bytes, tokens, sha256."""
        return dict(self._entry(domain, split))

    def _entry(self, domain: str, split: str) -> dict[str, Any]:
        if domain not in self._splits:
            raise TandemError(f"{self.path / INDEX_NAME}: no domain {domain!r} (domains: {self.domains})")
        if split == "train" and domain in self.targets:
            raise TandemError(f"{self.path / INDEX_NAME}: {domain!r} is a target domain: it has no train split")
        if split not in self._splits[domain]:
            raise TandemError(
                f"{self.path / INDEX_NAME}: domain {domain!r} has no split {split!r} (written by an older"
                " prepare_data? re-run recipes/prepare_data.py)"
            )
        return self._splits[domain][split]

    def _check_bin_size(self, domain: str, split: str) -> None:
        entry = self._entry(domain, split)
        file = self.path / entry["file"]
        expected = entry["tokens"] * self.dtype.itemsize
        if not file.is_file():
            raise TandemError(f"{file}: missing shard of domain {domain!r} (re-run prepare_data)")
        if file.stat().st_size != expected:
            raise TandemError(
                f"{file}: {file.stat().st_size} bytes, expected {expected} ({entry['tokens']} tokens of"
                f" {self.dtype.name}); re-run prepare_data"
            )


def _load_index(index_path: Path) -> dict[str, Any]:
    if not index_path.is_file():
        raise TandemError(f"{index_path}: not found (expected a dataset dir written by recipes/prepare_data.py)")
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
        _validate_index(index)
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise TandemError(f"{index_path}: corrupt index ({type(e).__name__}: {e})") from None
    return index


def _validate_index(index: dict[str, Any]) -> None:
    """Structural check so that a corrupt index fails at open, not deep inside a training step."""
    if index["format_version"] != FORMAT_VERSION:
        raise ValueError(f"format_version {index['format_version']}, this code reads {FORMAT_VERSION}")
    if index["dtype"] not in SHARD_DTYPES:
        raise ValueError(f"dtype {index['dtype']!r}")
    for key in ("eos_id", "vocab_size"):
        if not isinstance(index[key], int):
            raise ValueError(f"{key} is not an integer")
    if not isinstance(index["tokenizer_sha256"], str):
        raise ValueError("tokenizer_sha256 is not a string")
    if not isinstance(index["domains"], list) or not index["domains"]:
        raise ValueError("domains must be a non-empty list")
    for domain in index["domains"]:
        if not isinstance(domain["name"], str) or not isinstance(domain["splits"], dict):
            raise ValueError("a domain needs a name and splits")
        role = domain.get("role")
        if role not in (None, TARGET_ROLE):
            raise ValueError(f"domain {domain['name']!r}: role {role!r} (expected {TARGET_ROLE!r} or none)")
        if role == TARGET_ROLE and ("train" in domain["splits"] or "val" not in domain["splits"]):
            raise ValueError(f"target domain {domain['name']!r}: expected val and test splits only")
        for entry in domain["splits"].values():
            if not isinstance(entry["file"], str) or not isinstance(entry["tokens"], int) or entry["tokens"] < 0:
                raise ValueError(f"domain {domain['name']!r}: bad split entry")
    if all(domain.get("role") == TARGET_ROLE for domain in index["domains"]):
        raise ValueError("every domain is a target: at least one needs a train split")
