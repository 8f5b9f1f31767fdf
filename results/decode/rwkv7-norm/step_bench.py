"""RWKV-7 2.9B fused decode step (bf16, random weights): each mix's layer norm and
interpolations made inside its projections' launch (decode.FUSE_NORM = True, rwkv7_norm_gemv)
against rwkv7_norm_mix before them (False, the step as of ce22508), same build, same process,
forms alternated over two rounds of 7 x 50 graphed replays, at batch 1 and 2; the first-step
logits of both; a kernel breakdown per form (eager, torch.profiler); the graphed step against
an eager one; the weight-read floor from the copy rate measured in the same run.

    python results/decode/rwkv7-norm/step_bench.py
"""
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

from archbench.harness.graphs import GraphedStep
from archbench.harness.interface import decode_read_nbytes
from archbench.harness.registry import config_for, make
from archbench.kernels.wkv7 import decode
from archbench.suites.kernel_bench import copy_bandwidth

fam, cfg = config_for("rwkv7-2b9")
m = make(fam, cfg, impl="cuda", dtype="bfloat16", device="cuda").init_random_(0)
nbytes = decode_read_nbytes(m)
bw = copy_bandwidth()
floor = bw / nbytes
print(f"{torch.cuda.get_device_name()}: copy rate {bw / 1e12:.2f} TB/s, {nbytes / 1e9:.2f} GB read a step, floor "
      f"{floor:.1f} tok/s at batch 1", flush=True)
FORMS = {"norm_mix": False, "fused": True}


def graphed(fuse, B):
    decode.FUSE_NORM = fuse
    st = m.init_state(B)
    tok = torch.ones(B, dtype=torch.long, device="cuda")
    for _ in range(3):
        m.step(tok, st)
    g = GraphedStep(m, st, tok)
    for _ in range(20):
        g()
    torch.cuda.synchronize()
    times = []
    for _ in range(7):
        t = time.perf_counter()
        for _ in range(50):
            g()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t) / 50)
    return times


results = {}
for B in (1, 2):
    for rnd in range(2):
        for form, fuse in FORMS.items():
            times = graphed(fuse, B)
            results.setdefault((B, form), []).extend(times)
            med = statistics.median(times)
            print(f"B={B} round {rnd} {form:8s}: graphed step median {med * 1e3:.3f} ms (min {min(times) * 1e3:.3f}, "
                  f"max {max(times) * 1e3:.3f}) = {B / med:.1f} tok/s" + (f", {100 / med / floor:.1f}% of the floor"
                                                                          if B == 1 else ""), flush=True)

tok = torch.ones(1, dtype=torch.long, device="cuda")
logits = {}
for form, fuse in FORMS.items():
    decode.FUSE_NORM = fuse
    st = m.init_state(1)
    for _ in range(4):
        out = m.step(tok, st)[0].float()
    logits[form] = out
d = (logits["norm_mix"] - logits["fused"]).abs().max().item()
print(f"logits after 4 steps, norm_mix vs fused: max abs diff {d:.3e} (max abs {logits['fused'].abs().max().item():.2f})",
      flush=True)

for form, fuse in FORMS.items():
    decode.FUSE_NORM = fuse
    st = m.init_state(1)
    for _ in range(3):
        m.step(tok, st)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            m.step(tok, st)
        torch.cuda.synchronize()
    evs = [e for e in prof.key_averages() if e.device_time_total > 0]
    print(f"== {form}: kernel time per step {sum(e.device_time_total for e in evs) / 5 / 1e3:.3f} ms (eager, profiled)")
    for e in sorted(evs, key=lambda e: -e.device_time_total)[:7]:
        print(f"  {e.device_time_total / 5 / 1e3:7.3f} ms {e.count // 5:5d}x {e.device_time_total / e.count:8.2f} us  "
              f"{e.key[:70]}", flush=True)

decode.FUSE_NORM = True
st = m.init_state(1)
for _ in range(3):
    m.step(tok, st)
saved = st.checkpoint()
eager = m.step(tok, st)[0].clone()
after = st.checkpoint()
st.restore(saved)
g = GraphedStep(m, st, tok)
graphed_logits = g().clone()
torch.cuda.synchronize()
print(f"graph check (fused): logits max diff {(eager - graphed_logits).abs().max().item():.3e}, state max diff "
      + ", ".join(f"{k} {(getattr(after, k) - getattr(st, k)).abs().max().item():.3e}"
                  for k in ("att_shift", "ffn_shift", "wkv")), flush=True)
print("SUMMARY " + "  ".join(f"B={B} {f}: {statistics.median(t) * 1e3:.3f} ms = {B / statistics.median(t):.1f} tok/s"
                             for (B, f), t in results.items()), flush=True)
