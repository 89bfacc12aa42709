"""Split every domain of a prepared dataset into sub-domains, by document: a corpus with M x parts domains.

    python tools/split_domains.py --shards data/shards/embedded --parts 16 --out data/shards/embedded_m112

Why: real pipelines mix tens to hundreds of sources, and what a mixture learner costs as M grows (its
probe, its per-domain state) is measured on the same text cut finer (benchmarks/bench_probe_cost.py).

Each domain's TRAIN documents (the token stream cut after every EOS) are dealt round-robin: document j of
domain ``d`` goes to sub-domain ``d_{j mod parts}``, in source order. Every document lands in exactly one
sub-domain, the same one on every run, and the sub-domains of a domain differ in size by at most one
document. VAL and TEST are not cut (a domain's held-out split has too few documents for hundreds of
parts, e.g. 5 in math): each sub-domain holds its parent's whole val and test, so a held-out loss is
per parent source. No retokenisation: the same token ids, tokenizer and dtype; ``bytes`` of a train
split is its share of the parent's bytes, in proportion to tokens. Written atomically (a temp folder
renamed into place).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run by path: make the repo importable

from tandem_components.data.shards import (  # noqa: E402
    SHARD_DTYPES,
    ShardedCorpus,
    SplitStats,
    building_dataset_dir,
    make_index,
    write_index,
    write_split,
)
from tandem_components.errors import TandemError  # noqa: E402


def documents(tokens: np.ndarray, eos_id: int) -> list[np.ndarray]:
    """The documents of a split's token stream, each ending in its EOS (a trailing part without one too)."""
    ends = np.flatnonzero(tokens == eos_id) + 1
    starts = np.concatenate([[0], ends])
    stops = np.concatenate([ends, [len(tokens)]])
    return [tokens[a:b] for a, b in zip(starts, stops) if b > a]


def subdomain_name(domain: str, part: int, parts: int) -> str:
    return f"{domain}_{part:0{len(str(parts - 1))}d}"


def split_domains(source: str | Path, out: str | Path, parts: int) -> Path:
    """Write ``out``: the dataset at ``source`` with every domain split into ``parts`` sub-domains."""
    if isinstance(parts, bool) or not isinstance(parts, int) or parts < 1:
        raise TandemError(f"parts: expected an integer >= 1, got {parts!r}")
    corpus = ShardedCorpus.open(source)
    dtype = SHARD_DTYPES[corpus.index["dtype"]]
    splits_by_domain: dict[str, dict[str, SplitStats]] = {}
    with building_dataset_dir(out) as build:
        for domain in corpus.domains:
            docs = documents(np.asarray(corpus.tokens(domain, "train")), corpus.eos_id)
            if len(docs) < parts:
                raise TandemError(f"parts: domain {domain!r} has {len(docs)} train documents, fewer than {parts}")
            parent = corpus.stats(domain, "train")
            for part in range(parts):
                name = subdomain_name(domain, part, parts)
                mine = docs[part::parts]
                stats = write_split(build, name, "train", [([d.tolist() for d in mine], 0)], dtype)
                stats.bytes = round(parent["bytes"] * stats.tokens / parent["tokens"])
                held_out = {}
                for split in ("val", "test"):
                    held_out[split] = write_split(
                        build, name, split, [([corpus.tokens(domain, split).tolist()], 0)], dtype)
                    held_out[split].documents = corpus.stats(domain, split)["documents"]
                    held_out[split].bytes = corpus.stats(domain, split)["bytes"]
                splits_by_domain[name] = {"train": stats, **held_out}
        for file in ("tokenizer.json", "tokenizer_config.json"):
            if (corpus.path / file).is_file():
                shutil.copy2(corpus.path / file, build / file)
        write_index(build, make_index(
            dtype_name=corpus.index["dtype"], eos_id=corpus.eos_id, vocab_size=corpus.vocab_size,
            tokenizer_sha256=corpus.tokenizer_sha256, splits_by_domain=splits_by_domain))
    return Path(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", required=True, help="a prepared dataset (recipes/prepare_data.py)")
    parser.add_argument("--parts", type=int, required=True, help="sub-domains per domain")
    parser.add_argument("--out", required=True, help="where the split dataset goes (replaced atomically)")
    args = parser.parse_args(argv)
    try:
        out = split_domains(args.shards, args.out, args.parts)
    except TandemError as e:
        print(f"tandem: error: {e}", file=sys.stderr)
        return 2
    corpus = ShardedCorpus.open(out)
    print(f"wrote {out}: {len(corpus.domains)} domains ({args.parts} per domain of {args.shards})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
