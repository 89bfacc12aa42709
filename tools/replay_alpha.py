#!/usr/bin/env python3
"""Replay finished stage-1 runs' Δs through other α-step settings: what lr_α, momentum or the export's tail
would have made of the same measurements, in seconds and without training.

    python tools/replay_alpha.py outputs/compare/stage1/tandem/seed0 outputs/compare/stage1/tandem/seed1 ... \
        [--lr 0.25 0.5] [--momentum 0.9] [--average-tail 0.75] [--epoch-cap 8 none]

Each run directory is one stage-1 run (``mixture_trajectory.jsonl``, ``mixture.yaml``, ``torchtune_config.yaml``).
For every combination of the options (each defaults to the runs' own value) the runs' logged Δ (already
scaled at measurement) are fed, update by update, to a ``MixtureState`` built as the recipe builds it, and
the table gives the convergence figures of ``mixture/convergence.py`` (worst run), the seed spread of the
exported average over the runs, and the mean exported weights. At the runs' own settings the replay
reproduces their exports exactly (tested), which is what makes the other rows worth reading.

What it cannot tell: Δ depends on α through the proxy's training, and a replay keeps the Δs the real α
produced. It answers "how much of the spread (or the travel) is the step's, at these measurements", not
"what a rerun would score"; a setting it favours is then screened for real, on val.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import torch
import yaml
from omegaconf import OmegaConf

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tandem_components.errors import TandemError  # noqa: E402
from tandem_components.mixture.convergence import convergence, seed_spread  # noqa: E402
from tandem_components.mixture.named import epoch_cap_bounds, epochs_per_weight, resolve_initial_weights  # noqa: E402
from tandem_components.mixture.state import MixtureState  # noqa: E402

RUN_FILES = ("mixture_trajectory.jsonl", "mixture.yaml", "torchtune_config.yaml")


class RecordedRun:
    """One finished stage-1 run: its domains, α_0, settings and the Δ of each update."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        missing = [f for f in RUN_FILES if not (self.dir / f).is_file()]
        if missing:
            raise TandemError(f"{self.dir}: not a finished stage-1 run (missing {missing})")
        export = yaml.safe_load((self.dir / "mixture.yaml").read_text(encoding="utf-8"))
        self.domains = list(export["domains"])
        self.exported = torch.tensor([export["weights"]["average"][d] for d in self.domains], dtype=torch.float64)
        self.provenance = export.get("provenance") or {}
        self.hyper = self.provenance.get("hyperparameters") or {}
        self.cfg = OmegaConf.load(self.dir / "torchtune_config.yaml")
        rows = [json.loads(line) for line in (self.dir / "mixture_trajectory.jsonl").read_text().splitlines() if line]
        if not rows:
            raise TandemError(f"{self.dir}/mixture_trajectory.jsonl: no update recorded (a fixed-mixture run?)")
        self.steps = [int(r["step"]) for r in rows]
        self.deltas = [torch.tensor([r["delta"][d] for d in self.domains], dtype=torch.float64) for r in rows]
        self.max_steps = int(self.provenance.get("steps") or self.cfg.max_steps)
        self.run_tokens = int(self.provenance.get("run_tokens") or 0) or None
        self.warmup = int(self.cfg.get("lr_scheduler", {}).get("warmup_steps", 0))
        self.tokens = self._domain_tokens()

    def _domain_tokens(self) -> list[int]:
        """n_m as the recipe counts it: the data-restricted budget, else the shards' train tokens."""
        if self.provenance.get("token_budget"):
            return [int(n) for n in self.provenance["token_budget"]]
        index = json.loads((Path(str(self.provenance.get("corpus") or self.cfg.data.shards)) / "index.json")
                           .read_text(encoding="utf-8"))
        train = {d["name"]: d["splits"]["train"] for d in index["domains"] if "train" in d["splits"]}
        return [int(train[d]["tokens"] if isinstance(train[d], dict) else train[d]) for d in self.domains]

    def replay(self, lr: float, momentum: float, average_tail: float, epoch_cap) -> MixtureState:
        mix = self.cfg.mixture
        if str(mix.get("weights")) == "similarity" or mix.get("weights_from"):
            raise TandemError(f"{self.dir}: α_0 from similarity or a file is not replayed; use a named or explicit α_0")
        caps = None
        price = float(self.hyper.get("repetition_price") or 0.0)
        if price and self.run_tokens is None:
            raise TandemError(f"{self.dir}: provenance.run_tokens missing: cannot price repetition")
        if epoch_cap is not None:
            if self.run_tokens is None:
                raise TandemError(f"{self.dir}: provenance.run_tokens missing: cannot place an epoch cap")
            caps = epoch_cap_bounds(self.tokens, epoch_cap, self.run_tokens)
        state = MixtureState(
            self.domains, initial=resolve_initial_weights(mix, self.domains, self.tokens, run_tokens=self.run_tokens),
            lr=lr, update=mix.get("update", "projected_gradient"), min_weight=float(mix.get("min_weight", 0.0)),
            smoothing=float(mix.get("smoothing", 0.0)), momentum=momentum, average_tail=average_tail, max_weights=caps,
            # the run's own repetition price: the trajectory records Δ as measured, before it
            repetition_price=price, epochs_per_weight=epochs_per_weight(self.tokens, self.run_tokens) if price else None,
        )
        for step, delta in zip(self.steps, self.deltas):
            state.step(delta, at_step=step)
        return state


def replay_table(runs: list[RecordedRun], settings: list[dict]) -> list[dict]:
    """One row per setting: its values, worst-run convergence, seed spread, mean exported weights."""
    rows = []
    for setting in settings:
        states = [run.replay(**setting) for run in runs]
        figures = [convergence(s.history, s.update_steps, warmup_steps=run.warmup) for s, run in zip(states, runs)]
        averages = [s.average(end_step=run.max_steps) for s, run in zip(states, runs)]
        rows.append({
            **setting,
            "max_move": max(f.max_move for f in figures),
            "path_ratio": max(f.path_ratio for f in figures),
            "seed_spread": seed_spread([a.tolist() for a in averages]),
            "mean_export": torch.stack(averages).mean(0).tolist(),
        })
    return rows


def _cap(value: str):
    return None if value.lower() in ("none", "null") else float(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="stage-1 run directories of one config (e.g. its seeds)")
    parser.add_argument("--lr", type=float, nargs="+", help="lr_α values (default: the runs' own)")
    parser.add_argument("--momentum", type=float, nargs="+", help="momentum values (default: the runs' own)")
    parser.add_argument("--average-tail", type=float, nargs="+", help="export tails (default: the runs' own)")
    parser.add_argument("--epoch-cap", type=_cap, nargs="+", help="epoch caps, 'none' for none (default: the runs' own)")
    args = parser.parse_args(argv)
    try:
        runs = [RecordedRun(d) for d in args.runs]
        if len({tuple(r.domains) for r in runs}) != 1:
            raise TandemError("the runs do not share their domains: replay runs of one config (its seeds)")
        own = runs[0].hyper
        grid = {
            "lr": args.lr or [float(own.get("lr_alpha", runs[0].cfg.mixture.lr))],
            "momentum": args.momentum or [float(own.get("momentum", 0.0))],
            "average_tail": args.average_tail or [float(own.get("average_tail", 1.0))],
            "epoch_cap": args.epoch_cap or [own.get("epoch_cap")],
        }
        settings = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
        rows = replay_table(runs, settings)
    except (OSError, KeyError, TandemError) as e:
        print(f"replay_alpha: error: {e}", file=sys.stderr)
        return 2
    domains = runs[0].domains
    print(f"{len(runs)} runs, {len(runs[0].deltas)} updates each; mean exported weights in the order {domains}")
    print("| lr_α | momentum | tail | epoch cap | largest move | path ratio | seed spread | mean export |")
    print("|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['lr']:g} | {r['momentum']:g} | {r['average_tail']:g} | {r['epoch_cap']} | {r['max_move']:.4f} | "
              f"{r['path_ratio']:.2f}x | {r['seed_spread']:.3f} | {' '.join(f'{w:.3f}' for w in r['mean_export'])} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
