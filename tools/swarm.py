"""The swarm: a RegMix-style mixture search (Liu et al. 2024), end to end [project].

    python tools/swarm.py --recipe data_restricted --config configs/data_restricted/tiny_stage2.yaml \
        --n 32 --out outputs/swarm [--seed 0] [swarm.<option>=<value> ...] [recipe key=value ...]

Draws ``--n`` mixtures around a prior (``tandem_components/mixture/swarm.py``: Dirichlet, epoch cap), trains
one proxy run on each with the recipe's fixed-mixture loop (a stage config; the ``key=value`` overrides are
the recipe's, as for ``tune run``)::

    tune run recipes/<recipe>.py --config <config> <overrides> [max_steps=<swarm.max_steps>]
        mixture.learner=fixed mixture.weights_from=<out>/mixtures/run<i>.yaml mixture.use=last
        seed=<seed> output_dir=<out>/runs/<i>

reads each run's **val** objective (``eval.json``, over the whole val split: the target-weighted mean loss
when the corpus has target domains or ``mixture.target_weights`` names some, as ``score: target`` reads it,
else the mean over domains of the per-domain loss), fits the regression and exports its predicted optimum.
Every proxy run has the same seed (model initialisation and sampling order), so runs differ only by their
mixture. ``swarm.<option>``:
``concentration``, ``prior_temperature``, ``epoch_cap``, ``top_k``, ``candidates``, ``folds``, ``max_steps``
(the library lists them, with their defaults and why).

Writes to ``<out>/`` (atomically): ``mixture.yaml`` (the export stage 2 reads, ``method: swarm``, the search's
settings, the regression chosen and both models' held-out rank correlations in its provenance),
``swarm_runs.json`` (every mixture, its score, its held-out predictions), ``summary.json`` (``wall_time_s``:
the proxy runs' training time summed, the cost a comparison reports) and ``predicted_vs_measured.png``;
beside them ``mixtures/``, ``runs/`` (each proxy's outputs; its weights are deleted, nothing reads them) and
``logs/``. A run whose outputs exist, made from the same mixture file, resolved config and code, is not
rerun: an interrupted swarm resumes, and a larger ``--n`` with the same seed reuses the first runs (the
draws are prefix-stable). Paths are relative to the repository root, as for the harness.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Sequence

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from tqdm import tqdm

REPO_ROOT = Path(__file__).resolve().parents[1]
for path in (REPO_ROOT, REPO_ROOT / "benchmarks"):  # `python tools/swarm.py` from anywhere
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import compare_mixtures as cm  # noqa: E402  the harness's run helpers: command, fingerprint, resume, subprocess
from tandem_components.atomic import atomic_write_text, save_figure  # noqa: E402
from tandem_components.errors import EXIT_USER_ERROR, TandemError  # noqa: E402
from tandem_components.mixture import epoch_cap_bounds, read_mixture_export, write_mixture_export  # noqa: E402
from tandem_components.mixture.swarm import (  # noqa: E402
    check_options, draw_mixtures, fit_swarm, predicted_optimum, swarm_prior,
)

#: what a proxy run's export carries over to the swarm's (the data it was learned on, the proxy model)
CARRIED = ("tandem_version", "tokenizer_sha256", "corpus_index_sha256", "corpus", "model", "token_budget", "run_tokens")


def parse_args(argv: Sequence[str] | None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", required=True, choices=cm.SWARM_RECIPES, help="recipes/<recipe>.py")
    parser.add_argument("--config", required=True, help="a fixed-mixture stage config of the recipe")
    parser.add_argument("--n", type=int, default=check_options({})["n"], help="proxy runs (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="draws, candidates and every proxy run's seed")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--nproc-per-node", type=int, default=1, help="ranks per proxy run (tune run)")
    parser.add_argument("overrides", nargs="*", help="swarm.<option>=<value>, and the recipe's key=value")
    return parser.parse_args(argv)


def split_overrides(overrides: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """(the ``swarm.*`` options, typed as OmegaConf reads them; the recipe's overrides)."""
    cm._check_overrides(list(overrides), "overrides")
    given = [o for o in overrides if o.startswith("swarm.")]
    if any(o.startswith("swarm.n=") for o in given):
        raise TandemError("swarm.n: give the number of runs as --n")
    options = OmegaConf.to_container(OmegaConf.from_dotlist(given), resolve=True).get("swarm", {}) if given else {}
    return options, [o for o in overrides if not o.startswith("swarm.")]


def proxy_overrides(recipe_overrides: Sequence[str], mixture: str | None, seed: int, run_dir: Path) -> list[str]:
    """A proxy run's overrides: the recipe's, then its fixed mixture (None: uniform, for the config check)."""
    source = [f"mixture.weights_from={mixture}", "mixture.use=last"] if mixture else [
        "mixture.weights_from=null", "mixture.weights=uniform"]
    return [*recipe_overrides, "mixture.learner=fixed", *source, f"seed={seed}", f"output_dir={run_dir}"]


def plan_data(recipe: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """The domains and the counts the prior and the cap read: train tokens per domain (the budgets, split at
    natural proportions, in the data-restricted recipe) and the tokens each run draws."""
    from tandem_components.data.shards import ShardedCorpus

    data = cfg["data"]
    corpus = ShardedCorpus.open(data["shards"])
    natural = [corpus.num_tokens(d, "train") for d in corpus.domains]
    budget = None
    if recipe == "data_restricted":
        from recipes.data_restricted import natural_budgets  # the recipe's own split: its check compares it

        budget = natural = natural_budgets(natural, int(data["total_token_budget"]), int(data["seq_len"]) + 1)
    run_tokens = int(cfg["max_steps"]) * int(data["batch_size"]) * int(data["seq_len"])
    return {"domains": corpus.domains, "natural_tokens": natural, "token_budget": budget, "run_tokens": run_tokens}


def objective(evaluation: dict[str, Any]) -> tuple[str, float]:
    """(its name, the value): the target loss when the run scored a target, else the mean per-domain loss."""
    if evaluation.get("target"):
        return "target val loss", float(evaluation["target"]["loss"])
    return "mean val loss over domains", float(evaluation["mean_loss"])


def prepare(args) -> dict[str, Any]:
    """Everything checked and computed before any file is written: options, config, data, the draws."""
    if args.nproc_per_node < 1:
        raise TandemError(f"--nproc-per-node: expected an integer >= 1, got {args.nproc_per_node}")
    raw_options, recipe_overrides = split_overrides(args.overrides)
    # the objective is the whole val split, as the harness's val tables read it (after the user's overrides,
    # as there): the recipes' evaluation samples 24 windows per domain (1,536 tokens at seq_len 64; dialogue's
    # val holds 7,168), and on dialogue's sample the natural mixture sat 0.16 nats below every one of 32 proxies
    # whose retrained optimum then tied it on test (RESULTS 8c-2)
    recipe_overrides = [*recipe_overrides, cm.val_eval_all(args.recipe)]
    opts = check_options({**raw_options, "n": args.n})
    config = cm._repo_path(args.config)
    if not config.is_file():
        raise TandemError(f"--config: {args.config} not found (paths are relative to the repo root)")
    if opts["max_steps"] is not None:
        recipe_overrides.append(f"max_steps={opts['max_steps']}")
    out = Path(args.out).resolve()
    try:
        cfg = cm.apply_overrides(OmegaConf.load(config), proxy_overrides(recipe_overrides, None, args.seed, out / "runs" / "000"))
    except (OmegaConfBaseException, ValueError) as e:
        raise TandemError(f"{config}: not a readable config ({type(e).__name__}: {e})") from None
    from tandem_components.config_validation import VALIDATORS

    VALIDATORS[args.recipe](OmegaConf.create(cfg), world_size=args.nproc_per_node)  # the proxies' config, once
    plan = plan_data(args.recipe, cfg)
    prior = swarm_prior(plan["natural_tokens"], opts["prior_temperature"])
    cap = None if opts["epoch_cap"] is None else epoch_cap_bounds(
        plan["natural_tokens"], opts["epoch_cap"], plan["run_tokens"], key="swarm.epoch_cap").numpy()
    draws = draw_mixtures(prior, opts["n"], opts["concentration"], args.seed, cap)
    return {"opts": opts, "config": config, "out": out, "recipe_overrides": recipe_overrides, "plan": plan,
            "prior": prior, "cap": cap, "draws": draws, "steps": int(cfg["max_steps"])}


def run_swarm(args, setup: dict[str, Any]) -> list[dict[str, Any]]:
    """Each proxy run, in order, skipped when finished; returns per run its mixture, score and wall times."""
    out, plan, domains = setup["out"], setup["plan"], setup["plan"]["domains"]
    code = cm.code_version_sha256()
    rows = []
    bar = tqdm(total=len(setup["draws"]), desc="swarm", unit="run", dynamic_ncols=True, file=sys.stdout, disable=None)
    for i, weights in enumerate(setup["draws"]):
        source = out / "mixtures" / f"run{i:03d}.yaml"
        write_mixture_export(source, domains, weights.tolist(), weights.tolist(), method="swarm-draw", provenance={
            "swarm_run": i, "seed": args.seed, "token_budget": plan["token_budget"], "run_tokens": plan["run_tokens"]})
        run_dir = out / "runs" / f"{i:03d}"
        run = {"stage": 1, "method": "swarm", "name": f"swarm-run{i:03d}", "seed": args.seed, "dir": run_dir,
               "config": str(setup["config"]), "weights_from": source,
               "overrides": proxy_overrides(setup["recipe_overrides"], str(source), args.seed, run_dir)}
        command = cm.run_command(args.recipe, str(setup["config"]), run["overrides"], args.nproc_per_node)
        fingerprint = cm._fingerprint(run, command, code)
        status = "skipped" if cm.is_finished(run, fingerprint) else "ran"
        if status == "ran":
            run["seconds"] = cm.execute(run, command, out / "logs")
            shutil.rmtree(run_dir / "model", ignore_errors=True)  # a proxy's weights: nothing reads them
            cm.mark_finished(run, fingerprint)
        marker = json.loads((run_dir / cm.MARKER).read_text(encoding="utf-8"))
        name, score = objective(json.loads((run_dir / "eval.json").read_text(encoding="utf-8")))
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
        rows.append({"run": i, "dir": str(run_dir), "weights": dict(zip(domains, weights.tolist())), "score": score,
                     "objective": name, "wall_time_s": summary["wall_time_s"], "process_seconds": marker["seconds"],
                     "status": status})
        bar.write(f"[{i + 1}/{len(setup['draws'])}] run {i:03d}: "
                  + (f"done in {marker['seconds']:.1f}s" if status == "ran" else "skipped (finished)")
                  + f", {name} {score:.4f}")
        bar.update(1)
    bar.close()
    return rows


def plot_predicted_vs_measured(rows: Sequence[dict], fit, path: Path) -> Path:
    """Each model's held-out (out-of-fold) prediction against the measured score, one point per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [r["score"] for r in rows]
    fig, ax = plt.subplots(figsize=(5, 5), dpi=110)
    for model, marker in (("ridge", "o"), ("gbm", "^")):
        rho = fit.spearman[model]
        label = f"{model}{' (chosen)' if model == fit.model else ''}: Spearman {'—' if rho is None else f'{rho:.2f}'}"
        ax.scatter(measured, fit.held_out[model], marker=marker, alpha=0.7, label=label)
    low, high = min(measured), max(measured)
    ax.plot([low, high], [low, high], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel(f"measured {rows[0]['objective']}")
    ax.set_ylabel("predicted, held out (k-fold)")
    ax.set_title("swarm: the regression on runs it did not see")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def write_outputs(args, setup: dict[str, Any], rows: list[dict]) -> dict[str, Path]:
    """Fit, find the predicted optimum, write the export, the runs, the summary and the plot."""
    opts, out, domains = setup["opts"], setup["out"], setup["plan"]["domains"]
    fit = fit_swarm(setup["draws"], [r["score"] for r in rows], folds=opts["folds"], seed=args.seed)
    optimum, predicted = predicted_optimum(fit, setup["prior"], opts["concentration"], args.seed, setup["cap"],
                                           candidates=opts["candidates"], top_k=opts["top_k"])
    for r, *held in zip(rows, *(fit.held_out[m] for m in ("ridge", "gbm"))):
        r["held_out"] = dict(zip(("ridge", "gbm"), held))
    wall = sum(r["wall_time_s"] for r in rows)
    _, first = read_mixture_export(Path(rows[0]["dir"]) / "mixture.yaml", use="last")
    settings = {k: opts[k] for k in ("concentration", "prior_temperature", "epoch_cap", "top_k", "candidates", "folds")}
    provenance = {
        **{k: (first.get("provenance") or {}).get(k) for k in CARRIED},
        "learner": "swarm", "seed": args.seed, "steps": setup["steps"], "num_runs": len(rows),
        "hyperparameters": {"n": len(rows), **settings, "prior": dict(zip(domains, setup["prior"].tolist())),
                            "max_weights": None if setup["cap"] is None else dict(zip(domains, setup["cap"].tolist())),
                            "recipe": args.recipe, "config": str(setup["config"]), "overrides": setup["recipe_overrides"]},
        "objective": rows[0]["objective"], "regression": fit.model, "spearman_held_out": fit.spearman,
        "predicted_score": predicted, "wall_time_s": wall,
    }
    best = min(rows, key=lambda r: r["score"])
    paths = {name: out / name for name in ("mixture.yaml", "swarm_runs.json", "predicted_vs_measured.png", "summary.json")}
    write_mixture_export(paths["mixture.yaml"], domains, optimum.tolist(), optimum.tolist(), method="swarm",
                         provenance=provenance)
    atomic_write_text(paths["swarm_runs.json"], json.dumps({"objective": rows[0]["objective"], "domains": domains,
                                                            "runs": rows}, indent=2) + "\n")
    plot_predicted_vs_measured(rows, fit, paths["predicted_vs_measured.png"])
    summary = {"method": "swarm", "n": len(rows), "seed": args.seed, "objective": rows[0]["objective"],
               "model": fit.model, "spearman": fit.spearman, "optimum": dict(zip(domains, optimum.tolist())),
               "predicted_score": predicted, "best_run": {"run": best["run"], "score": best["score"]},
               "wall_time_s": wall, "process_seconds": sum(r["process_seconds"] for r in rows), **settings}
    atomic_write_text(paths["summary.json"], json.dumps(summary, indent=2) + "\n")  # last: the run is complete
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    here = os.getcwd()
    args.out = str(Path(args.out).resolve())  # before moving to the repo root, where the recipes run
    os.chdir(REPO_ROOT)
    try:
        setup = prepare(args)
        rows = run_swarm(args, setup)
        paths = write_outputs(args, setup, rows)
    except (TandemError, cm.HarnessError) as e:
        print(f"swarm: error: {e}", file=sys.stderr, flush=True)
        return getattr(e, "exit_code", EXIT_USER_ERROR)
    finally:
        os.chdir(here)
    summary = json.loads(paths["summary.json"].read_text(encoding="utf-8"))
    rho = {m: "—" if r is None else f"{r:.3f}" for m, r in summary["spearman"].items()}
    print(f"\nswarm: {summary['n']} runs, {summary['model']} regression (held-out Spearman: ridge "
          f"{rho['ridge']}, gbm {rho['gbm']}); predicted {summary['objective']} "
          f"{summary['predicted_score']:.4f} at\n  " + " ".join(f"{d}={w:.3f}" for d, w in summary["optimum"].items())
          + f"\nbest measured run: {summary['best_run']['run']} ({summary['best_run']['score']:.4f}); proxy training "
          f"time {summary['wall_time_s']:.1f}s\nOutputs in {setup['out']}/:\n"
          + "\n".join(f"  {k:<26} {p}" for k, p in paths.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
