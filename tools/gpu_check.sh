#!/usr/bin/env bash
# make gpu-check: the GPU checks, on a machine with a CUDA GPU, in at most 8 minutes on one H100 or H200.
#   1. tests/test_gpu.py (-m gpu; MNIST_STRICT=1, so no CUDA is a failure, not a skip), log in gpu_tests.log;
#   2. benchmarks/gpu.py --sweep into results/benchmarks/gpu.csv, each row written as soon as it is measured.
# Needs only python3 with torch (CUDA), numpy, pandas, matplotlib, seaborn, safetensors, pyyaml, tqdm, pytest
# and hypothesis, plus .gpu/ from `make gpu-pack` (the MNIST files; optuna's wheels, installed into /tmp here).
# Where the device tool sets $OUT, the CSV and both logs are copied there.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MNIST_STRICT=1
export MNIST_DATA_ROOT="${MNIST_DATA_ROOT:-$PWD/.gpu/data}"
export MNIST_DATA_DIR="${MNIST_DATA_DIR:-$MNIST_DATA_ROOT/mnist}"
if ls .gpu/whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu-site .gpu/whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/gpu-site"
fi
logs="$(mktemp -d)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee "$logs/gpu_tests.log"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" 2>&1 | tee -a "$logs/gpu_tests.log"
timeout 150 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py 2>&1 | tee -a "$logs/gpu_tests.log"
tests=${PIPESTATUS[0]}
timeout 330 "$PY" benchmarks/gpu.py --sweep --csv results/benchmarks/gpu.csv 2>&1 | tee "$logs/gpu_bench.log"
bench=${PIPESTATUS[0]}
if [ -n "${OUT:-}" ]; then
  cp "$logs"/*.log "$OUT"/
  [ -f results/benchmarks/gpu.csv ] && cp results/benchmarks/gpu.csv "$OUT"/
fi
echo "gpu-check: tests exit $tests, benchmark exit $bench (logs in ${OUT:-$logs})"
[ "$tests" -eq 0 ] && [ "$bench" -eq 0 ]
