"""Prepare a multi-domain corpus for training: tokenizer + memory-mappable token shards.

    tune run recipes/prepare_data.py --config configs/data/embedded.yaml [key=value ...]

Steps, in order:
  1. check the whole config and that every source file exists (seconds, before any work);
  2. scan every domain split once: formats, text fields, no empty split (and totals for the progress bar);
  3. train a byte-level BPE on a balanced sample (``tokenizer.train``) or take ``tokenizer.path``;
  4. tokenize every split, each document followed by EOS, into ``<output_dir>/<domain>/{train,val,test}.bin``;
  5. write ``index.json`` and rename the finished directory onto ``output_dir``.

A domain with ``target: true`` is a **target**: text the user wants the mixture to serve (a small sample
of it), with ``val`` (and optionally ``test``) sources and no ``train``. Its val and test shards are
written like any domain's and ``index.json`` marks it ``"role": "target"``; the mixture never samples it.
The tokenizer is trained on the training domains' train splits only: a target changes no source's
tokens, as a user's real model's tokenizer has not seen the target either.

The ``test`` split is the one no method may see (the table's split): a domain's own ``test`` source, or,
when it has none, carved deterministically out of its val documents (``test_fraction`` of the distinct
val documents, chosen by sha256 so that duplicates stay together; a val document that also occurs in
train never goes to test). The index records which, per domain.

Everything is built in a temporary directory next to ``output_dir``: a failed run changes nothing.
Two runs on the same inputs give byte-identical files. Format: ``tandem_components/data/shards.py``.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from tandem_components.data import (
    DEFAULT_SAMPLE_BYTES_PER_DOMAIN, DEFAULT_TEXT_FIELD, DEFAULT_VOCAB_SIZE, SPLITS, TARGET_SPLITS, SplitStats,
    TandemTokenizer,
    building_dataset_dir, check_source, check_vocab_fits, copy_tokenizer, iter_documents, make_index, shard_dtype,
    tandem_tokenizer, tokenizer_sha256, train_bpe, write_index, write_split,
)
from tandem_components.errors import TandemError, exit_on_user_error
from tandem_components.torchtune_api import config

TOP_LEVEL_KEYS = {"output_dir", "dtype", "tokenizer", "domains", "text_field", "cache_dir", "test_fraction"}
REQUIRED_TOP_LEVEL_KEYS = {"output_dir", "dtype", "tokenizer", "domains"}
DOMAIN_KEYS = {"name", "train", "val", "test", "text_field", "target"}
#: share of a domain's distinct val documents that becomes its test split when it has no test source
DEFAULT_TEST_FRACTION = 0.5
TRAIN_KEYS = {"vocab_size", "sample_bytes_per_domain"}
# Documents handed to the Rust tokenizer at once: large enough to keep every core busy.
BATCH_DOCUMENTS = 512
BATCH_BYTES = 4_000_000


@dataclass
class DomainSpec:
    """One entry of ``domains``: where its train and val documents come from."""

    name: str
    sources: dict[str, Any]  # split -> source (path / glob / list / {hf_dataset: ...}); test optional
    text_field: str
    target: bool = False  # val/test only, never trained on

    @property
    def splits(self) -> tuple[str, ...]:
        return TARGET_SPLITS if self.target else SPLITS

    @property
    def test_carved(self) -> bool:
        """No test source: the test split is carved out of the val documents."""
        return "test" not in self.sources


class PrepareDataRecipe:
    """Reads the data config, then ``run()`` builds the dataset directory."""

    def __init__(self, cfg: DictConfig):
        raw = OmegaConf.to_container(cfg, resolve=True)
        _check_keys("config", raw, TOP_LEVEL_KEYS, REQUIRED_TOP_LEVEL_KEYS)
        self.output_dir = Path(_nonempty_str("output_dir", raw["output_dir"]))
        self.dtype_name = raw["dtype"]
        self.dtype = shard_dtype(self.dtype_name)
        self.cache_dir = raw.get("cache_dir")
        default_text_field = raw.get("text_field") or DEFAULT_TEXT_FIELD
        self.domains = _parse_domains(raw["domains"], default_text_field)
        self.test_fraction = raw.get("test_fraction", DEFAULT_TEST_FRACTION)
        if isinstance(self.test_fraction, bool) or not isinstance(self.test_fraction, (int, float)) or not (
            0.0 < self.test_fraction < 1.0
        ):
            raise TandemError(f"test_fraction: expected a number strictly between 0 and 1, got {self.test_fraction!r}")
        self._test_hashes: dict[str, set[bytes]] = {}  # carved domains: digests of the val docs that go to test
        self.train_options, self.tokenizer_path = _parse_tokenizer(raw["tokenizer"], self.dtype_name)
        for domain in self.domains:
            for split, source in domain.sources.items():
                check_source(domain.name, split, source)
        # A given tokenizer is checked now too: a vocab that does not fit the dtype costs seconds, not a scan.
        if self.tokenizer_path is not None:
            vocab_size = tandem_tokenizer(self.tokenizer_path).vocab_size
            check_vocab_fits(self.dtype_name, vocab_size, tokenizer_file=self.tokenizer_path)

    def run(self) -> dict[str, dict[str, SplitStats]]:
        started = time.perf_counter()
        total_bytes = self._scan()
        with building_dataset_dir(self.output_dir) as build_dir:
            tokenizer = self._setup_tokenizer(build_dir)
            stats = self._tokenize_all(tokenizer, build_dir, total_bytes)
            index = make_index(
                dtype_name=self.dtype_name,
                eos_id=tokenizer.eos_id,
                vocab_size=tokenizer.vocab_size,
                tokenizer_sha256=tokenizer_sha256(build_dir / "tokenizer.json"),
                splits_by_domain=stats,
                test_sources={d.name: self._test_source_note(d) for d in self.domains},
                targets={d.name for d in self.domains if d.target},
            )
            write_index(build_dir, index)
        print(_format_table(stats))
        print(f"wrote {self.output_dir} ({time.perf_counter() - started:.1f} s)")
        return stats

    def _source_documents(self, domain: DomainSpec, split: str) -> Iterator[str]:
        return iter_documents(
            domain.name, split, domain.sources[split], text_field=domain.text_field, cache_dir=self.cache_dir
        )

    def _documents(self, domain: DomainSpec, split: str) -> Iterator[str]:
        """A split's documents, in source order; val and test of a carved domain partition its val source."""
        if not domain.test_carved or split == "train":
            yield from self._source_documents(domain, split)
            return
        chosen = self._test_hashes[domain.name]
        for doc in self._source_documents(domain, "val"):
            if (_digest(doc) in chosen) == (split == "test"):
                yield doc

    def _test_source_note(self, domain: DomainSpec) -> str:
        if domain.test_carved:
            return f"carved from val (test_fraction {self.test_fraction}, by document sha256)"
        return "given"

    def _scan(self) -> int:
        """Read every split once, so that any bad file fails before anything is built; total UTF-8 bytes.

        It also chooses each carved domain's test documents (``_carve_test``)."""
        total = 0
        for domain in self.domains:
            digests: dict[str, set[bytes]] = {}
            for split in domain.sources:
                digests[split] = set()
                for doc in self._source_documents(domain, split):
                    total += len(doc.encode("utf-8"))
                    digests[split].add(_digest(doc))
            if domain.test_carved:
                self._test_hashes[domain.name] = self._carve_test(domain, digests["val"], digests.get("train", set()))
        return total

    def _carve_test(self, domain: DomainSpec, val: set[bytes], train: set[bytes]) -> set[bytes]:
        """The digests of the val documents that become test: a fixed share of the distinct ones not in train,
        the smallest digests first (deterministic, independent of file order)."""
        candidates = sorted(val - train)
        if len(candidates) < 2:
            raise TandemError(
                f"domains ({domain.name}).val: {len(candidates)} distinct val document(s) not in train; carving a "
                "test split needs at least 2 (give the domain a `test` source)"
            )
        k = min(len(candidates) - 1, max(1, round(self.test_fraction * len(candidates))))
        return set(candidates[:k])

    def _setup_tokenizer(self, build_dir: Path) -> TandemTokenizer:
        """Train the BPE into ``build_dir`` (or copy the given one there) and load it."""
        if self.tokenizer_path is None:
            print(f"training a {self.train_options['vocab_size']}-token byte-level BPE on a balanced sample", flush=True)
            train_bpe(
                {d.name: self._documents(d, "train") for d in self.domains if not d.target},
                out_path=build_dir / "tokenizer.json",
                **self.train_options,
            )
        else:
            copy_tokenizer(self.tokenizer_path, build_dir)
        return tandem_tokenizer(str(build_dir / "tokenizer.json"))

    def _tokenize_all(
        self, tokenizer: TandemTokenizer, build_dir: Path, total_bytes: int
    ) -> dict[str, dict[str, SplitStats]]:
        stats: dict[str, dict[str, SplitStats]] = {}
        with tqdm(total=total_bytes, unit="B", unit_scale=True, desc="tokenizing", dynamic_ncols=True) as progress:
            for domain in self.domains:
                stats[domain.name] = {}
                for split in domain.splits:
                    progress.set_postfix_str(f"{domain.name}/{split}")
                    batches = _encoded_batches(tokenizer, self._documents(domain, split), progress)
                    stats[domain.name][split] = write_split(build_dir, domain.name, split, batches, self.dtype)
        return stats


def _digest(document: str) -> bytes:
    return hashlib.sha256(document.encode("utf-8")).digest()


def _encoded_batches(
    tokenizer: TandemTokenizer, documents: Iterator[str], progress: tqdm
) -> Iterator[tuple[list[list[int]], int]]:
    """``(ids per document ending in EOS, UTF-8 bytes)`` for batches of documents, in order."""
    batch: list[str] = []
    batch_bytes = 0
    for document in documents:
        batch.append(document)
        batch_bytes += len(document.encode("utf-8"))
        if len(batch) >= BATCH_DOCUMENTS or batch_bytes >= BATCH_BYTES:
            yield tokenizer.encode_batch(batch), batch_bytes
            progress.update(batch_bytes)
            batch, batch_bytes = [], 0
    if batch:
        yield tokenizer.encode_batch(batch), batch_bytes
        progress.update(batch_bytes)


# ----------------------------------------------------------------------------------------------------
# config checks: every message names the key (and domain) at fault


def _check_keys(where: str, mapping: Any, allowed: set[str], required: set[str]) -> None:
    if not isinstance(mapping, dict):
        raise TandemError(f"{where}: expected a mapping with keys {sorted(required)}, got {mapping!r}")
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise TandemError(f"{where}: unknown key(s) {unknown} (allowed: {sorted(allowed)})")
    missing = sorted(k for k in required if mapping.get(k) is None)
    if missing:
        raise TandemError(f"{where}: missing key(s) {missing}")


def _nonempty_str(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise TandemError(f"{key}: expected a non-empty string, got {value!r}")
    return value


def _parse_domains(entries: Any, default_text_field: str) -> list[DomainSpec]:
    """``domains`` is a list (a YAML mapping would silently drop a domain given twice)."""
    if not isinstance(entries, list) or not entries:
        raise TandemError("domains: expected a non-empty list of {name: ..., train: ..., val: ..., [test: ...]}")
    domains: list[DomainSpec] = []
    for i, entry in enumerate(entries):
        name = entry.get("name") if isinstance(entry, dict) else None
        where = f"domains[{i}]" + (f" ({name})" if isinstance(name, str) else "")
        target = entry.get("target", False) if isinstance(entry, dict) else False
        if not isinstance(target, bool):
            raise TandemError(f"{where}.target: expected true or false, got {target!r}")
        if target and "train" in entry:
            raise TandemError(f"{where}.train: a target domain is never trained on (remove train, or target: false)")
        _check_keys(where, entry, DOMAIN_KEYS, {"name", "val"} if target else {"name", "train", "val"})
        name = _nonempty_str(f"{where}.name", name)
        if "/" in name or "\\" in name or name.startswith("."):
            raise TandemError(f"{where}.name: expected a plain directory name, got {name!r}")
        if name in {d.name for d in domains}:
            raise TandemError(f"{where} {entry.get('train') or entry.get('val')}: domain {name!r} is listed twice (list each domain once)")
        for split in TARGET_SPLITS if target else SPLITS:
            if split == "test" and "test" not in entry:
                continue  # carved out of val
            if entry[split] in ("", []):
                raise TandemError(f"{where} ({name}).{split}: empty source (expected a file, glob or hf_dataset)")
        text_field = _nonempty_str(f"{where}.text_field", entry.get("text_field") or default_text_field)
        domains.append(DomainSpec(name=name, sources={s: entry[s] for s in SPLITS if s in entry}, text_field=text_field,
                                  target=target))
    if all(d.target for d in domains):
        raise TandemError("domains: every domain is a target; at least one needs a train split to train on")
    return domains


def _parse_tokenizer(section: Any, dtype_name: str) -> tuple[dict[str, int] | None, str | None]:
    """``tokenizer.train`` (true or {vocab_size, sample_bytes_per_domain}) XOR ``tokenizer.path``."""
    _check_keys("tokenizer", section, {"train", "path"}, set())
    train, path = section.get("train"), section.get("path")
    if bool(train) == bool(path):
        raise TandemError("tokenizer: expected exactly one of train (options or true) and path (a tokenizer.json)")
    if path:
        return None, _nonempty_str("tokenizer.path", path)
    options = {} if train is True else train
    _check_keys("tokenizer.train", options, TRAIN_KEYS, set())
    options = {
        "vocab_size": options.get("vocab_size") or DEFAULT_VOCAB_SIZE,
        "sample_bytes_per_domain": options.get("sample_bytes_per_domain") or DEFAULT_SAMPLE_BYTES_PER_DOMAIN,
    }
    for key, value in options.items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise TandemError(f"tokenizer.train.{key}: expected a positive integer, got {value!r}")
    check_vocab_fits(dtype_name, options["vocab_size"], tokenizer_file="tokenizer.train.vocab_size")
    return options, None


def _format_table(stats: dict[str, dict[str, SplitStats]]) -> str:
    """Per-domain documents, bytes and tokens; bytes/token shows how well the tokenizer fits each domain."""
    header = ("domain", "train docs", "val docs", "test docs", "bytes", "tokens", "train tokens", "val tokens",
              "test tokens", "bytes/token")
    rows = []
    for domain, splits in stats.items():
        train, val, test = splits.get("train", SplitStats(file="")), splits["val"], splits["test"]
        rows.append([domain, train.documents, val.documents, test.documents, train.bytes + val.bytes + test.bytes,
                     train.tokens + val.tokens + test.tokens, train.tokens, val.tokens, test.tokens])
    rows.append(["total", *(sum(row[i] for row in rows) for i in range(1, 9))])
    lines = [f"{header[0]:<12}" + "".join(f"{h:>14}" for h in header[1:])]
    for row in rows:
        ratio = row[4] / row[5] if row[5] else 0.0
        lines.append(f"{row[0]:<12}" + "".join(f"{v:>14,}" for v in row[1:]) + f"{ratio:>14.2f}")
    rule = "-" * len(lines[0])
    return "\n".join([lines[0], rule, *lines[1:-1], rule, lines[-1]])


@exit_on_user_error
@config.parse
def recipe_main(cfg: DictConfig) -> None:
    """Prepare token shards (and a tokenizer) from a data config; see configs/data/embedded.yaml."""
    recipe = PrepareDataRecipe(cfg)
    recipe.run()


if __name__ == "__main__":
    sys.exit(recipe_main())
