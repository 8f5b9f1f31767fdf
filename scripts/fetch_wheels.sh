#!/usr/bin/env bash
# Downloads, on a machine with internet, the pure-Python wheels the GPU machine lacks into
# .whl/ (ignored by git), for scripts/gpu_check.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
  rwkv==0.8.32 tabulate==0.9.0 "$@"
