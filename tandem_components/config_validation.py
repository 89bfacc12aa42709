"""Check a recipe's config completely, before any work is done.

    python -m tandem_components.config_validation configs/pretrain/tiny_stage1.yaml [key=value ...] [--world-size N]
        [--recipe pretrain|data_restricted|sft]

checks it with its recipe's keys (``--recipe``, or read from the config: ``recipe_of``; ``VALIDATORS``),
prints ``config OK`` or the one-line error and exits 2. The recipe calls ``validate_pretrain_config(cfg,
world_size)`` first thing, so a typo costs seconds and no file is written.

What is checked, in order (the first problem is reported as ``<key>: <what was expected>``):
  1. keys: every section against ``SCHEMA`` (unknown keys, missing required keys, types, choices,
     ranges); the ``_component_`` sections (``model``, ``optimizer``, ``metric_logger``) against the
     signature of the builder their ``_component_`` names (unknown or missing arguments; for arguments
     annotated with plain ``int`` / ``float`` / ``str`` / ``bool``, their types);
  2. relations between keys: K = probe_steps <= E = episode_len, data.seq_len <= model.max_seq_len,
     the global sizes (``global_batch_keys``) divisible by the number of ranks, the device exists (one
     GPU per rank with device=cuda);
  3. the filesystem: output_dir writable (nothing is created), ``resume`` finds a checkpoint, the
     shards open and match the optional
     ``data.tokenizer`` (a tokenizer.json) / ``data.tokenizer_sha256``, the model's vocabulary holds the
     tokenizer's, every domain split has at least seq_len + 1 tokens;
  4. the mixture against the corpus's domains: ``weights`` / ``weights_from`` + ``use`` (via
     ``mixture.named.resolve_initial_weights``, hence ``mixture.export.weights_vector``: non-negative, summing
     to 1, one weight per domain; ``temperature`` needs ``mixture.temperature``, ``unimax``
     ``mixture.max_epochs`` large enough to place the run's tokens), ``target_weights``,
     ``min_weight * M <= 1`` and α_0 >= min_weight.

``SCHEMA`` is the one list of the keys a pretraining config may hold: a feature that adds a key adds
it there (one line: type, range, required or not).

``tune validate <config>`` (torchtune's CLI) works on our configs but only checks that each top-level
``_component_`` exists and accepts its arguments (``inspect.signature(...).bind``): it says nothing about
the other keys (a typo in ``data`` or ``mixture`` passes), so use this module instead.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import math
import os
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tandem_components.data.corpus_sources import check_source
from tandem_components.data.loader import PROBE_ORDERS
from tandem_components.data.shards import TARGET_SPLITS, ShardedCorpus
from tandem_components.data.tokenizer import tokenizer_sha256
from tandem_components.errors import EXIT_USER_ERROR, TandemError
from tandem_components.estimators import CARRY_MODES, LEARNERS
from tandem_components.estimators.tandem import DELTA_DIFFERENCES, DELTA_SCALES, REFERENCE_STEPS
from tandem_components.mixture.export import WHICH
from tandem_components.mixture.named import named_or_mapping_weights, resolve_initial_weights, resolve_target_weights
from tandem_components.mixture.similarity import corpus_similarity_weights
from tandem_components.mixture.state import UPDATES
from tandem_components.training.state import MANIFEST_NAME, find_latest_checkpoint

_FLOOR_TOL = 1e-12


@dataclass(frozen=True)
class Key:
    """One config value: its type (``int``, ``float`` (an int is accepted), ``str``, ``bool``, ``dict``,
    or a tuple of them), whether it must be present and non-null, its allowed values or range."""

    type: type | tuple[type, ...]
    required: bool = False
    nullable: bool = False
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None  # inclusive
    above: float | None = None  # exclusive


@dataclass(frozen=True)
class Component:
    """A ``_component_`` section: its remaining keys are the builder's keyword arguments.

    ``positional``: leading parameters the recipe passes itself (an optimizer's ``params``);
    ``needs``: arguments the recipe reads from the section, required even if the builder has a default.
    """

    required: bool = True
    positional: int = 0
    needs: tuple[str, ...] = ()


NUMBER = float  # Key(float): int or float, not bool

#: allowed keys of a pretraining config: section -> key -> Key | Component | nested section
SCHEMA: dict[str, Any] = {
    "output_dir": Key(str, required=True),
    "seed": Key(int, required=True, minimum=0),
    "device": Key(str),
    "dtype": Key(str, choices=("fp32", "bf16")),
    "max_steps": Key(int, required=True, minimum=1),
    "log_every_n_steps": Key(int, minimum=1),
    "clip_grad_norm": Key(NUMBER, nullable=True, above=0),
    # speed and scale (tandem_components/distributed/parallel.py, training/chunked_loss.py); FSDP2 is on whenever world size > 1
    "compile": Key(bool),  # torch.compile each transformer layer
    "float8": Key(bool),  # torchao float8 training of the eligible Linear layers (emulated on CPU)
    "enable_activation_checkpointing": Key(bool),
    "fsdp_cpu_offload": Key(bool),  # FSDP2 CPUOffloadPolicy (parameters, gradients, optimizer state)
    "loss_chunks": Key(int, minimum=0),  # 0: full logits; n: output projection + CE in n chunks
    "data": {
        "shards": Key(str, required=True),
        "seq_len": Key(int, required=True, minimum=1),
        # global: rows per step over all ranks together; each rank takes batch_size / ranks (divisible)
        "batch_size": Key(int, required=True, minimum=1),
        "tokenizer": Key(str, nullable=True),  # a tokenizer.json the shards must have been built with
        "tokenizer_sha256": Key(str, nullable=True),
    },
    "model": Component(needs=("vocab_size", "max_seq_len")),
    "optimizer": Component(positional=1, needs=("lr",)),
    "lr_scheduler": {"warmup_steps": Key(int, minimum=0)},
    "mixture": {
        "learner": Key(str, required=True, choices=tuple(sorted(LEARNERS))),
        "weights": Key((str, dict)),  # uniform | natural | temperature | unimax | similarity | {domain: weight}
        "temperature": Key(NUMBER, minimum=0),  # τ of weights: temperature (p_m ∝ n_m^τ)
        "max_epochs": Key(NUMBER, above=0),  # C of weights: unimax (at most C * n_m tokens of domain m)
        "similarity_temperature": Key(NUMBER, above=0),  # τ of weights: similarity (p_m ∝ exp(−KL(target ‖ m) / τ))
        "weights_from": Key(str, nullable=True),
        "use": Key(str, choices=WHICH),
        "episode_len": Key(int, minimum=1),  # E
        "probe_steps": Key(int, minimum=1),  # K
        "gamma": Key(NUMBER, minimum=0),  # γ
        "reference_lr_scale": Key(NUMBER, above=0),
        # how the reference combines its two gradients: split (train step as the proxy's + a val step
        # of size lr_w * validation_weight / γ) | joint (one clipped AdamW step on their sum)
        "reference_step": Key(str, choices=REFERENCE_STEPS),
        "validation_weight": Key(NUMBER, minimum=0),  # weight of L_val in the reference (0: Δ = 0 exactly)
        # none | lr: Δ divided by the mean lr multiplier of its K probing steps (α keeps learning while the
        # schedule decays; TANDEM only, like gamma: its Δ is a loss difference after K steps; others ignore it)
        "delta_scale": Key(str, choices=DELTA_SCALES),
        # forward: L(w) - L(u), the paper's | central: [L(w) - L(2u - w)] / 2 (TANDEM only) [project]
        "delta_difference": Key(str, choices=DELTA_DIFFERENCES),
        "lr": Key(NUMBER, above=0),  # lr_α
        "update": Key(str, choices=UPDATES),
        "min_weight": Key(NUMBER, minimum=0),
        "smoothing": Key(NUMBER, minimum=0),  # eps in α <- (1 - eps) α + eps / M (DoReMi's c), < 1
        "momentum": Key(NUMBER, minimum=0),  # β of the average of Δ that α steps with (0: the last Δ), < 1
        # what a domain absent from a bounded probe contributes: neutral (each measurement moves α once) | last
        "carry_delta": Key(str, choices=CARRY_MODES),
        "fit_decay": Key(NUMBER, minimum=0),  # carry_delta: fitted: the fit's decay per pass over the domains, < 1
        # the fraction of the run, back from its end, the exported average covers (1: all of it), <= 1
        "average_tail": Key(NUMBER, above=0),
        # UniMax's cap on a learner's α: at most C epochs of any domain's train tokens (its budget) [project]
        "epoch_cap": Key(NUMBER, nullable=True, above=0),
        # λ, nats of Δ per epoch of a domain that α plans past the first (0: off) [project]
        "repetition_price": Key(NUMBER, minimum=0),
        # global, like data.batch_size (each divisible by the number of ranks): the same config learns
        # the same α on 1 or 8 GPUs
        "probe_seqs_per_domain": Key(int, minimum=1),  # sequences of each probed domain in Δ's probe batch
        # global sequences in Δ's probe batch per update, whatever M (default: 2 x data.batch_size,
        # data.loader.DEFAULT_PROBE_BUDGET_BATCHES): budget // probe_seqs_per_domain domains per update, in turns
        # (data.loader.ProbeSchedule); null: every domain at every update (a cost that grows with M)
        "probe_budget": Key(int, nullable=True, minimum=1),
        # how a bounded probe walks the domains: a fresh permutation every pass | one for the whole run [project]
        "probe_order": Key(str, choices=PROBE_ORDERS),
        "val_batch_size": Key(int, minimum=1),  # validation rows per reference / DoGE step (default batch_size)
        "target_weights": Key((str, dict), nullable=True),
        # DoReMi's reference model: a safetensors file, or trained in stage 1 for reference_steps on
        # reference_weights (uniform | natural | {domain: weight})
        "reference_checkpoint": Key(str, nullable=True),
        "reference_steps": Key(int, minimum=1),
        "reference_weights": Key((str, dict)),
    },
    "eval": {
        "every_n_steps": Key(int, nullable=True, minimum=0),
        "windows_per_domain": Key(int, required=True, minimum=1),  # val windows (progress evaluations)
        # test windows of the final evaluation, the reported figure; null: the whole test split
        "test_windows_per_domain": Key(int, nullable=True, minimum=1),
        "batch_size": Key(int, required=True, minimum=1),  # windows per forward pass on each rank
    },
    "metric_logger": Component(),
    # training checkpoints (tandem_components/training/state.py)
    "checkpoint": {
        "every_n_steps": Key(int, minimum=0),  # 0: no checkpoints
        "keep_last": Key(int, minimum=1),
        "dir": Key(str, nullable=True),  # default <output_dir>/checkpoints
    },
    "resume": Key((bool, str), nullable=True),  # false | true (latest checkpoint) | a step_* dir
}
#: recipes/data_restricted.py: SCHEMA plus the token budget (tokens of all domains together, split
#: over domains at natural proportions)
DATA_RESTRICTED_SCHEMA: dict[str, Any] = {
    **SCHEMA, "data": {**SCHEMA["data"], "total_token_budget": Key(int, required=True, minimum=1),
                       # stage 2: train although the mixture was learned under another budget / tokens drawn
                       "allow_budget_mismatch": Key(bool)},
}
#: sections that must be present
REQUIRED_SECTIONS = ("data", "model", "optimizer", "mixture", "eval", "metric_logger")

#: recipes/sft.py: the splits every category names, and a category's optional key that keeps only this many
#: of its training examples (``data.sft_data.subset_examples``)
SFT_SPLITS = ("train", "val", "test")
TRAIN_EXAMPLES = "train_examples"
#: a category's key marking it a target: val and test only, read by the learners and scored, never trained on
TARGET_KEY = "target"
#: the SFT recipe's keys: the pretraining SCHEMA with an SFT ``data`` and ``eval`` section, a tokenizer
#: component and optional starting weights from a tandem-pretrained model.
SFT_SCHEMA: dict[str, Any] = {
    **SCHEMA,
    "tokenizer": Component(),  # e.g. tandem_components.data.tandem_tokenizer with path: tokenizer.json
    # a tandem model.safetensors to start from; must be given: null (from scratch) only when said explicitly
    "pretrained_weights": Key(str, nullable=True),
    "model": Component(needs=("max_seq_len",)),
    "data": {
        "categories": Key(dict, required=True),  # name -> {train: src, val: src, test: src[, train_examples: n]}
        "prompt_field": Key(str),
        "response_field": Key(str),
        "chat_format": Key(str, choices=("tandem", "chatml")),
        "system_prompt": Key(str, nullable=True),
        "seq_len": Key(int, required=True, minimum=2),  # the most input tokens of one example / row
        "batch_size": Key(int, required=True, minimum=1),  # global: rows per step over all ranks (each rank: batch_size / ranks)
        "packing": Key(bool),  # false: one example per row, padded; true: rows packed to seq_len
    },
    "eval": {
        "every_n_steps": Key(int, nullable=True, minimum=0),
        "examples_per_category": Key(int, required=True, minimum=1),  # test examples for the loss
        "batch_size": Key(int, required=True, minimum=1),  # examples per forward pass on each rank
        "generate_per_category": Key(int, minimum=0),  # test prompts decoded for the task metric
        "max_new_tokens": Key(int, minimum=1),
        "exact_match_categories": Key(list),  # categories scored by exact match of the final number
    },
}


# ----------------------------------------------------------------------------------------------------
# the entry point


def validate_pretrain_config(
    cfg: DictConfig | Mapping[str, Any],
    world_size: int = 1,
    schema: Mapping[str, Any] | None = None,
    required_sections: tuple[str, ...] = REQUIRED_SECTIONS,
    check_data: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """Raise a one-line ``TandemError`` naming the first bad key of a recipe's config; else None.

    ``schema`` defaults to ``SCHEMA``; a recipe with extra keys passes ``SCHEMA`` extended (e.g.
    ``DATA_RESTRICTED_SCHEMA``). ``check_data(raw)`` replaces the token-shard and mixture checks for a
    recipe whose data is not token shards (SFT). Reads the data's index and the mixture export (if any);
    writes nothing.
    """
    try:
        raw = _resolved(cfg)
        _check_section("", raw, schema or SCHEMA, required_sections=required_sections)
        _check_relations(raw, world_size)
        _check_output_dir(raw["output_dir"])
        _check_resume(raw)
        if check_data is not None:
            check_data(raw)
            return
        corpus = _check_shards(raw)
        _check_mixture(raw, corpus)
    except TandemError as e:  # every rank checks the same config against the same files: say it once
        raise TandemError(str(e), every_rank=True) from None


def _resolved(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    try:
        raw = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "config"
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise TandemError(f"{key}: cannot resolve ({reason})") from None
    if not isinstance(raw, dict):
        raise TandemError(f"config: expected a mapping, got {type(raw).__name__}")
    return raw


# ----------------------------------------------------------------------------------------------------
# 1. keys and types


def _type_name(wanted: type | tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true/false", dict: "a mapping"}
    wanted = wanted if isinstance(wanted, tuple) else (wanted,)
    return " or ".join(names.get(t, t.__name__) for t in wanted)


def _is_instance(value: Any, wanted: type | tuple[type, ...]) -> bool:
    for t in wanted if isinstance(wanted, tuple) else (wanted,):
        if t is bool and isinstance(value, bool):
            return True
        if t in (int, float) and isinstance(value, bool):
            continue
        if t is float and isinstance(value, (int, float)):
            return True
        if t is not float and t is not bool and isinstance(value, t):
            return True
    return False


def check_value(key: str, value: Any, spec: Key) -> None:
    """``value`` of config key ``key`` against ``spec`` (a TandemError naming ``key`` if wrong)."""
    if value is None:
        if spec.required or not spec.nullable:
            raise TandemError(f"{key}: expected {_type_name(spec.type)}, got null")
        return
    if not _is_instance(value, spec.type):
        raise TandemError(f"{key}: expected {_type_name(spec.type)}, got {value!r} ({type(value).__name__})")
    if spec.choices is not None and value not in spec.choices:
        raise TandemError(f"{key}: expected one of {list(spec.choices)}, got {value!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise TandemError(f"{key}: expected a finite number, got {value!r}")
        if spec.minimum is not None and value < spec.minimum:
            raise TandemError(f"{key}: expected a value >= {spec.minimum:g}, got {value!r}")
        if spec.above is not None and value <= spec.above:
            raise TandemError(f"{key}: expected a value > {spec.above:g}, got {value!r}")
    if isinstance(value, str) and spec.required and not value.strip():
        raise TandemError(f"{key}: expected a non-empty string")


def _check_section(prefix: str, section: Any, schema: Mapping[str, Any], required_sections=()) -> None:
    where = prefix.rstrip(".") or "config"
    if not isinstance(section, dict):
        raise TandemError(f"{where}: expected a mapping, got {section!r}")
    unknown = sorted(set(section) - set(schema))
    if unknown:
        raise TandemError(f"{prefix}{unknown[0]}: unknown key in {where} (allowed: {sorted(schema)})")
    for name, spec in schema.items():
        key = f"{prefix}{name}"
        if isinstance(spec, Key):
            if spec.required and name not in section:
                raise TandemError(f"{key}: missing (required)")
            if name in section:
                check_value(key, section[name], spec)
        elif isinstance(spec, Component):
            if name not in section or section[name] is None:
                if spec.required:
                    raise TandemError(f"{key}: missing section (a _component_ and its arguments)")
                continue
            check_component(key, section[name], spec)
        else:  # a nested plain section
            if name not in section or section[name] is None:
                if name in required_sections:
                    raise TandemError(f"{key}: missing section")
                continue
            _check_section(f"{key}.", section[name], spec)


def _resolve_component(key: str, path: Any) -> Any:
    if not isinstance(path, str) or not path.strip():
        raise TandemError(f"{key}._component_: expected a dotted path such as torch.optim.AdamW, got {path!r}")
    parts = path.split(".")
    for i in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:i])
        try:
            obj = importlib.import_module(module_name)
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            break
        return obj
    raise TandemError(f"{key}._component_: cannot import {path!r}")


def _simple_hint(hint: Any) -> tuple[type, ...] | None:
    """(types, ...) for hints made of int / float / str / bool / None; None for anything else."""
    simple = (int, float, str, bool, type(None))
    if hint in simple:
        return (hint,)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if all(a in simple for a in args):
            return tuple(args)
    return None


def check_component(key: str, section: Any, spec: Component) -> None:
    """A ``_component_`` section: the builder exists and accepts exactly these keyword arguments."""
    if not isinstance(section, dict):
        raise TandemError(f"{key}: expected a mapping with a _component_, got {section!r}")
    if "_component_" not in section:
        raise TandemError(f"{key}._component_: missing (the dotted path of the builder)")
    path = section["_component_"]
    builder = _resolve_component(key, path)
    kwargs = {k: v for k, v in section.items() if k != "_component_"}
    try:
        params = list(inspect.signature(builder).parameters.values())
    except (TypeError, ValueError):
        params = None
    for name in spec.needs:
        if name not in kwargs:
            raise TandemError(f"{key}.{name}: missing (required)")
    if params is None:
        return
    params = params[spec.positional:]
    named = {p.name: p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    takes_any = any(p.kind == p.VAR_KEYWORD for p in params)
    if not takes_any:
        unknown = sorted(set(kwargs) - set(named))
        if unknown:
            raise TandemError(f"{key}.{unknown[0]}: unknown argument of {path} (accepted: {sorted(named)})")
    for name, p in named.items():
        if p.default is p.empty and name not in kwargs:
            raise TandemError(f"{key}.{name}: missing (required by {path})")
    try:
        hints = typing.get_type_hints(builder if not inspect.isclass(builder) else builder.__init__)
    except Exception:  # noqa: BLE001 - unresolvable annotations: skip the type check
        hints = {}
    for name, value in kwargs.items():
        hinted = _simple_hint(hints.get(name))
        if hinted is None:
            continue
        if value is None and type(None) in hinted:
            continue
        wanted = tuple(t for t in hinted if t is not type(None))
        if not _is_instance(value, wanted):
            raise TandemError(
                f"{key}.{name}: expected {_type_name(wanted)} (argument of {path}), "
                f"got {value!r} ({type(value).__name__})"
            )


# ----------------------------------------------------------------------------------------------------
# 2. relations between keys


def _check_relations(raw: dict[str, Any], world_size: int) -> None:
    mix, data, model = raw["mixture"], raw["data"], raw["model"]
    episode_len, probe_steps = mix.get("episode_len", 1), mix.get("probe_steps", 1)
    if probe_steps > episode_len:
        raise TandemError(f"mixture.probe_steps: K={probe_steps} must not exceed mixture.episode_len E={episode_len}")
    if _is_instance(model["max_seq_len"], int) and data["seq_len"] > model["max_seq_len"]:
        raise TandemError(f"data.seq_len: {data['seq_len']} exceeds model.max_seq_len={model['max_seq_len']}")
    for key, value in global_batch_keys(raw).items():
        if value % world_size:
            raise TandemError(
                f"{key}: {value} is a global size (all ranks together) and cannot be split over {world_size} "
                f"ranks; use a multiple of {world_size}"
            )
    if not _is_instance(raw["optimizer"]["lr"], float) or raw["optimizer"]["lr"] <= 0:
        raise TandemError(f"optimizer.lr: expected a number > 0, got {raw['optimizer']['lr']!r}")
    device = raw.get("device", "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise TandemError(f"device: expected cpu, cuda or cuda:<index>, got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TandemError(f"device: {device!r} requested but no CUDA device is available (use device=cpu)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise TandemError(f"device: {device!r} but only {torch.cuda.device_count()} CUDA device(s) are visible")
    ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))  # ranks on this node
    if dev.type == "cuda" and ranks_here > torch.cuda.device_count():
        raise TandemError(f"device: cuda with {ranks_here} ranks on this node but only {torch.cuda.device_count()} "
                          "CUDA device(s) are visible (one GPU per rank: lower --nproc_per_node)")
    budget, per_domain = mix.get("probe_budget"), mix.get("probe_seqs_per_domain", 8)  # the default fits >= 1
    if budget is not None and _is_instance(budget, int) and budget < per_domain:
        raise TandemError(f"mixture.probe_budget: {budget} sequences cannot hold one domain's "
                          f"mixture.probe_seqs_per_domain={per_domain}; use at least {per_domain}")
    if mix.get("smoothing", 0) >= 1:
        raise TandemError(f"mixture.smoothing: expected 0 <= smoothing < 1, got {mix['smoothing']!r}")
    if mix.get("fit_decay", 0) >= 1:
        raise TandemError(f"mixture.fit_decay: expected 0 <= fit_decay < 1, got {mix['fit_decay']!r}")
    if mix.get("momentum", 0) >= 1:
        raise TandemError(f"mixture.momentum: expected 0 <= momentum < 1, got {mix['momentum']!r}")
    if mix.get("average_tail", 1) > 1:
        raise TandemError(f"mixture.average_tail: expected 0 < average_tail <= 1, got {mix['average_tail']!r}")
    if raw.get("fsdp_cpu_offload") and world_size == 1:
        raise TandemError("fsdp_cpu_offload: needs FSDP2, i.e. more than one rank (tune run --nproc_per_node N)")
    if mix["learner"] == "fixed" and mix.get("weights_from") is None and "weights" not in mix:
        raise TandemError("mixture.weights: missing (learner fixed needs weights or weights_from)")


# ----------------------------------------------------------------------------------------------------
# 3. the filesystem


def _check_output_dir(output_dir: str) -> None:
    """Writable, or creatable under a writable existing parent; creates nothing."""
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise TandemError(f"output_dir: {output_dir} exists and is not a directory")
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise TandemError(f"output_dir: {output_dir} cannot be created ({probe} is a file, not a directory)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise TandemError(f"output_dir: {output_dir} is not writable ({probe} does not allow creating files)")


def checkpoint_dir(raw: Mapping[str, Any]) -> Path:
    """Where training checkpoints go: ``checkpoint.dir``, default ``<output_dir>/checkpoints``."""
    section = raw.get("checkpoint") or {}
    return Path(section.get("dir") or Path(raw["output_dir"]) / "checkpoints")


def _check_resume(raw: dict[str, Any]) -> None:
    """``resume: true`` needs a checkpoint in the checkpoint dir; ``resume: <dir>`` needs that dir."""
    resume = raw.get("resume")
    if resume is True and find_latest_checkpoint(checkpoint_dir(raw)) is None:
        raise TandemError(f"resume: true, but there is no complete checkpoint in {checkpoint_dir(raw)}")
    if isinstance(resume, str) and not (Path(resume) / MANIFEST_NAME).is_file():
        raise TandemError(f"resume: {resume} is not a training checkpoint (no {MANIFEST_NAME} in it)")


def _check_shards(raw: dict[str, Any]) -> ShardedCorpus:
    data, model = raw["data"], raw["model"]
    try:
        corpus = ShardedCorpus.open(data["shards"])
    except TandemError as e:
        raise TandemError(f"data.shards: {e}") from None
    expected = data.get("tokenizer_sha256")
    if data.get("tokenizer"):
        tokenizer_file = Path(data["tokenizer"])
        if not tokenizer_file.is_file():
            raise TandemError(f"data.tokenizer: {tokenizer_file} not found")
        expected_from_file = tokenizer_sha256(tokenizer_file)
        if expected_from_file != corpus.tokenizer_sha256:
            raise TandemError(
                f"data.tokenizer: the shards in {corpus.path} were built with another tokenizer (sha256 "
                f"{corpus.tokenizer_sha256[:12]}..., {tokenizer_file} is {expected_from_file[:12]}...); "
                "re-run prepare_data"
            )
    if expected and expected != corpus.tokenizer_sha256:
        raise TandemError(
            f"data.tokenizer_sha256: the shards in {corpus.path} were built with tokenizer sha256 "
            f"{corpus.tokenizer_sha256[:12]}..., not {expected[:12]}...; re-run prepare_data"
        )
    if _is_instance(model["vocab_size"], int) and model["vocab_size"] < corpus.vocab_size:
        raise TandemError(
            f"model.vocab_size: {model['vocab_size']} is smaller than the tokenizer's {corpus.vocab_size} "
            f"(shards in {corpus.path})"
        )
    need = data["seq_len"] + 1
    splits = [*((d, s) for d in corpus.domains for s in ("train", "val")), *((t, "val") for t in corpus.targets)]
    for domain, split in splits:
        n = corpus.num_tokens(domain, split)
        if n < need:
            raise TandemError(f"data.seq_len: domain {domain!r} {split} has {n} tokens, fewer than seq_len + 1 = {need}")
    return corpus


# ----------------------------------------------------------------------------------------------------
# 4. the mixture against the corpus's domains


def global_batch_keys(raw: Mapping[str, Any]) -> dict[str, int]:
    """The config's global sizes, each split evenly over the ranks: the training batch, and with a
    mixture learner Δ's probe (per domain) and the validation batch (default: the training batch)."""
    data, mix = raw["data"], raw["mixture"]
    sizes = {"data.batch_size": data["batch_size"]}
    if mix.get("learner", "fixed") != "fixed":
        sizes["mixture.probe_seqs_per_domain"] = mix.get("probe_seqs_per_domain", 8)
        sizes["mixture.val_batch_size"] = mix.get("val_batch_size", data["batch_size"])
    return sizes


def _check_mixture(raw: dict[str, Any], corpus: ShardedCorpus) -> None:
    mix, data = raw["mixture"], raw["data"]
    domains = corpus.domains
    m = len(domains)
    natural = [corpus.num_tokens(d, "train") for d in domains]
    if "total_token_budget" in data:  # data-restricted: the budget split at natural proportions
        natural = [data["total_token_budget"] * n // max(sum(natural), 1) for n in natural]
    run_tokens = raw["max_steps"] * data["batch_size"] * data["seq_len"]
    try:
        initial = resolve_initial_weights(
            OmegaConf.create(mix), domains, natural, run_tokens=run_tokens, targets=corpus.targets,
            similarity=lambda: corpus_similarity_weights(
                corpus, mix.get("target_weights"), mix.get("similarity_temperature", 1.0),
                budgets=natural if "total_token_budget" in data else None)[0],
        )
    except TandemError as e:  # the export's own messages name its path: name the key as well
        if mix.get("weights_from") and not str(e).startswith("mixture."):
            raise TandemError(f"mixture.weights_from: {e}") from None
        raise
    min_weight = float(mix.get("min_weight", 0.0))
    if min_weight * m > 1.0 + _FLOOR_TOL:
        raise TandemError(f"mixture.min_weight: {min_weight} * M={m} domains exceeds 1 (at most {1.0 / m:.6g})")
    if bool((initial < min_weight - 1e-6).any()):
        source = "mixture.weights_from" if mix.get("weights_from") else "mixture.weights"
        low = [d for d, w in zip(domains, initial.tolist()) if w < min_weight - 1e-6]
        raise TandemError(f"{source}: weight of {low} below mixture.min_weight={min_weight}")
    # every run reads it: the learners' validation batches, and the final tables' target score
    resolve_target_weights(mix.get("target_weights"), [*domains, *corpus.targets], corpus.targets)


# ----------------------------------------------------------------------------------------------------
# the SFT recipe: categories of prompt/response examples instead of token shards


def validate_sft_config(cfg: DictConfig, world_size: int = 1) -> None:
    """Every key, relation and data source of an SFT config, before any work; one-line TandemError."""
    validate_pretrain_config(
        cfg, world_size, schema=SFT_SCHEMA, check_data=_check_sft_data,
        required_sections=("data", "model", "optimizer", "mixture", "eval", "metric_logger", "tokenizer"),
    )


def _check_sft_data(raw: dict[str, Any]) -> None:
    """The SFT data sources and the mixture keys against the categories (instead of token shards)."""
    categories = raw["data"]["categories"]
    if not categories:
        raise TandemError("data.categories: expected at least one category {name: {train, val, test}}")
    for name, sources in categories.items():
        target = isinstance(sources, dict) and sources.get(TARGET_KEY) is True
        splits = TARGET_SPLITS if target else SFT_SPLITS
        extra = {TARGET_KEY} if target else {TRAIN_EXAMPLES, TARGET_KEY}
        if not isinstance(sources, dict) or not set(splits) <= set(sources) <= set(splits) | extra \
                or sources.get(TARGET_KEY, False) not in (True, False):
            got = sorted(sources) if isinstance(sources, dict) else sources
            raise TandemError(f"data.categories.{name}: expected the sources of train, val and test (and optionally "
                              f"{TRAIN_EXAMPLES}), or a target (target: true) with val and test only, got {got}")
        for split in splits:
            check_source(name, split, sources[split])
    targets = [n for n, s in categories.items() if s.get(TARGET_KEY) is True]
    trained = [n for n in categories if n not in targets]
    if not trained:
        raise TandemError(f"data.categories: every category is a target ({targets}); at least one must have a "
                          "train split to learn a mixture over")
    for name in raw["eval"].get("exact_match_categories") or []:
        if name not in categories:
            raise TandemError(f"eval.exact_match_categories: {name!r} is not a category ({sorted(categories)})")
    mix = raw["mixture"]
    # unimax needs the categories' example counts: the recipe checks it once the data is read
    if isinstance(mix.get("weights"), dict) and set(mix["weights"]) & set(targets):
        raise TandemError(f"mixture.weights: {sorted(set(mix['weights']) & set(targets))} is a target category "
                          f"(val/test only, never trained on); weights cover the trained ones: {trained}")
    if isinstance(mix.get("weights"), dict) or mix.get("weights") in ("uniform", "natural", "temperature"):
        named_or_mapping_weights(mix["weights"], trained, [1] * len(trained), key="mixture.weights",
                                 temperature=mix.get("temperature"), max_epochs=mix.get("max_epochs"))
    # every run reads it (the target score); a target category makes the default target
    resolve_target_weights(mix.get("target_weights"), [*trained, *targets], targets)
    if "pretrained_weights" not in raw:
        raise TandemError("pretrained_weights: missing; give a tandem model.safetensors (the tiny configs' base: "
                          "make sft-base) or pretrained_weights=null to fine-tune from scratch")
    weights = raw["pretrained_weights"]
    if weights and not Path(weights).is_file():
        raise TandemError(f"pretrained_weights: {weights} not found (a tandem model.safetensors; the tiny configs' "
                          "base is built by make sft-base; pretrained_weights=null fine-tunes from scratch)")




# ----------------------------------------------------------------------------------------------------
# command line


#: recipe -> the check it runs first thing (``--recipe``; else read from the config: ``recipe_of``)
VALIDATORS: dict[str, Callable[..., None]] = {
    "pretrain": validate_pretrain_config,
    "data_restricted": lambda cfg, world_size=1: validate_pretrain_config(cfg, world_size, schema=DATA_RESTRICTED_SCHEMA),
    "sft": validate_sft_config,
}


def recipe_of(cfg: DictConfig | Mapping[str, Any]) -> str:
    """The recipe a config is for, from its data section: SFT categories, a data-restricted token budget,
    or plain token shards (pretrain)."""
    if "domains" in cfg and "model" not in cfg:
        raise TandemError("config: a data-preparation config (recipes/prepare_data.py checks it when it runs); "
                          "this checker takes a training recipe's config")
    data = cfg.get("data") or {}
    if "categories" in data:
        return "sft"
    return "data_restricted" if "total_token_budget" in data else "pretrain"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tandem_components.config_validation",
        description="Check a recipe's config without running it, with that recipe's own keys.",
    )
    parser.add_argument("config", help="a YAML config, e.g. configs/pretrain/tiny_stage1.yaml")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, as for tune run")
    parser.add_argument("--world-size", type=int, default=1, help="number of ranks the run will use")
    parser.add_argument("--recipe", choices=sorted(VALIDATORS),
                        help="the recipe the config is for (default: read from the config's data section)")
    args = parser.parse_args(argv)
    try:
        if not Path(args.config).is_file():
            raise TandemError(f"{args.config}: config file not found")
        try:
            cfg = OmegaConf.merge(OmegaConf.load(args.config), OmegaConf.from_dotlist(args.overrides))
        except (OmegaConfBaseException, ValueError) as e:
            raise TandemError(f"{args.config}: not a readable config ({type(e).__name__}: {e})") from None
        recipe = args.recipe or recipe_of(cfg)
        VALIDATORS[recipe](cfg, world_size=args.world_size)
    except TandemError as e:
        print(f"tandem: error: {e}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    print(f"config OK (recipes/{recipe}.py)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
