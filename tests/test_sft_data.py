"""SFT data: loading categories (one-line errors), chat formatting round trip, prompt masking."""

from __future__ import annotations

import gzip
import json

import pytest

from tandem_components.data.sft_data import (
    Example,
    chat_format,
    decode,
    load_category,
    to_messages,
    tokenize_example,
)
from tandem_components.data.tokenizer import tandem_tokenizer
from tandem_components.errors import TandemError
from tandem_components.training.domain_loss import IGNORE_INDEX
from tests.conftest import REPO_ROOT

SFT_DIR = REPO_ROOT / "data" / "sft_embedded"
CATEGORIES = ("math", "summarize", "define", "docstring", "chat")


@pytest.fixture(scope="module")
def tok(fixture_tokenizer_path):
    return tandem_tokenizer(str(fixture_tokenizer_path))


def _write_jsonl(path, rows):
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def test_embedded_set_has_every_category_and_split():
    for c in CATEGORIES:
        sizes = {s: len(load_category(c, s, str(SFT_DIR / c / f"{s}.jsonl.gz"))) for s in ("train", "val", "test")}
        assert sizes["train"] >= 300 and sizes["val"] >= 50 and sizes["test"] >= 50, (c, sizes)
        test_prompts = {e.prompt for e in load_category(c, "test", str(SFT_DIR / c / "test.jsonl.gz"))}
        train_prompts = {e.prompt for e in load_category(c, "train", str(SFT_DIR / c / "train.jsonl.gz"))}
        assert not test_prompts & train_prompts  # no prompt in two splits
    math = load_category("math", "test", str(SFT_DIR / "math" / "test.jsonl.gz"))
    assert all(e.response.rstrip().split("The answer is ")[-1].rstrip(".").lstrip("-").replace(".", "").isdigit()
               for e in math)


def test_custom_field_names_json_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.json").write_text(json.dumps([{"q": "1+1?", "a": "2"}]))
    pq.write_table(pa.table({"q": ["x?"], "a": ["y"]}), tmp_path / "b.parquet")
    got = load_category("c", "train", [str(tmp_path / "a.json"), str(tmp_path / "b.parquet")],
                        prompt_field="q", response_field="a")
    assert got == [Example("1+1?", "2"), Example("x?", "y")]


def test_empty_category_and_missing_response_are_one_line_errors(tmp_path):
    empty = tmp_path / "empty.jsonl.gz"
    _write_jsonl(empty, [])
    with pytest.raises(TandemError, match=r"^math/train .*empty.jsonl.gz: no examples") as e:
        load_category("math", "train", str(empty))
    assert "\n" not in str(e.value)
    bad = tmp_path / "bad.jsonl.gz"
    _write_jsonl(bad, [{"prompt": "p", "response": "r"}, {"prompt": "only a prompt"}])
    with pytest.raises(TandemError, match=r"^chat/val .*bad.jsonl.gz: line 2: record has no response field 'response'"):
        load_category("chat", "val", str(bad))
    with pytest.raises(TandemError, match=r"no prompt field 'question'"):
        load_category("chat", "val", str(bad), prompt_field="question")


@pytest.mark.parametrize("text", ["What is 2 + 2?", "naïve café — 東京 🚀\ttab\n\nliteral <|user|> inside"])
def test_tandem_format_round_trips_and_masks_the_prompt(tok, text):
    fmt = chat_format("tandem")
    ex = Example(prompt=text, response="It is 4.\nReally.")
    t = tokenize_example(tok, ex, fmt)
    assert decode(tok, t.ids) == fmt.render(ex.prompt, ex.response)
    assert fmt.render(ex.prompt, ex.response).startswith("<|user|>\n") and t.ids[0] == tok.special_tokens["<|user|>"]
    assert t.ids[-1] == tok.eos_id  # the response ends with EOS, which is trained on
    # a literal special-token string inside the prompt is text, not a control id
    assert list(t.ids).count(tok.special_tokens["<|user|>"]) == 1
    x, y = t.inputs_and_labels()
    assert len(x) == len(y) == len(t.ids) - 1
    masked = (y == IGNORE_INDEX)
    assert masked[: t.prompt_len - 1].all() and not masked[t.prompt_len - 1:].any()
    # the supervised targets are exactly the response + EOS
    assert decode(tok, y[t.prompt_len - 1:]) == ex.response + "<|endoftext|>"
    assert decode(tok, t.ids[: t.prompt_len]) == fmt.render_prompt(ex.prompt)


def test_messages_and_truncation(tok):
    msgs = to_messages(Example("p", "r"))
    assert [m.role for m in msgs] == ["user", "assistant"] and msgs[0].masked and not msgs[1].masked
    fmt = chat_format("tandem")
    long = Example(prompt="word " * 400, response="short answer")
    t = tokenize_example(tok, long, fmt, max_len=64)
    assert len(t.ids) == 64 and decode(tok, t.ids).endswith("<|assistant|>\nshort answer<|endoftext|>")
    with pytest.raises(TandemError, match="data.chat_format: <|im_start|> is not a special token"):
        tokenize_example(tok, long, chat_format("chatml"))
