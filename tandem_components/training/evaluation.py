"""Per-domain evaluation: loss and perplexity of every domain, their mean, and the table.

The paper reports per-domain validation perplexity and its average over domains; both are here, with
the mean loss. Every result names its split: ``val`` (progress
evaluations, the split methods may use) or ``test`` (the final, reported figure no method sees). Evaluation windows are fixed (``data.loader.eval_windows``) so numbers are comparable across
steps, runs and mixtures.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from tandem_components.atomic import atomic_write_text
from tandem_components.distributed.collectives import all_reduce_sum, rank_and_world_size
from tandem_components.training.domain_loss import DomainLosses, model_domain_losses


@dataclass
class DomainEval:
    loss: float  # nats per token
    tokens: int

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss)


@dataclass
class EvalResult:
    step: int
    per_domain: dict[str, DomainEval]
    split: str = "val"  # which split the windows came from: every label says it
    #: {domain: weight} of what the user cares about (``mixture.target_weights``; a corpus's target domains):
    #: scored first as the target loss (their weighted mean loss) and its perplexity. None: no target.
    target: dict[str, float] | None = None

    @property
    def target_loss(self) -> float | None:
        if not self.target:
            return None
        return sum(w * self.per_domain[d].loss for d, w in self.target.items() if w) / sum(self.target.values())

    @property
    def target_perplexity(self) -> float | None:
        loss = self.target_loss
        return None if loss is None else math.exp(loss)

    @property
    def mean_loss(self) -> float:
        return sum(e.loss for e in self.per_domain.values()) / len(self.per_domain)

    @property
    def mean_perplexity(self) -> float:
        """Average of the per-domain perplexities (the paper's "avg ppl")."""
        return sum(e.perplexity for e in self.per_domain.values()) / len(self.per_domain)

    def metrics(self, prefix: str = "eval") -> dict[str, float]:
        out = {f"{prefix}/{d}/loss": e.loss for d, e in self.per_domain.items()}
        out.update({f"{prefix}/{d}/ppl": e.perplexity for d, e in self.per_domain.items()})
        out[f"{prefix}/mean_loss"] = self.mean_loss
        out[f"{prefix}/mean_ppl"] = self.mean_perplexity
        if self.target:
            out[f"{prefix}/target_loss"] = self.target_loss
            out[f"{prefix}/target_ppl"] = self.target_perplexity
        return out

    def rows(self) -> list[dict]:
        rows = [
            {"domain": d, "loss": e.loss, "perplexity": e.perplexity, "tokens": e.tokens}
            for d, e in self.per_domain.items()
        ]
        rows.append({"domain": "MEAN", "loss": self.mean_loss, "perplexity": self.mean_perplexity, "tokens": ""})
        return rows

    def format_table(self) -> str:
        s = self.split
        lines = []
        if self.target:  # what the user asked for, before the per-domain table
            named = ", ".join(f"{d} {w:g}" for d, w in self.target.items() if w)
            lines += [f"TARGET ({named}): {s} loss {self.target_loss:.4f}, {s} ppl {self.target_perplexity:.2f}", ""]
        lines += [f"{'domain':<14} {s + ' loss':>9} {s + ' ppl':>10} {'tokens':>9}", "-" * 45]
        for r in self.rows():
            if r["domain"] == "MEAN":
                lines.append("-" * 45)
            lines.append(f"{r['domain']:<14} {r['loss']:>9.4f} {r['perplexity']:>10.2f} {str(r['tokens']):>9}")
        return "\n".join(lines)

    def write(self, out_dir: str | Path, stem: str = "eval") -> tuple[Path, Path]:
        """Write ``<stem>.json`` and ``<stem>.csv`` atomically."""
        out_dir = Path(out_dir)
        doc = {"step": self.step, "split": self.split, "mean_loss": self.mean_loss, "mean_perplexity": self.mean_perplexity, "domains": {
            d: {"loss": e.loss, "perplexity": e.perplexity, "tokens": e.tokens} for d, e in self.per_domain.items()
        }}
        if self.target:
            doc["target"] = {"weights": dict(self.target), "loss": self.target_loss, "perplexity": self.target_perplexity}
        json_path, csv_path = out_dir / f"{stem}.json", out_dir / f"{stem}.csv"
        atomic_write_text(json_path, json.dumps(doc, indent=2) + "\n")
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=["domain", "loss", "perplexity", "tokens"])
        writer.writeheader()
        writer.writerows(self.rows())
        atomic_write_text(csv_path, buf.getvalue())
        return json_path, csv_path


@torch.no_grad()
def evaluate_per_domain(
    model: torch.nn.Module,
    domain_batches: Sequence,
    domains: Sequence[str],
    batch_size: int,
    step: int = 0,
    device: torch.device | str = "cpu",
    forward: Callable[..., DomainLosses] = model_domain_losses,
    split: str = "val",
) -> EvalResult:
    """Loss of ``model`` on each domain's fixed evaluation windows, the work shared by the ranks.

    Args:
        domain_batches: one ``Batch`` per domain holding all of its windows (``data.loader.eval_windows``).
        batch_size: windows per forward pass (on each rank).

    Several ranks: the forward passes (chunks of ``batch_size`` windows over all domains) are dealt out
    round-robin, each rank sums its losses and tokens per domain, and the sums are all-reduced: every
    rank returns the same result, having computed 1/N of it. Under FSDP2 a forward is a collective, so a
    rank with one chunk fewer than the others runs the first chunk once more and discards the result.
    """
    was_training = model.training
    model.eval()
    m = len(domains)
    rank, world_size = rank_and_world_size()
    chunks = [chunk for batch in domain_batches for chunk in batch.chunks(batch_size)]
    mine = chunks[rank::world_size]
    passes = -(-len(chunks) // world_size)  # every rank runs as many forwards as the busiest one
    sums = torch.zeros(m, dtype=torch.float64)
    counts = torch.zeros(m, dtype=torch.float64)
    for i in range(passes):
        losses = forward(model, (mine[i] if i < len(mine) else chunks[0]).to(device), m)
        if i < len(mine):
            sums += losses.sums.cpu()
            counts += losses.counts.cpu()
    model.train(was_training)
    totals = all_reduce_sum(torch.cat([sums, counts]).to(device)).cpu()
    sums, counts = totals[:m], totals[m:]
    per_domain = {d: DomainEval(loss=float(sums[i] / counts[i]), tokens=int(counts[i])) for i, d in enumerate(domains)}
    return EvalResult(step=step, per_domain=per_domain, split=split)
