"""RWKV-6 3B decode step (or another preset's: RWKV-4 3B, RWKV-5 3B, RWKV-7 2.9B; bf16 or the
dtype given, random weights of the harness's `build`, graphed): the fused step
(kernels/wkv6/decode.py, ../wkv4, ../wkv5, ../wkv7)
against the model's own ops on a (B, 1) input, in one process,
forms alternated over rounds of 7 x 50 replays at batch 1 (one round at batch 2); the first
step's logits of the two; the floor from the copy rate measured in the same run.

    python results/decode/rwkv6-fused/step_bench.py [PRESET [DTYPE [VERSION]]]

VERSION: the preset's shape as another RWKV version (e.g. rwkv5-3b as 5.1 or 5.0).
"""
import dataclasses
import statistics
import sys
import time

import torch

from archbench.harness.graphs import GraphedStep
from archbench.harness.interface import decode_read_nbytes
from archbench.harness.registry import build, config_for, make
from archbench.harness.testing import errors
from archbench.suites.kernel_bench import copy_bandwidth


def step_times(m, B, reps=7, n=50):
    tok = torch.ones(B, dtype=torch.long, device="cuda")
    st = m.init_state(B)
    for _ in range(3):
        m.step(tok, st)
    g = GraphedStep(m, st, tok)
    for _ in range(10):
        g()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(n):
            g()
        torch.cuda.synchronize()
        ts.append((time.perf_counter() - t) / n)
    del g
    return ts


def main(name, dtype="bfloat16", version=None):
    t0 = time.time()
    if version is None:
        m = build(name, impl="cuda", dtype=dtype, device="cuda")
    else:
        family, cfg = config_for(name)
        m = make(family, dataclasses.replace(cfg, version=version), impl="cuda").init_random_(0)
        m = m.cuda().cast(dtype).eval()
        name = f"{name} as {version}"
    print(f"built {name} ({dtype}) in {time.time() - t0:.0f} s", flush=True)
    read = decode_read_nbytes(m)
    bw = copy_bandwidth()
    floor = bw / read
    print(f"{torch.cuda.get_device_name()}: copy rate {bw / 1e12:.2f} TB/s, bytes read per step {read / 1e9:.2f} GB, "
          f"floor {floor:.1f} tok/s", flush=True)
    tok = torch.ones(1, dtype=torch.long, device="cuda")
    logits = {}
    for fused in (True, False):
        m.fused_decode = fused
        st = m.init_state(1)
        for _ in range(4):
            out = m.step(tok, st)[0].float()
        logits[fused] = out
    e = errors(logits[True], logits[False])
    print(f"4th-step logits, fused against unfused: rms_rel {e['rms_rel']:.3e}, max abs {e['max_abs']:.3e}", flush=True)
    steps = {}
    for rnd in range(3):
        for fused in (True, False):
            m.fused_decode = fused
            ts = step_times(m, 1)
            steps.setdefault(fused, []).extend(ts)
            med = statistics.median(ts)
            print(f"round {rnd} {'fused  ' if fused else 'unfused'}: step {med * 1e3:.3f} ms (min {min(ts) * 1e3:.3f}, "
                  f"max {max(ts) * 1e3:.3f}) = {1 / med:.1f} tok/s, {100 / med / floor:.1f}% of the floor", flush=True)
    for fused in (True, False):
        m.fused_decode = fused
        ts = step_times(m, 2, reps=5)
        med = statistics.median(ts)
        print(f"batch 2 {'fused  ' if fused else 'unfused'}: step {med * 1e3:.3f} ms = {2 / med:.1f} tok/s", flush=True)
    print("SUMMARY batch 1: " + "; ".join(
        f"{'fused' if f else 'unfused'}: {statistics.median(t) * 1e3:.3f} ms, {1 / statistics.median(t):.1f} tok/s "
        f"({100 / statistics.median(t) / floor:.1f}% of {floor:.0f})" for f, t in steps.items()), flush=True)


if __name__ == "__main__":
    main(*(sys.argv[1:] or ["rwkv6-3b"]))
