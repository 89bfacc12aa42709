"""Data-restricted pretraining: a small, fixed token budget per domain, repeated for many epochs.

    tune run recipes/data_restricted.py --config configs/data_restricted/tiny_stage1.yaml [key=value ...]

The paper's main setting (METHOD.md): ``data.total_token_budget`` tokens are taken from the corpus at
its natural (unequal) proportions, domain m keeping the first budget_m = total * n_m / sum(n) tokens of
its train split. Sampling past a domain's budget repeats it, so under a mixture that gives a small
domain more than its natural share, that domain is seen for many epochs and overfit. The gap between a
domain's train and validation loss (the generalisation gap) is what TANDEM's reference, which also
sees validation data, measures and the proxy does not: it is logged at every evaluation and reported
with the epochs each domain was seen.

Everything else (episodes, twins, Δ, α, stage 1 / stage 2, checkpoints, FSDP2) is the pretraining
recipe's loop, which this recipe extends (recipes/pretrain.py: ``PretrainRecipe``).

Stage 2 trains under the budget and the tokens drawn that stage 1 learned its mixture under: a mixture
learned at another repetition rate does not transfer, so a mismatch with the export's provenance is
refused (``data.allow_budget_mismatch=true`` overrides).

Outputs, in addition to the pretraining recipe's: ``generalization.{json,csv}`` (per domain: budget,
epochs seen, train loss, validation loss, gap) and the same numbers in ``summary.json``.
"""

from __future__ import annotations

import csv
import io
import json
import sys

from omegaconf import DictConfig

from tandem_components.atomic import atomic_write_text
from tandem_components.config_validation import DATA_RESTRICTED_SCHEMA, validate_pretrain_config
from tandem_components.data import eval_windows
from tandem_components.distributed import launched_world_size
from tandem_components.errors import TandemError, exit_on_user_error
from tandem_components.mixture import read_mixture_export
from tandem_components.torchtune_api import config
from tandem_components.training import evaluate_per_domain

if __package__:  # the recipe this one extends sits beside it, here and in a copy (`tandem cp`)
    from .pretrain import PretrainRecipe
else:  # a copy run from its own folder: `tune run data_restricted.py ...`, `python data_restricted.py ...`
    from pretrain import PretrainRecipe


def natural_budgets(domain_tokens: list[int], total: int, min_tokens: int) -> list[int]:
    """Split ``total`` tokens over domains in proportion to their sizes (floor), each >= ``min_tokens``."""
    available = sum(domain_tokens)
    if total > available:
        raise TandemError(f"data.total_token_budget: {total} exceeds the corpus's {available} train tokens")
    budgets = [total * n // available for n in domain_tokens]
    small = [i for i, b in enumerate(budgets) if b < min_tokens]
    if small:
        raise TandemError(
            f"data.total_token_budget: {total} leaves domain #{small[0]} only {budgets[small[0]]} tokens; "
            f"each needs at least seq_len + 1 = {min_tokens}"
        )
    return budgets


def check_same_budget(export_path: str, token_budget: list[int], run_tokens: int) -> None:
    """Refuse a mixture learned under another per-domain budget or another number of tokens drawn."""
    _, doc = read_mixture_export(export_path)
    provenance = doc.get("provenance") or {}
    learned = {"token_budget": provenance.get("token_budget"), "run_tokens": provenance.get("run_tokens")}
    here = {"token_budget": list(token_budget), "run_tokens": int(run_tokens)}
    for key, value in learned.items():
        if value != here[key]:
            raise TandemError(
                f"mixture.weights_from: {export_path} was learned with {key} {value}, this run has {here[key]} "
                "(same data.total_token_budget and max_steps x batch_size x seq_len, or data.allow_budget_mismatch=true)"
            )


class DataRestrictedRecipe(PretrainRecipe):
    """``PretrainRecipe`` on token-budgeted domains, reporting epochs and the generalisation gap."""

    def _setup_data(self) -> None:
        super()._setup_data()
        total = int(self.cfg.data.total_token_budget)
        self.token_budget = natural_budgets(self.natural_tokens, total, self.seq_len + 1)
        self.natural_tokens = list(self.token_budget)  # "natural" weights = the budget's proportions
        # fixed windows of the data actually trained on, for the train side of the gap
        budgeted = [tokens[:budget] for tokens, budget in zip(self.train_tokens, self.token_budget)]
        self.train_eval_batches = eval_windows(budgeted, self.seq_len, int(self.cfg.eval.windows_per_domain))

    def _setup_mixture(self) -> None:
        super()._setup_mixture()
        source = self.cfg.mixture.get("weights_from")
        if source and not self.cfg.data.get("allow_budget_mismatch", False):
            check_same_budget(source, self.token_budget, self.run_tokens)

    def _evaluate(self, step: int):
        result = super()._evaluate(step)  # validation loss per domain (held out)
        train = evaluate_per_domain(
            self.model, self.train_eval_batches, self.domains, int(self.cfg.eval.batch_size), step=step,
            device=self.device, forward=self.forward,
        )
        epochs = self.train_loader.epochs_seen().tolist()  # global over ranks
        self.generalization = [
            {
                "domain": d, "budget_tokens": int(self.token_budget[i]), "epochs": epochs[i],
                "train_loss": train.per_domain[d].loss, "val_loss": result.per_domain[d].loss,
                "gap": result.per_domain[d].loss - train.per_domain[d].loss,
            }
            for i, d in enumerate(self.domains)
        ]
        if self.metric_logger is not None:
            metrics = {f"epochs/{r['domain']}": r["epochs"] for r in self.generalization}
            metrics.update({f"gap/{r['domain']}": r["gap"] for r in self.generalization})
            metrics.update({f"train_eval/{r['domain']}/loss": r["train_loss"] for r in self.generalization})
            self.metric_logger.log_dict(metrics, step=step)
        return result

    def _summary(self) -> dict:
        return {**super()._summary(), "generalization": self.generalization}

    def _write_outputs(self) -> None:
        super()._write_outputs()
        out = self.output_dir
        atomic_write_text(out / "generalization.json", json.dumps(self.generalization, indent=2) + "\n")
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(self.generalization[0]))
        writer.writeheader()
        writer.writerows(self.generalization)
        atomic_write_text(out / "generalization.csv", buf.getvalue())
        lines = [
            f"{'domain':<14} {'budget':>9} {'epochs':>7} {'train loss':>10} {'val loss':>9} {'gap':>7}",
            "-" * 61,
        ]
        for r in self.generalization:
            lines.append(
                f"{r['domain']:<14} {r['budget_tokens']:>9,} {r['epochs']:>7.2f} {r['train_loss']:>10.4f} "
                f"{r['val_loss']:>9.4f} {r['gap']:>+7.4f}"
            )
        print("\nData-restricted: epochs seen and generalisation gap (val - train loss):\n" + "\n".join(lines))
        print(f"  table           {out / 'generalization.json'}, {out / 'generalization.csv'}")


@exit_on_user_error
@config.parse
def recipe_main(cfg: DictConfig) -> None:
    validate_pretrain_config(cfg, world_size=launched_world_size(), schema=DATA_RESTRICTED_SCHEMA)
    recipe = DataRestrictedRecipe(cfg)
    recipe.setup()
    recipe.train()
    recipe.cleanup()


if __name__ == "__main__":
    sys.exit(recipe_main())
