"""Pretraining recipe (data-abundant scenario): learn a data mixture, or train on a fixed one.

    tune run recipes/pretrain.py --config configs/pretrain/tiny_stage1.yaml [key=value ...]
    tune run --nproc_per_node 2 recipes/pretrain.py --config ...      # FSDP2 over 2 ranks

Stage 1, ``mixture.learner: tandem`` (METHOD.md): training runs in episodes of E = ``episode_len``
steps. Each episode starts by synchronising the twins (reference w <- proxy u); during its first
K = ``probe_steps`` steps the proxy steps on an α-weighted train batch and the reference steps on the
same batch (weighted γ) plus a validation batch; at step K, Δ_m = γ (L^m(w) - L^m(u)) is measured on a
paired probe batch and α <- Proj_simplex(α - lr_α Δ); the proxy then trains E - K more steps under the
new α. ``doremi`` and ``doge`` are baselines in the same loop (tandem_components/estimators/).

Stage 2, ``mixture.learner: fixed``: the same loop with a constant α (a stage-1 export, inline weights,
``uniform`` or ``natural``) trains the target model, which may be larger than the proxy.

Both stages evaluate per-domain validation loss and perplexity every ``eval.every_n_steps`` and at the
end; the final model is also evaluated on the **test** split (every window of it by default), the figure
a comparison reports: no method reads test (TANDEM's reference and DoGE's gradient use val). Outputs in
``output_dir``: mixture.yaml, mixture_trajectory.{jsonl,png} (learners only), eval.{json,csv} (val),
eval_test.{json,csv} (test), summary.json, model/model.safetensors, logs/.

The batch keys (``data.batch_size``, ``mixture.probe_seqs_per_domain``, ``mixture.val_batch_size``) are
global sizes, split evenly over the ranks: the same config learns the same α on any number of GPUs.
With ``checkpoint.every_n_steps`` the full training state is saved (the twins and optimizers sharded,
through DCP: tandem_components/training/state.py); ``resume=true`` continues bit-for-bit from the latest
checkpoint on the same number of ranks, and resharded on another number.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from tandem_components import __version__
from tandem_components.atomic import atomic_write_text
from tandem_components.config_validation import checkpoint_dir, validate_pretrain_config
from tandem_components.data import (
    PerDomainSampler, ShardedCorpus, WeightedDomainLoader, domains_per_probe, eval_windows, probe_budget,
)
from tandem_components.distributed import (
    barrier, full_state_dict, init_distributed_if_launched, is_main_process, launched_world_size, local_device,
    make_prepare, rank_and_world_size,
)
from tandem_components.errors import TandemError, exit_on_user_error
from tandem_components.estimators import DoGEEstimator, DoReMiEstimator, FixedEstimator, TandemEstimator
from tandem_components.estimators.base import DEFAULT_FIT_DECAY
from tandem_components.estimators.doremi import freeze
from tandem_components.mixture import (
    MixtureState, convergence, corpus_similarity_weights, epoch_cap_bounds, epochs_per_weight,
    named_or_mapping_weights, plot_mixture_trajectory, resolve_initial_weights, resolve_target_weights,
    write_mixture_export,
)
from tandem_components.models import export_hf_llama, load_model_weights, save_model_weights
from tandem_components.torchtune_api import config, get_cosine_schedule_with_warmup, get_logger, set_seed
from tandem_components.training import (
    build_twins, config_fingerprint, evaluate_per_domain, find_latest_checkpoint, get_sharded_state,
    load_training_checkpoint, model_chunked_domain_losses, model_domain_losses, restore_rng_state,
    save_training_checkpoint, set_sharded_state, truncate_trajectory,
)

log = get_logger("INFO")
#: mixture.delta_scale: lr amplifies Δ at most this much (the last steps of a schedule decaying to 0)
DELTA_SCALE_MAX = 10.0


class PretrainRecipe:
    """Stage 1 (learn α) or stage 2 (train on a fixed α) on a sharded multi-domain corpus."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        init_distributed_if_launched(cfg.get("device", "cpu"), cpu_offload=bool(cfg.get("fsdp_cpu_offload", False)))
        self.rank, self.world_size = rank_and_world_size()
        self.device = local_device(cfg.get("device", "cpu"))
        self.dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[cfg.get("dtype", "fp32")]
        self.seed = int(cfg.seed)
        self.max_steps = int(cfg.max_steps)
        self.output_dir = Path(cfg.output_dir)
        mix = cfg.mixture
        self.learner = mix.learner
        self.episode_len = int(mix.get("episode_len", 1))  # E
        self.probe_seqs_per_domain = int(mix.get("probe_seqs_per_domain", 8))  # P (global) per probed domain
        self.probe_steps = int(mix.get("probe_steps", 1))  # K
        self.delta_scale = mix.get("delta_scale", "none")  # lr: Δ / (mean lr of its K steps / peak lr)
        # The batch keys are GLOBAL sizes (all ranks together): the same config learns the same α on 1 or
        # 8 GPUs. Each rank takes an equal share (config validation checked the division).
        self.global_batch_size = int(cfg.data.batch_size)
        self.batch_size = self.per_rank(self.global_batch_size)
        self.probe_budget = probe_budget(mix, self.global_batch_size)  # global sequences per probe (None: all M)
        self.seq_len = int(cfg.data.seq_len)
        self.clip_grad_norm = cfg.get("clip_grad_norm", None)
        self.log_every = int(cfg.get("log_every_n_steps", 10))
        ckpt = cfg.get("checkpoint", {}) or {}
        self.checkpoint_every = int(ckpt.get("every_n_steps", 0) or 0)
        self.checkpoint_keep = int(ckpt.get("keep_last", 2))
        self.checkpoint_dir = checkpoint_dir(OmegaConf.to_container(cfg, resolve=True))
        # One forward for training, Δ and evaluation: full logits, or chunked (no (B, T, V) tensor).
        chunks = int(cfg.get("loss_chunks", 0) or 0)
        self.forward = functools.partial(model_chunked_domain_losses, num_chunks=chunks) if chunks else model_domain_losses
        self.start_step = 0
        self.token_budget = None  # per domain; the data-restricted recipe sets it
        self.run_tokens = self.max_steps * self.global_batch_size * self.seq_len  # tokens drawn in all
        self.extra_wall_time_s = 0.0  # e.g. DoReMi's reference training, part of the method's cost
        self.similarity_provenance: dict | None = None  # set when mixture.weights is similarity

    def per_rank(self, global_size: int) -> int:
        """This rank's share of a global size (a batch, a probe's sequences per domain)."""
        return global_size // self.world_size

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        set_seed(self.seed)
        self._setup_data()
        self._setup_mixture()
        self._setup_models()
        self._setup_loaders()
        if self.probe_sampler is not None and is_main_process():
            self._log_probe(self.probe_sampler.schedule)
        # not the world size: the batch keys are global, so a checkpoint resumes on any number of ranks
        self.fingerprint = config_fingerprint(self.cfg, extra={"corpus_index_sha256": self.corpus.index_sha256})
        if self.cfg.get("resume"):
            self._load_checkpoint()  # before anything is written: a refused checkpoint changes nothing
        self.metric_logger = config.instantiate(self.cfg.metric_logger) if is_main_process() else None
        if self.metric_logger is not None:
            self.metric_logger.log_config(self.cfg)

    def _setup_data(self) -> None:
        self.corpus = ShardedCorpus.open(self.cfg.data.shards)
        self.domains = self.corpus.domains  # α covers these: the domains with a train split
        self.targets = self.corpus.targets  # val/test only: read by L_val and scored, never sampled
        self.eval_domains = [*self.domains, *self.targets]  # every domain with val and test splits
        self.train_tokens = [self.corpus.tokens(d, "train") for d in self.domains]
        self.val_tokens = [self.corpus.tokens(d, "val") for d in self.eval_domains]
        self.test_tokens = [self.corpus.tokens(d, "test") for d in self.eval_domains]  # final evaluation only
        self.natural_tokens = [self.corpus.num_tokens(d, "train") for d in self.domains]
        self._setup_target()

    def _setup_target(self) -> None:
        """L_val's weights over the evaluated domains: the learners' validation batches and the tables'
        target score read this one vector (a bad mixture.target_weights fails here, before any training)."""
        self.target_vector = resolve_target_weights(self.cfg.mixture.get("target_weights"), self.eval_domains,
                                                    self.targets)

    def _setup_mixture(self) -> None:
        mix = self.cfg.mixture
        initial = resolve_initial_weights(mix, self.domains, self.natural_tokens, run_tokens=self.run_tokens,
                                          targets=self.targets, similarity=self._similarity)
        cap = mix.get("epoch_cap")  # UniMax's cap on α: no domain planned past C epochs of its tokens
        price = self._repetition_price()
        self.mixture = MixtureState(
            self.domains,
            initial=initial,
            max_weights=None if cap is None else epoch_cap_bounds(self.natural_tokens, cap, self.run_tokens),
            lr=float(mix.get("lr", 1.0)),
            update=mix.get("update", "projected_gradient"),
            min_weight=float(mix.get("min_weight", 0.0)),
            smoothing=float(mix.get("smoothing", 0.0)),
            momentum=float(mix.get("momentum", 0.0)),
            average_tail=float(mix.get("average_tail", 1.0)),
            repetition_price=price,
            epochs_per_weight=epochs_per_weight(self.natural_tokens, self.run_tokens),
        )
        if cap is not None and not torch.allclose(self.mixture.weights, initial.to(torch.float64), atol=1e-9, rtol=0):
            log.info(f"mixture.epoch_cap {cap}: α_0 moved under the caps: "
                     + ", ".join(f"{d} {w:.3f}" for d, w in zip(self.domains, self.mixture.weights.tolist())))

    def _repetition_price(self) -> float:
        """``mixture.repetition_price`` λ where L_val reads a validation-only target domain, else 0 (logged).
        Why only there: the charge prices a source's epochs as a stand-in for a target it is not; where every
        source is scored itself (the size-only objective), repeating a small one is what the objective asks
        for, and the charge cost 2.5% there (docs/METHOD.md "Pricing repetition", RESULTS 7k)."""
        price = float(self.cfg.mixture.get("repetition_price", 0.0) or 0.0)
        reads_target = bool(self.targets) and float(self.target_vector[len(self.domains):].sum()) > 0
        if price > 0 and not reads_target:
            log.info(f"mixture.repetition_price {price}: not charged, L_val reads no validation-only target domain "
                     "(each source is scored itself; docs/METHOD.md \"Pricing repetition\")")
            return 0.0
        return price

    def _similarity(self) -> torch.Tensor:
        """``mixture.weights: similarity``: each source by its n-gram closeness to the target (the
        data-restricted budget's tokens only); recorded in the provenance."""
        mix = self.cfg.mixture
        weights, self.similarity_provenance = corpus_similarity_weights(
            self.corpus, mix.get("target_weights"), mix.get("similarity_temperature", 1.0), budgets=self.token_budget)
        log.info(f"similarity weights (τ {self.similarity_provenance['temperature']}): "
                 + ", ".join(f"{d} {w:.3f} (KL {k:.3f})" for d, w, k in
                             zip(self.domains, weights.tolist(), self.similarity_provenance["kl_nats"].values())))
        return weights

    def _build_model(self) -> torch.nn.Module:
        # Same seed on every rank: FSDP2 shards one model, so every rank must build the same one.
        torch.manual_seed(self.seed)
        return config.instantiate(self.cfg.model)

    def _make_optimizer(self, lr_scale: float = 1.0):
        lr = float(self.cfg.optimizer.lr) * lr_scale
        return lambda params: config.instantiate(self.cfg.optimizer, params, lr=lr)

    def _make_lr_scheduler(self, optimizer, num_steps: int):
        warmup = int(self.cfg.get("lr_scheduler", {}).get("warmup_steps", 0))
        return get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=warmup, num_training_steps=num_steps)

    def _setup_models(self) -> None:
        cfg = self.cfg
        self.prepare = make_prepare(
            device=self.device, dtype=self.dtype, fsdp=self.world_size > 1,
            activation_checkpointing=bool(cfg.get("enable_activation_checkpointing", False)),
            compile=bool(cfg.get("compile", False)), float8=bool(cfg.get("float8", False)),
            cpu_offload=bool(cfg.get("fsdp_cpu_offload", False)),
        )
        m = len(self.domains)
        self.twins = None
        if self.learner == "tandem":
            self.reference_lr_scale = float(cfg.mixture.get("reference_lr_scale", 1.0))  # lr_w / lr_u
            self.twins = build_twins(
                self._build_model, self._make_optimizer(), self._make_optimizer(self.reference_lr_scale),
                prepare=self.prepare,
            )
            self.model, self.optimizer = self.twins.proxy, self.twins.proxy_optimizer
        else:
            self.model = self.prepare(self._build_model())
            self.optimizer = self._make_optimizer()(self.model.parameters())
        self.lr_scheduler = self._make_lr_scheduler(self.optimizer, self.max_steps)

        gamma = float(cfg.mixture.get("gamma", 1.0))
        carry = cfg.mixture.get("carry_delta", "neutral")  # what a domain absent from Δ's probe contributes
        fit_decay = self.fit_decay_per_update()
        if self.learner == "tandem":
            self.estimator = TandemEstimator(
                self.twins, m, gamma=gamma, max_grad_norm=self.clip_grad_norm, forward=self.forward,
                probe_micro_batch=self.batch_size, reference_step=cfg.mixture.get("reference_step", "split"),
                validation_weight=float(cfg.mixture.get("validation_weight", 1.0)), carry=carry,
                num_val_domains=len(self.eval_domains), fit_decay=fit_decay,
                delta_difference=cfg.mixture.get("delta_difference", "forward"),
            )
        elif self.learner == "doremi":
            self.estimator = DoReMiEstimator(self.model, self._doremi_reference(), m,
                                             reference_path=str(self.doremi_reference_path), carry=carry,
                                             fit_decay=fit_decay)
        elif self.learner == "doge":
            self.estimator = DoGEEstimator(self.model, m, val_batches=lambda: next(self.val_iter).to(self.device),
                                           forward=self.forward, carry=carry, num_val_domains=len(self.eval_domains),
                                           fit_decay=fit_decay)
        else:
            self.estimator = FixedEstimator(m)
        n_params = sum(p.numel() for p in self.model.parameters())
        log.info(f"model: {n_params / 1e6:.2f}M parameters (this rank); learner: {self.learner}; "
                 f"domains: {self.domains}{f'; target domains (val only): {self.targets}' if self.targets else ''}; "
                 f"ranks: {self.world_size}")

    def _doremi_reference(self) -> torch.nn.Module:
        """DoReMi's reference: trained once on a fixed mixture (default uniform), then frozen.

        Loaded from ``mixture.reference_checkpoint`` if given (or from this run's output on resume);
        otherwise trained here for ``mixture.reference_steps`` (default ``max_steps``) and saved, its
        wall time counted in the method's cost.
        """
        mix = self.cfg.mixture
        given = mix.get("reference_checkpoint")
        self.doremi_reference_path = Path(given) if given else self.output_dir / "doremi_reference" / "model.safetensors"
        if given or (self.cfg.get("resume") and self.doremi_reference_path.is_file()):
            reference = load_model_weights(self._build_model(), self.doremi_reference_path)  # full weights,
            return freeze(self.prepare(reference))  # then sharded like the proxy
        reference = self.prepare(self._build_model())
        steps = int(mix.get("reference_steps", self.max_steps))
        weights = named_or_mapping_weights(
            mix.get("reference_weights", "uniform"), self.domains, self.natural_tokens, key="mixture.reference_weights",
            temperature=mix.get("temperature"), max_epochs=mix.get("max_epochs"),
            run_tokens=steps * self.global_batch_size * self.seq_len,
        )
        optimizer = self._make_optimizer()(reference.parameters())
        scheduler = self._make_lr_scheduler(optimizer, steps)
        loader = iter(WeightedDomainLoader(self.train_tokens, weights, self.batch_size, self.seq_len,
                                           seed=self.seed + 3, rank=self.rank, world_size=self.world_size,
                                           token_budget=self.token_budget))
        start = time.perf_counter()
        for _ in tqdm(range(steps), desc="doremi reference", disable=not is_main_process(), dynamic_ncols=True):
            self._train_step(reference, optimizer, scheduler, next(loader).to(self.device))
        self.extra_wall_time_s = time.perf_counter() - start
        self._save_weights(reference, self.doremi_reference_path)
        del optimizer, scheduler
        return freeze(reference)

    def _setup_loaders(self) -> None:
        cfg = self.cfg
        self.train_loader = WeightedDomainLoader(
            self.train_tokens, self.mixture.weights, self.batch_size, self.seq_len,
            seed=self.seed, rank=self.rank, world_size=self.world_size, token_budget=self.token_budget,
        )
        self.val_loader = self.probe_sampler = None
        if self.estimator.updates_mixture:  # TANDEM's reference steps and DoGE's validation gradient; Δ's probe
            self.val_loader = WeightedDomainLoader(
                self.val_tokens, self.target_vector, self.per_rank(int(cfg.mixture.get("val_batch_size", self.global_batch_size))),
                self.seq_len, seed=self.seed + 1, rank=self.rank, world_size=self.world_size,
            )
            self.probe_sampler = PerDomainSampler(
                self.train_tokens, self.per_rank(self.probe_seqs_per_domain), self.seq_len,
                seed=self.seed + 2, rank=self.rank, world_size=self.world_size, token_budget=self.token_budget,
                domains_per_probe=self.domains_per_probe(), probe_order=self.probe_order(),
            )
        self.eval_batches = eval_windows(self.val_tokens, self.seq_len, int(cfg.eval.windows_per_domain))
        self.test_batches = eval_windows(self.test_tokens, self.seq_len, cfg.eval.get("test_windows_per_domain"))

    def _log_probe(self, schedule) -> None:
        """Δ's probe and its bound, and a warning when a bounded probe would measure each domain only a few
        times in the whole run (many domains, a small budget, a short run)."""
        log.info(f"Δ's probe: {schedule.domains_per_probe} of {schedule.num_domains} domains x "
                 f"{self.probe_seqs_per_domain} sequences per update; every domain measured once in every pass "
                 f"of {schedule.bound} update(s) (mixture.probe_order={schedule.order})")
        updates = -(-self.max_steps // self.episode_len)
        if schedule.bound > 1 and updates < 3 * schedule.bound:
            log.warning(f"mixture.probe_budget: each domain's Δ is measured only about {updates // schedule.bound} "
                        f"time(s) in this run's {updates} updates (every {schedule.bound} updates); lower "
                        "mixture.probe_seqs_per_domain or raise mixture.probe_budget")

    def probe_order(self) -> str:
        """``mixture.probe_order``: how a bounded probe walks the domains (``data.loader.ProbeSchedule``)."""
        return str(self.cfg.mixture.get("probe_order", "reshuffled"))

    def fit_decay(self) -> float:
        """``mixture.fit_decay`` (``carry_delta: fitted``): a decay per *pass* over the domains, so that the fit
        remembers as many measurements of each domain whatever M and the probe's D."""
        return float(self.cfg.mixture.get("fit_decay", DEFAULT_FIT_DECAY))

    def fit_decay_per_update(self) -> float:
        """``fit_decay`` per update: fit_decay ** (D / M) (fit_decay itself with the full probe)."""
        return self.fit_decay() ** (self.domains_per_probe() / len(self.domains))

    def domains_per_probe(self) -> int:
        """D: the domains Δ's probe holds per update (all M, or those ``mixture.probe_budget`` holds, in turns)."""
        return domains_per_probe(len(self.domains), self.probe_seqs_per_domain, self.probe_budget)

    # ------------------------------------------------------------ checkpoints
    def _training_state(self) -> dict:
        """The replicated state, identical on every rank (saved once): everything but the models."""
        state = {
            "lr_scheduler": self.lr_scheduler.state_dict(), "mixture": self.mixture.state_dict(),
            "estimator": self.estimator.state_dict(), "train_loader": self.train_loader.state_dict(),
        }
        if self.probe_sampler is not None:
            state["probe_sampler"] = self.probe_sampler.state_dict()
        if self.val_loader is not None:
            state["val_loader"] = self.val_loader.state_dict()
        return state

    def _stateful_models(self) -> dict:
        """The sharded state's parts: the proxy (or the one model) and, for TANDEM, the reference twin."""
        parts = {"model": (self.model, self.optimizer)}
        if self.twins is not None:
            parts["reference"] = (self.twins.reference, self.twins.reference_optimizer)
        return parts

    def save_checkpoint(self, step: int) -> None:
        """Every rank: its shards of the models through DCP, plus the replicated state (rank 0)."""
        path = save_training_checkpoint(
            self.checkpoint_dir, step, self._training_state(), fingerprint=self.fingerprint,
            keep_last=self.checkpoint_keep, sharded=get_sharded_state(self._stateful_models()), domains=self.domains,
        )
        if is_main_process():
            log.info(f"checkpoint: {path}")

    def _load_checkpoint(self) -> None:
        resume = self.cfg.resume
        path = find_latest_checkpoint(self.checkpoint_dir) if resume is True else Path(resume)
        parts = self._stateful_models()
        sharded = get_sharded_state(parts)
        ck = load_training_checkpoint(path, self.fingerprint, domains=self.domains, sharded=sharded)
        set_sharded_state(parts, sharded)  # DCP filled `sharded`, resharded to this run's ranks
        self.lr_scheduler.load_state_dict(ck["lr_scheduler"])
        self.mixture.load_state_dict(ck["mixture"])
        self.estimator.load_state_dict(ck["estimator"])
        self.train_loader.load_state_dict(ck["train_loader"])
        if self.probe_sampler is not None:
            self.probe_sampler.load_state_dict(ck["probe_sampler"])
        if self.val_loader is not None:
            self.val_loader.load_state_dict(ck["val_loader"])
        self.start_step = int(ck["step"])
        restore_rng_state(ck["rng"])  # last: building the models above drew random numbers
        if is_main_process():
            moved = ck["world_size"] != self.world_size
            log.info(f"resumed from {path} at step {self.start_step}"
                     + (f" (written on {ck['world_size']} rank(s), resharded to {self.world_size})" if moved else ""))

    # ------------------------------------------------------------------ train
    def _train_step(self, model, optimizer, scheduler, batch) -> float:
        """One optimizer step on ``batch``; returns the global batch's mean loss (nats/token).

        A NaN/inf loss (on any rank) stops the run on every rank before the step is applied, so the last
        checkpoint stays good.
        """
        objective, loss = self.forward(model, batch, len(self.domains)).reduce_global()
        if not math.isfinite(loss):  # the loss of the GLOBAL batch: every rank sees it and stops here together
            last = find_latest_checkpoint(self.checkpoint_dir)
            raise TandemError(
                f"training loss is {loss} (not finite) after {self.lr_scheduler.last_epoch} steps; stopped. "
                f"Last good checkpoint: {last or 'none (set checkpoint.every_n_steps)'}; try a lower optimizer.lr "
                "or clip_grad_norm", every_rank=True,
            )
        objective.backward()
        if self.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), float(self.clip_grad_norm))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        return loss

    def _proxy_step(self, batch) -> tuple[float, float]:
        """The proxy's step; returns its loss and the lr it stepped with (read before the scheduler moves it)."""
        lr_u = self.optimizer.param_groups[0]["lr"]
        if self.twins is not None:  # lr_w follows the proxy's schedule: the reference's step at this
            for group in self.twins.reference_optimizer.param_groups:  # step uses lr_w = scale * lr_u(step)
                group["lr"] = lr_u * self.reference_lr_scale
        return self._train_step(self.model, self.optimizer, self.lr_scheduler, batch), lr_u

    def _update_mixture(self, step: int) -> dict[str, float]:
        """Δ on a paired probe batch, then one α step; the loader follows from the next batch on."""
        probe = self.probe_sampler.sample().to(self.device)
        distance = self.twins.parameter_distance() if self.twins is not None else 0.0
        scale = self._delta_scale(step)  # this measurement's factor: a carried Δ keeps its own (estimators/base.py)
        delta = self.estimator.delta(probe, scale)
        if not bool(torch.isfinite(delta).all()):  # Δ comes from all-reduced sums: every rank sees it
            raise TandemError(
                f"Δ is not finite at step {step} ({delta.tolist()}): a twin's probe loss diverged; stopped. Last "
                f"good checkpoint: {find_latest_checkpoint(self.checkpoint_dir) or 'none (set checkpoint.every_n_steps)'}; "
                "try a lower optimizer.lr or clip_grad_norm", every_rank=True,
            )
        alpha = self.mixture.step(delta, at_step=step)
        self.train_loader.set_weights(alpha)
        row = {
            "update": self.mixture.num_updates, "step": step,
            "alpha": dict(zip(self.domains, alpha.tolist())), "delta": dict(zip(self.domains, delta.tolist())),
            "twin_distance": distance, "delta_scale": scale,  # and Δ's noise (NaN, not measurable: null)
            "repetition": dict(zip(self.domains, self.mixture.last_price.tolist())),  # mixture.repetition_price
            "measured": [d for d, p in zip(self.domains, getattr(self.estimator, "present", [])) if p],
            **({"measured_delta": {d: float(v) for d, v, p in zip(self.domains, self.estimator.last_delta.tolist(),
                                                                   self.estimator.present) if p}}
               if getattr(self.estimator, "carry", None) == "fitted" else {}),  # what the fit was given
            **{k: None if math.isnan(v) else v for k, v in self.estimator.diagnostics().items()},
        }
        if is_main_process():
            with open(self.trajectory_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            tqdm.write(
                f"step {step} update {row['update']}: α = "
                + " ".join(f"{d}={a:.3f}" for d, a in row["alpha"].items())
                + " | Δ = " + " ".join(f"{d}={v:+.4f}" for d, v in row["delta"].items())
                + "".join(f" | {k} {v:.2f}" for k, v in self.estimator.diagnostics().items())
            )
        metrics = {f"alpha/{d}": a for d, a in row["alpha"].items()}
        metrics.update({f"delta/{d}": v for d, v in row["delta"].items()})
        metrics["twins/param_distance"] = distance
        metrics.update({f"delta/{k}": v for k, v in self.estimator.diagnostics().items()})
        return metrics

    def _delta_scale(self, step: int) -> float:
        """1, or with ``mixture.delta_scale: lr`` the peak lr over the mean lr of the K probing steps that
        ended at ``step`` (at most DELTA_SCALE_MAX). Why: Δ is a loss difference after K optimizer steps,
        so it shrinks with their lr; under a cosine schedule to 0 α would stop learning halfway."""
        if self.delta_scale != "lr" or self.learner != "tandem":  # DoReMi's and DoGE's Δ are not step sizes
            return 1.0
        schedule = self.lr_scheduler.lr_lambdas[0]  # the proxy's step s runs at peak * schedule(s - 1)
        mean = sum(schedule(s - 1) for s in range(step - self.probe_steps + 1, step + 1)) / self.probe_steps
        return min(1.0 / mean, DELTA_SCALE_MAX) if mean > 0 else DELTA_SCALE_MAX

    def scored_target(self) -> dict[str, float] | None:
        """What the final tables score first: the corpus's target domains (or ``mixture.target_weights``
        when it names domains), as {domain: weight}; None when the objective is every domain alike."""
        spec = self.cfg.mixture.get("target_weights")
        if not self.targets and (spec is None or spec == "uniform"):
            return None
        return {d: float(w) for d, w in zip(self.eval_domains, self.target_vector.tolist()) if w > 0}

    def _evaluate(self, step: int):
        result = evaluate_per_domain(
            self.model, self.eval_batches, self.eval_domains, int(self.cfg.eval.batch_size), step=step,
            device=self.device, forward=self.forward,
        )
        if self.metric_logger is not None:
            self.metric_logger.log_dict(result.metrics(), step=step)
        return result

    def _evaluate_test(self):
        """The reported figure: per-domain loss on the test split, which nothing in training reads."""
        result = evaluate_per_domain(
            self.model, self.test_batches, self.eval_domains, int(self.cfg.eval.batch_size), step=self.max_steps,
            device=self.device, forward=self.forward, split="test",
        )
        if self.metric_logger is not None:
            self.metric_logger.log_dict(result.metrics(prefix="test"), step=self.max_steps)
        return result

    def train(self) -> None:
        main = is_main_process()
        learning = self.estimator.updates_mixture
        self.trajectory_path = self.output_dir / "mixture_trajectory.jsonl"
        if main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            if learning and self.start_step == 0:
                self.trajectory_path.write_text("")
            elif learning:  # drop rows written after the checkpoint by the run that crashed
                truncate_trajectory(self.trajectory_path, self.mixture.num_updates)
        eval_every = int(self.cfg.eval.get("every_n_steps", 0) or 0)
        train_iter = iter(self.train_loader)
        self.val_iter = iter(self.val_loader) if self.val_loader is not None else None
        tokens_per_step = self.global_batch_size * self.seq_len
        start = time.perf_counter()
        # `with`: an error mid-run closes the bar's line before the one-line message is printed
        with tqdm(total=self.max_steps, initial=self.start_step, desc=self.learner, disable=not main,
                  dynamic_ncols=True) as bar:
            for step in range(self.start_step + 1, self.max_steps + 1):
                k = (step - 1) % self.episode_len  # position inside the episode
                if learning and k == 0:
                    self.estimator.begin_episode()  # TANDEM: sync w <- u
                batch = next(train_iter).to(self.device)
                loss, lr = self._proxy_step(batch)
                metrics = {"train/loss": loss, "lr": lr}
                if learning and k < self.probe_steps:
                    metrics.update(self.estimator.probe_step(batch, next(self.val_iter).to(self.device)))
                updated = learning and k == self.probe_steps - 1
                if updated:
                    metrics.update(self._update_mixture(step))
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}")
                # every α update is logged (its step need not be a multiple of log_every_n_steps)
                if self.metric_logger is not None and (updated or step % self.log_every == 0 or step == self.max_steps):
                    elapsed = time.perf_counter() - start
                    metrics["tokens_per_second"] = tokens_per_step * (step - self.start_step) / max(elapsed, 1e-9)
                    self.metric_logger.log_dict(metrics, step=step)
                if eval_every and step % eval_every == 0 and step != self.max_steps:
                    result = self._evaluate(step)
                    tqdm.write(f"step {step}: mean val loss {result.mean_loss:.4f}, mean ppl {result.mean_perplexity:.2f}")
                if self.checkpoint_every and step % self.checkpoint_every == 0 and step != self.max_steps:
                    self.save_checkpoint(step)
        self.wall_time_s = time.perf_counter() - start + self.extra_wall_time_s
        # how settled α's trajectory is (mixture/convergence.py): printed, and written to summary.json
        warmup = int(self.cfg.get("lr_scheduler", {}).get("warmup_steps", 0))
        self.alpha_convergence = (convergence(self.mixture.history, self.mixture.update_steps, warmup_steps=warmup)
                                  if learning else None)
        # α must be bit-identical on every rank (Δ is computed from all-reduced sums): show it.
        digest = hashlib.sha256(self.mixture.last().numpy().tobytes()).hexdigest()[:16]
        log.info(f"rank {self.rank} of {self.world_size}: final α sha256 {digest}")
        self.final_eval = self._evaluate(self.max_steps)
        self.final_test = self._evaluate_test()
        self.final_eval.target = self.final_test.target = self.scored_target()
        self._save_weights(self.model, self.output_dir / "model" / "model.safetensors", hf=True)
        if main:
            self._write_outputs()

    # ---------------------------------------------------------------- outputs
    def _save_weights(self, model: torch.nn.Module, path: Path, hf: bool = False) -> None:
        """tandem's safetensors (+ model_config.yaml) at ``path``; with ``hf``, also an HF Llama checkpoint
        in ``path.parent / "hf"`` (transformers and torchtune's FullModelHFCheckpointer load it)."""
        state = full_state_dict(model)  # a collective under FSDP: every rank calls it
        if is_main_process():
            save_model_weights(state, path, self.cfg.model)
            if hf and self.cfg.model._component_ == "tandem_components.models.decoder":
                export_hf_llama(state, OmegaConf.to_container(self.cfg.model, resolve=True), path.parent / "hf")
        barrier()

    def _provenance(self) -> dict:
        cfg = self.cfg
        hyper = {
            "episode_len": self.episode_len, "probe_steps": self.probe_steps,
            "lr_alpha": self.mixture.lr, "update": self.mixture.update, "min_weight": self.mixture.min_weight,
            "smoothing": self.mixture.smoothing, "momentum": self.mixture.momentum,
            "average_tail": self.mixture.average_tail, "epoch_cap": cfg.mixture.get("epoch_cap"),
            "repetition_price": self.mixture.repetition_price,
            "carry_delta": getattr(self.estimator, "carry", None),
            **({"fit_decay": self.fit_decay()} if getattr(self.estimator, "carry", None) == "fitted" else {}),
            "probe_seqs_per_domain": self.probe_seqs_per_domain, "probe_budget": self.probe_budget,
            **({"domains_per_probe": self.probe_sampler.schedule.domains_per_probe,
                "probe_bound_updates": self.probe_sampler.schedule.bound} if self.probe_sampler else {}),
            "batch_size": self.global_batch_size, "seq_len": self.seq_len, "world_size": self.world_size,
            **self.estimator.hyperparameters(),
        }
        return {
            "tandem_version": __version__, "learner": self.learner, "seed": self.seed, "steps": self.max_steps,
            "num_updates": self.mixture.num_updates, "tokenizer_sha256": self.corpus.tokenizer_sha256,
            "corpus_index_sha256": self.corpus.index_sha256, "corpus": str(self.corpus.path),
            "model": OmegaConf.to_container(cfg.model, resolve=True), "hyperparameters": hyper,
            "weights_from": cfg.mixture.get("weights_from"),
            **({"similarity": self.similarity_provenance} if self.similarity_provenance else {}),
            # what stage 2 must match for the mixture to transfer (same epochs per domain)
            "token_budget": self.token_budget, "run_tokens": self.run_tokens,
            **self._drawn(),
        }

    def _drawn(self) -> dict:
        """What the run drew per domain, for stage 2's same-repetition-rate check (SFT draws examples)."""
        return {"tokens_drawn": self.train_loader.tokens_drawn.tolist()}

    def _summary(self) -> dict:
        return {
            "wall_time_s": self.wall_time_s, "mean_val_loss": self.final_eval.mean_loss,
            "mean_val_ppl": self.final_eval.mean_perplexity, "mean_test_loss": self.final_test.mean_loss,
            "mean_test_ppl": self.final_test.mean_perplexity, "steps": self.max_steps,
            **({"target": {"weights": self.final_test.target, "val_loss": self.final_eval.target_loss,
                           "val_ppl": self.final_eval.target_perplexity, "test_loss": self.final_test.target_loss,
                           "test_ppl": self.final_test.target_perplexity}} if self.final_test.target else {}),
            "final_alpha": dict(zip(self.domains, self.mixture.last().tolist())),
            "average_alpha": dict(zip(self.domains, self.mixture.average(self.max_steps).tolist())),
            **({"convergence": self.alpha_convergence.as_dict()} if self.alpha_convergence else {}),
            **({"similarity": self.similarity_provenance} if self.similarity_provenance else {}),
        }

    def _write_outputs(self) -> None:
        out = self.output_dir
        export = write_mixture_export(
            out / "mixture.yaml", self.domains, self.mixture.last().tolist(), self.mixture.average(self.max_steps).tolist(),
            method=self.learner, provenance=self._provenance(),
        )
        plot = trajectory = None
        if self.estimator.updates_mixture:  # a fixed mixture's trajectory is a constant: no file, no plot
            trajectory = self.trajectory_path
            rows = [json.loads(line) for line in self.trajectory_path.read_text(encoding="utf-8").splitlines() if line]
            plot = plot_mixture_trajectory(
                [0] + [row["step"] for row in rows], [a.tolist() for a in self.mixture.history], self.domains,
                out / "mixture_trajectory.png", title=f"{self.learner}: mixture weights over training",
                average=self.mixture.average(self.max_steps).tolist(),
                average_from=round(self.max_steps * (1 - self.mixture.average_tail)),
            )
        json_path, csv_path = self.final_eval.write(out)
        test_json, test_csv = self.final_test.write(out, stem="eval_test")
        atomic_write_text(out / "summary.json", json.dumps(self._summary(), indent=2) + "\n")
        print("\nPer-domain validation (final model; val is the split the methods may use):\n"
              + self.final_eval.format_table())
        print("\nPer-domain TEST (final model; held out from every method, the reported figure):\n"
              + self.final_test.format_table())
        tail = self.mixture.average_tail
        print(f"\nMixture (last / trajectory average{'' if tail == 1 else f' over the last {tail:.0%} of the steps'}; "
              "stage 2 trains on the average):")
        for d, a, b in zip(self.domains, self.mixture.last().tolist(), self.mixture.average(self.max_steps).tolist()):
            print(f"  {d:<14} {a:.4f}  {b:.4f}")
        if self.alpha_convergence:
            print(f"Convergence of α: {self.alpha_convergence.format()}")
        print(
            f"\nOutputs in {out}/:\n  mixture export  {export}\n  trajectory      {trajectory or 'none (fixed mixture)'}\n"
            f"  plot            {plot or 'none (fixed mixture)'}\n  eval (val)      {json_path}, {csv_path}\n"
            f"  eval (test)     {test_json}, {test_csv}\n"
            f"  model           {out / 'model' / 'model.safetensors'} (HF format: {out / 'model' / 'hf'})\n  wall time       {self.wall_time_s:.1f}s"
        )

    def cleanup(self) -> None:
        if self.metric_logger is not None:
            self.metric_logger.close()
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


@exit_on_user_error
@config.parse
def recipe_main(cfg: DictConfig) -> None:
    # Everything is checked before any work: a typo costs seconds and writes nothing.
    validate_pretrain_config(cfg, world_size=launched_world_size())
    recipe = PretrainRecipe(cfg)
    recipe.setup()
    recipe.train()
    recipe.cleanup()


if __name__ == "__main__":
    sys.exit(recipe_main())
