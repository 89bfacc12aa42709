"""Compare mixture learners end to end: the paper's main table, at any scale.

    python benchmarks/compare_mixtures.py --config benchmarks/configs/compare_tiny.yaml \
        [--out outputs/compare_tiny] [--force] [key=value ...]

For every learner of the harness config (``learners:``) and every seed, stage 1 learns a mixture (a
learner is named by its ``mixture.learner``, or is a variant that sets ``mixture.learner`` in its own
overrides, e.g. ``tandem_joint: [mixture.learner=tandem, mixture.reference_step=joint]``):

    tune run recipes/<recipe>.py --config <stage1_config> <common_overrides> <stage1_overrides> <learner's overrides>
        mixture.learner=<name> seed=<s> output_dir=<out>/stage1/<name>/seed<s>

A learner named ``swarm``, or whose overrides set ``mixture.learner=swarm``, is the RegMix-style search
(``tools/swarm.py``): instead of one stage-1 recipe run it runs the driver, whose N proxy runs train on the
stage-2 config with the common and stage-2 overrides, the learner's other overrides and its ``swarm.<key>``
options (``swarm.n=32``, ``swarm.max_steps=...``; ``tandem_components/mixture/swarm.py`` lists them):

    python tools/swarm.py --recipe <recipe> --config <stage2_config> --n <n> --seed <s>
        --out <out>/stage1/<name>/seed<s> <swarm.* options> <common_overrides> <stage2_overrides> <learner's overrides>

Its stage-1 wall time is the sum over its proxy runs. With ``swarm.search_seed=<s>`` (a harness option, not the
driver's) the swarm searches once, at seed s, and every seed's stage 2 retrains that one mixture: RegMix's
protocol (search once, train the large model), and how a regime's ceiling is measured at a third of the cost
of one search per seed. Then stage 2 trains the target model on every learned
mixture (``mixture.learner=fixed mixture.weights_from=<that run's mixture.yaml> mixture.use=<use>``) and on
every fixed baseline (``mixture.weights=<name> mixture.weights_from=null``; ``temperature:0.5`` and
``unimax:4`` name the temperature mixture p ∝ n^0.5 and UniMax with a 4-epoch cap), with the same target
config, budget and seed:

    tune run recipes/<recipe>.py --config <stage2_config> <common_overrides> <stage2_overrides> <mixture keys>
        seed=<s> output_dir=<out>/stage2/<method>/seed<s>

Runs are subprocesses, one at a time, each logged to ``<out>/logs/``. A run whose outputs exist and were
made from the same resolved recipe config (the YAML with every override applied, hashed), the same code
(a hash of every recipes/ and tandem_components/ source file) and, in stage 2, the same mixture file is
skipped, so an interrupted comparison resumes where it stopped and an edited config or code is rerun;
``--force`` redoes everything. A failed run stops the harness with its stderr.

Every figure of the table is per-domain **test** perplexity (``eval_test.json``): no method reads the test
split. ``split=val`` makes it the whole **val** split instead (stage 2 evaluates every val window, or every
val example in SFT): that is the table for choosing a setting (a learner option, a hyperparameter), whose
figures are never reported as results; the chosen setting is then compared on test. ``score=loss`` ranks by
the per-domain loss instead of perplexity (SFT's figure, as in the paper's Table 3); ``score=target`` by the
target perplexity (a corpus with target domains: what the user cares about), the per-domain table beside it.
DoReMi reads no validation data, so no target: its row says so. Each seed sets both
the model initialisation and the data sampling order of its runs.

Writes to ``<out>/`` (atomically): ``results.json`` (every raw number), ``results.md`` (per-domain
held-out score per method, mean ± standard error over seeds; the average and its ratio to uniform's; the
gap between uniform and the best fixed mixture; stage-1 wall time; for SFT the task metric per category;
the learned mixtures), ``mixtures.png`` (the mixtures side by side per domain, as the paper's Figure 5)
and ``scores.png`` (the score per domain and method). Harness overrides use OmegaConf's dotlist syntax (``seeds=[0]``,
``stage1_overrides=[max_steps=50]``) and ``~key`` deletes a key (``~learners.doge``). Another corpus is
one override: ``'common_overrides=[data.shards=<prepared dir>,model.vocab_size=<its vocab>]'``.
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import json
import math
import os
import shlex
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from omegaconf import OmegaConf
from tqdm import tqdm

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # `python benchmarks/compare_mixtures.py` from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from tandem_components.atomic import atomic_write_text, save_figure  # noqa: E402

#: every key of a harness config, with its default (None: required)
DEFAULTS: dict[str, Any] = {
    "recipe": "pretrain",
    "stage1_config": None,
    "stage2_config": None,
    "seeds": [0],
    "learners": None,
    "fixed_baselines": ["uniform", "natural"],
    "common_overrides": [],
    "stage1_overrides": [],
    "stage2_overrides": [],
    "use": "average",
    "output_dir": None,
    "nproc_per_node": 1,
    "split": "test",  # test: the table of results | val: the table for choosing settings
    "score": "perplexity",  # what the table ranks by: per-domain perplexity | loss (nats/token; SFT's figure) | target
    "notes": {},  # method -> one sentence printed under the table (e.g. how a learner deviates from its paper)
}
#: files every finished recipe run leaves in its output_dir (summary.json is written last)
RUN_OUTPUTS = ("mixture.yaml", "eval_test.json", "summary.json")
#: what a finished swarm (tools/swarm.py) leaves in its output dir, and the driver itself
SWARM_OUTPUTS = ("mixture.yaml", "swarm_runs.json", "summary.json")
SWARM_DRIVER = "tools/swarm.py"
#: the harness's swarm option: search once at this seed, retrain its mixture at every seed
SEARCH_SEED = "swarm.search_seed"
#: the folders whose source files make up "the code version" of a run
CODE_DIRS = ("recipes", "tandem_components")
#: CPU time used by other processes during a run, as a fraction of the machine's (wall x cores), above
#: which the run's wall time is reported as measured on shared cores
BUSY_OTHER_CPU = 0.1
#: written by the harness after a run succeeds: the command that made the outputs (the resume check)
MARKER = "compare_run.json"
STDERR_TAIL_CHARS = 4000
UNIFORM = "uniform"
#: the evaluation file of each split a stage-2 run writes (val: the whole val split with VAL_EVAL_ALL)
SPLIT_FILES = {"test": "eval_test.json", "val": "eval.json"}
#: the stage-2 override that makes eval.json cover the whole val split, per recipe (more than any split has)
VAL_EVAL_ALL = "eval.windows_per_domain=1000000000"
VAL_EVAL_ALL_BY_RECIPE = {"sft": "eval.examples_per_category=1000000000"}
#: per category, the task metric of an SFT run (greedy decoding of test prompts), read when present
SFT_TABLE = "sft_eval.json"
# score -> its unit and decimals in the tables. ``target``: the target perplexity (exp of the target_weights-
# weighted mean loss: a corpus's target domains, docs/METHOD.md "Target domains"), per-domain perplexity beside it
SCORES = {"perplexity": ("ppl", 2), "loss": ("nats", 4), "target": ("target ppl", 2)}


class HarnessError(Exception):
    """A bad harness config, or a failed run: printed as one message, exit status 2 (1 for a failed run)."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


class BaselineRejected(HarnessError):
    """The recipe refused a fixed baseline's config (exit 2), e.g. a UniMax cap too small to place the run's
    tokens: the baseline is infeasible in this regime, so the table says so and the comparison goes on."""


# ---------------------------------------------------------------------------------------------- config
def load_config(path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The harness config with ``key=value`` / ``~key`` overrides applied, checked, as plain Python."""
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"--config: {path} not found")
    raw = apply_overrides(OmegaConf.load(path), overrides)
    return check_config(raw, source=str(path))


def apply_overrides(cfg: Any, overrides: Sequence[str]) -> dict[str, Any]:
    """``cfg`` (an OmegaConf config) with ``key=value`` set and ``~key`` deleted, as the ``tune`` CLI does,
    resolved to plain Python."""
    deletions = [o[1:] for o in overrides if o.startswith("~")]
    dotlist = [o for o in overrides if not o.startswith("~")]
    bad = [o for o in dotlist if "=" not in o]
    if bad:
        raise HarnessError(f"overrides: expected key=value or ~key, got {bad}")
    raw = OmegaConf.to_container(OmegaConf.merge(cfg, OmegaConf.from_dotlist(dotlist)), resolve=True)
    for key in deletions:
        *parents, leaf = key.split(".")
        node = raw
        for p in parents:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if not isinstance(node, dict) or leaf not in node:
            raise HarnessError(f"overrides: ~{key}: no such key")
        del node[leaf]
    return raw


def check_config(raw: Any, source: str = "config") -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise HarnessError(f"{source}: expected a mapping of harness keys")
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        raise HarnessError(f"{source}: unknown key(s) {unknown}; known: {sorted(DEFAULTS)}")
    cfg = {k: raw.get(k, v) for k, v in DEFAULTS.items()}
    for key in ("stage1_config", "stage2_config"):
        if not cfg[key]:
            raise HarnessError(f"{source}: {key} is required")
        if not _repo_path(cfg[key]).is_file():
            raise HarnessError(f"{key}: {cfg[key]} not found (paths are relative to the repo root)")
    if not (REPO_ROOT / "recipes" / f"{cfg['recipe']}.py").is_file():
        raise HarnessError(f"recipe: recipes/{cfg['recipe']}.py not found")
    seeds = cfg["seeds"]
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise HarnessError(f"seeds: expected a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise HarnessError(f"seeds: repeated seed in {seeds}")
    learners = cfg["learners"] or {}
    if not isinstance(learners, dict):
        raise HarnessError(f"learners: expected a mapping name -> list of overrides, got {learners!r}")
    learners = {str(k): list(v or []) for k, v in learners.items()}
    for name, extra in learners.items():
        _check_overrides(extra, f"learners.{name}")
        if name == "fixed":
            raise HarnessError("learners: 'fixed' learns nothing; list fixed mixtures in fixed_baselines")
        if is_swarm(name, extra) and cfg["recipe"] not in SWARM_RECIPES:
            raise HarnessError(f"learners.{name}: the swarm runs recipes {list(SWARM_RECIPES)}, not {cfg['recipe']!r}")
    baselines = cfg["fixed_baselines"] or []
    if not isinstance(baselines, list) or not all(isinstance(b, str) for b in baselines):
        raise HarnessError(f"fixed_baselines: expected a list of names (uniform, natural, temperature:τ, unimax:C), "
                           f"got {baselines!r}")
    for name in baselines:
        baseline_overrides(name)
    notes = cfg["notes"] or {}
    if not isinstance(notes, dict) or not all(isinstance(v, str) for v in notes.values()):
        raise HarnessError(f"notes: expected a mapping method -> sentence, got {notes!r}")
    # a note on a method left out (``~learners.doge``) is dropped with it
    cfg["notes"] = {str(k): v for k, v in notes.items() if str(k) in learners or str(k) in baselines}
    if cfg.get("score") == "target" and "doremi" in learners:
        cfg["notes"]["doremi"] = (cfg["notes"].get("doremi", "") + " It reads no validation data, so no target: "
                                  "its mixture ignores what the target is.").strip()
    for name, extra in learners.items():
        options = swarm_options(extra, f"learners.{name}") if is_swarm(name, extra) else {}
        once = search_seed(extra, f"learners.{name}") if is_swarm(name, extra) else None
        if once is not None:
            note = f"one search, at seed {once}, whose mixture every seed's stage 2 retrains (RegMix's protocol)."
            cfg["notes"][name] = f"{cfg['notes'].get(name, '')} {note}".strip()
        if options.get("max_steps") is not None and cfg["recipe"] == "data_restricted":
            budget = [o.split("=", 1)[1] for o in extra if o.startswith("data.total_token_budget=")]
            note = (f"its {options['n']} proxy runs are {options['max_steps']} steps long on a {budget[-1]}-token "
                    "budget (data.allow_budget_mismatch=true in stage 2: the same epochs per domain only if the "
                    "budget is scaled with the steps)." if budget else
                    f"its {options['n']} proxy runs are {options['max_steps']} steps long, so stage 2 trains at "
                    "another repetition rate than they did (data.allow_budget_mismatch=true).")
            cfg["notes"][name] = f"{cfg['notes'].get(name, '')} {note}".strip()
    clash = sorted(set(learners) & set(baselines))
    if clash:
        raise HarnessError(f"fixed_baselines: {clash} also named in learners")
    if not learners and not baselines:
        raise HarnessError(f"{source}: nothing to compare (no learners, no fixed_baselines)")
    for key in ("common_overrides", "stage1_overrides", "stage2_overrides"):
        cfg[key] = list(cfg[key] or [])
        _check_overrides(cfg[key], key)
    nproc = cfg["nproc_per_node"]
    if not isinstance(nproc, int) or isinstance(nproc, bool) or nproc < 1:
        raise HarnessError(f"nproc_per_node: expected an integer >= 1, got {nproc!r}")
    if cfg["split"] not in SPLIT_FILES:
        raise HarnessError(f"split: expected 'test' or 'val', got {cfg['split']!r}")
    if cfg["score"] not in SCORES:
        raise HarnessError(f"score: expected one of {sorted(SCORES)}, got {cfg['score']!r}")
    if cfg["use"] not in ("average", "last"):
        raise HarnessError(f"use: expected 'average' or 'last', got {cfg['use']!r}")
    cfg["learners"], cfg["fixed_baselines"] = learners, list(baselines)
    return cfg


def baseline_overrides(name: str) -> list[str]:
    """The stage-2 mixture keys of a fixed baseline: ``uniform``, ``natural``, ``temperature:<τ>`` (p ∝ n^τ),
    ``unimax:<C>`` (uniform, no domain past C epochs) or ``similarity:<τ>`` (p ∝ exp(−KL(target ‖ m) / τ),
    the target-aware baseline: ``mixture/similarity.py``)."""
    kind, _, value = name.partition(":")
    keys = {"temperature": "mixture.temperature", "unimax": "mixture.max_epochs",
            "similarity": "mixture.similarity_temperature"}
    if kind in ("uniform", "natural") and not value:
        return [f"mixture.weights={kind}", "mixture.weights_from=null"]
    if kind in keys and value:
        try:
            number = float(value)
        except ValueError:
            number = None
        if number is not None and (number > 0 or (kind == "temperature" and number == 0)):
            return [f"mixture.weights={kind}", f"{keys[kind]}={value}", "mixture.weights_from=null"]
    raise HarnessError(
        f"fixed_baselines: {name!r}: expected uniform, natural, temperature:<τ >= 0>, unimax:<C > 0> or "
        "similarity:<τ > 0>"
    )


def _check_overrides(items: Any, key: str) -> None:
    if not isinstance(items, list) or not all(isinstance(o, str) and ("=" in o or o.startswith("~")) for o in items):
        raise HarnessError(f"{key}: expected a list of 'key=value' strings, got {items!r}")


#: the recipes whose domain sizes the swarm reads to draw its mixtures (SFT counts examples: not supported)
SWARM_RECIPES = ("pretrain", "data_restricted")


def is_swarm(name: str, extra: Sequence[str]) -> bool:
    """A learner is the swarm when its overrides say ``mixture.learner=swarm``, or it is named ``swarm`` and
    names no other learner."""
    named = [o.split("=", 1)[1] for o in extra if o.startswith("mixture.learner=")]
    return named[-1] == "swarm" if named else name == "swarm"


def search_seed(extra: Sequence[str], key: str = "learners.swarm") -> int | None:
    """The seed of a swarm that searches once (``swarm.search_seed=<s>``, the harness's own option: every seed's
    stage 2 retrains that one search's mixture), or None: one search per seed."""
    given = [o.split("=", 1)[1] for o in extra if o.startswith(SEARCH_SEED + "=")]
    if not given:
        return None
    value = OmegaConf.from_dotlist([f"v={given[-1]}"]).v
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise HarnessError(f"{key}: {SEARCH_SEED}: expected a seed (an integer >= 0), got {given[-1]!r}")
    return value


def driver_options(extra: Sequence[str]) -> list[str]:
    """A swarm learner's ``swarm.<key>=<value>`` overrides the driver reads (not the harness's ``search_seed``)."""
    return [o for o in extra if o.startswith("swarm.") and not o.startswith(SEARCH_SEED + "=")]


def swarm_options(extra: Sequence[str], key: str = "learners.swarm") -> dict[str, Any]:
    """The ``swarm.<key>=<value>`` overrides of a swarm learner, typed (OmegaConf), checked, defaults filled in
    (the driver's options: ``swarm.search_seed`` is the harness's)."""
    from tandem_components.errors import TandemError
    from tandem_components.mixture.swarm import check_options  # numpy and torch: only for a swarm

    given = driver_options(extra)
    raw = OmegaConf.to_container(OmegaConf.from_dotlist(given), resolve=True).get("swarm", {}) if given else {}
    try:
        return check_options(raw)
    except TandemError as e:
        raise HarnessError(f"{key}: {e}") from None


def swarm_command(recipe: str, run: Mapping[str, Any], nproc_per_node: int = 1) -> list[str]:
    """The driver's command line for a swarm learner's stage-1 run (its recipe overrides last)."""
    options = [o for o in run["swarm"] if not o.startswith("swarm.n=")]
    return [sys.executable, SWARM_DRIVER, "--recipe", recipe, "--config", str(_repo_path(run["config"])),
            "--n", str(run["swarm_n"]), "--seed", str(run["seed"]), "--out", str(run["dir"]),
            "--nproc-per-node", str(nproc_per_node), *options, *run["overrides"]]


def _repo_path(path: str | Path) -> Path:
    path = Path(path)
    return path if path.is_absolute() else REPO_ROOT / path


# ------------------------------------------------------------------------------------------------ runs
def plan_runs(cfg: Mapping[str, Any], out: Path) -> list[dict[str, Any]]:
    """Every recipe run of the comparison, stage 1 first: dicts with stage, method, seed, dir, overrides.

    A stage-2 run of a learned mixture names its stage-1 run in ``weights_from``."""
    runs = []
    # a swarm that searches once (swarm.search_seed): its one stage-1 run feeds every seed's stage 2
    once_at = {n: search_seed(e) if is_swarm(n, e) else None for n, e in cfg["learners"].items()}
    for name, extra in cfg["learners"].items():
        once = once_at[name]
        for seed in cfg["seeds"] if once is None else [once]:
            run_dir = out / "stage1" / name / f"seed{seed}"
            if is_swarm(name, extra):  # the driver's proxy runs train on the stage-2 config, as stage 2 will
                runs.append({
                    "stage": 1, "method": name, "seed": seed, "dir": run_dir, "config": cfg["stage2_config"],
                    "swarm": driver_options(extra), "outputs": SWARM_OUTPUTS,
                    "swarm_n": swarm_options(extra)["n"],
                    "overrides": [*cfg["common_overrides"], *cfg["stage2_overrides"],
                                  *[o for o in extra if not o.startswith(("swarm.", "mixture.learner="))]],
                })
                continue
            runs.append({
                "stage": 1, "method": name, "seed": seed, "dir": run_dir, "config": cfg["stage1_config"],
                "overrides": [*cfg["common_overrides"], *cfg["stage1_overrides"], *extra, *_learner_key(name, extra),
                              f"seed={seed}", f"output_dir={run_dir}"],
            })
    for name in [*cfg["learners"], *cfg["fixed_baselines"]]:
        for seed in cfg["seeds"]:
            run_dir = out / "stage2" / name / f"seed{seed}"
            if name in cfg["learners"]:
                extra = cfg["learners"][name]
                searched = seed if once_at[name] is None else once_at[name]
                source = out / "stage1" / name / f"seed{searched}" / "mixture.yaml"
                mixture = [f"mixture.weights_from={source}", f"mixture.use={cfg['use']}"]
                if (is_swarm(name, extra) and cfg["recipe"] == "data_restricted"
                        and swarm_options(extra)["max_steps"] is not None):  # shorter proxies: the note says so
                    mixture.append("data.allow_budget_mismatch=true")
            else:
                source = None
                mixture = baseline_overrides(name)
            whole_val = [val_eval_all(cfg["recipe"])] if cfg["split"] == "val" else []
            runs.append({
                "stage": 2, "method": name, "seed": seed, "dir": run_dir, "config": cfg["stage2_config"],
                "weights_from": source,
                "overrides": [*cfg["common_overrides"], *cfg["stage2_overrides"], *whole_val, "mixture.learner=fixed",
                              *mixture, f"seed={seed}", f"output_dir={run_dir}"],
            })
    return runs


def val_eval_all(recipe: str) -> str:
    """The override by which ``recipe`` evaluates its whole val split into eval.json."""
    return VAL_EVAL_ALL_BY_RECIPE.get(recipe, VAL_EVAL_ALL)


def _learner_key(name: str, extra: Sequence[str]) -> list[str]:
    """``mixture.learner=<name>``, unless the learner's overrides set it (a variant: ``tandem_lr:
    [mixture.learner=tandem, mixture.delta_scale=lr]``)."""
    return [] if any(o.startswith("mixture.learner=") for o in extra) else [f"mixture.learner={name}"]


def run_command(recipe: str, config: str, overrides: Sequence[str], nproc_per_node: int = 1) -> list[str]:
    """``tune run [--nproc_per_node N] recipes/<recipe>.py --config <config> <overrides>`` with this
    interpreter (N > 1: torchrun, FSDP2 over N ranks)."""
    launcher = ["--nproc_per_node", str(nproc_per_node)] if nproc_per_node > 1 else []
    return [sys.executable, "-m", "torchtune._cli.tune", "run", *launcher, f"recipes/{recipe}.py", "--config",
            str(config), *overrides]


def _run_name(run: Mapping[str, Any]) -> str:
    return run.get("name") or f"stage{run['stage']}-{run['method']}-seed{run['seed']}"


def resolved_config_sha256(config: str | Path, overrides: Sequence[str]) -> str:
    """sha256 of the recipe config as the recipe sees it: the YAML with the overrides merged, resolved."""
    text = json.dumps(apply_overrides(OmegaConf.load(_repo_path(config)), overrides), sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def code_version_sha256() -> str:
    """sha256 over every source file of the recipes and components (path and bytes), in sorted order."""
    digest = hashlib.sha256()
    for folder in CODE_DIRS:
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            digest.update(str(path.relative_to(REPO_ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def machine_label() -> str:
    """Where wall times were measured: processor, cores, OS."""
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.system()}"


def machine_busy_cpu_seconds() -> float | None:
    """CPU seconds the whole machine has spent busy since boot (/proc/stat; None where there is none)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # user..steal; guest is inside user


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _fingerprint(run: Mapping[str, Any], command: Sequence[str], code_sha256: str) -> dict[str, Any]:
    """What made a run's outputs: its resolved config, the code, the launcher, and in stage 2 its mixture."""
    inputs = {"config_sha256": resolved_config_sha256(run["config"], run["overrides"]), "code_sha256": code_sha256,
              "launcher": [c for c in command[1:] if c not in run["overrides"]]}
    if run.get("weights_from") is not None:
        inputs["weights_from_sha256"] = hashlib.sha256(Path(run["weights_from"]).read_bytes()).hexdigest()
    if run.get("swarm") is not None:  # the driver's own code (its proxy runs are fingerprinted by the driver)
        inputs["driver_sha256"] = hashlib.sha256((REPO_ROOT / SWARM_DRIVER).read_bytes()).hexdigest()
    return inputs


def is_finished(run: Mapping[str, Any], fingerprint: Mapping[str, Any]) -> bool:
    marker = Path(run["dir"]) / MARKER
    if not marker.is_file() or not all((Path(run["dir"]) / f).is_file() for f in run.get("outputs", RUN_OUTPUTS)):
        return False
    try:
        return json.loads(marker.read_text(encoding="utf-8")).get("inputs") == dict(fingerprint)
    except (json.JSONDecodeError, AttributeError):
        return False


def execute(run: Mapping[str, Any], command: Sequence[str], log_dir: Path) -> float:
    """Run one recipe as a subprocess from the repo root; stdout/stderr go to ``log_dir``. Returns seconds."""
    log_dir.mkdir(parents=True, exist_ok=True)
    name = _run_name(run)
    out_log, err_log = log_dir / f"{name}.stdout.log", log_dir / f"{name}.stderr.log"
    env = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", **os.environ,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    (Path(run["dir"]) / MARKER).unlink(missing_ok=True)  # a run that dies now is not "finished"
    busy_before, own_before = machine_busy_cpu_seconds(), children_cpu_seconds()
    start = time.perf_counter()
    with open(out_log, "w", encoding="utf-8") as out_f, open(err_log, "w", encoding="utf-8") as err_f:
        proc = subprocess.run(list(command), cwd=REPO_ROOT, env=env, stdout=out_f, stderr=err_f)
    seconds = time.perf_counter() - start
    busy_after = machine_busy_cpu_seconds()
    if busy_before is not None and busy_after is not None and seconds > 0:
        # the machine's busy CPU time minus this run's own (and its workers'): what other work took
        other = busy_after - busy_before - (children_cpu_seconds() - own_before)
        run["other_cpu_fraction"] = max(0.0, other) / (seconds * (os.cpu_count() or 1))
    if proc.returncode == 2 and run["stage"] == 2 and run.get("weights_from") is None:
        errors = [line for line in err_log.read_text(encoding="utf-8", errors="replace").splitlines()
                  if line.startswith("tandem: error: ")]
        if errors:
            raise BaselineRejected(errors[-1].removeprefix("tandem: error: "))
    if proc.returncode != 0:
        tail = err_log.read_text(encoding="utf-8", errors="replace")[-STDERR_TAIL_CHARS:]
        raise HarnessError(
            f"{name} failed (exit {proc.returncode}) after {seconds:.1f}s; to rerun it alone, from {REPO_ROOT}:\n"
            f"  PYTHONPATH={REPO_ROOT} {shlex.join(command)}\n"
            f"--- stderr (tail; full logs: {err_log}, {out_log}) ---\n{tail}",
            exit_code=1,
        )
    missing = [f for f in run.get("outputs", RUN_OUTPUTS) if not (Path(run["dir"]) / f).is_file()]
    if missing:
        raise HarnessError(f"{name}: exited 0 but wrote no {missing} in {run['dir']} (logs: {out_log})", exit_code=1)
    return seconds


def run_all(cfg: Mapping[str, Any], out: Path, force: bool = False) -> list[dict[str, Any]]:
    """Execute (or skip) every planned run in order, one at a time; returns the runs with status/seconds."""
    runs = plan_runs(cfg, out)
    code_sha256 = code_version_sha256()
    # the bar only on a terminal (disable=None); the one-line status per run is printed either way
    bar = tqdm(total=len(runs), desc="compare", unit="run", dynamic_ncols=True, file=sys.stdout, disable=None)
    rejected: dict[str, str] = {}  # fixed baseline -> the recipe's reason (its other seeds are not tried)
    for i, run in enumerate(runs, 1):
        command = (swarm_command(cfg["recipe"], run, cfg["nproc_per_node"]) if run.get("swarm") is not None else
                   run_command(cfg["recipe"], str(_repo_path(run["config"])), run["overrides"], cfg["nproc_per_node"]))
        fingerprint = _fingerprint(run, command, code_sha256)
        label = f"[{i}/{len(runs)}] {_run_name(run)}"
        bar.set_description(_run_name(run))
        if run["method"] in rejected:
            run["status"], run["seconds"], run["reason"] = "rejected", 0.0, rejected[run["method"]]
            bar.write(f"{label}: not run (baseline rejected by the recipe)")
        elif not force and is_finished(run, fingerprint):
            run["status"], run["seconds"] = "skipped", 0.0
            bar.write(f"{label}: skipped (outputs exist in {run['dir']}; --force to redo)")
        else:
            try:
                run["seconds"] = execute(run, command, out / "logs")
            except BaselineRejected as e:
                rejected[run["method"]] = run["reason"] = str(e)
                run["status"], run["seconds"] = "rejected", 0.0
                bar.write(f"{label}: rejected by the recipe, reported as not run: {e}")
                bar.update(1)
                continue
            run["status"] = "ran"
            mark_finished(run, fingerprint)
            bar.write(f"{label}: done in {run['seconds']:.1f}s, {_outcome(run, cfg)}")
        bar.update(1)
    bar.close()
    return runs


def mark_finished(run: Mapping[str, Any], fingerprint: Mapping[str, Any]) -> None:
    """The marker ``is_finished`` reads: the inputs that made the run's outputs, its time, the machine."""
    record = {"inputs": dict(fingerprint), "seconds": run["seconds"], "finished_at": time.time(),
              "machine": machine_label(), "other_cpu_fraction": run.get("other_cpu_fraction")}
    atomic_write_text(Path(run["dir"]) / MARKER, json.dumps(record, indent=2) + "\n")


def _outcome(run: Mapping[str, Any], cfg: Mapping[str, Any]) -> str:
    """The figure of a finished run printed on its line: mean perplexity, or a swarm's search."""
    if run.get("swarm") is not None:
        summary = json.loads((Path(run["dir"]) / "summary.json").read_text(encoding="utf-8"))
        rho = summary["spearman"][summary["model"]]
        return (f"{summary['n']} proxy runs, {summary['model']} regression (held-out Spearman "
                f"{'—' if rho is None else f'{rho:.3f}'})")
    split = cfg["split"] if run["stage"] == 2 else "test"
    evaluation = json.loads((Path(run["dir"]) / SPLIT_FILES[split]).read_text(encoding="utf-8"))
    return f"mean {split} ppl {evaluation['mean_perplexity']:.2f}"


# --------------------------------------------------------------------------------------------- numbers
def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0 for a single value)."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def standard_error(values: Sequence[float]) -> float:
    """Standard error of the mean over seeds: std / sqrt(n) (0 for one value)."""
    return mean_std(values)[1] / math.sqrt(len(values)) if values else math.nan


def format_mean_std(values: Sequence[float], digits: int = 2) -> str:
    """``"12.34 ± 0.56"``: mean ± standard error over seeds (just the mean for one seed, "—" for none)."""
    if not values:
        return "—"
    mean = mean_std(values)[0]
    return f"{mean:.{digits}f}" if len(values) == 1 else f"{mean:.{digits}f} ± {standard_error(values):.{digits}f}"


def paired_difference(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error over seeds of a - b, paired by seed (same init and sampling order)."""
    diffs = [x - y for x, y in zip(a, b)]
    return mean_std(diffs)[0], standard_error(diffs)


def ranking_verdict(name: str, values: Sequence[float], other: str, other_values: Sequence[float],
                    score: str = "perplexity") -> str:
    """One sentence: is ``name`` better or worse than ``other`` beyond two standard errors of the difference?"""
    diff, se = paired_difference(values, other_values)
    unit, digits = SCORES[score]
    if len(values) < 2:
        return f"{name} vs {other}: {diff:+.{digits}f} {unit} on one seed: no ranking can be claimed."
    beyond = abs(diff) > 2 * se
    word = "better" if diff < 0 else "worse"
    return (f"{name} vs {other}: {diff:+.{digits}f} ± {se:.{digits}f} {unit} (paired by seed, ± 1 SE): {name} is {word}"
            + (" beyond two standard errors." if beyond else ", but NOT beyond two standard errors (no ranking)."))


def ratio_to(values: Sequence[float], reference: Sequence[float] | None) -> float | None:
    """mean(values) / mean(reference): a method's average perplexity relative to uniform's."""
    if not values or not reference:
        return None
    return mean_std(values)[0] / mean_std(reference)[0]


def score_of(method: Mapping[str, Any], score: str) -> tuple[Mapping[str, list[float]], list[float]]:
    """(per domain, average) of the figure the table ranks by: ``perplexity``, ``loss`` or ``target`` (per-domain
    perplexity, target perplexity), lists over seeds."""
    return method[score], method[f"average_{score}"]


def collect_results(cfg: Mapping[str, Any], runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Read every run's outputs into one document (``results.json``): raw per-run numbers + per-method stats."""
    from tandem_components.mixture.convergence import seed_spread  # imports torch: only when needed
    from tandem_components.mixture.export import read_mixture_export

    raw_runs, domains = [], None
    rejected = {r["method"]: r["reason"] for r in runs if r.get("status") == "rejected"}
    for run in runs:
        if run.get("status") == "rejected":
            continue
        run_dir = Path(run["dir"])
        evaluation = (None if run.get("swarm") is not None else  # a swarm evaluates its proxies, not one model
                      json.loads((run_dir / SPLIT_FILES[cfg["split"]]).read_text(encoding="utf-8")))
        marker = json.loads((run_dir / MARKER).read_text(encoding="utf-8")) if (run_dir / MARKER).is_file() else {}
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
        sft_rows = run_dir / SFT_TABLE
        task = ({r["category"]: {"metric": r["metric"], "value": r["value"]}
                 for r in json.loads(sft_rows.read_text(encoding="utf-8")) if r.get("metric")}
                if sft_rows.is_file() else {})
        # stage 1: the mixture it learned (as stage 2 uses it); stage 2: the fixed α it trained on
        weights, doc = read_mixture_export(run_dir / "mixture.yaml", use=cfg["use"] if run["stage"] == 1 else "last")
        domains = domains or (list(evaluation["domains"]) if evaluation else None)
        raw_runs.append({
            "stage": run["stage"], "method": run["method"], "seed": run["seed"], "output_dir": str(run_dir),
            "status": run.get("status"), "harness_seconds": run.get("seconds"),
            "eval": evaluation, "summary": summary, "mixture": weights, "task_metric": task,
            "num_updates": (doc.get("provenance") or {}).get("num_updates"),
            "machine": marker.get("machine"), "other_cpu_fraction": marker.get("other_cpu_fraction"),
            "run_seconds": marker.get("seconds"),
        })
    methods = [n for n in [*cfg["learners"], *cfg["fixed_baselines"]] if n not in rejected]
    # the domains α covers: the evaluated ones less any target (val/test only, never trained on)
    sources = list(raw_runs[0]["mixture"]) if raw_runs else []
    per_method: dict[str, Any] = {}
    for name in methods:
        final = sorted((r for r in raw_runs if r["method"] == name and r["stage"] == 2), key=lambda r: r["seed"])
        learn = sorted((r for r in raw_runs if r["method"] == name and r["stage"] == 1), key=lambda r: r["seed"])
        per_method[name] = {
            "kind": "learned" if name in cfg["learners"] else "fixed",
            "seeds": [r["seed"] for r in final],
            "perplexity": {d: [r["eval"]["domains"][d]["perplexity"] for r in final] for d in domains},
            "average_perplexity": [r["eval"]["mean_perplexity"] for r in final],
            "loss": {d: [r["eval"]["domains"][d]["loss"] for r in final] for d in domains},
            "average_loss": [r["eval"]["mean_loss"] for r in final],
            # score: target: the per-domain perplexities beside the target perplexity of each seed
            **({"target": {d: [r["eval"]["domains"][d]["perplexity"] for r in final] for d in domains},
                "average_target": [r["eval"]["target"]["perplexity"] for r in final]}
               if final and all("target" in r["eval"] for r in final) else {}),
            # SFT: the task metric of greedy answers to test prompts, per category (exact match / ROUGE-L)
            "task_metric": {d: [r["task_metric"][d]["value"] for r in final] for d in domains
                            if final and all(d in r["task_metric"] for r in final)},
            "task_metric_name": {d: final[0]["task_metric"][d]["metric"] for d in domains
                                 if final and d in final[0]["task_metric"]},
            "stage1_wall_time_s": [r["summary"]["wall_time_s"] for r in learn],
            "stage1_num_updates": [r["num_updates"] for r in learn],
            # how settled each seed's α trajectory was (mixture/convergence.py), and the seeds' agreement
            "convergence": [r["summary"].get("convergence") for r in learn],
            "mixture": {d: [r["mixture"][d] for r in final] for d in sources},
        }
        if learn:
            per_method[name]["seed_spread"] = seed_spread([[r["mixture"][d] for d in sources] for r in learn])
    score = cfg.get("score", "perplexity")
    if score == "target":
        missing = sorted(n for n, m in per_method.items() if m["seeds"] and "average_target" not in m)
        if missing:
            raise HarnessError(f"score: target: {missing} scored no target (the corpus has no target domain and "
                               "mixture.target_weights names none)")
    average = {n: score_of(m, score)[1] for n, m in per_method.items()}
    uniform = average.get(UNIFORM)
    fixed = {n: mean_std(average[n])[0] for n, m in per_method.items() if m["kind"] == "fixed"}
    best_fixed = min(fixed, key=fixed.get) if fixed else None
    verdicts = []
    if best_fixed is not None:
        if uniform and best_fixed != UNIFORM:
            verdicts.append(ranking_verdict(best_fixed, average[best_fixed], UNIFORM, uniform, score))
        for name, m in per_method.items():
            if m["kind"] == "learned":
                verdicts.append(ranking_verdict(name, average[name], best_fixed, average[best_fixed], score))
    others = [r["other_cpu_fraction"] for r in raw_runs if r.get("other_cpu_fraction") is not None]
    warnings = []
    for name, m in per_method.items():
        m["ratio_to_uniform"] = ratio_to(average[name], uniform)
        if (m["kind"] == "learned" and not is_swarm(name, cfg["learners"][name])
                and any(not n for n in m["stage1_num_updates"])):
            warnings.append(
                f"{name}: stage 1 made no mixture update in some seed (num_updates "
                f"{m['stage1_num_updates']}): its 'learned' mixture is its starting one. Too few steps, or "
                f"recipes/{cfg['recipe']}.py does not implement this learner?"
            )
    return {"config": dict(cfg), "domains": domains, "sources": sources, "methods": per_method, "runs": raw_runs, "warnings": warnings,
            "best_fixed": best_fixed, "verdicts": verdicts, "machine": machine_label(),
            "max_other_cpu_fraction": max(others) if others else None, "rejected": rejected,
            "total_run_seconds": sum(r["run_seconds"] or 0.0 for r in raw_runs)}


# -------------------------------------------------------------------------------------------- outputs
def format_results_md(results: Mapping[str, Any]) -> str:
    """The Markdown report: the perplexity table (mean ± std over seeds) and the mixtures table."""
    domains, methods, cfg = results["domains"], results["methods"], results["config"]
    sources = results.get("sources", domains)
    score = cfg.get("score", "perplexity")
    digits = SCORES[score][1]
    scores = {n: score_of(m, score) for n, m in methods.items()}
    averages = {n: mean_std(avg)[0] for n, (_, avg) in scores.items() if avg}
    best = min(averages, key=averages.get) if averages else None
    seeds = sorted({s for m in methods.values() for s in m["seeds"]})
    best_fixed = results.get("best_fixed")
    split = cfg.get("split", "test")
    figure = "loss (nats/token)" if score == "loss" else "perplexity"  # target: per-domain perplexity beside it
    label = (f"**test** {figure} (the split no method reads)" if split == "test" else
             f"**val** {figure} (whole val split: the table for choosing settings; its figures are not results, "
             "and the learners read this split)")
    gap = ""
    if best_fixed and UNIFORM in methods and scores[best_fixed][1]:
        ratio = methods[best_fixed]["ratio_to_uniform"]
        gap = (f"**Gap between uniform and the best fixed mixture ({best_fixed}): "
               f"{100 * (1 - ratio):.1f}% of {split} {score}** (ratio {ratio:.3f}). ")
    other = results.get("max_other_cpu_fraction")
    shared = "unknown" if other is None else ("yes" if other > BUSY_OTHER_CPU else "no")
    lines = [
        f"# Mixture comparison ({split} split)",
        "",
        gap + f"Per-domain {label} of the stage-2 model trained on each "
        f"mixture (recipe `recipes/{cfg['recipe']}.py`, `{cfg['stage2_config']}`), mean ± standard error over "
        f"seeds {seeds}; a seed sets both the model initialisation and the sampling order. Learned mixtures come "
        f"from `{cfg['stage1_config']}` (export weights: `{cfg['use']}`). 'ratio' = mean average {score} / "
        f"uniform's (< 1 is better than uniform). Best average in bold.",
        "",
        "| method | " + " | ".join(domains) + " | average | ratio | stage-1 time (s) |",
        "|---|" + "---:|" * (len(domains) + 3),
    ]
    for name, m in methods.items():
        per_domain, average = scores[name]
        avg = format_mean_std(average, digits)
        if name == best:
            avg = f"**{avg}**"
        ratio = "—" if m["ratio_to_uniform"] is None else f"{m['ratio_to_uniform']:.3f}"
        wall = format_mean_std(m["stage1_wall_time_s"], digits=1) if m["kind"] == "learned" else "—"
        cells = [format_mean_std(per_domain[d], digits) for d in domains]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {avg} | {ratio} | {wall} |")
    for name, reason in (results.get("rejected") or {}).items():
        lines.append(f"| {name} | " + " | ".join("—" for _ in domains) + " | not run: infeasible here (see below) | — | — |")
    measured = "not measured" if other is None else f"at most {100 * other:.0f}% of the machine's CPU time during a run"
    lines += ["", f"Stage-1 wall times measured on {results.get('machine')}; CPU used by other processes: {measured} "
              f"(other work on the cores: {shared}). All runs together: "
              f"{results.get('total_run_seconds', 0.0) / 60:.1f} min of wall time."]
    swarms = [n for n, extra in (cfg.get("learners") or {}).items() if is_swarm(n, extra) and n in methods]
    if swarms:
        lines += ["", f"Stage-1 time of {', '.join(swarms)} (RegMix-style search, tools/swarm.py): the sum of its "
                  "proxy runs' training times."]
    for name, reason in (results.get("rejected") or {}).items():
        lines += ["", f"{name} was not run: the recipe rejected it in this regime: {reason}"]
    for name, note in (cfg.get("notes") or {}).items():
        lines += ["", f"Note on {name}: {note}"]
    lines += _task_metric_lines(results)
    lines += _convergence_lines(results)
    if results.get("verdicts"):
        lines += ["", f"## Rankings ({split} {score}, beyond the seed noise?)", ""]
        lines += [f"- {v}" for v in results["verdicts"]]
    lines += [
        "",
        "## Mixtures",
        "",
        "Weight of each domain that stage 2 trained on, mean over seeds (learned: the stage-1 export; "
        "fixed: uniform = 1/M, natural = proportional to training tokens (examples in SFT), temperature:τ ∝ n^τ, "
        "unimax:C).",
        "",
        "| method | " + " | ".join(sources) + " |",
        "|---|" + "---:|" * len(sources),
    ]
    for name, m in methods.items():
        lines.append(f"| {name} | " + " | ".join(f"{mean_std(m['mixture'][d])[0]:.3f}" for d in sources) + " |")
    if results.get("warnings"):
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in results["warnings"]]
    return "\n".join(lines) + "\n"


def _convergence_lines(results: Mapping[str, Any]) -> list[str]:
    """Learners: how settled α's trajectory was in stage 1 (largest per-update move after the lr warmup, L1
    path over net change: the worst seed of each), and the exported weights' spread across seeds."""
    rows = [(n, m) for n, m in results["methods"].items()
            if m["kind"] == "learned" and m.get("convergence") and all(m["convergence"])]
    if not rows:
        return []
    lines = ["", "## Convergence of the learned mixtures (stage 1)", "",
             "Worst seed of each: the largest move of one domain's weight in one update after the lr warmup, "
             "and the L1 length of α's path over its net change (1: straight to where it ended); then the "
             "largest range of one exported weight across seeds.", "",
             "| method | largest per-update move | path / net change | exported weight's spread across seeds |",
             "|---|---:|---:|---:|"]
    for name, m in rows:
        moves = [c["max_move"] for c in m["convergence"]]
        ratios = [c["path_ratio"] for c in m["convergence"]]
        lines.append(f"| {name} | {max(moves):.4f} | {max(ratios):.2f}x | {m.get('seed_spread', 0.0):.3f} |")
    return lines


def _task_metric_lines(results: Mapping[str, Any]) -> list[str]:
    """SFT runs: the task metric per category (greedy answers to test prompts), mean ± SE over seeds."""
    methods = results["methods"]
    rows = {n: m for n, m in methods.items() if m.get("task_metric")}
    if not rows:
        return []
    names = next(iter(rows.values()))["task_metric_name"]
    domains = [d for d in results["domains"] if d in names]
    lines = ["", "## Task metric (test prompts, whatever the split of the table above)",
             "", "Greedy answers to each category's first test prompts: " + ", ".join(
                 f"{d} = {names[d].replace('_', ' ')}" for d in domains) + "; higher is better.", "",
             "| method | " + " | ".join(domains) + " | average |", "|---|" + "---:|" * (len(domains) + 1)]
    for name, m in rows.items():
        per_seed = [sum(m["task_metric"][d][i] for d in domains) / len(domains) for i in range(len(m["seeds"]))]
        lines.append(f"| {name} | " + " | ".join(format_mean_std(m["task_metric"][d], 3) for d in domains)
                     + f" | {format_mean_std(per_seed, 3)} |")
    return lines


def plot_bars(results: Mapping[str, Any], path: Path, key: str = "mixture", ylabel: str = "mixture weight α",
              title: str = "Mixtures per domain (mean over seeds)", chance: float | None = None,
              minus: Mapping[str, Sequence[float]] | None = None) -> Path:
    """Grouped bars: one group per domain, one bar per method of ``methods[*][key][domain]`` (mean over
    seeds, std as error bar); ``chance``: a dotted reference line (1/M for mixtures); ``minus``: per domain,
    values subtracted seed by seed (a baseline's, so that small differences show)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = results["methods"]
    names = list(methods)
    domains = list(methods[names[0]][key]) if names else []  # the mixture's sources, or every evaluated domain
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(domains) + 2), 4.5), dpi=110)
    colors = plt.get_cmap("tab20" if len(names) > 10 else "tab10").colors
    for j, name in enumerate(names):
        values = methods[name][key]
        if minus is not None:
            values = {d: [v - b for v, b in zip(values[d], minus[d])] for d in domains}
        stats = [mean_std(values[d]) for d in domains]
        xs = [i - 0.4 + width * (j + 0.5) for i in range(len(domains))]
        ax.bar(xs, [s[0] for s in stats], width, yerr=[s[1] for s in stats], label=name, capsize=2,
               color=colors[j % len(colors)])
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle=":", linewidth=1)
    ax.set_xticks(range(len(domains)))
    ax.set_xticklabels(domains, rotation=20)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_mixtures(results: Mapping[str, Any], path: Path) -> Path:
    """The mixtures side by side per domain (the paper's Figure 5)."""
    return plot_bars(results, path, chance=1.0 / max(len(results.get("sources", results["domains"])), 1))


def plot_scores(results: Mapping[str, Any], path: Path) -> Path:
    """The held-out figure the table ranks by, per domain and method, minus uniform's (seed-paired) when
    uniform is in the table: the differences between mixtures are small next to the figures themselves."""
    cfg = results["config"]
    score, split = cfg.get("score", "perplexity"), cfg.get("split", "test")
    uniform = results["methods"].get(UNIFORM)
    if uniform is None:
        return plot_bars(results, path, key=score, ylabel=f"{split} {score}",
                         title=f"{split.capitalize()} {score} per domain (mean over seeds; lower is better)")
    return plot_bars(results, path, key=score, ylabel=f"{split} {score} − uniform's", chance=0.0,
                     minus=uniform[score],
                     title=f"{split.capitalize()} {score} per domain minus uniform's (mean over seeds; lower is better)")


def write_outputs(results: Mapping[str, Any], out: Path) -> dict[str, Path]:
    paths = {name: out / name for name in ("results.json", "results.md", "mixtures.png", "scores.png")}
    atomic_write_text(paths["results.json"], json.dumps(results, indent=2, default=str) + "\n")
    atomic_write_text(paths["results.md"], format_results_md(results))
    plot_mixtures(results, paths["mixtures.png"])
    plot_scores(results, paths["scores.png"])
    return paths


# ------------------------------------------------------------------------------------------------ main
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="harness config (benchmarks/configs/*.yaml)")
    parser.add_argument("--out", default=None, help="output folder (default: the config's output_dir)")
    parser.add_argument("--force", action="store_true", help="redo runs whose outputs already exist")
    parser.add_argument("overrides", nargs="*", help="key=value or ~key overrides of the harness config")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        out = Path(args.out or cfg["output_dir"] or f"outputs/{Path(args.config).stem}").resolve()
        cfg["output_dir"] = str(out)
        start = time.perf_counter()
        runs = run_all(cfg, out, force=args.force)
        results = collect_results(cfg, runs)
        results["harness_wall_time_s"] = time.perf_counter() - start
        paths = write_outputs(results, out)
    except HarnessError as e:
        print(f"compare_mixtures: error: {e}", file=sys.stderr, flush=True)
        return e.exit_code
    print("\n" + format_results_md(results))
    count = {status: sum(r["status"] == status for r in runs) for status in ("ran", "skipped", "rejected")}
    print(f"{count['ran']} run(s) executed, {count['skipped']} skipped, {count['rejected']} rejected (infeasible "
          f"baselines), in {results['harness_wall_time_s']:.1f}s.")
    print(f"Outputs in {out}/:\n" + "\n".join(f"  {k:<13} {p}" for k, p in paths.items())
          + f"\n  runs          {out / 'stage1'}, {out / 'stage2'}\n  run logs      {out / 'logs'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
