#!/usr/bin/env bash
# The GPU check, one command, under 5 minutes on one GPU (docs/performance.md, "GPU"):
#   1. the tests marked cuda (tests/training/test_cuda.py): every trainer's trials and refit on the GPU
#      equal the CPU's to tolerance, the evidence too, and two workers share one GPU with batch = "auto";
#   2. the GPU rows of benchmarks/population_speed.py (needs Fashion-MNIST: Debian's dataset-fashion-mnist
#      or --data-dir's IDX files; skipped with a line if absent).
# Usage: bash scripts/device-check.sh [DATA_DIR]     (PYTHON=... picks the interpreter)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DATA=${1:-data}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
$PY -c "import torch, sys; ok = torch.cuda.is_available(); print('device:', torch.cuda.get_device_name(0) if ok else 'no CUDA GPU'); sys.exit(0 if ok else 3)" || exit 3
status=0
start=$(date +%s)
timeout 200 $PY -m pytest -q -p no:cacheprovider --cuda -m cuda tests/training/test_cuda.py || status=1
echo "cuda tests: $(( $(date +%s) - start )) s, exit ${status}"
start=$(date +%s)
if timeout 80 $PY benchmarks/population_speed.py --device cuda --data-dir "$DATA" --epochs 1 --skip-seed \
        --ks 1,64,256,1024 --own-seeds-k 0; then
    echo "benchmark: $(( $(date +%s) - start )) s"
else
    echo "benchmark: did not finish (exit $?, $(( $(date +%s) - start )) s): see the lines above"
fi
exit $status
