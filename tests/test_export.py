import pytest
import torch
import yaml
from omegaconf import OmegaConf

from tandem_components.errors import TandemError
from tandem_components.mixture.export import FORMAT, read_mixture_export, weights_vector, write_mixture_export
from tandem_components.mixture.named import resolve_initial_weights, resolve_target_weights

DOMAINS = ["code", "books", "legal"]


def _write(tmp_path):
    return write_mixture_export(
        tmp_path / "mixture.yaml", DOMAINS, last=[0.5, 0.3, 0.2], average=[0.4, 0.4, 0.2], method="tandem",
        provenance={"seed": 3, "tokenizer_sha256": "ab" * 32},
    )


def test_export_round_trip_and_provenance(tmp_path):
    path = _write(tmp_path)
    doc = yaml.safe_load(path.read_text())
    assert doc["format"] == FORMAT and doc["method"] == "tandem" and doc["provenance"]["seed"] == 3
    last, _ = read_mixture_export(path, use="last")
    avg, _ = read_mixture_export(path, use="average")
    assert last == {"code": 0.5, "books": 0.3, "legal": 0.2}
    assert torch.allclose(weights_vector(avg, DOMAINS, "x"), torch.tensor([0.4, 0.4, 0.2], dtype=torch.float64))
    assert not list(tmp_path.glob(".*.tmp"))  # no temp file left behind


def test_stage2_config_reads_the_export(tmp_path):
    path = _write(tmp_path)
    cfg = OmegaConf.create({"weights_from": str(path), "use": "last"})
    w = resolve_initial_weights(cfg, DOMAINS, [1, 1, 1])
    assert w.tolist() == [0.5, 0.3, 0.2]


def test_named_and_inline_weights():
    nat = resolve_initial_weights(OmegaConf.create({"weights": "natural"}), DOMAINS, [6, 3, 1])
    assert torch.allclose(nat, torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64))
    uni = resolve_initial_weights(OmegaConf.create({}), DOMAINS, [6, 3, 1])
    assert torch.allclose(uni, torch.full((3,), 1 / 3, dtype=torch.float64))
    inline = resolve_initial_weights(
        OmegaConf.create({"weights": {"code": 0.2, "books": 0.2, "legal": 0.6}}), DOMAINS, [1, 1, 1]
    )
    assert inline.tolist() == pytest.approx([0.2, 0.2, 0.6])
    target = resolve_target_weights({"legal": 1.0}, DOMAINS)
    assert target.tolist() == [0.0, 0.0, 1.0]


@pytest.mark.parametrize(
    "weights, needle",
    [
        ({"code": 0.5, "books": 0.5}, "no weight for domain(s) ['legal']"),
        ({"code": 0.5, "books": 0.5, "legal": 0.0, "web": 0.0}, "unknown domain(s) ['web']"),
        ({"code": 0.7, "books": 0.5, "legal": -0.2}, "mixture.weights.legal"),
        ({"code": 0.5, "books": 0.2, "legal": 0.2}, "must sum to 1"),
        ({"code": "a", "books": 0.5, "legal": 0.5}, "mixture.weights.code"),
    ],
)
def test_bad_weights_name_the_key(weights, needle):
    with pytest.raises(TandemError) as e:
        resolve_initial_weights(OmegaConf.create({"weights": weights}), DOMAINS, [1, 1, 1])
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_bad_export_files_are_refused(tmp_path):
    with pytest.raises(TandemError, match="not found"):
        read_mixture_export(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("just: [a, list")
    with pytest.raises(TandemError, match="bad.yaml"):
        read_mixture_export(bad)
    other = tmp_path / "other.yaml"
    other.write_text("a: 1\n")
    with pytest.raises(TandemError, match="not a tandem mixture export"):
        read_mixture_export(other)
