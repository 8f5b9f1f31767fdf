"""RWKV-7 2.9B fused decode step at batch 2 and 4 (bf16, random weights): the projections on our
matrix-vector kernel (decode.GEMV_MAX_B = 4) against cuBLAS (GEMV_MAX_B = 1, the default
set on an H100 with the kernel before 2026-11-28's register change), graphed step, same
process, alternated; the fused-decode GPU tests cover both paths.

    python results/decode/rwkv7-unroll/batch_bench.py
"""
import statistics
import time

import torch

from archbench.harness.graphs import GraphedStep
from archbench.harness.registry import config_for, make
from archbench.kernels.wkv7 import decode

fam, cfg = config_for("rwkv7-2b9")
m = make(fam, cfg, impl="cuda", dtype="bfloat16", device="cuda").init_random_(0)
print(torch.cuda.get_device_name(), flush=True)


def step_ms(B, max_b):
    decode.GEMV_MAX_B = max_b
    st = m.init_state(B)
    tok = torch.ones(B, dtype=torch.long, device="cuda")
    for _ in range(3):
        m.step(tok, st)
    g = GraphedStep(m, st, tok)
    for _ in range(10):
        g()
    torch.cuda.synchronize()
    out = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(30):
            g()
        torch.cuda.synchronize()
        out.append((time.perf_counter() - t) / 30 * 1e3)
    return statistics.median(out), min(out), max(out)


for B in (2, 3, 4):
    for rnd in range(2):
        for name, max_b in (("cuBLAS", 1), ("ours", 4)):
            med, lo, hi = step_ms(B, max_b)
            print(f"B={B} round {rnd} {name:6s}: {med:.3f} ms (min {lo:.3f}, max {hi:.3f}) = {B / med * 1e3:.1f} tok/s",
                  flush=True)
