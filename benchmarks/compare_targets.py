"""Mixing for a target, leave-one-out: each named domain in turn is the validation-only target, the others sources.

    python benchmarks/compare_targets.py --config benchmarks/configs/compare_target.yaml \
        --data-config configs/data/embedded.yaml --targets tech_docs dialogue legal \
        [--vocab-size 2048] [--out outputs/compare_target_embedded] [harness key=value ...]

For every target t: the data config with t made a target (``tools/target_data_config.py``: t keeps its val/test,
loses its train split), its shards prepared once into ``data/shards/<config>_target_<t>_bpe<V>`` (a tokenizer
trained on the sources only), then the comparison harness (``compare_mixtures.py``) with ``score: target`` on
those shards, into ``<out>/<t>/``. Nothing here knows a corpus: another corpus is another ``--data-config``
and other ``--targets``.

Then one table over the targets (``<out>/results.{md,json}``, ``target_table.py``): per target every method's
target test perplexity (mean ± SE over seeds), the learned methods against the best count heuristic and against
the similarity baseline (paired by seed, beyond two standard errors?), the spread of the fixed mixtures tried,
the learned mixtures beside the similarity weights; and the average over the targets.
"""

from __future__ import annotations

import argparse
import json
import runpy
import subprocess
import sys
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
for path in (REPO_ROOT, REPO_ROOT / "benchmarks"):  # `python benchmarks/compare_targets.py` from anywhere
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from target_table import write_target_table  # noqa: E402
from tandem_components.atomic import atomic_write_text  # noqa: E402
from tandem_components.errors import TandemError  # noqa: E402

TARGET_CONFIG = runpy.run_path(str(REPO_ROOT / "tools" / "target_data_config.py"))["target_config"]


def prepare_target_shards(data_config: Path, target: str, vocab_size: int) -> Path:
    """The shards of ``data_config`` with ``target`` a validation-only target (prepared once, then reused)."""
    name = f"{data_config.stem}_target_{target}_bpe{vocab_size}"
    shards = REPO_ROOT / "data" / "shards" / name
    if (shards / "index.json").is_file():
        return shards
    config = yaml.safe_load(data_config.read_text(encoding="utf-8"))
    built = REPO_ROOT / "build" / f"{name}.yaml"
    built.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(built, yaml.safe_dump(TARGET_CONFIG(config, target, str(shards)), sort_keys=False))
    overrides = [f"tokenizer.train.vocab_size={vocab_size}"] if "train" in (config.get("tokenizer") or {}) else []
    subprocess.run([str(Path(sys.executable).parent / "tune"), "run", "recipes/prepare_data.py", "--config",
                    str(built), *overrides], cwd=REPO_ROOT, check=True)
    return shards


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="harness config with score: target")
    parser.add_argument("--data-config", required=True, help="a prepare_data config holding the targets as domains")
    parser.add_argument("--targets", nargs="+", required=True, help="the domains made targets, one at a time")
    parser.add_argument("--vocab-size", type=int, default=2048, help="the BPE trained on the sources (default 2048)")
    parser.add_argument("--out", default=None, help="output folder (default outputs/<config>_<data config>)")
    parser.add_argument("overrides", nargs="*", help="harness key=value overrides, passed to every target's run")
    args = parser.parse_args(argv)
    data_config = Path(args.data_config)
    out = Path(args.out or f"outputs/{Path(args.config).stem}_{data_config.stem}").resolve()
    try:
        for target in args.targets:
            shards = prepare_target_shards(data_config, target, args.vocab_size)
            vocab = json.loads((shards / "index.json").read_text(encoding="utf-8"))["vocab_size"]
            common = f"common_overrides=[data.shards={shards},model.vocab_size={vocab}]"
            subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "compare_mixtures.py"), "--config",
                            args.config, "--out", str(out / target), common, *args.overrides], cwd=REPO_ROOT, check=True)
    except (OSError, TandemError) as e:  # a missing data config, a target that is not one of its domains
        print(f"compare_targets: error: {e}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as e:
        print(f"compare_targets: error: {' '.join(map(str, e.cmd[:4]))} ... failed (exit {e.returncode}); its "
              "output is above", file=sys.stderr)
        return 1
    paths = write_target_table(out, args.targets)
    print(paths["md"].read_text(encoding="utf-8"))
    print(f"Outputs: {paths['md']}, {paths['json']}; per target: {out}/<target>/results.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
