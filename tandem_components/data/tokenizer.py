"""Byte-level BPE training, and the tokenizer the recipes use (torchtune's tokenizer interface).

Two halves:

- ``train_bpe``: a byte-level BPE (HF ``tokenizers``) trained on a *balanced* sample, the same number of
  bytes from every domain, so that no domain dominates the merges. Byte-level pre-tokenizer and decoder
  with the full 256-byte initial alphabet: ``decode(encode(x)) == x`` for any text (non-ASCII, tabs, CRLF).
- ``TandemTokenizer``: torchtune's ``HuggingFaceBaseTokenizer`` plus the ``ModelTokenizer`` attributes.
  It reads any ``tokenizer.json``, so a real model's tokenizer can be swapped in by config
  (``tokenizer.path`` in the data config, or ``_component_: tandem_components.data.tandem_tokenizer``).

Special tokens are plain text inside documents: a literal ``<|endoftext|>`` in a source file is encoded
as ordinary bytes, never as the EOS id, so document boundaries in the shards are exactly where we put them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from tandem_components.atomic import atomic_write_bytes
from tandem_components.errors import TandemError
from tandem_components.torchtune_api import HuggingFaceBaseTokenizer, ModelTokenizer

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
SYSTEM_TOKEN = "<|system|>"
USER_TOKEN = "<|user|>"
ASSISTANT_TOKEN = "<|assistant|>"
# Order fixes their ids: <|endoftext|> = 0, <|pad|> = 1, ...
SPECIAL_TOKENS = (EOS_TOKEN, PAD_TOKEN, SYSTEM_TOKEN, USER_TOKEN, ASSISTANT_TOKEN)

DEFAULT_VOCAB_SIZE = 8192
DEFAULT_SAMPLE_BYTES_PER_DOMAIN = 2_000_000
TOKENIZER_CONFIG_NAME = "tokenizer_config.json"


# ----------------------------------------------------------------------------------------------------
# training


def train_bpe(
    texts_by_domain: Mapping[str, Iterable[str]],
    *,
    out_path: str | Path,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    sample_bytes_per_domain: int = DEFAULT_SAMPLE_BYTES_PER_DOMAIN,
) -> Path:
    """Train a byte-level BPE on a balanced sample and write ``tokenizer.json`` + ``tokenizer_config.json``.

    Args:
        texts_by_domain: domain name -> its (training) documents, in a deterministic order. Only the
            first ``sample_bytes_per_domain`` UTF-8 bytes of each are read.
        out_path: where ``tokenizer.json`` goes; ``tokenizer_config.json`` is written next to it.
        vocab_size: total vocabulary incl. the 256 byte tokens and the special tokens.
        sample_bytes_per_domain: bytes taken from each domain. If a domain has fewer, every domain is cut
            to the smallest domain's size, so the sample stays balanced.

    Returns:
        The path of the written ``tokenizer.json``. Same inputs give a byte-identical file.
    """
    minimum = 256 + len(SPECIAL_TOKENS)
    if vocab_size < minimum:
        raise TandemError(f"tokenizer.train.vocab_size: expected at least {minimum} (256 bytes + specials), got {vocab_size}")
    if not texts_by_domain:
        raise TandemError("tokenizer.train: expected at least one domain to train on")
    samples = balanced_sample(texts_by_domain, sample_bytes_per_domain)
    tokenizer = _train_on(samples, vocab_size)
    out_path = Path(out_path)
    _write_shareable(out_path, tokenizer.to_str(pretty=True).encode("utf-8"))
    _write_shareable(out_path.parent / TOKENIZER_CONFIG_NAME, _tokenizer_config_bytes(EOS_TOKEN, EOS_TOKEN, PAD_TOKEN))
    return out_path


def balanced_sample(texts_by_domain: Mapping[str, Iterable[str]], bytes_per_domain: int) -> dict[str, list[str]]:
    """The first ``bytes_per_domain`` bytes (fewer if a domain is smaller) of every domain, equal for all."""
    if bytes_per_domain <= 0:
        raise TandemError(f"tokenizer.train.sample_bytes_per_domain: expected a positive byte count, got {bytes_per_domain}")
    heads = {domain: _head(texts, bytes_per_domain) for domain, texts in texts_by_domain.items()}
    budget = min(_utf8_len(docs) for docs in heads.values())
    return {domain: _head(docs, budget) for domain, docs in heads.items()}


def _head(texts: Iterable[str], budget: int) -> list[str]:
    """Documents in order until ``budget`` UTF-8 bytes; the last one is cut at a character boundary."""
    taken: list[str] = []
    for text in texts:
        if budget <= 0:
            break
        encoded = text.encode("utf-8")
        if len(encoded) > budget:
            text = encoded[:budget].decode("utf-8", errors="ignore")
            encoded = text.encode("utf-8")
        taken.append(text)
        budget -= len(encoded)
    return taken


def _utf8_len(texts: list[str]) -> int:
    return sum(len(t.encode("utf-8")) for t in texts)


def _train_on(samples: dict[str, list[str]], vocab_size: int) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte has a token: nothing is unknown
        show_progress=False,
    )
    # Domains in sorted order so that the dict's insertion order cannot change the result.
    corpus = [doc for domain in sorted(samples) for doc in samples[domain]]
    tokenizer.train_from_iterator(corpus, trainer=trainer, length=len(corpus))
    return tokenizer


def _tokenizer_config_bytes(bos_token: str, eos_token: str, pad_token: str | None) -> bytes:
    """The HF ``tokenizer_config.json`` subset torchtune's ``HuggingFaceBaseTokenizer`` reads."""
    config = {"bos_token": bos_token, "eos_token": eos_token, "pad_token": pad_token}
    return (json.dumps(config, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _write_shareable(path: Path, data: bytes) -> None:
    """Atomic write, then world-readable: a tokenizer is shared with every training run (mkstemp gives 0600)."""
    atomic_write_bytes(path, data)
    os.chmod(path, 0o644)


def copy_tokenizer(tokenizer_json: str | Path, dest_dir: str | Path) -> Path:
    """Copy a ``tokenizer.json`` (bytes unchanged, so its sha256 holds) and its config into ``dest_dir``.

    A model folder without ``tokenizer_config.json`` (only ``generation_config.json``) gets one written
    from the resolved BOS/EOS/pad ids, so ``dest_dir/tokenizer.json`` always loads with ``tandem_tokenizer``.
    """
    source = Path(tokenizer_json)
    dest_dir = Path(dest_dir)
    tokenizer = tandem_tokenizer(str(source))
    _write_shareable(dest_dir / "tokenizer.json", source.read_bytes())
    source_config = source.parent / TOKENIZER_CONFIG_NAME
    if source_config.is_file():
        config_bytes = source_config.read_bytes()
    else:
        to_token = tokenizer.tokenizer.id_to_token
        config_bytes = _tokenizer_config_bytes(
            to_token(tokenizer.bos_id), to_token(tokenizer.eos_id), to_token(tokenizer.pad_id)
        )
    _write_shareable(dest_dir / TOKENIZER_CONFIG_NAME, config_bytes)
    return dest_dir / "tokenizer.json"


def tokenizer_sha256(path: str | Path) -> str:
    """Hex sha256 of the ``tokenizer.json`` bytes: which tokenizer produced a set of shards."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ----------------------------------------------------------------------------------------------------
# the torchtune-interface tokenizer


class TandemTokenizer(HuggingFaceBaseTokenizer, ModelTokenizer):
    """torchtune tokenizer over any HF ``tokenizer.json``.

    Attributes (the ``ModelTokenizer`` / ``BaseTokenizer`` interface):
        vocab_size: one more than the largest token id (incl. added/special tokens).
        bos_id, eos_id: from ``tokenizer_config.json`` (or ``generation_config.json``) next to the file.
        pad_id: the config's ``pad_token`` if it has one, else ``eos_id``.
        special_tokens: added-token string -> id.
        max_seq_len: the cut of ``tokenize_messages``; ``encode`` never truncates.
    """

    def __init__(
        self,
        tokenizer_json_path: str,
        *,
        tokenizer_config_json_path: str | None = None,
        generation_config_path: str | None = None,
        max_seq_len: int | None = None,
    ):
        super().__init__(
            tokenizer_json_path,
            tokenizer_config_json_path=tokenizer_config_json_path,
            generation_config_path=generation_config_path,
        )
        # Text is text: special-token strings inside a document are not turned into control ids.
        self.tokenizer.encode_special_tokens = True
        self.max_seq_len = max_seq_len
        vocab = self.tokenizer.get_vocab(with_added_tokens=True)
        self.vocab_size = max(vocab.values()) + 1
        self.special_tokens = {t.content: i for i, t in self.tokenizer.get_added_tokens_decoder().items()}
        self.pad_id = self._pad_id_from_config()

    def _pad_id_from_config(self) -> int:
        pad_token = (self.config or {}).get("pad_token")
        if isinstance(pad_token, dict):
            pad_token = pad_token.get("content")
        pad_id = self.tokenizer.token_to_id(pad_token) if isinstance(pad_token, str) else None
        return self.eos_id if pad_id is None else pad_id

    def encode_batch(self, texts: list[str], add_bos: bool = False, add_eos: bool = True) -> list[list[int]]:
        """Encode many documents at once (multi-threaded in Rust); by default each is followed by EOS.

        Same ids as ``encode`` on each text; this is what the prepare step uses.
        """
        encodings = self.tokenizer.encode_batch_fast(texts, add_special_tokens=False)
        prefix = [self.bos_id] if add_bos else []
        suffix = [self.eos_id] if add_eos else []
        return [prefix + e.ids + suffix for e in encodings]

    def encode(self, text: str, add_bos: bool = True, add_eos: bool = True) -> list[int]:
        """Token ids of ``text``, with BOS/EOS as asked (torchtune's defaults: both)."""
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        return ([self.bos_id] if add_bos else []) + ids + ([self.eos_id] if add_eos else [])

    def tokenize_messages(self, messages, chat_format: str = "tandem", system_prompt: str | None = None):
        """(ids, mask) of a user/assistant exchange (torchtune's ``ModelTokenizer`` interface), formatted as
        the SFT recipe formats it (``data.chat_format``), cut to ``max_seq_len``; mask True = no loss."""
        from tandem_components.data import sft_data  # sft_data's readers import this module's neighbours

        fmt = sft_data.chat_format(chat_format, system_prompt)
        return sft_data.tokenize_messages(self, messages, fmt, self.max_seq_len)


def tandem_tokenizer(path: str, max_seq_len: int | None = None) -> TandemTokenizer:
    """Config builder: ``tokenizer: {_component_: tandem_components.data.tandem_tokenizer, path: ...}``.

    ``path`` is a ``tokenizer.json``; its ``tokenizer_config.json`` (bos/eos/pad token), or else its
    ``generation_config.json`` (bos/eos ids), must sit in the same directory, as in any HF model folder.
    """
    json_path = Path(path)
    if not json_path.is_file():
        raise TandemError(f"tokenizer.path {json_path}: file not found (expected a HF tokenizer.json)")
    config_path = json_path.parent / TOKENIZER_CONFIG_NAME
    generation_path = json_path.parent / "generation_config.json"
    if not (config_path.is_file() or generation_path.is_file()):
        raise TandemError(
            f"tokenizer.path {json_path}: expected {TOKENIZER_CONFIG_NAME} (bos/eos token) or"
            " generation_config.json next to it"
        )
    try:
        return TandemTokenizer(
            str(json_path),
            tokenizer_config_json_path=str(config_path) if config_path.is_file() else None,
            generation_config_path=str(generation_path) if generation_path.is_file() else None,
            max_seq_len=max_seq_len,
        )
    except Exception as e:  # noqa: BLE001  (tokenizers raises plain Exception on a malformed file)
        first_line = (str(e).splitlines() or [type(e).__name__])[0]
        raise TandemError(f"tokenizer.path {json_path}: not a usable HF tokenizer ({first_line})") from None
