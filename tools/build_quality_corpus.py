"""Build a corpus of sources of unequal quality from a data config: graded copies, a big junk source, a clean target.

    python tools/build_quality_corpus.py --config configs/data/embedded.yaml --domain books \\
        --sources dialogue legal math --out build/quality_embedded
    tune run recipes/prepare_data.py --config build/quality_embedded.yaml
    python tools/build_quality_corpus.py --config benchmarks/configs/data_second_corpus.yaml --domain perl_docs \\
        --sources man_pages fortunes policy --out build/quality_second     # make compare-quality-second

Why: every other corpus of the project differs between sources in *content*; real mixtures also differ
in *quality* (the same kind of text, cleanly extracted or mangled). A learner that reads a clean target
should find the clean copy of the target's text and stay away from a large junk source that a
size-proportional mixture would favour. Output, from the data config's domain files (any source format
``prepare_data`` reads), under ``--out``:

  D_q0, D_q25, D_q50, D_q75   (``--domain`` D, ``--fractions``) graded copies: DISJOINT slices of D's
      train documents of equal size (the same number of documents), in which 0%, 25%, 50%, 75% of the
      documents are damaged, so that the copies differ in quality alone. With ``--copies same`` every copy
      is the SAME slice (the first), damaged at its fraction: a worse copy then holds no clean text that the
      clean copy lacks (a mirror of the same pages, less well extracted), where a disjoint copy's clean part
      is text of the target's kind found nowhere else (benchmarks/RESULTS.md 11f, 11j). D's train
      documents are first cut into pieces of about ``--piece-chars`` characters at paragraph breaks, and the
      damaged ones are spread evenly through each file (in any prefix of m documents, floor(m k / n) are
      damaged): the data-restricted recipe trains on the first tokens of each source only, which must carry
      the copy's stated fraction too. Their val: D's val, damaged at the same fraction.
  junk        one large low-quality source: ``--junk-share`` of the train documents of every clean
      source (moved, not copied: junk shares no document with a clean source), interleaved across them,
      ``--junk-fraction`` of them damaged twice (two damage kinds each). Its val: damaged copies of the
      same share of the sources' val documents.
  <sources>   the other domains kept (``--sources``, default all), clean: the rest of their train
      documents, their val (and test) unchanged.
  D           the target: D's clean val (and test), ``target: true`` in the generated config, never trained on.

Damage kinds (each damaged document gets one, in turn, so the kinds are spread evenly over a copy):
  shuffle         words shuffled within each sentence (whitespace kept in place): the reading-order errors of
                  text extracted from multi-column PDFs, tables and HTML layouts, and of spun web text; the
                  words' counts are unchanged, so only a model of word order sees it.
  boilerplate     2-4 lines of web chrome (cookie banners, navigation menus, share buttons, copyright
                  footers) inserted at the top, the bottom and between lines: what HTML-to-text extraction
                  keeps (C4's and Gopher's line filters exist because of it).
  near_duplicate  the document's first half (whole lines), then the same lines again with small edits (10%
                  of words dropped or swapped): repeated pages and templates that exact dedup misses
                  (MinHash dedup and Gopher's repetition filters). The length stays about the same, so a
                  damaged copy is not a bigger source.
  ocr             character-level OCR noise at 3% of non-space characters: glyph confusions (rn↔m, cl↔d,
                  l↔1, O↔0, e↔c, ...) where one applies, else a character dropped or doubled: digitised
                  books and scanned PDFs.

Deterministic: every choice (slices, which documents, which damage) comes from sha256 of the text and the
destination's name, and each document's damage from its own ``random.Random`` seeded that way, drawing
``random()`` only (the one sequence Python guarantees across versions): the same documents on every machine.
Files are gzip with mtime 0 (byte-identical wherever zlib is the same); the corpus folder is replaced
atomically, then the config; a bad argument is a one-line error before anything is written.
``manifest.json`` records every domain's role, sizes and damaged documents per kind.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import math
import random
import re
import sys
from pathlib import Path

import yaml

if str(Path(__file__).resolve().parent) not in sys.path:  # build_corpus beside it, however this file is run
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_corpus import pack_paragraphs  # noqa: E402

from tandem_components.atomic import atomic_write_text
from tandem_components.data import building_dataset_dir, iter_documents
from tandem_components.errors import TandemError

KINDS = ("shuffle", "boilerplate", "near_duplicate", "ocr")
COPIES = ("disjoint", "same")  # --copies: each graded copy its own slice of the domain, or all the same one
OCR_RATE = 0.03              # errors per non-space character
NEAR_DUP_EDIT_RATE = 0.1     # words of the repeat dropped or swapped
JUNK_KINDS_PER_DOC = 2
BOILERPLATE = (
    "We use cookies to improve your experience. By continuing to browse this site you accept our Cookie Policy.",
    "Accept all cookies | Manage preferences",
    "Home | News | About us | Contact | Log in | Register",
    "Skip to main content",
    "Share this article: Facebook | Twitter | LinkedIn | Email",
    "Subscribe to our newsletter for the latest updates.",
    "Copyright © 2024 All rights reserved.",
    "Privacy Policy | Terms of Use | Sitemap",
    "Advertisement",
    "Click here to read more",
    "Previous article | Next article",
    "This page was last edited on 12 March 2021, at 14:07.",
)
# Glyph confusions of OCR; a two-character pattern ("rn") is tried before a one-character one.
OCR_CONFUSIONS = {"rn": "m", "cl": "d", "m": "rn", "d": "cl", "l": "1", "1": "l", "I": "l", "O": "0", "0": "O",
                  "e": "c", "c": "e", "h": "b", "S": "5", "5": "S", "B": "8"}
SENTENCE_END = re.compile(r"[.!?][\"')\]’”]*$")


# ---------------------------------------------------------------------------------------------------------
# determinism helpers


def text_key(text: str, salt: str) -> str:
    return hashlib.sha256(f"{salt}|{text}".encode("utf-8")).hexdigest()


def doc_rng(text: str, salt: str) -> random.Random:
    """A generator for one document: seeded by its text and the destination's name, nothing global."""
    return random.Random(int(text_key(text, salt)[:16], 16))


def _below(rng: random.Random, n: int) -> int:
    """An int in [0, n) from ``rng.random()`` only (randrange/shuffle may change between Python versions)."""
    return min(int(rng.random() * n), n - 1)


def _shuffle(items: list, rng: random.Random) -> None:
    for i in range(len(items) - 1, 0, -1):  # Fisher-Yates
        j = _below(rng, i + 1)
        items[i], items[j] = items[j], items[i]


def _words(text: str) -> tuple[str, list[list[str]]]:
    """(leading whitespace, [[word, whitespace after it], ...]): text == lead + every word + separator."""
    lead = re.match(r"\s*", text).group()
    return lead, [[w, s] for w, s in re.findall(r"(\S+)(\s*)", text[len(lead):])]


def _join(lead: str, pairs: list[list[str]]) -> str:
    return lead + "".join(w + s for w, s in pairs)


# ---------------------------------------------------------------------------------------------------------
# damage kinds: text -> damaged text, given the document's own generator


def shuffle_words(text: str, rng: random.Random) -> str:
    """Words permuted within each sentence (ending in . ! or ?); whitespace stays where it was."""
    lead, pairs = _words(text)
    start = 0
    for i, (word, _) in enumerate(pairs):
        if SENTENCE_END.search(word) or i == len(pairs) - 1:
            words = [p[0] for p in pairs[start:i + 1]]
            _shuffle(words, rng)
            for p, w in zip(pairs[start:i + 1], words):
                p[0] = w
            start = i + 1
    return _join(lead, pairs)


def insert_boilerplate(text: str, rng: random.Random) -> str:
    """2-4 boilerplate lines: one at the top, one at the bottom, up to two between lines."""
    lines = text.split("\n")
    pick = lambda: BOILERPLATE[_below(rng, len(BOILERPLATE))]  # noqa: E731
    for _ in range(_below(rng, 3)):
        lines.insert(1 + _below(rng, len(lines)), pick())
    return "\n".join([pick(), *lines, pick()])


def near_duplicate(text: str, rng: random.Random) -> str:
    """The document's first half (whole lines), then that half again with small edits: about its length."""
    lines = text.split("\n")
    kept, size = lines[:1], len(lines[0])
    for line in lines[1:]:
        if size + len(line) / 2 > len(text) / 2:  # a line goes in when its middle lies in the first half
            break
        kept.append(line)
        size += 1 + len(line)
    repeat = []
    for line in kept:
        lead, pairs = _words(line)
        edited, i = [], 0
        while i < len(pairs):
            u = rng.random()
            if u < NEAR_DUP_EDIT_RATE / 2:                              # drop the word
                i += 1
                continue
            if u < NEAR_DUP_EDIT_RATE and i + 1 < len(pairs):          # swap it with the next one
                pairs[i][0], pairs[i + 1][0] = pairs[i + 1][0], pairs[i][0]
            edited.append(pairs[i])
            i += 1
        repeat.append(_join(lead, edited))
    return "\n".join(kept + repeat)


def ocr_noise(text: str, rng: random.Random, rate: float = OCR_RATE) -> str:
    """Each non-space character is misread with probability ``rate``: a glyph confusion, else dropped or doubled."""
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch.isspace() or rng.random() >= rate:
            out.append(ch)
            i += 1
            continue
        two = text[i:i + 2]
        if two in OCR_CONFUSIONS:
            out.append(OCR_CONFUSIONS[two])
            i += 2
            continue
        if ch in OCR_CONFUSIONS:
            out.append(OCR_CONFUSIONS[ch])
        elif rng.random() < 0.5:
            out.append(ch + ch)
        i += 1
    return "".join(out)


DAMAGE = {"shuffle": shuffle_words, "boilerplate": insert_boilerplate, "near_duplicate": near_duplicate,
          "ocr": ocr_noise}


# ---------------------------------------------------------------------------------------------------------
# construction


def pieces(text: str, target: int) -> list[str]:
    """Cut a document at paragraph breaks into pieces of about ``target`` characters (0: keep it whole)."""
    if target <= 0 or len(text) < 2 * target:
        return [text]
    return pack_paragraphs(text.split("\n\n"), target, min_tail=target / 2)


def damaged_positions(n: int, fraction: float) -> list[bool]:
    """k = round(n * fraction) of n positions, spread evenly: any prefix of m holds floor(m k / n) of them."""
    k = math.floor(n * fraction + 0.5)
    return [(i * k) // n != ((i + 1) * k) // n for i in range(n)]


def damage_evenly(docs: list[str], fraction: float, salt: str, kinds_per_doc: int = 1) -> tuple[list[str], list[tuple]]:
    """(documents, the damage kinds each got): the j-th damaged document gets KINDS[j], KINDS[j+1], ... (mod 4)."""
    out, applied, j = [], [], 0
    for doc, hit in zip(docs, damaged_positions(len(docs), fraction)):
        kinds: tuple = ()
        if hit:
            kinds = tuple(KINDS[(j + t) % len(KINDS)] for t in range(kinds_per_doc))
            rng = doc_rng(doc, salt)
            for kind in kinds:
                doc = DAMAGE[kind](doc, rng)
            j += 1
        out.append(doc)
        applied.append(kinds)
    return out, applied


def graded_slices(docs: list[str], count: int, salt: str) -> list[list[str]]:
    """``count`` disjoint slices of len // count documents each (the shortest remainder is left out), about equal
    in characters too: the documents sorted by length are dealt in groups of ``count``, one to each slice, by
    hash. Each slice is in hash order, so no length trend runs through a file."""
    n = len(docs) // count
    by_length = sorted(docs, key=lambda d: (len(d), text_key(d, salt)))[len(docs) - n * count:]
    slices: list[list[str]] = [[] for _ in range(count)]
    for g in range(n):
        for part, doc in zip(slices, sorted(by_length[g * count:(g + 1) * count], key=lambda d: text_key(d, salt))):
            part.append(doc)
    return [sorted(part, key=lambda d: text_key(d, f"{salt}|order")) for part in slices]


def split_share(docs: list[str], share: float, salt: str) -> tuple[list[str], list[str]]:
    """(the ``share`` of documents chosen by hash, in hash order; the others, in their original order)."""
    order = sorted(range(len(docs)), key=lambda i: text_key(docs[i], salt))
    chosen = set(order[:math.floor(len(docs) * share + 0.5)])
    return [docs[i] for i in order if i in chosen], [d for i, d in enumerate(docs) if i not in chosen]


def interleave(lists: list[list[str]]) -> list[str]:
    """Round-robin over the lists, so that any prefix of junk mixes every source."""
    return [lst[i] for i in range(max(map(len, lists), default=0)) for lst in lists if i < len(lst)]


def copy_name(domain: str, fraction: float) -> str:
    return f"{domain}_q{100 * fraction:g}"


def _check(config: dict, domain: str, sources: list[str] | None, fractions: list[float], junk_share: float,
           junk_fraction: float) -> tuple[dict, list[str]]:
    """Every argument checked before any file is read: (domain specs by name, the clean sources)."""
    entries = config.get("domains") if isinstance(config, dict) else None
    specs = {d.get("name"): d for d in entries or [] if isinstance(d, dict)}
    trainable = [n for n, d in specs.items() if "train" in d and not d.get("target")]
    if domain not in trainable:
        raise TandemError(f"--domain: no domain {domain!r} with a train split in the config (domains: {trainable})")
    sources = [n for n in trainable if n != domain] if sources is None else list(sources)
    bad = [s for s in sources if s not in trainable or s == domain]
    if bad or not sources or len(set(sources)) != len(sources):
        raise TandemError(f"--sources: expected distinct domains with a train split other than {domain!r} "
                          f"(domains: {trainable}), got {sources}")
    if not fractions or any(not 0 <= f <= 1 for f in fractions):
        raise TandemError(f"--fractions: expected damaged fractions in [0, 1], got {fractions}")
    names, kept = [copy_name(domain, f) for f in fractions], {domain, *sources}
    if len(set(names)) != len(names) or set(names) & kept:
        raise TandemError(f"--fractions: the copies' names {names} must be distinct and not name a kept domain")
    if not 0 < junk_share < 1:
        raise TandemError(f"--junk-share: expected a share of the sources' documents in (0, 1), got {junk_share}")
    if not 0 < junk_fraction <= 1:
        raise TandemError(f"--junk-fraction: expected a damaged fraction in (0, 1], got {junk_fraction}")
    if "junk" in kept:
        raise TandemError("--domain/--sources: 'junk' is the junk source's name; leave that domain out")
    return specs, sources


def build_corpus(config: dict, domain: str, sources: list[str] | None = None,
                 fractions: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75), junk_share: float = 0.5,
                 junk_fraction: float = 1.0, piece_chars: int = 1000, copies: str = "disjoint") -> dict[str, dict]:
    """The corpus in memory: {name: {"role", "splits": {split: [text]}, "damaged": {split: [kinds]}}},
    in the order of the generated config (copies, clean sources, junk, target)."""
    specs, sources = _check(config, domain, sources, list(fractions), junk_share, junk_fraction)
    if copies not in COPIES:
        raise TandemError(f"--copies: expected one of {list(COPIES)}, got {copies!r}")
    default_field, cache_dir = config.get("text_field", "text"), config.get("cache_dir")

    def read(name: str, split: str) -> list[str]:
        spec = specs[name]
        return list(iter_documents(name, split, spec[split], text_field=spec.get("text_field", default_field),
                                   cache_dir=cache_dir))

    corpus: dict[str, dict] = {}

    def add(name: str, role: str, splits: dict[str, list[str]], damaged: dict[str, list[tuple]] | None = None):
        damaged = damaged or {s: [()] * len(d) for s, d in splits.items()}
        corpus[name] = {"role": role, "splits": splits, "damaged": damaged}

    train = [p for doc in read(domain, "train") for p in pieces(doc, piece_chars)]
    val = read(domain, "val")
    if len(train) < len(fractions):
        raise TandemError(f"--domain {domain}: {len(train)} train documents for {len(fractions)} graded copies")
    slices = graded_slices(train, len(fractions), f"slices|{domain}")
    for fraction, part in zip(fractions, slices if copies == "disjoint" else [slices[0]] * len(fractions)):
        name = copy_name(domain, fraction)
        (tr, tr_kinds), (va, va_kinds) = (damage_evenly(docs, fraction, name) for docs in (part, val))
        add(name, f"graded copy of {domain}, {fraction:.0%} of documents damaged", {"train": tr, "val": va},
            {"train": tr_kinds, "val": va_kinds})

    junk_train, junk_val = [], []
    for name in sources:
        taken, kept = split_share(read(name, "train"), junk_share, f"junk|{name}")
        junk_train.append(taken)
        source_val = read(name, "val")
        junk_val.append(split_share(source_val, junk_share, f"junk|{name}")[0])
        extra = {"test": read(name, "test")} if "test" in specs[name] else {}
        add(name, "clean source", {"train": kept, "val": source_val, **extra})
    (tr, tr_kinds), (va, va_kinds) = (damage_evenly(interleave(lists), junk_fraction, "junk", JUNK_KINDS_PER_DOC)
                                      for lists in (junk_train, junk_val))
    if not tr or not va:
        raise TandemError(f"--junk-share {junk_share}: the sources {sources} give the junk source no train or "
                          "no val document")
    add("junk", f"junk: {junk_share:.0%} of {', '.join(sources)}; {junk_fraction:.0%} damaged twice",
        {"train": tr, "val": va}, {"train": tr_kinds, "val": va_kinds})
    add(domain, "target", {"val": val, **({"test": read(domain, "test")} if "test" in specs[domain] else {})})
    return corpus


def quality_config(config: dict, corpus: dict[str, dict], out: str, output_dir: str) -> dict:
    """The prepare_data config of the corpus: the input's settings, ``output_dir``, the new domains."""
    keep = {k: v for k, v in config.items() if k in ("dtype", "cache_dir", "test_fraction", "tokenizer")}
    domains = []
    for name, entry in corpus.items():
        domains.append({"name": name, **{s: f"{out}/{name}/{s}.jsonl.gz" for s in entry["splits"]},
                        **({"target": True} if entry["role"] == "target" else {})})
    return {"output_dir": output_dir, **keep, "text_field": "text", "domains": domains}


def manifest(corpus: dict[str, dict], args: dict) -> dict:
    """What the corpus holds, per domain and split: documents, characters, damaged documents, damage kinds."""
    domains = {}
    for name, entry in corpus.items():
        splits = {}
        for split, docs in entry["splits"].items():
            kinds = entry["damaged"][split]
            counts = {kind: sum(kind in k for k in kinds) for kind in KINDS}
            splits[split] = {"documents": len(docs), "characters": sum(map(len, docs)),
                             "damaged": sum(1 for k in kinds if k), "kinds": {k: c for k, c in counts.items() if c}}
        domains[name] = {"role": entry["role"], "splits": splits}
    return {"built_with": args, "domains": domains}


def _jsonl_gz(docs: list[str]) -> bytes:
    """One ``{"text": ...}`` per line, gzip with mtime 0 and no file name: byte-identical rebuilds."""
    body = "".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs).encode("utf-8")
    return gzip.compress(body, compresslevel=9, mtime=0)


def write_corpus(corpus: dict[str, dict], out: str, info: dict) -> None:
    with building_dataset_dir(out) as build:
        for name, entry in corpus.items():
            (build / name).mkdir()
            for split, docs in entry["splits"].items():
                (build / name / f"{split}.jsonl.gz").write_bytes(_jsonl_gz(docs))
        (build / "manifest.json").write_text(json.dumps(manifest(corpus, info), indent=1, ensure_ascii=False) + "\n",
                                             encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="a prepare_data config (e.g. configs/data/embedded.yaml)")
    parser.add_argument("--domain", required=True, help="the domain graded into copies; its val is the target")
    parser.add_argument("--sources", nargs="+", help="the other domains kept as clean sources (default: all)")
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.0, 0.25, 0.5, 0.75],
                        help="damaged fraction of each graded copy")
    parser.add_argument("--junk-share", type=float, default=0.5, help="share of each source's documents moved to junk")
    parser.add_argument("--junk-fraction", type=float, default=1.0, help="share of junk documents damaged")
    parser.add_argument("--piece-chars", type=int, default=1000,
                        help="the domain's documents cut to about this size (0: kept whole)")
    parser.add_argument("--copies", default="disjoint",
                        help="disjoint: each copy its own slice of the domain | same: every copy the same slice")
    parser.add_argument("--out", help="corpus folder (default build/quality_<config name>)")
    parser.add_argument("--config-out", help="the generated prepare_data config (default <out>.yaml)")
    parser.add_argument("--output-dir", help="its output_dir, the shards (default data/shards/<out's name>)")
    args = parser.parse_args(argv)
    out = (args.out or f"build/quality_{Path(args.config).stem}").rstrip("/")
    config_out = args.config_out or f"{out}.yaml"
    try:
        with open(args.config, encoding="utf-8") as f:
            config = yaml.safe_load(f)
        corpus = build_corpus(config, args.domain, args.sources, tuple(args.fractions), args.junk_share,
                              args.junk_fraction, args.piece_chars, args.copies)
        info = {k: v for k, v in vars(args).items() if k not in ("out", "config_out", "output_dir")}
        write_corpus(corpus, out, info)
        text = yaml.safe_dump(quality_config(config, corpus, out, args.output_dir or f"data/shards/{Path(out).name}"),
                              sort_keys=False, allow_unicode=True)
        atomic_write_text(config_out, "# Generated by tools/build_quality_corpus.py (see its docstring).\n" + text)
    except (OSError, yaml.YAMLError, TandemError) as e:
        print(f"build_quality_corpus: error: {e}", file=sys.stderr)
        return 2
    width = max(map(len, corpus))
    print(f"{'domain':<{width}} {'docs train':>10} {'damaged':>8} {'MB train':>9} {'docs val':>9}  role")
    for name, entry in corpus.items():
        tr = entry["splits"].get("train", [])
        damaged = sum(1 for k in entry["damaged"].get("train", []) if k)
        print(f"{name:<{width}} {len(tr):>10} {damaged:>8} {sum(map(len, tr)) / 1e6:>9.3f} "
              f"{len(entry['splits']['val']):>9}  {entry['role']}")
    print(f"wrote {out} and {config_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
