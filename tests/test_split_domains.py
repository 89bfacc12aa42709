"""tools/split_domains.py: sub-domains by document, deterministic, every train document in exactly one."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from tandem_components.data.shards import ShardedCorpus
from tandem_components.errors import TandemError
from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tools"))
import split_domains as sd  # noqa: E402


@pytest.fixture(scope="module")
def split4(embedded_shards, tmp_path_factory):
    return sd.split_domains(embedded_shards, tmp_path_factory.mktemp("split") / "x4", parts=4)


def test_every_train_document_lands_in_exactly_one_subdomain(embedded_shards, split4):
    parent, child = ShardedCorpus.open(embedded_shards), ShardedCorpus.open(split4)
    assert child.domains == [f"{d}_{i}" for d in parent.domains for i in range(4)]
    assert child.tokenizer_sha256 == parent.tokenizer_sha256 and child.vocab_size == parent.vocab_size
    for domain in parent.domains:
        docs = sd.documents(np.asarray(parent.tokens(domain, "train")), parent.eos_id)
        parts = [sd.documents(np.asarray(child.tokens(f"{domain}_{i}", "train")), child.eos_id) for i in range(4)]
        assert sum(len(p) for p in parts) == len(docs) == parent.stats(domain, "train")["documents"]
        rebuilt = [parts[j % 4][j // 4] for j in range(len(docs))]  # document j went to part j mod 4
        assert all(np.array_equal(a, b) for a, b in zip(rebuilt, docs))
        assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1
        for split in ("val", "test"):  # held out: each sub-domain has its parent's whole split
            for i in range(4):
                assert np.array_equal(child.tokens(f"{domain}_{i}", split), parent.tokens(domain, split))


def test_the_split_is_deterministic(embedded_shards, split4, tmp_path):
    again = sd.split_domains(embedded_shards, tmp_path / "again", parts=4)
    assert ShardedCorpus.open(again).index_sha256 == ShardedCorpus.open(split4).index_sha256


def test_too_many_parts_is_refused_and_writes_nothing(embedded_shards, tmp_path):
    with pytest.raises(TandemError, match=r"^parts: domain 'code' has \d+ train documents, fewer than 100000"):
        sd.split_domains(embedded_shards, tmp_path / "bad", parts=100_000)
    assert not (tmp_path / "bad").exists()
