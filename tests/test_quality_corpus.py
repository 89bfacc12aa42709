"""tools/build_quality_corpus.py: graded copies of one domain, a junk source, the clean target (tiny inputs)."""

from __future__ import annotations

import difflib
import gzip
import json
import random
import re
import runpy
from collections import Counter

import pytest
import yaml
from omegaconf import OmegaConf

from tandem_components.data.shards import ShardedCorpus
from tests.conftest import REPO_ROOT

TOOL = runpy.run_path(str(REPO_ROOT / "tools" / "build_quality_corpus.py"))
FRACTIONS = (0.0, 0.25, 0.5, 0.75)
PIECE = 400


def _text(rng: random.Random, chars: int) -> str:
    """Prose-like text: sentences of made-up words, lines wrapped at ~60 characters, paragraphs."""
    paras = []
    while sum(map(len, paras)) < chars:
        words = []
        for _ in range(2 + rng.randrange(3)):
            sentence = ["".join(rng.choice("abcdeilmnorstuhOS01") for _ in range(1 + rng.randrange(8)))
                        for _ in range(4 + rng.randrange(9))]
            words += [sentence[0].capitalize(), *sentence[1:-1], sentence[-1] + rng.choice(".!?")]
        lines, cur = [], ""
        for w in words:
            if len(cur) + len(w) > 60:
                lines.append(cur)
                cur = ""
            cur = f"{cur} {w}" if cur else w
        paras.append("\n".join([*lines, cur]))
    return "\n\n".join(paras)


def _write(path, docs):
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps({"body": d}) + "\n" for d in docs)


def _read(path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


@pytest.fixture()
def corpus(tmp_path):
    """A data config of three domains (text under another field); ``prose`` also has a test source."""
    rng = random.Random(0)
    docs = {name: {split: [_text(rng, size) for _ in range(count)] for split, count in counts.items()}
            for name, size, counts in (("prose", 1500, {"train": 30, "val": 6, "test": 4}),
                                       ("notes", 800, {"train": 12, "val": 5}),
                                       ("lists", 600, {"train": 9, "val": 4}))}
    domains = []
    for name, splits in docs.items():
        for split, texts in splits.items():
            _write(tmp_path / "src" / name / f"{split}.jsonl.gz", texts)
        domains.append({"name": name, **{s: str(tmp_path / "src" / name / f"{s}.jsonl.gz") for s in splits}})
    config = {"output_dir": "data/shards/x", "dtype": "uint16", "text_field": "body", "test_fraction": 0.5,
              "tokenizer": {"train": {"vocab_size": 300}}, "domains": domains}
    (tmp_path / "data.yaml").write_text(yaml.safe_dump(config))
    return tmp_path, docs


def _build(tmp_path, *extra: str) -> int:
    return TOOL["main"](["--config", str(tmp_path / "data.yaml"), "--domain", "prose", "--out", str(tmp_path / "q"),
                         "--output-dir", "data/shards/q", "--piece-chars", str(PIECE), *extra])


def _prose_pieces(docs) -> list[str]:
    """The graded domain's train documents as the tool cuts them, before it deals them into copies."""
    return [p for d in docs["prose"]["train"] for p in TOOL["pieces"](d, PIECE)]


def _files(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_two_runs_write_byte_identical_files_whatever_the_global_random_state(corpus):
    tmp_path, _ = corpus
    random.seed(1)
    assert _build(tmp_path) == 0
    first = _files(tmp_path / "q") | {"config": (tmp_path / "q.yaml").read_bytes()}
    random.seed(2)
    assert _build(tmp_path) == 0
    assert _files(tmp_path / "q") | {"config": (tmp_path / "q.yaml").read_bytes()} == first
    assert len(first) == 1 + 1 + 2 * 4 + 2 * 2 + 2 + 2  # manifest, config, copies, sources, junk, target val+test


def test_graded_copies_are_disjoint_equal_slices_with_exactly_their_damaged_fraction_spread_evenly(corpus):
    tmp_path, docs = corpus
    assert _build(tmp_path) == 0
    pieces = _prose_pieces(docs)
    assert len(pieces) > len(docs["prose"]["train"])  # the documents were cut
    n = len(pieces) // 4
    manifest = json.loads((tmp_path / "q" / "manifest.json").read_text())["domains"]
    clean_seen: list[str] = []
    for f in FRACTIONS:
        name = TOOL["copy_name"]("prose", f)
        train = _read(tmp_path / "q" / name / "train.jsonl.gz")
        damaged = [d not in pieces for d in train]
        k = int(n * f + 0.5)  # half up
        assert len(train) == n and sum(damaged) == k == manifest[name]["splits"]["train"]["damaged"]
        assert all(sum(damaged[:m]) == m * k // n for m in range(n + 1))  # every prefix holds the fraction
        clean_seen += [d for d in train if d in pieces]
        val = _read(tmp_path / "q" / name / "val.jsonl.gz")
        assert sum(d not in docs["prose"]["val"] for d in val) == int(len(val) * f + 0.5)
    assert len(clean_seen) == len(set(clean_seen))  # no document in two copies
    slices = TOOL["graded_slices"](pieces, 4, "s")
    assert [len(s) for s in slices] == [n] * 4 and len({d for s in slices for d in s}) == 4 * n
    sizes = [sum(map(len, s)) for s in slices]
    assert max(sizes) - min(sizes) <= max(map(len, pieces))  # dealt by length: equal in characters too


def test_same_copies_damage_one_slice_so_a_worse_copy_holds_no_clean_text_the_clean_copy_lacks(corpus):
    tmp_path, docs = corpus
    assert _build(tmp_path, "--copies", "same") == 0
    pieces = _prose_pieces(docs)
    n = len(pieces) // 4
    first = _read(tmp_path / "q" / TOOL["copy_name"]("prose", 0.0) / "train.jsonl.gz")
    assert first == TOOL["graded_slices"](pieces, 4, "slices|prose")[0]  # the disjoint build's first slice
    for f in FRACTIONS:
        train = _read(tmp_path / "q" / TOOL["copy_name"]("prose", f) / "train.jsonl.gz")
        clean = [a == b for a, b in zip(train, first)]
        assert len(train) == n and sum(not c for c in clean) == int(n * f + 0.5)  # the same documents, in order
    assert json.loads((tmp_path / "q" / "manifest.json").read_text())["built_with"]["copies"] == "same"


def test_the_target_is_the_clean_val_and_test_and_junk_is_moved_out_of_the_sources(corpus):
    tmp_path, docs = corpus
    assert _build(tmp_path) == 0
    config = yaml.safe_load((tmp_path / "q.yaml").read_text())
    assert config["output_dir"] == "data/shards/q" and config["text_field"] == "text"
    by_name = {d["name"]: d for d in config["domains"]}
    assert list(by_name) == ["prose_q0", "prose_q25", "prose_q50", "prose_q75", "notes", "lists", "junk", "prose"]
    assert by_name["prose"]["target"] is True and "train" not in by_name["prose"]
    assert all("train" in d and not d.get("target") for n, d in by_name.items() if n != "prose")
    assert [_read(by_name["prose"][s]) for s in ("val", "test")] == [docs["prose"]["val"], docs["prose"]["test"]]
    junk = _read(by_name["junk"]["train"])
    moved = 0
    for name in ("notes", "lists"):
        kept = _read(by_name[name]["train"])
        assert _read(by_name[name]["val"]) == docs[name]["val"]
        assert set(kept) < set(docs[name]["train"]) and not set(kept) & set(junk)
        moved += len(docs[name]["train"]) - len(kept)
        assert len(kept) == len(docs[name]["train"]) - int(0.5 * len(docs[name]["train"]) + 0.5)
    manifest = json.loads((tmp_path / "q" / "manifest.json").read_text())["domains"]["junk"]["splits"]["train"]
    assert len(junk) == moved == manifest["damaged"] and sum(manifest["kinds"].values()) == 2 * moved
    assert not set(junk) & {d for n in ("notes", "lists") for d in docs[n]["train"]}  # every one damaged
    # prepare_data reads the generated config as it is: the target is a target, the rest are sources
    prepare = runpy.run_path(str(REPO_ROOT / "recipes" / "prepare_data.py"))["PrepareDataRecipe"]
    prepare(OmegaConf.create(config | {"output_dir": str(tmp_path / "shards")})).run()
    shards = ShardedCorpus.open(tmp_path / "shards")
    assert shards.targets == ["prose"] and shards.domains == list(by_name)[:-1]


def test_shuffle_keeps_every_sentences_words_and_the_whitespace():
    text = "The cat sat on the mat. A dog barked\nat the red door!  Then all was quiet again?"
    out = TOOL["shuffle_words"](text, TOOL["doc_rng"](text, "x"))
    assert out != text and re.sub(r"\S+", "", out) == re.sub(r"\S+", "", text)
    bounds = [0, 6, 13, 18]  # word index where each sentence starts, in both texts
    a, b = text.split(), out.split()
    spans = list(zip(bounds, bounds[1:]))
    assert [Counter(a[i:j]) for i, j in spans] == [Counter(b[i:j]) for i, j in spans]


def test_boilerplate_lines_are_inserted_and_nothing_else_changes():
    text = _text(random.Random(3), 1500)
    for salt in "abcdef":
        lines = TOOL["insert_boilerplate"](text, TOOL["doc_rng"](text, salt)).split("\n")
        inserted = [ln for ln in lines if ln in TOOL["BOILERPLATE"]]
        assert 2 <= len(inserted) <= 4 and lines[0] in inserted and lines[-1] in inserted
        assert [ln for ln in lines if ln not in TOOL["BOILERPLATE"]] == text.split("\n")


def test_near_duplicate_repeats_the_first_half_with_small_edits_at_about_the_same_length():
    text = _text(random.Random(4), 3000)
    out = TOOL["near_duplicate"](text, TOOL["doc_rng"](text, "x"))
    lines, half = text.split("\n"), out.split("\n")
    kept = half[:len(half) // 2 + len(half) % 2]
    assert kept == lines[:len(kept)] and 0.3 < len("\n".join(kept)) / len(text) < 0.7
    repeat = "\n".join(half[len(kept):])
    assert 0.85 < len(out) / len(text) < 1.1 and repeat != "\n".join(kept)
    assert not Counter(repeat.split()) - Counter(" ".join(kept).split())  # only words of the first half
    assert difflib.SequenceMatcher(None, repeat.split(), " ".join(kept).split()).ratio() > 0.85


def test_ocr_noise_hits_about_its_rate_of_characters_and_never_whitespace():
    text = "\n".join(" ".join(["mmmm"] * 20) for _ in range(100))  # every error on m is m -> rn
    out = TOOL["ocr_noise"](text, TOOL["doc_rng"](text, "x"), 0.03)
    assert 0.02 < out.count("rn") / text.count("m") < 0.04
    prose = _text(random.Random(5), 5000)
    noisy = TOOL["ocr_noise"](prose, TOOL["doc_rng"](prose, "x"), 0.03)
    assert [c for c in noisy if c.isspace()] == [c for c in prose if c.isspace()]
    assert 0.95 < difflib.SequenceMatcher(None, prose, noisy, autojunk=False).ratio() < 0.995


@pytest.mark.parametrize("args, flag", [(["--domain", "poetry"], "--domain"),
                                        (["--fractions", "0", "1.5"], "--fractions"),
                                        (["--junk-share", "1"], "--junk-share"),
                                        (["--sources", "prose"], "--sources"),
                                        (["--copies", "mirrored"], "--copies")])
def test_bad_input_is_a_one_line_error_and_writes_nothing(corpus, capsys, args, flag):
    tmp_path, _ = corpus
    base = ["--config", str(tmp_path / "data.yaml"), "--domain", "prose", "--out", str(tmp_path / "q")]
    assert TOOL["main"](base + args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("build_quality_corpus: error:") and flag in err
    assert not (tmp_path / "q").exists() and not (tmp_path / "q.yaml").exists()
