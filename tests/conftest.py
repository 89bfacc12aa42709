"""Shared fixtures. Kept small: add a fixture here only when two test files need it."""

from __future__ import annotations

import gzip
import json
import sysconfig
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
EMBEDDED_DIR = REPO_ROOT / "data" / "embedded"


def _python_sources() -> list[str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted((stdlib / "json").glob("*.py")) + sorted((stdlib / "email").glob("*.py"))
    return [f.read_text(encoding="utf-8") for f in files]


def _licenses() -> list[str]:
    root = Path("/usr/share/common-licenses")
    files = sorted(p for p in root.iterdir() if p.is_file()) if root.is_dir() else []
    texts = {f.read_text(encoding="utf-8", errors="replace") for f in files}
    return sorted(texts)[:8] or [Path(sysconfig.get_paths()["stdlib"], "LICENSE.txt").read_text()]


def _python_docs() -> list[str]:
    from pydoc_data.topics import topics  # the text of Python's language reference, in the stdlib

    return [topics[name] for name in sorted(topics)][:40]


def _write_jsonl_gz(path: Path, texts: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0: the fixture files themselves are byte-identical across runs.
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        for text in texts:
            f.write((json.dumps({"text": text}) + "\n").encode("utf-8"))


def write_fixture_corpus(root: Path) -> dict[str, dict[str, Path]]:
    """A small real-text corpus (3 domains, ~100-200 KB each) in the ``data/embedded`` layout.

    Returns domain -> split -> file. The last document of every split holds non-ASCII text and odd
    whitespace, so round-trip tests see them in every domain.
    """
    tricky = "naïve café — 東京 🚀 Ω≈ç√ \t tab\r\nCRLF  double  space\n\n<|endoftext|> literal\u00a0nbsp"
    by_domain = {"code": _python_sources(), "legal": _licenses(), "tech_docs": _python_docs()}
    files: dict[str, dict[str, Path]] = {}
    for domain, texts in by_domain.items():
        cut = max(2, len(texts) // 5)
        splits = {"train": texts[cut:], "val": texts[:cut]}  # test: carved out of val by prepare_data
        files[domain] = {}
        for split, split_texts in splits.items():
            path = root / domain / f"{split}.jsonl.gz"
            _write_jsonl_gz(path, [*split_texts, "", tricky])  # "" : empty documents are skipped
            files[domain][split] = path
    return files


@pytest.fixture(scope="session")
def fixture_corpus(tmp_path_factory) -> dict[str, dict[str, Path]]:
    """domain -> split -> ``.jsonl.gz`` of the small real-text corpus (written once per session)."""
    return write_fixture_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def fixture_tokenizer_path(fixture_corpus, tmp_path_factory) -> Path:
    """A 1024-token BPE trained on the fixture corpus (session-scoped: training is the slow part)."""
    from tandem_components.data.corpus_sources import iter_documents
    from tandem_components.data.tokenizer import train_bpe

    out = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    texts = {d: iter_documents(d, "train", files["train"]) for d, files in fixture_corpus.items()}
    return train_bpe(texts, out_path=out, vocab_size=1024, sample_bytes_per_domain=200_000)


@pytest.fixture(scope="session")
def embedded_shards(fixture_tokenizer_path, tmp_path_factory) -> Path:
    """``data/embedded`` prepared into a temp shards dir (what ``data/shards/embedded`` holds after
    ``make prepare``, but never the git-ignored copy): the 7 embedded domains, tokenized with the fixture
    corpus's 1024-token BPE (``tokenizer.path``: no BPE training here). Session-scoped; returns the dir."""
    import runpy

    from omegaconf import OmegaConf

    recipe = runpy.run_path(str(REPO_ROOT / "recipes" / "prepare_data.py"))["PrepareDataRecipe"]
    out = tmp_path_factory.mktemp("embedded_shards") / "embedded"
    data_cfg = OmegaConf.load(REPO_ROOT / "configs" / "data" / "embedded.yaml")
    data_cfg.output_dir = str(out)
    data_cfg.tokenizer = {"path": str(fixture_tokenizer_path)}
    for domain in data_cfg.domains:  # the config's paths are relative to the repo root
        domain.train, domain.val = str(REPO_ROOT / domain.train), str(REPO_ROOT / domain.val)
    recipe(data_cfg).run()
    return out
