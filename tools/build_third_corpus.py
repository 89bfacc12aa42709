#!/usr/bin/env python3
"""Build a third real corpus, one with a domain holding over half the tokens (issue 25: the bias
against the largest domain must be reproducible on a corpus the project does not tune on).

Built offline from pinned Debian packages used by neither the embedded nor the second corpus, with the
same helpers (tools/build_corpus.py), so the format and the determinism are the same:

    python tools/build_third_corpus.py                      # -> build/third_corpus (git-ignored)
    tune run recipes/prepare_data.py --config benchmarks/configs/data_third_corpus.yaml

Domains (sizes in MB of text; kernel_docs ~55% of the characters):
  kernel_docs     the Linux kernel's Documentation in reST (linux-doc-6.1: Documentation/**/*.rst.gz)
  go_code         the Go 1.19 standard library, test files excluded (golang-1.19-src: src/**/*.go)
  debian_ref      the Debian Reference, HTML reduced to its text (debian-reference-en)
  gnu_standards   the GNU Coding Standards and maintainers' guide (gnu-standards: *.text.gz)
  bash_examples   bash-doc's example scripts and startup files (shell code with comments)
"""
from __future__ import annotations

import html.parser
import os
import sys

import build_corpus as bc  # tools/ is on sys.path when this file runs as a script
from build_second_corpus import _files, build_main

APT = {
    "linux-doc-6.1": "6.1.192-3",
    "golang-1.19-src": "1.19.8-2",
    "debian-reference-en": "2.100",
    "gnu-standards": "2022.03.23-0.1",
    "bash-doc": "5.2.15-2",
}
bc.APT.update(APT)  # bc.Cache.apt looks the pinned version up there

MB = {"kernel_docs": 4.0, "go_code": 1.5, "debian_ref": 0.8, "gnu_standards": 0.35, "bash_examples": 0.25}


def src_kernel_docs(c: bc.Cache) -> list[str]:
    docs: list[str] = []
    for path in _files(c.apt("linux-doc-6.1"), "usr/share/doc/linux-doc-6.1/Documentation/**/*.rst.gz"):
        docs += bc.chunk_text(bc.normalize(bc.strip_rst(bc._read(path))))
    return docs


def src_go_code(c: bc.Cache) -> list[str]:
    docs: list[str] = []
    for path in _files(c.apt("golang-1.19-src"), "usr/share/go-1.19/src/**/*.go"):
        if not path.endswith("_test.go") and "/testdata/" not in path:
            docs += bc.chunk_text(bc.normalize(bc._read(path)))
    return docs


class _Text(html.parser.HTMLParser):
    """The text of an HTML page, a blank line at each block element, scripts and styles dropped."""

    BLOCKS = {"p", "div", "pre", "li", "h1", "h2", "h3", "h4", "tr", "table", "dt", "dd", "br"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag, attrs):
        self.skip += tag in ("script", "style")
        if tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag):
        self.skip -= tag in ("script", "style") and self.skip > 0

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)


def html_text(text: str) -> str:
    parser = _Text()
    parser.feed(text)
    return "".join(parser.parts)


def src_debian_ref(c: bc.Cache) -> list[str]:
    docs: list[str] = []
    for path in _files(c.apt("debian-reference-en"), "usr/share/debian-reference/*.en.html"):
        docs += bc.chunk_text(bc.normalize(html_text(bc._read(path))))
    return docs


def src_gnu_standards(c: bc.Cache) -> list[str]:
    docs: list[str] = []
    for path in _files(c.apt("gnu-standards"), "usr/share/doc/gnu-standards/*.text.gz"):
        docs += bc.chunk_text(bc.normalize(bc._read(path)))
    return docs


def src_bash_examples(c: bc.Cache) -> list[str]:
    entries: list[str] = []
    for path in _files(c.apt("bash-doc"), "usr/share/doc/bash/examples/**/*"):
        if not path.endswith((".html", ".gz")) and not os.path.islink(path):
            entries.append(bc.normalize(bc._read(path)))
    return bc.group_entries(e for e in entries if e.strip())


SOURCES = {"kernel_docs": src_kernel_docs, "go_code": src_go_code, "debian_ref": src_debian_ref,
           "gnu_standards": src_gnu_standards, "bash_examples": src_bash_examples}


def main(argv: list[str] | None = None) -> int:
    return build_main(SOURCES, MB, "build/third_corpus", __doc__.split("\n\n")[0], argv)


if __name__ == "__main__":
    sys.exit(main())
