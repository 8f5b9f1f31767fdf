#!/usr/bin/env bash
# Everything a GPU run needs, on a bare GPU machine without internet: install the wheels
# brought in .whl/ (fetch them with scripts/fetch_wheels.sh), install archbench, run the GPU
# tests, then the given benchmarks. Logs go to $OUT (or ./gpu-out).
# Usage: bash scripts/gpu_check.sh [pytest args...]
set -uo pipefail
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if [[ -f .whl/triton-cache.tar.xz ]]; then  # fla's autotuned Triton kernels from an earlier run (fetch_wheels.sh)
  mkdir -p ~/.triton && tar xJf .whl/triton-cache.tar.xz -C ~/.triton
fi
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1 || { cat "$OUT/install.log"; exit 1; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -m pytest -q -p no:cacheprovider "${@:--m gpu}" 2>&1 | tee "$OUT/pytest.log"
