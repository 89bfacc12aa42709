"""Turn one domain of a data config into a validation-only target: the data config of "mixing for a target".

    python tools/target_data_config.py --config configs/data/embedded.yaml --target legal \\
        --out build/embedded_target_legal.yaml --output-dir data/shards/embedded_target_legal

The named domain keeps its ``val`` (and ``test``) sources, loses ``train`` and gets ``target: true``; every
other domain is a source, unchanged. ``make run TARGET=<domain>`` uses it on the embedded corpus: the
main job in target mode (README, "Mixing for a target"). The output is written atomically.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from tandem_components.atomic import atomic_write_text
from tandem_components.errors import TandemError


def target_config(config: dict, target: str, output_dir: str) -> dict:
    """A copy of ``config`` (a prepare_data config) with ``target`` a target domain and ``output_dir`` set."""
    domains = config.get("domains")
    names = [d.get("name") for d in domains or [] if isinstance(d, dict)]
    if target not in names:
        raise TandemError(f"--target: no domain {target!r} in the config (domains: {names})")
    if len(names) < 2:
        raise TandemError("--target: the config needs at least one other domain to train on")
    out = dict(config, output_dir=output_dir)
    out["domains"] = [
        {k: v for k, v in d.items() if k != "train"} | {"target": True} if d.get("name") == target else dict(d)
        for d in domains
    ]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="a prepare_data config (e.g. configs/data/embedded.yaml)")
    parser.add_argument("--target", required=True, help="the domain to make a validation-only target")
    parser.add_argument("--out", required=True, help="where the new config goes")
    parser.add_argument("--output-dir", required=True, help="the new config's output_dir (its shards)")
    args = parser.parse_args(argv)
    try:
        with open(args.config, encoding="utf-8") as f:
            config = yaml.safe_load(f)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, yaml.safe_dump(target_config(config, args.target, args.output_dir), sort_keys=False))
    except (OSError, TandemError) as e:
        print(f"target_data_config: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {args.target} is a validation-only target; shards go to {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
