"""Pretraining recipe (data-abundant scenario): learn a data mixture, or train on a fixed one.

    tune run recipes/pretrain.py --config configs/pretrain/tiny_stage1.yaml [key=value ...]

Stage 1, ``mixture.learner: tandem`` (METHOD.md): training runs in episodes of E = ``episode_len``
steps. Each episode starts by synchronising the twins (reference w <- proxy u); during its first
K = ``probe_steps`` steps the proxy steps on an α-weighted train batch and the reference steps on the
same batch (weighted γ) plus a validation batch; at step K, Δ_m = γ (L^m(w) - L^m(u)) is measured on a
paired probe batch and α <- Proj_simplex(α - lr_α Δ); the proxy then trains E - K more steps under the
new α. The run exports the learned mixture (``mixture.yaml``), its trajectory and a plot.

Stage 2, ``mixture.learner: fixed``: the same loop with a constant α (read from a stage-1 export, given
inline, or ``uniform`` / ``natural``) trains the target model, which may be larger than the proxy.

Both stages evaluate per-domain validation loss and perplexity every ``eval.every_n_steps`` steps and at
the end, print the table and save it as JSON and CSV in ``output_dir``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from tandem_components import __version__
from tandem_components.atomic import atomic_write_text
from tandem_components.checkpoint import save_model_weights
from tandem_components.distributed import is_main_process, rank_and_world_size
from tandem_components.domain_loss import model_domain_losses
from tandem_components.errors import TandemError, exit_on_user_error
from tandem_components.estimators import LEARNERS, FixedEstimator, TandemEstimator
from tandem_components.evaluation import evaluate_per_domain
from tandem_components.export import write_mixture_export
from tandem_components.loader import PerDomainSampler, WeightedDomainLoader, eval_windows
from tandem_components.mixture import MixtureState
from tandem_components.mixture_config import resolve_initial_weights, resolve_target_weights
from tandem_components.plots import plot_mixture_trajectory
from tandem_components.shards import ShardedCorpus
from tandem_components.torchtune_api import config, get_cosine_schedule_with_warmup, get_logger, set_seed
from tandem_components.twins import build_twins

log = get_logger("INFO")


class PretrainRecipe:
    """Stage 1 (learn α with TANDEM) or stage 2 (train on a fixed α) on a sharded multi-domain corpus."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.device = torch.device(cfg.get("device", "cpu"))
        self.dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}.get(cfg.get("dtype", "fp32"))
        if self.dtype is None:
            raise TandemError(f"dtype: expected 'fp32' or 'bf16', got {cfg.get('dtype')!r}")
        self.seed = int(cfg.seed)
        self.max_steps = int(cfg.max_steps)
        self.output_dir = Path(cfg.output_dir)
        self.rank, self.world_size = rank_and_world_size()

        mix = cfg.mixture
        if mix.learner not in LEARNERS:
            raise TandemError(f"mixture.learner: expected one of {sorted(LEARNERS)}, got {mix.learner!r}")
        self.learner = mix.learner
        self.episode_len = int(mix.get("episode_len", 1))  # E
        self.probe_steps = int(mix.get("probe_steps", 1))  # K
        if self.episode_len < 1 or self.probe_steps < 1:
            raise TandemError("mixture.episode_len and mixture.probe_steps: expected integers >= 1")
        if self.probe_steps > self.episode_len:
            raise TandemError(
                f"mixture.probe_steps: K={self.probe_steps} must not exceed episode_len E={self.episode_len}"
            )
        self.batch_size = int(cfg.data.batch_size)
        self.seq_len = int(cfg.data.seq_len)
        if self.seq_len > int(cfg.model.max_seq_len):
            raise TandemError(f"data.seq_len: {self.seq_len} exceeds model.max_seq_len={cfg.model.max_seq_len}")
        self.clip_grad_norm = cfg.get("clip_grad_norm", None)
        self.log_every = int(cfg.get("log_every_n_steps", 10))

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        cfg = self.cfg
        set_seed(self.seed)
        self.corpus = ShardedCorpus.open(cfg.data.shards)
        self.domains = self.corpus.domains
        if int(cfg.model.vocab_size) < self.corpus.vocab_size:
            raise TandemError(
                f"model.vocab_size: {cfg.model.vocab_size} is smaller than the tokenizer's "
                f"{self.corpus.vocab_size} (shards in {cfg.data.shards})"
            )
        train_tokens = [self.corpus.tokens(d, "train") for d in self.domains]
        val_tokens = [self.corpus.tokens(d, "val") for d in self.domains]
        natural = [self.corpus.num_tokens(d, "train") for d in self.domains]

        self.mixture = self._setup_mixture(natural)
        self._setup_models()
        self.train_loader = WeightedDomainLoader(
            train_tokens, self.mixture.weights, self.batch_size, self.seq_len,
            seed=self.seed, rank=self.rank, world_size=self.world_size,
        )
        self.val_loader = None
        if self.estimator.uses_validation_batches:
            target = resolve_target_weights(self.cfg.mixture.get("target_weights"), self.domains)
            self.val_loader = WeightedDomainLoader(
                val_tokens, target, int(cfg.mixture.get("val_batch_size", self.batch_size)), self.seq_len,
                seed=self.seed + 1, rank=self.rank, world_size=self.world_size,
            )
        self.probe_sampler = PerDomainSampler(
            train_tokens, int(cfg.mixture.get("probe_seqs_per_domain", 8)), self.seq_len,
            seed=self.seed + 2, rank=self.rank,
        )
        self.eval_batches = eval_windows(val_tokens, self.seq_len, int(cfg.eval.windows_per_domain))
        self.metric_logger = config.instantiate(cfg.metric_logger) if is_main_process() else None
        if self.metric_logger is not None:
            self.metric_logger.log_config(cfg)

    def _setup_mixture(self, natural_tokens: list[int]) -> MixtureState:
        mix = self.cfg.mixture
        initial = resolve_initial_weights(mix, self.domains, natural_tokens)
        return MixtureState(
            self.domains, initial=initial, lr=float(mix.get("lr", 1.0)),
            update=mix.get("update", "projected_gradient"), min_weight=float(mix.get("min_weight", 0.0)),
        )

    def _setup_models(self) -> None:
        cfg = self.cfg
        lr = float(cfg.optimizer.lr)

        def build_model() -> torch.nn.Module:
            return config.instantiate(cfg.model).to(device=self.device, dtype=self.dtype)

        def optimizer_factory(scale: float):
            return lambda params: config.instantiate(cfg.optimizer, params, lr=lr * scale)

        if self.learner == "tandem":
            reference_scale = float(cfg.mixture.get("reference_lr_scale", 1.0))  # lr_w / lr_u
            self.twins = build_twins(build_model, optimizer_factory(1.0), optimizer_factory(reference_scale))
            self.model, self.optimizer = self.twins.proxy, self.twins.proxy_optimizer
            self.estimator = TandemEstimator(
                self.twins, len(self.domains), gamma=float(cfg.mixture.get("gamma", 1.0)),
                max_grad_norm=self.clip_grad_norm,
            )
            self.reference_lr_scale = reference_scale
        else:
            self.twins = None
            self.model = build_model()
            self.optimizer = optimizer_factory(1.0)(self.model.parameters())
            self.estimator = FixedEstimator(len(self.domains))
        sched = cfg.get("lr_scheduler", {})
        self.lr_scheduler = get_cosine_schedule_with_warmup(
            self.optimizer, num_warmup_steps=int(sched.get("warmup_steps", 0)), num_training_steps=self.max_steps
        )
        n_params = sum(p.numel() for p in self.model.parameters())
        log.info(f"model: {n_params / 1e6:.2f}M parameters; learner: {self.learner}; domains: {self.domains}")

    # ------------------------------------------------------------------ train
    def _proxy_step(self, batch) -> float:
        losses = model_domain_losses(self.model, batch, len(self.domains))
        losses.mean.backward()
        if self.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(self.clip_grad_norm))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.lr_scheduler.step()
        if self.twins is not None:  # lr_w follows the proxy's schedule: lr_w = scale * lr_u
            lr_u = self.optimizer.param_groups[0]["lr"]
            for group in self.twins.reference_optimizer.param_groups:
                group["lr"] = lr_u * self.reference_lr_scale
        return float(losses.mean.detach())

    def _update_mixture(self, step: int) -> dict[str, float]:
        """Δ on a paired probe batch, then one α step; the loader follows from the next batch on."""
        probe = self.probe_sampler.sample().to(self.device)
        distance = self.twins.parameter_distance() if self.twins is not None else 0.0
        delta = self.estimator.delta(probe)
        alpha = self.mixture.step(delta)
        self.train_loader.set_weights(alpha)
        row = {
            "update": self.mixture.num_updates, "step": step,
            "alpha": dict(zip(self.domains, alpha.tolist())), "delta": dict(zip(self.domains, delta.tolist())),
            "twin_distance": distance,
        }
        if is_main_process():
            with open(self.trajectory_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            log.info(
                f"step {step} update {row['update']}: α = "
                + " ".join(f"{d}={a:.3f}" for d, a in row["alpha"].items())
                + " | Δ = " + " ".join(f"{d}={v:+.4f}" for d, v in row["delta"].items())
            )
        metrics = {f"alpha/{d}": a for d, a in row["alpha"].items()}
        metrics.update({f"delta/{d}": v for d, v in row["delta"].items()})
        metrics["twins/param_distance"] = distance
        return metrics

    def _evaluate(self, step: int):
        result = evaluate_per_domain(
            self.model, self.eval_batches, self.domains, int(self.cfg.eval.batch_size), step=step, device=self.device
        )
        if self.metric_logger is not None:
            self.metric_logger.log_dict(result.metrics(), step=step)
        return result

    def train(self) -> None:
        main = is_main_process()
        if main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        self.trajectory_path = self.output_dir / "mixture_trajectory.jsonl"
        if main:
            self.trajectory_path.write_text("")
        learning = self.estimator.updates_mixture
        eval_every = int(self.cfg.eval.get("every_n_steps", 0) or 0)
        train_iter, val_iter = iter(self.train_loader), iter(self.val_loader) if self.val_loader else None
        tokens_per_step = self.batch_size * self.seq_len * self.world_size
        start = time.perf_counter()
        bar = tqdm(total=self.max_steps, desc=f"{self.learner}", disable=not main, dynamic_ncols=True)
        for step in range(1, self.max_steps + 1):
            k = (step - 1) % self.episode_len  # position inside the episode
            if learning and k == 0:
                self.estimator.begin_episode()  # TANDEM: sync w <- u
            batch = next(train_iter).to(self.device)
            loss = self._proxy_step(batch)
            metrics = {"train/loss": loss, "lr": self.optimizer.param_groups[0]["lr"]}
            if learning and k < self.probe_steps:
                val_batch = next(val_iter).to(self.device) if val_iter is not None else None
                metrics.update(self.estimator.probe_step(batch, val_batch))
            if learning and k == self.probe_steps - 1:
                metrics.update(self._update_mixture(step))
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")
            if self.metric_logger is not None and (step % self.log_every == 0 or step == self.max_steps):
                elapsed = time.perf_counter() - start
                metrics["tokens_per_second"] = tokens_per_step * step / max(elapsed, 1e-9)
                self.metric_logger.log_dict(metrics, step=step)
            if eval_every and step % eval_every == 0 and step != self.max_steps:
                result = self._evaluate(step)
                bar.write(f"step {step}: mean val loss {result.mean_loss:.4f}, mean ppl {result.mean_perplexity:.2f}")
        bar.close()
        self.wall_time_s = time.perf_counter() - start
        self.final_eval = self._evaluate(self.max_steps)
        if main:
            self._write_outputs()

    # ---------------------------------------------------------------- outputs
    def _write_outputs(self) -> None:
        out = self.output_dir
        cfg = self.cfg
        hyper = {
            "episode_len": self.episode_len, "probe_steps": self.probe_steps,
            "lr_alpha": self.mixture.lr, "update": self.mixture.update, "min_weight": self.mixture.min_weight,
            "probe_seqs_per_domain": int(cfg.mixture.get("probe_seqs_per_domain", 8)),
            "reference_lr_scale": float(cfg.mixture.get("reference_lr_scale", 1.0)),
            "batch_size": self.batch_size, "seq_len": self.seq_len, "world_size": self.world_size,
            **self.estimator.hyperparameters(),
        }
        provenance = {
            "tandem_version": __version__, "learner": self.learner, "seed": self.seed, "steps": self.max_steps,
            "num_updates": self.mixture.num_updates, "tokenizer_sha256": self.corpus.tokenizer_sha256,
            "corpus_index_sha256": self.corpus.index_sha256, "corpus": str(self.corpus.path),
            "model": OmegaConf.to_container(cfg.model, resolve=True), "hyperparameters": hyper,
            "weights_from": cfg.mixture.get("weights_from"),
        }
        export = write_mixture_export(
            out / "mixture.yaml", self.domains, self.mixture.last().tolist(), self.mixture.average().tolist(),
            method=self.learner, provenance=provenance,
        )
        history = self.mixture.history
        steps = [0] + [row["step"] for row in self._trajectory_rows()]
        plot = plot_mixture_trajectory(
            steps, [a.tolist() for a in history], self.domains, out / "mixture_trajectory.png",
            title=f"{self.learner}: mixture weights over training",
        )
        json_path, csv_path = self.final_eval.write(out)
        save_model_weights(self.model, out / "model" / "model.safetensors", cfg.model)
        summary = {
            "wall_time_s": self.wall_time_s, "mean_val_loss": self.final_eval.mean_loss,
            "mean_val_ppl": self.final_eval.mean_perplexity, "steps": self.max_steps,
            "final_alpha": dict(zip(self.domains, self.mixture.last().tolist())),
            "average_alpha": dict(zip(self.domains, self.mixture.average().tolist())),
        }
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
        if self.metric_logger is not None:
            self.metric_logger.close()
        print("\nPer-domain validation (final model):\n" + self.final_eval.format_table())
        print("\nMixture (last / trajectory average):")
        for d, a, b in zip(self.domains, self.mixture.last().tolist(), self.mixture.average().tolist()):
            print(f"  {d:<14} {a:.4f}  {b:.4f}")
        print(
            f"\nOutputs in {out}/:\n  mixture export  {export}\n  trajectory      {self.trajectory_path}\n"
            f"  plot            {plot}\n  eval table      {json_path}, {csv_path}\n"
            f"  model           {out / 'model' / 'model.safetensors'}\n  wall time       {self.wall_time_s:.1f}s"
        )

    def _trajectory_rows(self) -> list[dict]:
        with open(self.trajectory_path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def cleanup(self) -> None:
        if self.metric_logger is not None:
            self.metric_logger.close()


@exit_on_user_error
@config.parse
def recipe_main(cfg: DictConfig) -> None:
    recipe = PretrainRecipe(cfg)
    recipe.setup()
    recipe.train()
    recipe.cleanup()


if __name__ == "__main__":
    sys.exit(recipe_main())
