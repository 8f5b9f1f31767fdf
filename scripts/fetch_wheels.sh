#!/usr/bin/env bash
# Downloads, on a machine with internet, the pure-Python wheels the GPU machine lacks into
# .whl/ (ignored by git), for scripts/gpu_check.sh: the rwkv package (the reference the
# loaders are tested against), tabulate (pandas' markdown tables) and fla (the kernel bench's
# peer). fla autotunes its Triton kernels on first use of each shape (about 3 minutes for the
# kernel bench's four WKV6 B=1 shapes on an H200); a GPU run can send ~/.triton back as
# `tar cJf "$OUT/triton-cache.tar.xz" -C ~/.triton .`, and that file put in .whl/ is unpacked
# by scripts/gpu_check.sh, so the next run on the same software starts warm.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
  rwkv==0.8.32 tabulate==0.9.0 fla-core==0.6.0 flash-linear-attention==0.6.0 "$@"
