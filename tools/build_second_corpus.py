#!/usr/bin/env python3
"""Build a second real corpus, one tandem does not ship, to check that nothing depends on the embedded one.

Why this exists: a mixture learner (and its defaults) tuned on one corpus proves little; the comparison
harness is also run on a corpus with other domains, other names and other sizes. This one is built offline
from pinned Debian packages that the embedded corpus does not use (tools/build_corpus.py reuses its
fetching and text helpers, so the format and the determinism are the same):

    python tools/build_second_corpus.py                      # -> build/second_corpus (git-ignored)
    tune run recipes/prepare_data.py --config benchmarks/configs/data_second_corpus.yaml

Domains (deliberately unequal sizes, none shared with the embedded corpus):
  c_headers   C library headers (libc6-dev: usr/include/**/*.h)
  perl_docs   Perl's manual in POD (perl-doc: *.pod)
  man_pages   C library man pages, troff source without comments (manpages-dev: man2, man3)
  fortunes    fortune(6) quotations, entries grouped into few-KB documents (fortunes)
  policy      the Debian Policy Manual and its companion texts (debian-policy: *.txt.gz)
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
import time

import build_corpus as bc  # tools/ is on sys.path when this file runs as a script

APT = {
    "libc6-dev": "2.36-9+deb12u14",
    "perl-doc": "5.36.0-7+deb12u3",
    "manpages-dev": "6.03-2",
    "fortunes": "1:1.99.1-7.3",
    "debian-policy": "4.6.2.0",
}
bc.APT.update(APT)  # bc.Cache.apt looks the pinned version up there

# MB of text (10^6 characters) kept per domain at most: unequal, and in another order than the embedded's.
MB = {"c_headers": 3.0, "perl_docs": 2.5, "man_pages": 1.2, "fortunes": 0.6, "policy": 0.3}


def _files(root: str, pattern: str) -> list[str]:
    return sorted(p for p in glob.glob(os.path.join(root, pattern), recursive=True) if os.path.isfile(p))


def src_c_headers(c: bc.Cache) -> list[str]:
    docs: list[str] = []
    for path in _files(c.apt("libc6-dev"), "usr/include/**/*.h"):
        docs += bc.chunk_text(bc.normalize(bc._read(path)))
    return docs


def src_perl_docs(c: bc.Cache) -> list[str]:
    docs: list[str] = []
    for path in _files(c.apt("perl-doc"), "usr/share/perl/**/*.pod"):
        docs += bc.chunk_text(bc.normalize(bc._read(path)))
    return docs


def strip_troff_comments(text: str) -> str:
    """Drop troff comment lines (licence boilerplate at the top of every page); keep requests and prose."""
    return "\n".join(ln for ln in text.split("\n") if not ln.startswith(('.\\"', "'\\\"")))


def src_man_pages(c: bc.Cache) -> list[str]:
    docs: list[str] = []
    for path in _files(c.apt("manpages-dev"), "usr/share/man/man[23]/*.gz"):
        text = strip_troff_comments(bc._read(path))
        if not text.lstrip().startswith(".so "):  # a page that only includes another one
            docs += bc.chunk_text(bc.normalize(text))
    return docs


def split_fortunes(text: str) -> list[str]:
    """fortune(6) files keep one quotation per entry, entries separated by a line holding only '%'."""
    entries, cur = [], []
    for line in text.split("\n"):
        if line.strip() == "%":
            entries.append("\n".join(cur))
            cur = []
        else:
            cur.append(line)
    entries.append("\n".join(cur))
    return [bc.normalize(e) for e in entries if e.strip()]


def src_fortunes(c: bc.Cache) -> list[str]:
    entries: list[str] = []
    for path in _files(c.apt("fortunes"), "usr/share/games/fortunes/*"):
        if not path.endswith((".dat", ".u8")) and not os.path.islink(path):
            entries += split_fortunes(bc._read(path))
    return bc.group_entries(entries)


def src_policy(c: bc.Cache) -> list[str]:
    docs: list[str] = []
    for path in _files(c.apt("debian-policy"), "usr/share/doc/debian-policy/**/*.txt.gz"):
        docs += bc.chunk_text(bc.normalize(bc._read(path)))
    return docs


SOURCES = {"c_headers": src_c_headers, "perl_docs": src_perl_docs, "man_pages": src_man_pages,
           "fortunes": src_fortunes, "policy": src_policy}


def build_main(sources: dict, mb: dict[str, float], default_out: str, description: str,
               argv: list[str] | None = None) -> int:
    """The command line of a Debian-package corpus (this one, tools/build_third_corpus.py): each domain's
    documents from ``sources[domain](cache)``, deduplicated, ``mb[domain]`` MB of them, split train/val."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--out", default=os.path.join(bc.REPO, default_out), help="output folder")
    ap.add_argument("--cache-dir", default=os.path.join(bc.REPO, "build/corpus_sources"),
                    help="downloads + unpacked packages (shared with tools/build_corpus.py)")
    args = ap.parse_args(argv)
    cache, t0 = bc.Cache(os.path.abspath(args.cache_dir)), time.time()
    width = max(map(len, sources))
    print(f"{'domain':<{width}} {'docs tr/val':>13} {'MB train':>9} {'MB val':>7}")
    for domain, fn in sources.items():
        try:
            docs = bc.take_budget(bc.dedupe(d for d in fn(cache) if len(d) >= bc.MIN_CHARS), mb[domain] * 1e6)
        except bc.FetchError as e:
            print(f"error: cannot fetch source of {domain}: {e}", file=sys.stderr)
            return 1
        train, val = bc.split_train_val(docs)
        for split, part in (("train", train), ("val", val)):
            bc.write_jsonl_gz(os.path.join(args.out, domain, f"{split}.jsonl.gz"), part)
        print(f"{domain:<{width}} {len(train):>7}/{len(val):<5} {sum(map(len, train)) / 1e6:>9.2f} "
              f"{sum(map(len, val)) / 1e6:>7.3f}")
    print(f"wrote {args.out} ({time.time() - t0:.0f} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    return build_main(SOURCES, MB, "build/second_corpus", __doc__.split("\n\n")[0], argv)


if __name__ == "__main__":
    sys.exit(main())
