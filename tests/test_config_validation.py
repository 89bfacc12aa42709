"""Pretraining config validation (tandem_components/config_validation.py): the shipped configs pass, and
each bad config (tiny_stage1.yaml with one key changed) fails with one line naming the key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest
from omegaconf import DictConfig, OmegaConf

from tandem_components.config_validation import main, validate_pretrain_config
from tandem_components.data.shards import ShardedCorpus
from tandem_components.errors import TandemError
from tandem_components.mixture.export import write_mixture_export
from tandem_components.training.state import save_training_checkpoint
from tests.conftest import REPO_ROOT

STAGE1 = REPO_ROOT / "configs" / "pretrain" / "tiny_stage1.yaml"
STAGE2 = REPO_ROOT / "configs" / "pretrain" / "tiny_stage2.yaml"
DOMAINS = ["code", "tech_docs", "reference", "books", "legal", "dialogue", "math"]  # data/embedded


def _config(path: Path, shards: Path, tmp_path: Path) -> DictConfig:
    cfg = OmegaConf.load(path)
    cfg.data.shards = str(shards)
    cfg.output_dir = str(tmp_path / "out")
    return cfg


@pytest.fixture
def stage1(embedded_shards, tmp_path) -> DictConfig:
    return _config(STAGE1, embedded_shards, tmp_path)


def _set(key: str, value) -> Callable[[DictConfig, Path], None]:
    return lambda cfg, tmp: OmegaConf.update(cfg, key, value, merge=False, force_add=True)


def _delete(key: str) -> Callable[[DictConfig, Path], None]:
    def mutate(cfg: DictConfig, tmp: Path) -> None:
        *parents, last = key.split(".")
        node = OmegaConf.select(cfg, ".".join(parents)) if parents else cfg
        del node[last]

    return mutate


def _weights(**changes: float) -> dict[str, float]:
    weights = {d: 1.0 / len(DOMAINS) for d in DOMAINS}
    weights.update(changes)
    return weights


def _output_dir_under_a_file(cfg: DictConfig, tmp: Path) -> None:
    (tmp / "a_file").write_text("x")
    cfg.output_dir = str(tmp / "a_file" / "out")


def _other_tokenizer(cfg: DictConfig, tmp: Path) -> None:
    tokenizer = json.loads((Path(cfg.data.shards) / "tokenizer.json").read_text())
    (tmp / "other.json").write_text(json.dumps(tokenizer, indent=1))  # same content, other bytes
    cfg.data.tokenizer = str(tmp / "other.json")


def _export_with_other_domains(cfg: DictConfig, tmp: Path) -> None:
    domains = ["code", "prose"]
    write_mixture_export(tmp / "mixture.yaml", domains, [0.5, 0.5], [0.5, 0.5], method="tandem", provenance={})
    cfg.mixture.learner = "fixed"
    cfg.mixture.weights_from = str(tmp / "mixture.yaml")


# (case, mutation, the key the one-line message must name)
BAD_CONFIGS = [
    ("unknown top-level key", _set("max_step", 10), "max_step"),
    ("unknown data key", _set("data.seqlen", 64), "data.seqlen"),
    ("unknown mixture key", _set("mixture.probe_stepz", 3), "mixture.probe_stepz"),
    ("unknown model argument", _set("model.num_layer", 3), "model.num_layer"),
    ("unknown optimizer argument", _set("optimizer.momentum", 0.9), "optimizer.momentum"),
    ("component not importable", _set("optimizer._component_", "torch.optim.Adamz"), "optimizer._component_"),
    ("missing required key", _delete("seed"), "seed"),
    ("missing required section", _delete("eval"), "eval"),
    ("missing model argument", _delete("model.num_heads"), "model.num_heads"),
    ("missing metric_logger argument", _delete("metric_logger.log_dir"), "metric_logger.log_dir"),
    ("unresolvable interpolation", _set("metric_logger.log_dir", "${nowhere}/logs"), "metric_logger.log_dir"),
    ("wrong type", _set("max_steps", "ten"), "max_steps"),
    ("bool for an integer", _set("data.batch_size", True), "data.batch_size"),
    ("wrong model argument type", _set("model.embed_dim", 12.5), "model.embed_dim"),
    ("dtype not a choice", _set("dtype", "fp16"), "dtype"),
    ("unknown device", _set("device", "tpu"), "device"),
    ("negative weight", _set("mixture.weights", _weights(code=-0.1)), "mixture.weights.code"),
    ("weights not summing to 1", _set("mixture.weights", _weights(code=0.5)), "mixture.weights"),
    ("weights of an unknown domain", _set("mixture.weights", {**_weights(), "poetry": 0.0}), "mixture.weights"),
    ("weights name not uniform/natural", _set("mixture.weights", "balanced"), "mixture.weights"),
    ("K > E", _set("mixture.probe_steps", 11), "mixture.probe_steps"),
    ("K < 1", _set("mixture.probe_steps", 0), "mixture.probe_steps"),
    ("probe budget below one domain's probe", _set("mixture.probe_budget", 15), "mixture.probe_budget"),
    ("probe budget not positive", _set("mixture.probe_budget", 0), "mixture.probe_budget"),
    ("E < 1", _set("mixture.episode_len", 0), "mixture.episode_len"),
    ("seq_len above model.max_seq_len", _set("data.seq_len", 512), "data.seq_len"),
    ("output_dir not writable", _output_dir_under_a_file, "output_dir"),
    ("shards missing", _set("data.shards", "/nonexistent/shards"), "data.shards"),
    ("shards of another tokenizer (sha256)", _set("data.tokenizer_sha256", "0" * 64), "data.tokenizer_sha256"),
    ("shards of another tokenizer (file)", _other_tokenizer, "data.tokenizer"),
    ("tokenizer file missing", _set("data.tokenizer", "/nonexistent/tokenizer.json"), "data.tokenizer"),
    ("vocab smaller than the tokenizer's", _set("model.vocab_size", 100), "model.vocab_size"),
    ("unknown learner", _set("mixture.learner", "not_a_learner"), "mixture.learner"),
    ("unknown update", _set("mixture.update", "adam"), "mixture.update"),
    ("min_weight * M > 1", _set("mixture.min_weight", 0.2), "mixture.min_weight"),
    ("initial weight below min_weight", _set("mixture.weights", _weights(code=0.0, books=2 / 7)), "mixture.weights"),
    ("use not last/average", _set("mixture.use", "best"), "mixture.use"),
    ("smoothing >= 1", _set("mixture.smoothing", 1.0), "mixture.smoothing"),
    ("momentum >= 1", _set("mixture.momentum", 1.0), "mixture.momentum"),
    ("unknown carry mode", _set("mixture.carry_delta", "decay"), "mixture.carry_delta"),
    ("fit decay >= 1", _set("mixture.fit_decay", 1.0), "mixture.fit_decay"),
    ("average tail above 1", _set("mixture.average_tail", 1.5), "mixture.average_tail"),
    ("average tail of 0", _set("mixture.average_tail", 0), "mixture.average_tail"),
    ("epoch cap of 0", _set("mixture.epoch_cap", 0), "mixture.epoch_cap"),
    ("epoch cap not a number", _set("mixture.epoch_cap", "many"), "mixture.epoch_cap"),
    ("mixture lr not positive", _set("mixture.lr", 0), "mixture.lr"),
    ("optimizer lr not positive", _set("optimizer.lr", -1e-3), "optimizer.lr"),
    ("target weights of an unknown domain", _set("mixture.target_weights", {"poetry": 1.0}), "mixture.target_weights"),
    ("export missing", _set("mixture.weights_from", "/nonexistent/mixture.yaml"), "mixture.weights_from"),
    ("export of other domains", _export_with_other_domains, "mixture.weights_from"),
    ("resume without a checkpoint", _set("resume", True), "resume"),
    ("resume from a dir that is no checkpoint", _set("resume", "/nonexistent/step_00000010"), "resume"),
    ("checkpoint keep_last < 1", _set("checkpoint", {"every_n_steps": 10, "keep_last": 0}), "checkpoint.keep_last"),
]


@pytest.mark.parametrize("case, mutate, culprit", BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_is_refused_with_one_line_naming_the_key(stage1, tmp_path, case, mutate, culprit):
    mutate(stage1, tmp_path)
    with pytest.raises(TandemError) as e:
        validate_pretrain_config(stage1)
    message = str(e.value)
    assert culprit in message and "\n" not in message, f"{case}: {message}"
    assert not (tmp_path / "out").exists()  # validation writes nothing


def test_global_sizes_must_split_evenly_over_the_ranks(stage1):
    """The batch keys are global (all ranks together): a world size that does not divide one of them
    cannot run the config, nor resume its checkpoints, and says which key and why."""
    validate_pretrain_config(stage1, world_size=16)  # 16 sequences, 16 per domain in the probe: 1 per rank
    with pytest.raises(TandemError, match=r"^data\.batch_size: 16 is a global size .* cannot be split over 3 ranks"):
        validate_pretrain_config(stage1, world_size=3)
    stage1.mixture.probe_seqs_per_domain = 6
    with pytest.raises(TandemError, match=r"^mixture\.probe_seqs_per_domain: 6 is a global size .* over 4 ranks"):
        validate_pretrain_config(stage1, world_size=4)
    stage1.mixture.probe_seqs_per_domain = 8
    stage1.mixture.val_batch_size = 12
    with pytest.raises(TandemError, match=r"^mixture\.val_batch_size: 12 is a global size .* over 8 ranks"):
        validate_pretrain_config(stage1, world_size=8)
    with pytest.raises(TandemError) as e:
        validate_pretrain_config(stage1, world_size=8)
    assert e.value.every_rank  # every rank checks the same config: rank 0 alone prints it


def test_cuda_with_more_ranks_than_gpus_is_refused_before_any_work(stage1, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # this machine has no GPU: say it has one
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    stage1.device = "cuda"
    validate_pretrain_config(stage1, world_size=1)
    with pytest.raises(TandemError, match=r"^device: cuda with 2 ranks on this node but only 1 CUDA device"):
        validate_pretrain_config(stage1, world_size=2)


def test_shipped_configs_pass(embedded_shards, tmp_path):
    validate_pretrain_config(_config(STAGE1, embedded_shards, tmp_path))
    stage2 = _config(STAGE2, embedded_shards, tmp_path)
    stage2.mixture.weights_from = None
    validate_pretrain_config(stage2)
    corpus = ShardedCorpus.open(embedded_shards)
    write_mixture_export(tmp_path / "mixture.yaml", corpus.domains, [1 / 7] * 7, [1 / 7] * 7, "tandem", {})
    stage2.mixture.weights_from = str(tmp_path / "mixture.yaml")
    stage2.data.tokenizer = str(embedded_shards / "tokenizer.json")
    stage2.data.tokenizer_sha256 = corpus.tokenizer_sha256
    stage2.checkpoint = {"every_n_steps": 50, "keep_last": 2, "dir": str(tmp_path / "ckpts")}
    save_training_checkpoint(tmp_path / "ckpts", 50, {"x": {}}, fingerprint="0" * 64)
    stage2.resume = True
    validate_pretrain_config(stage2)
    stage2.resume = str(tmp_path / "ckpts" / "step_00000050")
    validate_pretrain_config(stage2)


def test_command_line(embedded_shards, tmp_path, capsys):
    config = tmp_path / "stage1.yaml"
    OmegaConf.save(_config(STAGE1, embedded_shards, tmp_path), config)
    assert main([str(config)]) == 0
    assert capsys.readouterr().out.strip() == "config OK (recipes/pretrain.py)"
    assert main([str(config), "mixture.update=adam"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tandem: error: mixture.update:") and "\n" not in err


SHIPPED = sorted(p.relative_to(REPO_ROOT) for folder in ("pretrain", "data_restricted", "sft")
                 for p in (REPO_ROOT / "configs" / folder).glob("*.yaml"))


@pytest.mark.parametrize("config", SHIPPED, ids=str)
def test_the_checker_passes_every_shipped_config_with_its_recipes_keys(config, embedded_shards, tmp_path, capsys):
    """``python -m tandem_components.config_validation <config>`` reads the recipe from the config (its
    folder names it) and checks it with that recipe's schema: a data-restricted config's token budget and an
    SFT config's categories are keys of their recipes, not unknown keys. Only what this machine lacks is
    overridden: the GPU, the prepared shards, stage 1's export, the SFT base weights."""
    recipe = config.parent.name
    cfg = OmegaConf.load(REPO_ROOT / config)
    overrides = ["device=cpu", f"output_dir={tmp_path / 'out'}"]
    if recipe == "sft":
        overrides.append("pretrained_weights=null")
    else:
        overrides.append(f"data.shards={embedded_shards}")
    if cfg.mixture.get("weights_from"):
        overrides += ["mixture.weights_from=null", "mixture.weights=uniform"]
    assert main([str(REPO_ROOT / config), *overrides]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.strip() == f"config OK (recipes/{recipe}.py)"
    # and the same config under the wrong recipe's keys is refused in one line, naming a key
    wrong = "pretrain" if recipe != "pretrain" else "sft"
    assert main([str(REPO_ROOT / config), *overrides, f"--recipe={wrong}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tandem: error: ") and "\n" not in err


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case, mutate, culprit", BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_recipe_refuses_bad_config_before_any_work(stage1, tmp_path, monkeypatch, capsys, case, mutate, culprit):
    """The same table through recipes/pretrain.py's entry point (sys.argv as `tune run` sets it):
    exit status 2, one stderr line naming the key, and no file created or changed."""
    from tests.recipe_runner import run_in_process

    mutate(stage1, tmp_path)
    config_path = tmp_path / "bad.yaml"
    OmegaConf.save(stage1, config_path)
    before = _snapshot(tmp_path)
    capsys.readouterr()
    status = run_in_process("pretrain", config_path, monkeypatch=monkeypatch)
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2, f"{case}: exit {status}"
    assert len(err) == 1 and err[0].startswith("tandem: error: ") and culprit in err[0], (case, err)
    assert _snapshot(tmp_path) == before, f"{case}: files changed"
