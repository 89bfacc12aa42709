"""Token shards: counts and contents equal the tokenizer's, byte-identical rebuilds, the dtype check, the reader."""

from __future__ import annotations

import hashlib
import json
import runpy
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from tandem_components.data.corpus_sources import iter_documents
from tandem_components.data.shards import SPLITS, ShardedCorpus, building_dataset_dir, check_vocab_fits, shard_dtype
from tandem_components.data.tokenizer import tandem_tokenizer, tokenizer_sha256
from tandem_components.errors import TandemError
from tests.conftest import REPO_ROOT

# The recipe is a script (recipes/ is not a package): load its namespace to call the recipe class directly.
RECIPE = runpy.run_path(str(REPO_ROOT / "recipes" / "prepare_data.py"))

def prepare(corpus: dict, output_dir: Path, dtype: str = "uint16", tokenizer: dict | None = None) -> ShardedCorpus:
    cfg = OmegaConf.create(
        {
            "output_dir": str(output_dir),
            "dtype": dtype,
            "tokenizer": tokenizer or {"train": {"vocab_size": 1024, "sample_bytes_per_domain": 200_000}},
            "domains": [{"name": d, **{s: str(p) for s, p in f.items()}} for d, f in corpus.items()],
        }
    )
    RECIPE["PrepareDataRecipe"](cfg).run()
    return ShardedCorpus.open(output_dir)

@pytest.fixture(scope="module")
def prepared(fixture_corpus, tmp_path_factory) -> ShardedCorpus:
    return prepare(fixture_corpus, tmp_path_factory.mktemp("prepared") / "D")

def _documents_of(tokens: np.ndarray, eos_id: int) -> list[tuple[int, ...]]:
    """A shard cut back into its documents (each ends in EOS)."""
    ends = np.flatnonzero(np.asarray(tokens) == eos_id)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [tuple(np.asarray(tokens[a:b + 1]).tolist()) for a, b in zip(starts, ends)]

def test_shards_hold_exactly_the_tokenizers_ids_with_eos_after_each_document(prepared, fixture_corpus):
    tokenizer = tandem_tokenizer(str(prepared.path / "tokenizer.json"))
    assert prepared.domains == list(fixture_corpus)
    assert (prepared.eos_id, prepared.vocab_size, prepared.dtype) == (tokenizer.eos_id, 1024, np.dtype("<u2"))
    for domain, files in fixture_corpus.items():
        for split, path in files.items():
            documents = list(iter_documents(domain, split, path))
            encoded = [tuple(tokenizer.encode(doc, add_bos=False, add_eos=True)) for doc in documents]
            # val and test of a carved domain partition the val source, each keeping source order
            shards = ["train"] if split == "train" else ["val", "test"]
            got = [doc for s in shards for doc in _documents_of(prepared.tokens(domain, s), prepared.eos_id)]
            assert sorted(got) == sorted(encoded)
            for s in shards:
                tokens = prepared.tokens(domain, s)
                docs = _documents_of(tokens, prepared.eos_id)
                positions = [encoded.index(d) for d in docs]
                assert positions == sorted(positions)  # source order
                assert int((tokens == prepared.eos_id).sum()) == len(docs) == prepared.stats(domain, s)["documents"]
                assert not tokens.flags.writeable and isinstance(tokens, np.memmap)

def test_test_split_is_carved_out_of_val_and_shares_no_document_with_train_or_val(prepared, embedded_shards):
    """No test document (by hash) occurs in train or val, on the fixture corpus and the embedded corpus."""
    for corpus in (prepared, ShardedCorpus.open(embedded_shards)):
        for domain in corpus.domains:
            digests = {
                s: {hashlib.sha256(np.asarray(d, dtype=np.int64).tobytes()).hexdigest()
                    for d in _documents_of(corpus.tokens(domain, s), corpus.eos_id)}
                for s in SPLITS
            }
            assert digests["test"], domain
            assert not digests["test"] & digests["train"], domain
            assert not digests["test"] & digests["val"], domain
            entry = next(d for d in corpus.index["domains"] if d["name"] == domain)
            assert entry["test_source"].startswith("carved from val (test_fraction 0.5")

def test_index_records_bytes_hashes_and_provenance(prepared):
    index_bytes = (prepared.path / "index.json").read_bytes()
    assert prepared.index_sha256 == hashlib.sha256(index_bytes).hexdigest()
    assert prepared.tokenizer_sha256 == hashlib.sha256((prepared.path / "tokenizer.json").read_bytes()).hexdigest()
    for domain in prepared.domains:
        for split in SPLITS:
            entry = prepared.stats(domain, split)
            assert entry["sha256"] == hashlib.sha256((prepared.path / entry["file"]).read_bytes()).hexdigest()
            assert entry["bytes"] > entry["tokens"] > entry["documents"] > 0

def _file_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}

def test_two_prepare_runs_are_byte_identical_and_rebuild_replaces_cleanly(prepared, fixture_corpus, tmp_path):
    again = prepare(fixture_corpus, tmp_path / "D")
    assert _file_hashes(again.path) == _file_hashes(prepared.path)
    (tmp_path / "D" / "stale.txt").write_text("from an older run")
    prepare(fixture_corpus, tmp_path / "D")  # over an existing D
    assert not (tmp_path / "D" / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["D"]  # no temp dirs left next to it

def test_uint32_shards_hold_the_tokenizers_ids(fixture_corpus, tmp_path):
    wide = prepare({"legal": fixture_corpus["legal"]}, tmp_path / "D32", dtype="uint32")
    assert wide.dtype == np.dtype("<u4")
    tokenizer = tandem_tokenizer(str(wide.path / "tokenizer.json"))
    documents = list(iter_documents("legal", "train", fixture_corpus["legal"]["train"]))
    assert wide.tokens("legal", "train").tolist() == [i for d in documents for i in tokenizer.encode(d, add_bos=False)]

def test_a_given_tokenizer_is_copied_unchanged(fixture_corpus, fixture_tokenizer_path, tmp_path):
    given = prepare(fixture_corpus, tmp_path / "D", tokenizer={"path": str(fixture_tokenizer_path)})
    assert given.tokenizer_sha256 == tokenizer_sha256(fixture_tokenizer_path)
    assert (given.path / "tokenizer_config.json").read_bytes() == (
        fixture_tokenizer_path.parent / "tokenizer_config.json"
    ).read_bytes()

def test_dtype_must_hold_every_token_id():
    check_vocab_fits("uint16", 65536, tokenizer_file="t.json")
    check_vocab_fits("uint32", 70000, tokenizer_file="t.json")
    with pytest.raises(TandemError, match=r"t\.json.*70000 does not fit.*uint32"):
        check_vocab_fits("uint16", 70000, tokenizer_file="t.json")
    with pytest.raises(TandemError, match="dtype: expected one of"):
        shard_dtype("int8")

def test_failed_build_leaves_the_older_dataset_untouched(tmp_path):
    final = tmp_path / "D"
    final.mkdir()
    (final / "index.json").write_text("old")
    with pytest.raises(RuntimeError):
        with building_dataset_dir(final) as build:
            (build / "index.json").write_text("half")
            raise RuntimeError("tokenizer crashed")
    assert (final / "index.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["D"]

def _copy_dataset(prepared: ShardedCorpus, dest: Path) -> Path:
    for name, _ in _file_hashes(prepared.path).items():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        (dest / name).write_bytes((prepared.path / name).read_bytes())
    return dest

def _edit_index(dataset: Path, edit) -> None:
    index = json.loads((dataset / "index.json").read_text())
    edit(index)
    (dataset / "index.json").write_text(json.dumps(index))


@pytest.mark.parametrize(
    "damage, culprit",
    [
        (lambda d: (d / "index.json").unlink(), "index.json"),
        (lambda d: (d / "index.json").write_text("{not json"), "index.json"),
        (lambda d: (d / "index.json").write_text(json.dumps({"format_version": 1})), "index.json"),
        (lambda d: (d / "code" / "val.bin").unlink(), "code/val.bin"),
        (lambda d: (d / "code" / "val.bin").write_bytes(b"\x00" * 3), "code/val.bin"),
        (lambda d: _edit_index(d, lambda i: i["domains"][0].update(role="target")), "index.json"),  # with a train split
        (lambda d: _edit_index(d, lambda i: [e.update(role="target") for e in i["domains"]]), "index.json"),
    ],
    ids=["no-index", "corrupt-index", "incomplete-index", "missing-bin", "wrong-size-bin", "target-with-train",
         "every-domain-a-target"],
)
def test_open_names_the_bad_file(prepared, tmp_path, damage, culprit):
    copy = _copy_dataset(prepared, tmp_path / "D")
    damage(copy)
    with pytest.raises(TandemError) as error:
        ShardedCorpus.open(copy)
    assert str(copy / culprit) in str(error.value)

def test_a_given_test_source_is_used_as_is_and_recorded(fixture_corpus, tmp_path):
    """A domain with its own ``test`` source keeps its whole val split; the index says which is which."""
    corpus = {d: dict(f) for d, f in fixture_corpus.items()}
    corpus["code"]["test"] = corpus["legal"]["train"]  # any real text, not in code's train or val
    out = prepare(corpus, tmp_path / "D", tokenizer={"train": {"vocab_size": 512, "sample_bytes_per_domain": 50_000}})
    tokenizer = tandem_tokenizer(str(out.path / "tokenizer.json"))
    given = [i for doc in iter_documents("code", "test", corpus["code"]["test"])
             for i in tokenizer.encode(doc, add_bos=False, add_eos=True)]
    assert out.tokens("code", "test").tolist() == given
    assert out.stats("code", "val")["documents"] == len(list(iter_documents("code", "val", corpus["code"]["val"])))
    sources = {d["name"]: d["test_source"] for d in out.index["domains"]}
    assert sources["code"] == "given" and sources["legal"].startswith("carved from val")
