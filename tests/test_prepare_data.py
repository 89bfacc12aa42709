"""recipes/prepare_data.py run for real (``tune run``, a subprocess): a good config, and bad inputs that must
each fail in one stderr line naming the domain and the file, with exit code 2, changing nothing on disk."""

from __future__ import annotations

import gzip
import json
import runpy
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from tandem_components.data.shards import ShardedCorpus
from tandem_components.errors import TandemError
from tests.conftest import EMBEDDED_DIR, REPO_ROOT

RECIPE = REPO_ROOT / "recipes" / "prepare_data.py"
RECIPE_NAMESPACE = runpy.run_path(str(RECIPE))  # recipes/ is scripts, not a package
# `tune` itself logs this torchao notice while importing, before any recipe code runs.
TORCHAO_NOTICE = "Skipping import of cpp extensions"


def tune_run_command(config_path: Path, *overrides: str) -> list[str]:
    """``tune run recipes/prepare_data.py --config ...``, to run from the repo root.

    ``python -m`` puts the repo root first on ``sys.path``, so ``recipes.prepare_data`` is this repo's
    (see recipes/__init__.py) and not the ``recipes`` package inside torchtune's wheel.
    """
    tune = [sys.executable, "-m", "torchtune._cli.tune"]
    return [*tune, "run", "recipes/prepare_data.py", "--config", str(config_path), *overrides]


def write_config(path: Path, domains: list[dict], output_dir: Path, tokenizer: dict | None = None) -> Path:
    config = {
        "output_dir": str(output_dir),
        "dtype": "uint16",
        "tokenizer": tokenizer or {"train": {"vocab_size": 512, "sample_bytes_per_domain": 50_000}},
        "domains": domains,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def domain_entries(corpus: dict, **replace: dict) -> list[dict]:
    return [{"name": d, "train": str(f["train"]), "val": str(f["val"]), **replace.get(d, {})} for d, f in corpus.items()]


def test_recipe_prepares_the_fixture_corpus_and_fails_cleanly_through_tune(fixture_corpus, tmp_path):
    """Two real `tune run`s at once: a good config, and a bad one (exit 2, one stderr line)."""
    good = write_config(tmp_path / "good.yaml", domain_entries(fixture_corpus), tmp_path / "out")
    config, _, expected = _missing_file(fixture_corpus, tmp_path / "bad")
    processes = []
    for path in (good, config):
        command = tune_run_command(path)
        processes.append(subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    (good_out, good_err), (bad_out, bad_err) = [p.communicate(timeout=300) for p in processes]

    assert processes[0].returncode == 0, good_err
    assert "bytes/token" in good_out and f"wrote {tmp_path / 'out'}" in good_out
    corpus = ShardedCorpus.open(tmp_path / "out")
    assert corpus.domains == list(fixture_corpus) and corpus.vocab_size == 512

    assert processes[1].returncode == 2, bad_err
    _assert_one_line_naming(bad_err, expected)
    assert not (tmp_path / "bad" / "out").exists()


def test_a_target_domain_gets_val_and_test_shards_and_changes_no_source(fixture_corpus, tmp_path):
    """``target: true``: val and (carved) test shards, ``"role": "target"`` in the index, outside
    ``corpus.domains``; the tokenizer and every source's shards are those of the corpus without it."""
    target = "legal"
    entries = domain_entries(fixture_corpus)
    sources = [e for e in entries if e["name"] != target]
    with_target = [*sources, {"name": target, "val": entries[[e["name"] for e in entries].index(target)]["val"],
                              "target": True}]
    prepare = RECIPE_NAMESPACE["PrepareDataRecipe"]
    prepare(OmegaConf.create(yaml.safe_load(write_config(tmp_path / "a.yaml", with_target, tmp_path / "a").read_text()))).run()
    prepare(OmegaConf.create(yaml.safe_load(write_config(tmp_path / "b.yaml", sources, tmp_path / "b").read_text()))).run()
    corpus, plain = ShardedCorpus.open(tmp_path / "a"), ShardedCorpus.open(tmp_path / "b")
    assert corpus.domains == [e["name"] for e in sources] and corpus.targets == [target]
    entry = next(d for d in json.loads((tmp_path / "a" / "index.json").read_text())["domains"] if d["name"] == target)
    assert entry["role"] == "target" and sorted(entry["splits"]) == ["test", "val"]
    assert corpus.num_tokens(target, "val") > 0 and corpus.num_tokens(target, "test") > 0
    assert not (tmp_path / "a" / target / "train.bin").exists()
    with pytest.raises(TandemError, match="target domain"):
        corpus.tokens(target, "train")
    assert corpus.tokenizer_sha256 == plain.tokenizer_sha256
    for domain in plain.domains:
        for split in ("train", "val", "test"):
            assert corpus.stats(domain, split)["sha256"] == plain.stats(domain, split)["sha256"]


def _assert_one_line_naming(stderr: str, expected: list[str]) -> None:
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith(TORCHAO_NOTICE)]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("tandem: error: ")
    for part in expected:
        assert part in lines[0]


def test_shipped_config_names_the_seven_domains_and_validates():
    config = OmegaConf.load(REPO_ROOT / "configs" / "data" / "embedded.yaml")
    names = [d["name"] for d in config.domains]
    assert names == ["code", "tech_docs", "reference", "books", "legal", "dialogue", "math"]
    assert (config.dtype, config.tokenizer.train.vocab_size) == ("uint16", 8192)
    if EMBEDDED_DIR.is_dir():  # then every listed file must exist: the constructor checks them all
        RECIPE_NAMESPACE["PrepareDataRecipe"](config)


# ------------------------------------------------------------------------------------------------------
# bad inputs: a table of cases


@dataclass
class BadCase:
    name: str
    make: object  # (fixture_corpus, case_dir) -> (config_path, overrides, expected substrings of the message)


def _gz_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in records).encode(), mtime=0))
    return path


def _missing_file(corpus, d):
    missing = d / "nowhere" / "val.jsonl.gz"
    return write_config(d / "c.yaml", domain_entries(corpus, code={"val": str(missing)}), d / "out"), [], ["code/val", str(missing)]


def _empty_domain(corpus, d):
    empty = _gz_jsonl(d / "legal_train.jsonl.gz", [{"text": ""}, {"text": ""}])
    config = write_config(d / "c.yaml", domain_entries(corpus, legal={"train": str(empty)}), d / "out")
    return config, [], ["legal/train", str(empty), "no non-empty documents"]


def _domain_listed_twice(corpus, d):
    entries = domain_entries(corpus)
    entries.append(dict(entries[0]))
    return write_config(d / "c.yaml", entries, d / "out"), [], ["'code'", "listed twice", entries[0]["train"]]


def _binary_garbage_jsonl(corpus, d):
    garbage = d / "garbage.jsonl"
    garbage.write_bytes(bytes(range(256)) * 64)
    config = write_config(d / "c.yaml", domain_entries(corpus, tech_docs={"train": str(garbage)}), d / "out")
    return config, [], ["tech_docs/train", str(garbage)]


def _not_gzip(corpus, d):
    fake = d / "val.jsonl.gz"
    fake.write_text('{"text": "plain text, not gzip"}\n')
    return write_config(d / "c.yaml", domain_entries(corpus, legal={"val": str(fake)}), d / "out"), [], ["legal/val", str(fake)]


def _records_without_text_field(corpus, d):
    wrong = _gz_jsonl(d / "content.jsonl.gz", [{"content": "the text is under another key"}])
    config = write_config(d / "c.yaml", domain_entries(corpus, code={"train": str(wrong)}), d / "out")
    return config, [], ["code/train", str(wrong), "'text'"]


def _vocab_too_big_for_uint16(corpus, d):
    from tokenizers import Tokenizer, models

    model_dir = d / "big_model"
    model_dir.mkdir(parents=True)
    vocab = {f"w{i}": i for i in range(70_000)}
    Tokenizer(models.WordLevel(vocab, unk_token="w0")).save(str(model_dir / "tokenizer.json"))
    (model_dir / "tokenizer_config.json").write_text(json.dumps({"bos_token": "w1", "eos_token": "w2"}))
    config = write_config(
        d / "c.yaml", domain_entries(corpus), d / "out", tokenizer={"path": str(model_dir / "tokenizer.json")}
    )
    return config, [], [str(model_dir / "tokenizer.json"), "70000", "uint16"]


def _bad_dtype_override(corpus, d):
    return write_config(d / "c.yaml", domain_entries(corpus), d / "out"), ["dtype=uint8"], ["dtype", "uint8"]


def _unknown_key_override(corpus, d):
    return write_config(d / "c.yaml", domain_entries(corpus), d / "out"), ["shuffle=true"], ["unknown key", "shuffle"]


def _domain_without_val(corpus, d):
    config = write_config(d / "c.yaml", domain_entries(corpus, legal={"val": None}), d / "out")
    return config, [], ["(legal)", "missing", "val"]


def _trained_vocab_too_big(corpus, d):
    config = write_config(d / "c.yaml", domain_entries(corpus), d / "out", tokenizer={"train": {"vocab_size": 70_000}})
    return config, [], ["tokenizer.train.vocab_size", "70000", "uint16"]


def _target_with_train(corpus, d):
    entries = domain_entries(corpus, legal={"target": True})
    return write_config(d / "c.yaml", entries, d / "out"), [], ["(legal).train", "target domain is never trained on"]


def _target_without_val(corpus, d):
    entries = domain_entries(corpus, legal={"target": True, "val": None})
    del entries[[e["name"] for e in entries].index("legal")]["train"]
    return write_config(d / "c.yaml", entries, d / "out"), [], ["(legal)", "missing", "val"]


def _target_not_a_bool(corpus, d):
    entries = domain_entries(corpus, legal={"target": "yes"})
    return write_config(d / "c.yaml", entries, d / "out"), [], ["(legal).target", "true or false", "'yes'"]


def _every_domain_a_target(corpus, d):
    entries = [{"name": e["name"], "val": e["val"], "target": True} for e in domain_entries(corpus)]
    return write_config(d / "c.yaml", entries, d / "out"), [], ["domains", "every domain is a target"]


BAD_CASES = [
    BadCase("missing-file", _missing_file),
    BadCase("empty-domain", _empty_domain),
    BadCase("domain-listed-twice", _domain_listed_twice),
    BadCase("binary-garbage-jsonl", _binary_garbage_jsonl),
    BadCase("jsonl-gz-not-gzip", _not_gzip),
    BadCase("records-without-text-field", _records_without_text_field),
    BadCase("vocab-too-big-for-uint16", _vocab_too_big_for_uint16),
    BadCase("bad-dtype-override", _bad_dtype_override),
    BadCase("unknown-key-override", _unknown_key_override),
    BadCase("domain-without-val", _domain_without_val),
    BadCase("trained-vocab-too-big-for-uint16", _trained_vocab_too_big),
    BadCase("target-with-train", _target_with_train),
    BadCase("target-without-val", _target_without_val),
    BadCase("target-not-a-bool", _target_not_a_bool),
    BadCase("every-domain-a-target", _every_domain_a_target),
]


@pytest.mark.parametrize("case", BAD_CASES, ids=[c.name for c in BAD_CASES])
def test_bad_input_fails_in_one_line_naming_domain_and_file(fixture_corpus, tmp_path, monkeypatch, capsys, case):
    """The recipe's entry point as `tune run` calls it (sys.argv, config.parse, exit_on_user_error), in-process:
    a subprocess per case would cost ~5 s of torch import each; the test above covers the real CLI."""
    config, overrides, expected = case.make(fixture_corpus, tmp_path)
    preexisting = BAD_CASES.index(case) % 2 == 0  # half the cases run over an older output dir
    if preexisting:
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "index.json").write_text("from an earlier run")
    before = sorted(p.name for p in tmp_path.iterdir())
    monkeypatch.setattr(sys, "argv", ["recipes/prepare_data.py", "--config", str(config), *overrides])
    with pytest.raises(SystemExit) as exit_info:
        RECIPE_NAMESPACE["recipe_main"]()
    assert exit_info.value.code == 2
    _assert_one_line_naming(capsys.readouterr().err, expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing created next to out/
    if preexisting:
        assert [p.name for p in (tmp_path / "out").iterdir()] == ["index.json"]
        assert (tmp_path / "out" / "index.json").read_text() == "from an earlier run"


# ------------------------------------------------------------------------------------------------------
# the kinds of source a config can name


def _write_sources(root: Path, documents: list[str]) -> dict[str, object]:
    """The same documents as every supported kind of local source (a .txt file is one document)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root.mkdir(parents=True, exist_ok=True)
    records = [{"text": doc, "id": i} for i, doc in enumerate(documents)]
    (root / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    _gz_jsonl(root / "docs.jsonl.gz", records)
    (root / "docs.json").write_text(json.dumps(records))
    (root / "content.jsonl").write_text("".join(json.dumps({"content": d}) + "\n" for d in documents))
    pq.write_table(pa.table({"text": documents}), root / "docs.parquet")
    (root / "docs.parquet.gz").write_bytes(gzip.compress((root / "docs.parquet").read_bytes(), mtime=0))
    for i, doc in enumerate(documents):
        (root / "txt").mkdir(exist_ok=True)
        (root / "txt" / f"{i:03d}.txt.gz").write_bytes(gzip.compress(doc.encode(), mtime=0))
    return {
        "jsonl": str(root / "docs.jsonl"),
        "jsonl.gz": str(root / "docs.jsonl.gz"),
        "json": str(root / "docs.json"),
        "parquet": str(root / "docs.parquet"),
        "parquet.gz": str(root / "docs.parquet.gz"),
        "txt glob": str(root / "txt" / "*.txt.gz"),
        "list of files": [str(root / "txt" / f"{i:03d}.txt.gz") for i in range(len(documents))],
    }


def test_every_source_kind_yields_the_same_documents_in_order(tmp_path):
    from tandem_components.data.corpus_sources import iter_documents

    documents = ["first document\n", "zweites Dokument: äöü ß", "", "\tlast\r\n"]
    expected = [d for d in documents if d]  # empty documents are skipped
    for kind, source in _write_sources(tmp_path, documents).items():
        assert list(iter_documents("books", "train", source)) == expected, kind
    assert list(iter_documents("books", "train", str(tmp_path / "content.jsonl"), text_field="content")) == expected


def test_hf_dataset_source_reads_a_local_dataset_folder(tmp_path):
    """``hf_dataset`` goes through ``datasets.load_dataset``; a local folder exercises it offline."""
    from tandem_components.data.corpus_sources import iter_documents

    folder = tmp_path / "my_dataset"
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(5)))
    source = {"hf_dataset": str(folder), "hf_split": "train"}
    documents = list(iter_documents("books", "train", source, cache_dir=str(tmp_path / "cache")))
    assert documents == [f"doc {i}" for i in range(5)]
