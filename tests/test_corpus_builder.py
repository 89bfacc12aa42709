"""Fast tests of tools/build_corpus.py (pure functions, no downloads) and of the committed corpus."""
from __future__ import annotations

import gzip
import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EMBEDDED = ROOT / "data" / "embedded"
DOMAINS = ("code", "tech_docs", "reference", "books", "legal", "dialogue", "math")


def _load_builder():
    spec = importlib.util.spec_from_file_location("build_corpus", ROOT / "tools" / "build_corpus.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("build_corpus", mod)      # dataclasses look the module up by name
    spec.loader.exec_module(mod)
    return mod


bc = _load_builder()


def test_domain_names_are_the_contract():
    assert bc.DOMAINS == DOMAINS
    assert set(bc.SOURCES) == set(DOMAINS) == set(bc.DEFAULT_MB)


def test_strip_gutenberg_removes_header_and_footer():
    text = ("The Project Gutenberg EBook of Emma\nLicence blah\n"
            "*** START OF THIS PROJECT GUTENBERG EBOOK EMMA ***\n\nCHAPTER I\n\nEmma Woodhouse, handsome.\n\n"
            "*** END OF THIS PROJECT GUTENBERG EBOOK EMMA ***\nMore licence text\n")
    out = bc.strip_gutenberg(text)
    assert out == "CHAPTER I\n\nEmma Woodhouse, handsome."
    assert bc.strip_gutenberg("no header here\n") == "no header here"


def test_strip_front_matter_and_normalize():
    assert bc.strip_front_matter("---\nkey: mit\nname: MIT\n---\nPermission is hereby granted") == \
        "Permission is hereby granted"
    assert bc.strip_front_matter("no --- front matter") == "no --- front matter"
    assert bc.normalize("a  \r\nb\n\n\n\nc\n") == "a\nb\n\nc"


def test_markup_cleaners():
    assert bc.strip_rst("Use :func:`os.path.join` or :class:`~pathlib.Path`.") == "Use os.path.join or pathlib.Path."
    assert bc.strip_dict_markup("See {Of}.\n   [1913 Webster]") == "See Of.\n   "


def test_chunk_text_sizes_and_content():
    paras = [f"Paragraph {i} " + "word " * 150 for i in range(60)]   # ~45 KB
    text = "\n\n".join(paras)
    chunks = bc.chunk_text(text, target=4000, max_chars=8000)
    assert len(chunks) > 5
    assert all(len(c) <= 8000 + 4000 for c in chunks)
    assert "\n\n".join(chunks) == text                # nothing lost, order kept
    assert bc.chunk_text("short") == ["short"]
    assert bc.chunk_text("") == []
    long_line = "Sentence number one is here. " * 1000
    parts = bc.chunk_text(long_line.strip())
    assert max(map(len, parts)) <= 8000


def test_split_scenes():
    play = "HAMLET\n\nPERSONS.\nClaudius.\n\nACT I.\n\nScene I. Elsinore.\n\nBer.\nWho's there?\n\n" \
           "Scene II. A room.\n\nKing.\nThough yet.\n"
    scenes = bc.split_scenes(play)
    assert len(scenes) == 2
    assert scenes[0].startswith("Scene I.") and "Who's there?" in scenes[0]
    assert scenes[1].startswith("Scene II.")


def test_dictd_entries_uses_index_offsets():
    data = b"header stuff\nalpha\n  first letter\n\nbeta\n  second letter\n"
    a, b_ = data.index(b"alpha"), data.index(b"beta")

    def enc(n):
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        s = ""
        while True:
            s = alphabet[n % 64] + s
            n //= 64
            if not n:
                return s

    index = (f"00-database-info\t{enc(0)}\t{enc(12)}\nalpha\t{enc(a)}\t{enc(b_ - a)}\n"
             f"Alpha\t{enc(a)}\t{enc(b_ - a)}\nbeta\t{enc(b_)}\t{enc(len(data) - b_)}\n")
    entries = bc.dictd_entries(index, data)
    assert entries == ["alpha\n  first letter\n\n", "beta\n  second letter\n"]


def test_dedupe_group_and_budget():
    assert bc.dedupe(["a", "b", "a", "c", "b"]) == ["a", "b", "c"]
    groups = bc.group_entries(["x" * 1500] * 7, target=4000)
    assert len(groups) == 3 and all(len(g) <= 6100 for g in groups)
    docs = [f"doc {i} " * 50 for i in range(100)]
    picked = bc.take_budget(docs, 10_000)
    assert 10_000 <= sum(map(len, picked)) < 10_000 + 400
    assert picked == bc.take_budget(list(reversed(docs)), 10_000)   # input order does not matter


def test_allocate_water_fills():
    alloc = bc.allocate({"small": 100, "big": 10_000}, {"small": 1.0, "big": 1.0}, 1000)
    assert alloc == {"small": 100, "big": 900}
    alloc = bc.allocate({"a": 10_000, "b": 10_000}, {"a": 3.0, "b": 1.0}, 1000)
    assert alloc == {"a": 750, "b": 250}


def test_split_train_val_deterministic():
    docs = [f"document {i} " + "text " * 200 for i in range(200)]     # ~200 KB
    train, val = bc.split_train_val(docs, val_fraction=0.05, min_val_chars=40_000)
    assert set(train).isdisjoint(val) and set(train) | set(val) == set(docs)
    assert sum(map(len, val)) >= 40_000                                   # the minimum wins here
    assert (train, val) == bc.split_train_val(list(reversed(docs)), 0.05, 40_000)
    big = docs * 1 + [f"more {i} " + "text " * 200 for i in range(2000)]
    tr, va = bc.split_train_val(big, 0.05, 40_000)
    assert 0.04 < len(va) / len(big) < 0.07


def test_write_jsonl_gz_is_byte_identical(tmp_path):
    docs = ["héllo\nworld", 'quote " and \\ backslash', "x" * 5000]
    p1, p2 = tmp_path / "a" / "train.jsonl.gz", tmp_path / "b" / "train.jsonl.gz"
    bc.write_jsonl_gz(str(p1), docs)
    os.utime(tmp_path, (0, 0))
    bc.write_jsonl_gz(str(p2), docs)
    assert p1.read_bytes() == p2.read_bytes()
    with gzip.open(p1, "rt", encoding="utf-8") as f:
        assert [json.loads(line)["text"] for line in f] == docs


# ---------------------------------------------------------------- the committed embedded corpus
def _split_files():
    return {d: {s: EMBEDDED / d / f"{s}.jsonl.gz" for s in ("train", "val")} for d in DOMAINS}


@pytest.mark.skipif(not EMBEDDED.is_dir(), reason="data/embedded not built")
def test_embedded_corpus_layout_and_sizes():
    files = _split_files()
    present = sorted(p.name for p in EMBEDDED.iterdir() if p.is_dir())
    assert present == sorted(DOMAINS)
    train_bytes = {}
    for d, splits in files.items():
        for s, path in splits.items():
            assert path.is_file(), path
            with gzip.open(path, "rt", encoding="utf-8") as f:
                first = json.loads(f.readline())
            assert isinstance(first["text"], str) and first["text"].strip(), path
        train_bytes[d] = splits["train"].stat().st_size
    assert max(train_bytes.values()) >= 5 * min(train_bytes.values())
    total = sum(p.stat().st_size for p in EMBEDDED.rglob("*") if p.is_file())
    assert total <= 10 * 1024 * 1024


@pytest.mark.skipif(not EMBEDDED.is_dir(), reason="data/embedded not built")
def test_embedded_val_is_large_enough_and_disjoint():
    for d, splits in _split_files().items():
        with gzip.open(splits["val"], "rt", encoding="utf-8") as f:
            val = [json.loads(line)["text"] for line in f]
        with gzip.open(splits["train"], "rt", encoding="utf-8") as f:
            train = {json.loads(line)["text"] for line in f}
        assert sum(map(len, val)) >= 35_000, d
        assert not train.intersection(val), d
