"""Reading one domain split's raw documents, from local files or a Hugging Face dataset.

A *source* is what a data config gives for ``domains[i].train`` / ``domains[i].val``:

- a path, a glob pattern, or a list of them: local ``.jsonl`` / ``.json`` / ``.parquet`` / ``.txt`` files,
  each optionally gzipped (``.jsonl.gz``). Globs are expanded in sorted order, so document order is
  deterministic. ``.jsonl`` holds one JSON object per line, ``.json`` a list of objects, ``.parquet`` a
  table; the document is the record's ``text_field`` (default ``"text"``). A ``.txt`` file is ONE document.
- a mapping ``{hf_dataset: name, hf_config: optional, hf_split: train}``: a dataset from the HF hub
  (or its local cache when offline), read with ``datasets.load_dataset``.

Every bad input raises ``TandemError("<domain>/<split> <file>: <what was expected>")``: the user sees
which domain and which file, in one line. Empty documents are skipped (they would only add an EOS);
a split with no non-empty document is an error.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from tandem_components.errors import TandemError

DEFAULT_TEXT_FIELD = "text"
SUPPORTED_SUFFIXES = (".jsonl", ".json", ".parquet", ".txt")
HF_SOURCE_KEYS = {"hf_dataset", "hf_config", "hf_split"}


def iter_documents(
    domain: str,
    split: str,
    source: Any,
    *,
    text_field: str = DEFAULT_TEXT_FIELD,
    cache_dir: str | None = None,
) -> Iterator[str]:
    """Yield the non-empty documents of ``domain``'s ``split``, in a deterministic order.

    Args:
        domain: domain name, only used in error messages.
        split: ``"train"`` or ``"val"``, only used in error messages.
        source: a path / glob / list of them, or an ``{hf_dataset: ...}`` mapping (see module docstring).
        text_field: the record field holding the document text (ignored for ``.txt``).
        cache_dir: cache directory for HF ``datasets`` (hub sources only).

    Raises:
        TandemError: missing file, unreadable or wrong-format file, missing text field, empty split.
    """
    where = f"{domain}/{split}"
    if isinstance(source, Mapping):
        documents = _iter_hf_dataset(where, source, text_field, cache_dir)
        described = f"hf_dataset {source.get('hf_dataset')!r}"
    else:
        files = resolve_files(domain, split, source)
        documents = (doc for path in files for doc in _iter_file(where, path, text_field))
        described = ", ".join(str(p) for p in files)
    found_any = False
    for document in documents:
        if document:
            found_any = True
            yield document
    if not found_any:
        raise TandemError(f"{where} {described}: no non-empty documents (expected at least one)")


def resolve_files(domain: str, split: str, source: Any) -> list[Path]:
    """Expand a path / glob / list of them into existing files, checked before any reading.

    Raises:
        TandemError: a pattern matches nothing, a file is missing, or its suffix is not supported.
    """
    where = f"{domain}/{split}"
    if isinstance(source, (str, os.PathLike)):
        patterns = [source]
    elif isinstance(source, Sequence) and source and all(isinstance(s, (str, os.PathLike)) for s in source):
        patterns = list(source)
    else:
        raise TandemError(
            f"{where}: expected a file path, a glob, a list of them, or {{hf_dataset: name, hf_split: split}};"
            f" got {source!r}"
        )
    files: list[Path] = []
    for pattern in patterns:
        pattern = str(pattern)
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches or not all(os.path.isfile(m) for m in matches):
            missing = pattern if not matches else next(m for m in matches if not os.path.isfile(m))
            raise TandemError(f"{where} {missing}: file not found")
        files.extend(Path(m) for m in matches)
    for path in files:
        _file_format(where, path)
    return files


def check_source(domain: str, split: str, source: Any) -> None:
    """Cheap structural check of a source (files exist / mapping keys), before any expensive work."""
    where = f"{domain}/{split}"
    if isinstance(source, Mapping):
        unknown = set(source) - HF_SOURCE_KEYS
        if unknown or not source.get("hf_dataset"):
            raise TandemError(
                f"{where}: an HF source needs hf_dataset (and optionally hf_config, hf_split);"
                f" got keys {sorted(source)}"
            )
        return
    resolve_files(domain, split, source)


def _file_format(where: str, path: Path) -> str:
    """The suffix deciding how ``path`` is parsed (``.gz`` stripped)."""
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    suffix = Path(name).suffix
    if suffix not in SUPPORTED_SUFFIXES:
        raise TandemError(
            f"{where} {path}: unsupported file type (expected one of {', '.join(SUPPORTED_SUFFIXES)},"
            " optionally .gz)"
        )
    return suffix


def _iter_file(where: str, path: Path, text_field: str) -> Iterator[str]:
    suffix = _file_format(where, path)
    try:
        if suffix == ".jsonl":
            yield from _iter_jsonl(where, path, text_field)
        elif suffix == ".json":
            yield from _iter_json(where, path, text_field)
        elif suffix == ".parquet":
            yield from _iter_parquet(where, path, text_field)
        else:
            yield _read_text(path)
    except (OSError, EOFError, UnicodeDecodeError) as e:
        # gzip.BadGzipFile is an OSError; a truncated gzip is an EOFError.
        raise TandemError(f"{where} {path}: unreadable ({type(e).__name__}: {e})") from None


def _open_text(path: Path):
    opener = gzip.open if path.name.endswith(".gz") else open
    return opener(path, "rt", encoding="utf-8", newline="")


def _read_text(path: Path) -> str:
    with _open_text(path) as f:
        return f.read()


def _iter_jsonl(where: str, path: Path, text_field: str) -> Iterator[str]:
    with _open_text(path) as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise TandemError(
                    f"{where} {path}: line {line_number} is not valid JSON (expected one JSON object per line)"
                ) from None
            yield _text_of(where, f"{path}: line {line_number}", record, text_field)


def _iter_json(where: str, path: Path, text_field: str) -> Iterator[str]:
    with _open_text(path) as f:
        try:
            records = json.load(f)
        except json.JSONDecodeError as e:
            raise TandemError(f"{where} {path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(records, list):
        raise TandemError(f"{where} {path}: expected a JSON list of objects (or use .jsonl)")
    for i, record in enumerate(records):
        yield _text_of(where, f"{path}: record {i}", record, text_field)


def _iter_parquet(where: str, path: Path, text_field: str) -> Iterator[str]:
    import pyarrow as pa  # installed with `datasets`; imported lazily since most corpora are jsonl
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(gzip.open(path) if path.name.endswith(".gz") else path)
    except pa.ArrowException as e:
        raise TandemError(f"{where} {path}: not a readable parquet file ({e})") from None
    if text_field not in parquet.schema_arrow.names:
        raise TandemError(
            f"{where} {path}: no column {text_field!r} (columns: {parquet.schema_arrow.names}; set text_field)"
        )
    for batch in parquet.iter_batches(columns=[text_field]):
        for i, value in enumerate(batch.column(0).to_pylist()):
            yield _text_of(where, f"{path}: row {i}", {text_field: value}, text_field)


def _iter_hf_dataset(where: str, source: Mapping, text_field: str, cache_dir: str | None) -> Iterator[str]:
    """Documents of a hub dataset; import of ``datasets`` is deferred (it is slow to import)."""
    import datasets

    name = source.get("hf_dataset")
    split = source.get("hf_split", "train")
    try:
        dataset = datasets.load_dataset(name, source.get("hf_config"), split=split, cache_dir=cache_dir)
    except Exception as e:  # noqa: BLE001  (hub, network and format errors all mean: cannot read this source)
        first_line = (str(e).splitlines() or [type(e).__name__])[0]
        raise TandemError(f"{where} hf_dataset {name!r} split {split!r}: cannot load ({first_line})") from None
    if text_field not in dataset.column_names:
        raise TandemError(
            f"{where} hf_dataset {name!r}: no column {text_field!r} (columns: {dataset.column_names}; set text_field)"
        )
    for i, value in enumerate(dataset[text_field]):
        yield _text_of(where, f"hf_dataset {name!r}: row {i}", {text_field: value}, text_field)


def _text_of(where: str, location: str, record: Any, text_field: str) -> str:
    if not isinstance(record, dict):
        raise TandemError(f"{where} {location}: expected a JSON object with a {text_field!r} field")
    if text_field not in record:
        raise TandemError(f"{where} {location}: no {text_field!r} field (set text_field to the field holding the text)")
    text = record[text_field]
    if text is None:
        return ""
    if not isinstance(text, str):
        raise TandemError(f"{where} {location}: field {text_field!r} is {type(text).__name__}, expected a string")
    return text
