#!/usr/bin/env bash
# The H100 work, in stages that resume: run it in a device call with .whl/ carried, and the
# committed results under results/ are picked up where they stopped (sweeps and NIAH grids
# skip recorded cells). Everything new goes to results/ in the copy and comes back as
# $OUT/results.tgz, with the Triton cache ($OUT/triton-cache.tar.xz: put it in .whl/ so the
# next call does not compile fla's kernels again, minutes each time).
#
# Usage: SHA=$(git rev-parse --short HEAD) bash scripts/gpu_session.sh STAGE... [--until SECONDS]
# Ask the device tool for kind nvidia-h100-x1: a call free to take either card may land on an
# H200, whose records then belong in a *-h200 folder. The carry limit is 64 MiB: .whl with
# the mamba parts is 64 MB, so leave the sdists out of it.
# Stages (in the order given):
#   tests    GPU tests of the harness and baselines (graphs, peers, mamba_ssm vs transformers), or $TESTS
#            (tests/harness/test_decode_gpu.py's RWKV-7 peer cell waits on fla's Triton autotune:
#            minutes on a bare machine, so carry the Triton cache or leave that file out)
#   speed    archbench sweep --preset seed-speed (all five models, peers' generate per cell)
#   memory   archbench sweep --preset seed-memory
#   rwkv7-peers  RWKV-7 2.9B against fla's generate in the same cells (fla autotunes its
#            kernels for every prompt length: minutes per cell; carry the Triton cache)
#   decode   RWKV-7 fused decode step against the unfused one (decode_vs_generate)
#   mamba-chunked  the memory preset for Mamba-1 and Mamba-2 with the prompt in pieces (flat to 1M)
#   niah     passkey grid 1K-512K for rwkv7-2b9, mamba-2.8b, pythia-2.8b (or $NIAH_MODELS)
#   evalbench  lm-eval state reuse on and off, 4-choice task, 2.9B shape (needs lm-eval wheels)
#   steps    the fused decode step against the unfused one at 3B, graphed, batch 1 and 2
#            (results/decode/rwkv6-fused/step_bench.py): $STEP_MODELS (default RWKV-4/5/6 3B and
#            RWKV-7 2.9B) in bf16, then RWKV-4 and RWKV-6 in fp16; logs to $OUT/steps-*.log
#   kernels  the WKV kernel benchmark against fla (and the PyTorch chunked WKV7): $KERNEL_OPS,
#            $KERNEL_SHAPES (2b9, 7b or all), $KERNEL_SKIP
#   turns    WKV6, WKV5 and WKV4 prefill timed in turns at the benchmark's shapes (issue 3's "WKV4
#            and WKV5 at least as fast per token as WKV6"; results/kernels/wkv5-vs-wkv6-20261129/ab.py)
#   stream   the persistent streaming kernel with many small ring slots, as run on 2026-11-29 (any
#            Hopper; results/decode/rwkv7-stream/stream_chain.py --small-slots), log in $OUT/stream.log
# --until S: stop starting new work S seconds after the start (a call lasts at most 600 s).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"; START=$SECONDS; UNTIL=560; STAGES=()
while (($#)); do
  case $1 in --until) UNTIL=$2; shift 2 ;; *) STAGES+=("$1"); shift ;; esac
done
export PYTHONUNBUFFERED=1 ARCHBENCH_GIT_SHA=${SHA:-unknown} ARCHBENCH_WEIGHT_CACHE=/tmp/weights PYTHONPATH=/tmp/site
left() { echo $((UNTIL - SECONDS + START)); }
pack() {
  tar czf "$OUT/results.tgz" results runs 2>/dev/null
  [[ -d ~/.triton/cache ]] && tar cJf "$OUT/triton-cache.tar.xz" -C ~/.triton cache
}
trap pack EXIT

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
[[ -f .whl/triton-cache.tar.xz ]] && mkdir -p ~/.triton && tar xJf .whl/triton-cache.tar.xz -C ~/.triton
bash scripts/build_mamba.sh >"$OUT/mamba.log" 2>&1 || echo "mamba_ssm unavailable (see mamba.log): its cells will fail"
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1 || cat "$OUT/install.log"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
echo "setup: $((SECONDS - START)) s"

for stage in "${STAGES[@]}"; do
  (( $(left) > 20 )) || { echo "no time left for $stage"; break; }
  echo "== $stage ($(left) s left)"
  case $stage in
    tests) timeout "$(left)" python3 -m pytest -q -p no:cacheprovider ${TESTS:-tests/harness/test_decode_gpu.py \
             tests/models/test_baselines_gpu.py tests/models/test_rwkv_gpu.py tests/kernels} 2>&1 | tee "$OUT/tests.log" | tail -15 ;;
    speed) timeout "$(left)" archbench sweep --preset seed-speed --out results/sweeps/seed-speed-h100 --no-progress \
             --cell-timeout 300 2>&1 | tail -40 ;;
    memory) timeout "$(left)" archbench sweep --preset seed-memory --out results/sweeps/seed-memory-h100 \
              --no-progress --cell-timeout 300 2>&1 | tail -25 ;;
    rwkv7-peers) timeout "$(left)" archbench sweep --preset seed-speed --models rwkv7-2b9 \
                   --out results/sweeps/rwkv7-fla-peer-h100 --no-progress --cell-timeout 580 2>&1 | tail -10 ;;
    decode) timeout "$(left)" python3 -m archbench.suites.decode_vs_generate --models rwkv7-2b9 --no-peers \
              --out ${DECODE_OUT:-results/decode/rwkv7-fused} 2>&1 | tail -6 ;;
    mamba-chunked) timeout "$(left)" archbench sweep --preset seed-memory --models mamba-2.8b mamba2-2.7b \
                     --out results/sweeps/seed-memory-mamba-chunked-h100 --no-progress --cell-timeout 300 2>&1 | tail -12 ;;
    niah) for m in ${NIAH_MODELS:-rwkv7-2b9 mamba-2.8b pythia-2.8b}; do
            timeout "$(left)" archbench niah --model $m --contexts 1k,8k,32k,128k,512k --depths 0,50,100 \
              --chunk 65536 --dtype bfloat16 --device cuda --out results/niah/h100 --no-progress 2>&1 | tail -9
          done ;;
    evalbench) timeout "$(left)" python3 -m archbench.suites.lm_eval_reuse_bench --model rwkv7-2b9 --device cuda \
                 --dtype bfloat16 --out results/eval 2>&1 | tail -16 ;;
    steps) for md in ${STEP_MODELS:-rwkv4-3b:bfloat16 rwkv5-3b:bfloat16 rwkv6-3b:bfloat16 rwkv7-2b9:bfloat16 \
                                     rwkv4-3b:float16 rwkv6-3b:float16}; do
             (( $(left) > 60 )) || { echo "no time left for $md"; break; }
             timeout "$(left)" python3 results/decode/rwkv6-fused/step_bench.py ${md%%:*} ${md##*:} \
               > "$OUT/steps-${md%%:*}-${md##*:}.log" 2>&1
             grep -E "built|SUMMARY|batch 2" "$OUT/steps-${md%%:*}-${md##*:}.log"
           done ;;
    kernels) timeout "$(left)" python3 -m archbench.suites.kernel_bench --ops ${KERNEL_OPS:-wkv7 wkv6} --shapes ${KERNEL_SHAPES:-2b9} \
               --skip ${KERNEL_SKIP:-blinkdl-layout fla-recurrent torch-chunked} --out results/kernels 2>&1 | tee "$OUT/kernels.log" | tail -30 ;;
    turns) timeout "$(left)" python3 results/kernels/wkv5-vs-wkv6-20261129/ab.py 5 > "$OUT/turns.log" 2>&1
           grep -v JSON "$OUT/turns.log" | tail -12 ;;
    stream) timeout "$(left)" python3 results/decode/rwkv7-stream/stream_chain.py --small-slots > "$OUT/stream.log" 2>&1
            grep -A40 SUMMARY "$OUT/stream.log" ;;
    *) echo "unknown stage $stage" ;;
  esac
done
echo "done at $((SECONDS - START)) s"
