#!/usr/bin/env bash
# The speed/memory/overhead benchmarks on CPU (issue 6), one after the other (never in parallel: they
# time each other's cores). Writes outputs/bench_*/results.json and a log of everything printed.
#   bash benchmarks/run_all_cpu.sh            # ~25 min on 2 shared cores
#   QUICK=1 bash benchmarks/run_all_cpu.sh    # a smoke run (1 repeat, few steps), minutes
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
export PYTHONPATH="$PWD" HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1
test -f data/shards/embedded/index.json || tune run recipes/prepare_data.py --config configs/data/embedded.yaml
if [[ "${QUICK:-0}" == 1 ]]; then R=1; STEPS=10; else R=3; STEPS=30; fi
mkdir -p outputs
LOG=outputs/bench_all_cpu.log
{
  date -u
  python benchmarks/bench_loader.py --repeats "$R"
  python benchmarks/bench_hot_loop.py --repeats "$R" --steps "$STEPS"
  python benchmarks/bench_overhead.py --repeats "$R" --steps "$STEPS"
  python benchmarks/bench_memory.py --repeats "$R"
  date -u
} 2>&1 | grep --line-buffered -v -E "it/s\]|s/it\]|it/s$" | tee "$LOG"
