#!/usr/bin/env bash
# Builds mamba-ssm and causal-conv1d for this machine's GPU from the sdists brought in .whl/,
# and installs them into $SITE (default /tmp/site; put it on PYTHONPATH). The GPU machine
# has no internet and starts bare, so every run that uses mamba_ssm builds them first
# (about 3 minutes on 16 cores for sm_90 only; the two builds run side by side). A warm
# machine reuses the wheels in $BUILD.
#
# Get the sdists on a machine with internet (the skip variables let pip read their
# metadata without nvcc):
#   MAMBA_SKIP_CUDA_BUILD=TRUE CAUSAL_CONV1D_SKIP_CUDA_BUILD=TRUE pip download --no-deps \
#     --no-binary=:all: --no-build-isolation mamba-ssm==2.3.2.post1 causal-conv1d==1.7.0 -d .whl
#
# A build takes minutes of a short GPU lease, so the result can travel back: --export DIR
# writes the installed packages, shared objects stripped, as one xz tarball in parts of 15 MB
# (a device call returns files of at most 16 MB) to DIR. Put the parts in .whl/: this
# script and scripts/gpu_check.sh then unpack them into $SITE instead of building.
#
# Usage: bash scripts/build_mamba.sh            build and install (logs in $OUT/build_*.log)
#        bash scripts/build_mamba.sh --export D  build, install, and write the parts to D
#        bash scripts/build_mamba.sh --check    then the baseline GPU tests and the decode
#                                               benchmark (the whole GPU check of issue 4)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}; SITE=${SITE:-/tmp/site}; BUILD=${BUILD:-/tmp/mamba-build}
ARCH=${ARCH:-90}  # compute capability without the dot: 90 = H100 / H200
mkdir -p "$OUT" "$SITE" "$BUILD/wheels"
export PYTHONUNBUFFERED=1 MAX_JOBS=${MAX_JOBS:-16} TORCH_CUDA_ARCH_LIST="${ARCH:0:-1}.${ARCH: -1}"

build() {  # $1: package name as in the sdist file, $2: the variable that forces a local build
  local sdist src
  if ls "$BUILD/wheels/$1"-*.whl >/dev/null 2>&1; then echo "$1: wheel already built"; return; fi
  sdist=$(ls .whl/"$1"-*.tar.gz 2>/dev/null | head -1) \
    || { echo "no .whl/$1-*.tar.gz: download the sdists first (see the top of $0)" >&2; return 1; }
  src="$BUILD/src/$(basename "$sdist" .tar.gz)"
  rm -rf "$src"; mkdir -p "$BUILD/src"; tar xzf "$sdist" -C "$BUILD/src"
  # Keep only this GPU's architecture in setup.py's -gencode list (each one costs a full compile).
  python3 - "$src/setup.py" "$ARCH" <<'EOF'
import re, sys
path, arch = sys.argv[1], sys.argv[2]
pair = re.compile(r'^(\s*)cc_flag\.append\("-gencode"\)\n\s*cc_flag\.append\("arch=compute_(\w+),code=sm_\w+"\)$', re.M)
text, kept = pair.subn(lambda m: m.group(0) if m.group(2) == arch else m.group(1) + "pass", open(path).read())
if f'"arch=compute_{arch},code=sm_{arch}"' not in text:
    sys.exit(f"{path}: no -gencode entry for sm_{arch}; its setup.py changed, update scripts/build_mamba.sh")
open(path, "w").write(text)
EOF
  echo "$1: building for sm_$ARCH from $(basename "$sdist")"
  (cd "$src" && env "$2=TRUE" python3 -m pip wheel --no-build-isolation --no-deps --no-index . -w "$BUILD/wheels") \
    >"$OUT/build_$1.log" 2>&1 || { tail -30 "$OUT/build_$1.log" >&2; return 1; }
}

start=$SECONDS
if ls .whl/mamba-site-*.tar.xz.part-* >/dev/null 2>&1; then  # built earlier on this kind of machine
  cat .whl/mamba-site-*.tar.xz.part-* | tar xJ -C "$SITE"
  echo "mamba_ssm and causal_conv1d unpacked from .whl/ into $SITE"
  export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
  python3 -c "import causal_conv1d, mamba_ssm; print('mamba_ssm', mamba_ssm.__version__, 'imports')"
  [[ "${1:-}" == "--check" ]] || exit 0
else
  build causal_conv1d CAUSAL_CONV1D_FORCE_BUILD & conv=$!
  build mamba_ssm MAMBA_FORCE_BUILD & ssm=$!
  failed=0; wait $conv || failed=1; wait $ssm || failed=1
  (( failed == 0 )) || exit 1
  python3 -m pip install -q --no-index --no-deps --upgrade --target "$SITE" "$BUILD"/wheels/*.whl
  export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
  python3 -c "import torch, causal_conv1d, mamba_ssm; print('mamba_ssm', mamba_ssm.__version__, 'imports')"
  echo "built and installed in $((SECONDS - start)) s into $SITE (export PYTHONPATH=$SITE)"
fi

if [[ "${1:-}" == "--export" ]]; then
  stage="$BUILD/stage"; rm -rf "$stage"; mkdir -p "$stage" "$2"
  for whl in "$BUILD"/wheels/*.whl; do (cd "$stage" && python3 -m zipfile -e "$whl" .); done
  strip --strip-unneeded "$stage"/*.so
  tar cJ -C "$stage" . | split -b 15M -d - "$2/mamba-site-cp312-sm$ARCH.tar.xz.part-"
  ls -la "$2"
fi
if [[ "${1:-}" == "--check" ]]; then
  bash scripts/gpu_check.sh tests/models/test_baselines_gpu.py || echo "GPU tests FAILED (see $OUT/pytest.log)"
  python3 -m archbench.suites.decode_vs_generate --out "$OUT" 2>&1 | tee "$OUT/decode_vs_generate.log"
fi
