"""SFT data: task categories of prompt/response pairs, chat formatting, tokenisation with prompt masking.

A *category* (the SFT scenario's domain, e.g. ``math``) is read from a source as in
``corpus_sources``: a path / glob / list of local ``.jsonl`` / ``.json`` / ``.parquet`` files
(optionally ``.gz``), or ``{hf_dataset: name, hf_config: ..., hf_split: ...}``. Each record holds a
prompt and a response under configurable field names (default ``prompt`` / ``response``).

An example becomes two torchtune ``Message`` s (user, masked; assistant) and is tokenised with a
``ChatFormat``: template pieces (special tokens such as ``<|user|>`` are single ids) around the
prompt and response text (encoded as plain text: a literal ``<|user|>`` inside a prompt is just bytes).

    tandem   <|user|>\\n{prompt}<|assistant|>\\n{response}<|endoftext|>
    chatml   <|im_start|>user\\n{prompt}<|im_end|>\\n<|im_start|>assistant\\n{response}<|im_end|>   (SmolLM2)

PROMPT MASKING: the loss is taken on the response tokens and the end token only; every prompt and
template-header position gets ``IGNORE_INDEX`` (-100) as its label.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tandem_components.data.batch import IGNORE_INDEX
from tandem_components.data.corpus_sources import _file_format, _open_text, resolve_files
from tandem_components.errors import TandemError
from tandem_components.torchtune_api import Message

__all__ = [
    "CHAT_FORMATS",
    "IGNORE_INDEX",
    "ChatFormat",
    "Example",
    "TokenizedExample",
    "load_category",
    "subset_examples",
    "to_messages",
    "tokenize_category",
    "tokenize_example",
]


@dataclass(frozen=True)
class Example:
    prompt: str
    response: str


@dataclass(frozen=True)
class ChatFormat:
    """Where the prompt and the response go. ``<|...|>`` pieces must be special tokens of the tokenizer.

    The sequence is ``user_prefix + prompt + user_suffix + assistant_prefix + response + end``;
    everything up to and including ``assistant_prefix`` is masked (no loss).
    """

    name: str
    user_prefix: str
    user_suffix: str
    assistant_prefix: str
    end: str
    system: str | None = None  # a system turn placed before the user turn (e.g. SmolLM2's default)

    def render(self, prompt: str, response: str) -> str:
        """The formatted conversation as text (what ``decode`` of its tokens gives back)."""
        return self.render_prompt(prompt) + response + self.end

    def render_prompt(self, prompt: str) -> str:
        return (self.system or "") + self.user_prefix + prompt + self.user_suffix + self.assistant_prefix


CHAT_FORMATS = {
    "tandem": ChatFormat("tandem", "<|user|>\n", "", "<|assistant|>\n", "<|endoftext|>"),
    "chatml": ChatFormat("chatml", "<|im_start|>user\n", "<|im_end|>\n", "<|im_start|>assistant\n", "<|im_end|>"),
}
SMOLLM2_SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"


def chat_format(name: str, system: str | None = None) -> ChatFormat:
    """``tandem`` | ``chatml``; ``system``: text of a system turn (chatml only) or None."""
    if name not in CHAT_FORMATS:
        raise TandemError(f"data.chat_format: expected one of {sorted(CHAT_FORMATS)}, got {name!r}")
    fmt = CHAT_FORMATS[name]
    if system:
        if name != "chatml":
            raise TandemError("data.system_prompt: only the chatml format has a system turn")
        fmt = ChatFormat(fmt.name, fmt.user_prefix, fmt.user_suffix, fmt.assistant_prefix, fmt.end,
                         system=f"<|im_start|>system\n{system}<|im_end|>\n")
    return fmt


# ---- reading ---------------------------------------------------------------------------------------------
def load_category(
    category: str, split: str, source: Any, *, prompt_field: str = "prompt", response_field: str = "response",
    cache_dir: str | None = None,
) -> list[Example]:
    """All examples of one category's split, in file order.

    Raises:
        TandemError: one line naming the category, split and file: missing file, bad JSON, a record
            without the prompt or response field (or not a string), or no examples at all.
    """
    where = f"{category}/{split}"
    if isinstance(source, Mapping):
        records = _hf_records(where, source, cache_dir)
        described = f"hf_dataset {source.get('hf_dataset')!r}"
    else:
        files = resolve_files(category, split, source)
        records = ((f"{path}: {loc}", rec) for path in files for loc, rec in _file_records(where, path))
        described = ", ".join(str(f) for f in files)
    examples = []
    for location, record in records:
        if not isinstance(record, dict):
            raise TandemError(f"{where} {location}: expected an object with {prompt_field!r} and {response_field!r}")
        for field, name in ((prompt_field, "prompt"), (response_field, "response")):
            if field not in record or record[field] is None:
                raise TandemError(f"{where} {location}: record has no {name} field {field!r} "
                                  f"(fields: {sorted(record)}; set data.{name}_field)")
            if not isinstance(record[field], str):
                raise TandemError(f"{where} {location}: {name} field {field!r} is "
                                  f"{type(record[field]).__name__}, expected a string")
        examples.append(Example(prompt=record[prompt_field], response=record[response_field]))
    if not examples:
        raise TandemError(f"{where} {described}: no examples (the category needs at least one)")
    return examples


def subset_examples(category: str, examples: Sequence[Example], n: int | None) -> list[Example]:
    """``n`` training examples of a category, the same ones on every run and machine: the first ``n`` of a
    permutation seeded by the category's name (not the run's seed, so that every seed and method of a
    comparison trains on the same subset), in that shuffled order. ``None``: all of them, in file order.

    Why a subset: real instruction mixtures have categories of very unequal size, and that is where a
    mixture matters (uniform revisits a small category for many epochs, natural starves it).

    Raises:
        TandemError: ``n`` is not a positive integer or exceeds the category's examples.
    """
    if n is None:
        return list(examples)
    key = f"data.categories.{category}.train_examples"
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise TandemError(f"{key}: expected a positive integer (or leave it out for every example), got {n!r}")
    if n > len(examples):
        raise TandemError(f"{key}: {n} is more than the {len(examples)} training examples of {category!r}")
    seed = zlib.crc32(category.encode("utf-8"))
    order = np.random.default_rng(seed).permutation(len(examples))[:n]
    return [examples[i] for i in order]


def _file_records(where: str, path: Path):
    suffix = _file_format(where, path)
    try:
        if suffix == ".jsonl":
            with _open_text(path) as f:
                for n, line in enumerate(f, start=1):
                    if line.strip():
                        yield f"line {n}", _json(where, path, line, f"line {n}")
        elif suffix == ".json":
            with _open_text(path) as f:
                records = _json(where, path, f.read(), "file")
            if not isinstance(records, list):
                raise TandemError(f"{where} {path}: expected a JSON list of objects (or use .jsonl)")
            yield from ((f"record {i}", r) for i, r in enumerate(records))
        elif suffix == ".parquet":
            import gzip

            import pyarrow.parquet as pq

            if path.name.endswith(".gz"):
                with gzip.open(path) as f:
                    table = pq.read_table(f)
            else:
                table = pq.read_table(path)
            yield from ((f"row {i}", r) for i, r in enumerate(table.to_pylist()))
        else:
            raise TandemError(f"{where} {path}: SFT data must be .jsonl, .json or .parquet (optionally .gz)")
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise TandemError(f"{where} {path}: unreadable ({type(e).__name__}: {e})") from None


def _json(where, path, text, location):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise TandemError(f"{where} {path}: {location} is not valid JSON") from None


def _hf_records(where: str, source: Mapping, cache_dir: str | None):
    import datasets

    name, split = source.get("hf_dataset"), source.get("hf_split", "train")
    try:
        dataset = datasets.load_dataset(name, source.get("hf_config"), split=split, cache_dir=cache_dir)
    except Exception as e:  # noqa: BLE001  (hub, network and format errors all mean: cannot read it)
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise TandemError(f"{where} hf_dataset {name!r} split {split!r}: cannot load ({first})") from None
    for i, record in enumerate(dataset):
        yield f"hf_dataset {name!r}: row {i}", dict(record)


# ---- formatting and tokenisation ---------------------------------------------------------------------------
def to_messages(example: Example) -> list[Message]:
    """torchtune messages: the user turn is masked (no loss), the assistant turn is trained on."""
    return [Message(role="user", content=example.prompt, masked=True),
            Message(role="assistant", content=example.response, masked=False)]


@dataclass
class TokenizedExample:
    """ids: (L,) int64 token ids of the formatted conversation; prompt_len: the first prompt_len ids
    (system/user turn and assistant header) carry no loss."""

    ids: np.ndarray
    prompt_len: int

    def inputs_and_labels(self) -> tuple[np.ndarray, np.ndarray]:
        """(L-1,) inputs and next-token labels, IGNORE_INDEX where the target is a prompt token."""
        labels = self.ids[1:].copy()
        labels[: max(self.prompt_len - 1, 0)] = IGNORE_INDEX
        return self.ids[:-1], labels


def _template_ids(tokenizer, text: str) -> list[int]:
    """Template text: its ``<|...|>`` special tokens are single ids, the rest is encoded as text."""
    specials = tokenizer.special_tokens
    ids: list[int] = []
    for piece in re.split(r"(<\|[^|<>]+\|>)", text):
        if not piece:
            continue
        if piece.startswith("<|") and piece.endswith("|>"):
            if piece not in specials:
                raise TandemError(f"data.chat_format: {piece} is not a special token of the tokenizer")
            ids.append(specials[piece])
        else:
            ids.extend(_text_ids(tokenizer, piece))
    return ids


def _text_ids(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_bos=False, add_eos=False) if text else []


def tokenize_messages(tokenizer, messages: Sequence[Message], fmt: ChatFormat, max_len: int | None = None):
    """(ids, mask) of a user/assistant exchange; mask True = no loss. Over ``max_len`` ids the prompt
    text is cut first (keeping the template), then the response's tail."""
    user = next(m for m in messages if m.role == "user").text_content
    assistant = next(m for m in messages if m.role == "assistant").text_content
    head = _template_ids(tokenizer, (fmt.system or "") + fmt.user_prefix)
    prompt = _text_ids(tokenizer, user)
    header = _template_ids(tokenizer, fmt.user_suffix + fmt.assistant_prefix)
    response = _text_ids(tokenizer, assistant)
    end = _template_ids(tokenizer, fmt.end)
    if max_len is not None:
        excess = len(head) + len(prompt) + len(header) + len(response) + len(end) - max_len
        if excess > 0:
            cut = min(excess, len(prompt))
            prompt = prompt[: len(prompt) - cut]
            excess -= cut
        if excess > 0:
            response = response[: max(len(response) - excess, 0)]  # the end token may be cut below
    prompt_ids = head + prompt + header
    ids = prompt_ids + response + end
    if max_len is not None:
        ids = ids[:max_len]
    mask = [True] * len(prompt_ids) + [False] * (len(ids) - len(prompt_ids))
    return ids, mask


def tokenize_example(tokenizer, example: Example, fmt: ChatFormat, max_len: int | None = None) -> TokenizedExample:
    ids, mask = tokenize_messages(tokenizer, to_messages(example), fmt, max_len)
    return TokenizedExample(ids=np.asarray(ids, dtype=np.int64), prompt_len=int(sum(mask)))


def tokenize_category(tokenizer, examples: Sequence[Example], fmt: ChatFormat, max_len: int) -> list[TokenizedExample]:
    """Every example of a category, each at most ``max_len`` ids (inputs are ``max_len - 1``)."""
    return [tokenize_example(tokenizer, e, fmt, max_len) for e in examples]


def decode(tokenizer, ids) -> str:
    """Text of ids, special tokens included (the inverse of the formatting above)."""
    return tokenizer.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)
