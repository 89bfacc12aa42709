"""The byte-level BPE and the torchtune-interface tokenizer: exact round trips, special tokens, determinism."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tandem_components.data.corpus_sources import iter_documents
from tandem_components.data.sft_data import chat_format, decode, tokenize_messages
from tandem_components.data.tokenizer import (
    SPECIAL_TOKENS,
    TandemTokenizer,
    balanced_sample,
    copy_tokenizer,
    tandem_tokenizer,
    tokenizer_sha256,
    train_bpe,
)
from tandem_components.errors import TandemError
from tandem_components.torchtune_api import Message, config
from tests.conftest import EMBEDDED_DIR

EMBEDDED_DOMAINS = ("code", "tech_docs", "reference", "books", "legal", "dialogue", "math")
ODD_TEXTS = [
    "",
    " leading space and trailing space ",
    "tabs\tand\r\nCRLF\rCR\n\n\nblank lines",
    "naïve café — 東京 🚀 Ω≈ç√ ﬁ ligature \u00a0nbsp \u200bzero-width \ufeffbom",
    "<|endoftext|><|pad|><|user|> are plain text inside a document",
    "def f(x):\n    return {'a': [1, 2.5e-3]}  # comment\n",
    "\x00\x01 control bytes \x7f",
]


def _first_bytes(documents, budget: int = 5_000_000) -> list[str]:
    taken = []
    for document in documents:
        if budget <= 0:
            break
        taken.append(document)
        budget -= len(document.encode("utf-8"))
    return taken


def _assert_round_trip(tokenizer: TandemTokenizer, texts: list[str], where: str) -> None:
    for text, ids in zip(texts, tokenizer.encode_batch(texts, add_eos=False)):
        assert tokenizer.decode(ids) == text, f"{where}: round trip differs for {text[:80]!r}"


def test_round_trip_on_fixture_corpus(fixture_corpus, fixture_tokenizer_path):
    tokenizer = tandem_tokenizer(str(fixture_tokenizer_path))
    for domain, files in fixture_corpus.items():
        for split, path in files.items():
            _assert_round_trip(tokenizer, list(iter_documents(domain, split, path)), f"{domain}/{split}")
    _assert_round_trip(tokenizer, ODD_TEXTS, "odd texts")


def test_encode_adds_bos_eos_as_asked_and_batch_matches(fixture_tokenizer_path):
    tokenizer = tandem_tokenizer(str(fixture_tokenizer_path))
    text = ODD_TEXTS[3]
    body = tokenizer.encode(text, add_bos=False, add_eos=False)
    assert tokenizer.encode(text) == [tokenizer.bos_id, *body, tokenizer.eos_id]
    assert tokenizer.encode(text, add_bos=False) == [*body, tokenizer.eos_id]
    assert tokenizer.encode_batch([text, text]) == [body + [tokenizer.eos_id]] * 2
    assert tokenizer.decode(tokenizer.encode(text)) == text  # special ids are dropped when decoding


@pytest.mark.skipif(not EMBEDDED_DIR.is_dir(), reason="data/embedded not built yet (tools build it)")
def test_round_trip_on_embedded_corpus(tmp_path):
    """Every document of every domain of the real corpus, train and val (up to 5 MB a split, to stay fast
    if the corpus grows; today's splits are all smaller)."""
    domains = [d for d in EMBEDDED_DOMAINS if (EMBEDDED_DIR / d).is_dir()]
    assert domains, f"{EMBEDDED_DIR} has none of {EMBEDDED_DOMAINS}"
    texts = {d: iter_documents(d, "train", str(EMBEDDED_DIR / d / "train.jsonl.gz")) for d in domains}
    path = train_bpe(texts, out_path=tmp_path / "tokenizer.json", vocab_size=2048, sample_bytes_per_domain=300_000)
    tokenizer = tandem_tokenizer(str(path))
    for domain in domains:
        for split in ("train", "val"):
            documents = _first_bytes(iter_documents(domain, split, str(EMBEDDED_DIR / domain / f"{split}.jsonl.gz")))
            _assert_round_trip(tokenizer, documents, f"{domain}/{split}")


def test_special_tokens_are_single_ids(fixture_tokenizer_path):
    tokenizer = tandem_tokenizer(str(fixture_tokenizer_path))
    ids = [tokenizer.tokenizer.token_to_id(t) for t in SPECIAL_TOKENS]
    assert ids == list(range(len(SPECIAL_TOKENS)))
    assert tokenizer.special_tokens == dict(zip(SPECIAL_TOKENS, ids))
    assert tokenizer.eos_id == tokenizer.bos_id == tokenizer.special_tokens["<|endoftext|>"]
    assert tokenizer.pad_id == tokenizer.special_tokens["<|pad|>"]
    assert tokenizer.vocab_size == 1024
    # ... but inside a document their text is ordinary bytes, so shards hold EOS only where we put it.
    assert not set(ids) & set(tokenizer.encode("<|endoftext|><|pad|>", add_bos=False, add_eos=False))


def test_training_is_deterministic_and_balanced(fixture_corpus, tmp_path):
    def train(out: Path, order: list[str]) -> bytes:
        texts = {d: iter_documents(d, "train", fixture_corpus[d]["train"]) for d in order}
        return train_bpe(texts, out_path=out, vocab_size=600, sample_bytes_per_domain=50_000).read_bytes()

    domains = sorted(fixture_corpus)
    first = train(tmp_path / "a" / "tokenizer.json", domains)
    assert first == train(tmp_path / "b" / "tokenizer.json", domains[::-1])
    assert json.loads((tmp_path / "a" / "tokenizer_config.json").read_text())["eos_token"] == "<|endoftext|>"
    assert tokenizer_sha256(tmp_path / "a" / "tokenizer.json") == hashlib.sha256(first).hexdigest()


def test_balanced_sample_takes_equal_bytes_capped_by_smallest_domain():
    sample = balanced_sample({"big": ["é" * 1000, "x" * 1000], "small": ["abc" * 100]}, 5000)
    sizes = {d: sum(len(t.encode("utf-8")) for t in texts) for d, texts in sample.items()}
    assert sizes == {"big": 300, "small": 300}
    assert sample["big"] == ["é" * 150]  # cut at a character boundary


def test_builder_is_a_config_component_and_formats_chat_as_the_sft_recipe(fixture_tokenizer_path):
    component = "tandem_components.data.tandem_tokenizer"
    cfg = OmegaConf.create({"_component_": component, "path": str(fixture_tokenizer_path), "max_seq_len": 64})
    tokenizer = config.instantiate(cfg)
    assert isinstance(tokenizer, TandemTokenizer) and tokenizer.max_seq_len == 64
    messages = [Message(role="user", content="What is a tandem?"),
                Message(role="assistant", content="A bicycle for two.")]
    ids, mask = tokenizer.tokenize_messages(messages)
    fmt = chat_format("tandem")
    assert (ids, mask) == tokenize_messages(tokenizer, messages, fmt, max_len=64) and len(ids) < 64
    prompt_len = mask.count(True)
    assert decode(tokenizer, ids[:prompt_len]) == fmt.render_prompt("What is a tandem?")
    assert mask == [True] * prompt_len + [False] * (len(ids) - prompt_len)
    long = [messages[0], Message(role="assistant", content="A bicycle for two. " * 20)]
    assert len(tokenizer.tokenize_messages(long)[0]) == 64  # max_seq_len: the recipe's truncation


def test_copy_keeps_bytes_and_writes_config_for_generation_config_only_models(fixture_tokenizer_path, tmp_path):
    """A model folder with only generation_config.json (bos/eos ids) still gives a loadable copy."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "tokenizer.json").write_bytes(fixture_tokenizer_path.read_bytes())
    (model_dir / "generation_config.json").write_text(json.dumps({"bos_token_id": 0, "eos_token_id": 0}))
    copied = copy_tokenizer(model_dir / "tokenizer.json", tmp_path / "out")
    assert tokenizer_sha256(copied) == tokenizer_sha256(fixture_tokenizer_path)
    assert tandem_tokenizer(str(copied)).eos_id == 0


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda d: None, "file not found"),
        (lambda d: (d / "tokenizer.json").write_text("{}"), "tokenizer_config.json"),
        (
            lambda d: [(d / "tokenizer.json").write_text("not json"), (d / "tokenizer_config.json").write_text("{}")],
            "not a usable HF tokenizer",
        ),
    ],
    ids=["missing", "no-config", "garbage"],
)
def test_bad_tokenizer_path_is_one_line_naming_the_file(tmp_path, setup, message):
    setup(tmp_path)
    with pytest.raises(TandemError, match=message) as error:
        tandem_tokenizer(str(tmp_path / "tokenizer.json"))
    assert str(tmp_path / "tokenizer.json") in str(error.value) and "\n" not in str(error.value)
