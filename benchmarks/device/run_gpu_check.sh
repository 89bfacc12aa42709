#!/usr/bin/env bash
# benchmarks/gpu_check.py on a lent GPU machine, as it is: no network, python3 3.12 with torch + CUDA but
# none of torchtune, torchao, torchdata, omegaconf, datasets (/work/.library/device/KINDS.md).
#
#   bash benchmarks/device/run_gpu_check.sh            # there; the run tool's carry: [".whl", "data/shards/embedded"]
#   bash benchmarks/device/run_gpu_check.sh --smoke    # here, on CPU: the same path (tests/test_gpu_check.py)
#
# 1. If the packages gpu_check needs do not import, install the carried wheels (`make device-wheels` here)
#    into $DEVICE_SITE (default /tmp/site) and put it on PYTHONPATH, after the repository root: torchtune's
#    wheel ships a package named `recipes` too, and `tune run recipes/x.py` must find ours (the Makefile's .pth
#    does the same in the venv). tandem itself is imported from the repository root, not installed.
# 2. Prepare the shards if they were not carried (the torchtune CLI as a module: --target installs no `tune`).
# 3. Run gpu_check under a hard limit, $GPU_CHECK_TIMEOUT s (default 360): with the machine's start-up and a
#    rerun that still fits in 15 minutes of device time. Everything printed goes to $OUT/gpu_check.log too.
# 4. Copy its JSON and Markdown table to $OUT (what the machine sends back; default outputs/device_gpu_check).
# Exit status: gpu_check's (124: it hit the limit; the log says how far it got), 3: packages missing.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
ROOT=$PWD
SMOKE=""
[[ "${1:-}" == "--smoke" ]] && SMOKE=--smoke
PYTHON=${PYTHON:-python3}
OUT=${OUT:-$ROOT/outputs/device_gpu_check}
WORK=${GPU_CHECK_WORK:-$ROOT/outputs/gpu_check}    # gpu_check's own run folders (checkpoints: not sent back)
SHARDS=${SHARDS:-data/shards/embedded}
DATA_CONFIG=${DATA_CONFIG:-configs/data/embedded.yaml}
LIMIT=${GPU_CHECK_TIMEOUT:-360}
SITE=${DEVICE_SITE:-/tmp/site}
NEEDED="torchtune torchao torchdata omegaconf datasets kagglehub"   # benchmarks/device/wheels.txt's imports

main() {
    local given=${PYTHONPATH:-}
    export PYTHONPATH="$ROOT${given:+:$given}" PYTHONUNBUFFERED=1 HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1
    # which are missing, found without importing them (seconds saved): the imports run once, just below
    local missing
    missing=$("$PYTHON" -c "import importlib.util as u, sys
def found(m):
    try: return u.find_spec(m) is not None
    except ImportError: return False
print(*[m for m in sys.argv[1:] if not found(m)])" $NEEDED)
    if [[ -n "$missing" ]]; then
        if ! compgen -G ".whl/*.whl" >/dev/null; then
            echo "run_gpu_check: missing $missing and no .whl/ carried: run 'make device-wheels' here and name .whl in carry"
            return 3
        fi
        echo "run_gpu_check: missing $missing; installing the carried .whl/ into $SITE"
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl || return 3
        export PYTHONPATH="$ROOT:$SITE${given:+:$given}"
    fi
    # Fail in seconds, not after minutes of compile, when an import is missing; the versions go in the log.
    "$PYTHON" -c "import torch, torchtune, torchao, torchdata, omegaconf, datasets, kagglehub, torchtune._cli.tune
import benchmarks.gpu_check, recipes.pretrain, recipes.prepare_data
print('python', __import__('sys').version.split()[0], '| torch', torch.__version__, '| torchtune', torchtune.__version__,
      '| torchao', torchao.__version__, '| cuda:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)" \
        || { echo "run_gpu_check: imports failed (above)"; return 3; }
    if [[ ! -f "$SHARDS/index.json" ]]; then
        echo "run_gpu_check: $SHARDS not carried; preparing it from $DATA_CONFIG"
        "$PYTHON" -m torchtune._cli.tune run recipes/prepare_data.py --config "$DATA_CONFIG" "output_dir=$SHARDS" || return $?
        echo "run_gpu_check: shards prepared at $SECONDS s"
    fi
    local start=$SECONDS rc=0
    rm -f "$WORK/gpu_check.json" "$WORK/gpu_check.md"   # a rerun on a warm machine: never send back stale ones
    timeout -k 20 "$LIMIT" "$PYTHON" -m benchmarks.gpu_check $SMOKE --shards "$SHARDS" --out "$WORK" || rc=$?
    [[ $rc == 124 || $rc == 137 ]] && echo "run_gpu_check: gpu_check hit the ${LIMIT} s limit (GPU_CHECK_TIMEOUT)"
    cp "$WORK/gpu_check.json" "$WORK/gpu_check.md" "$OUT"/ 2>/dev/null
    echo "run_gpu_check: gpu_check exited $rc after $((SECONDS - start)) s; results in $OUT"
    return $rc
}

mkdir -p "$OUT" && main 2>&1 | tee "$OUT/gpu_check.log"
