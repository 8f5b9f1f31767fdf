"""RWKV-7 2.9B fused decode step (bf16, batch 1, random weights): the projections' GEMV of the
tree ("current") against a previous version of kernels/wkv7/cuda/decode7.cu ("previous",
built from OLD_DIR with OLD_DIR/bind.cpp, which binds only its rwkv7_gemv), in the same
process, forms alternated; per form the graphed step time (median and spread of 7 runs of 50
replays), a kernel breakdown (torch.profiler), the GEMV alone per shape (weights rotated past
L2), and the weight-read floor from the copy rate measured in the same run.

    python results/decode/rwkv7-unroll/step_bench.py OLD_DIR [--quick]
"""
import os
import statistics
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from archbench.harness.graphs import GraphedStep
from archbench.harness.registry import config_for, make
from archbench.kernels.build import extension
from archbench.kernels.wkv7 import decode
from archbench.suites.kernel_bench import copy_bandwidth

quick = "--quick" in sys.argv
OLD = os.path.abspath(sys.argv[1])
from torch.utils.cpp_extension import load  # noqa: E402
old_ext = load(name="archbench_previous_gemv", sources=[f"{OLD}/wkv7/cuda/decode7.cu", f"{OLD}/bind.cpp"],
               extra_include_paths=[OLD], extra_cuda_cflags=["-O3", "--use_fast_math", "-std=c++17"])
new_ext = extension()


class WithOldGemv:  # the tree's extension, its rwkv7_gemv replaced by the previous one
    def __getattr__(self, name):
        return getattr(new_ext, name)

    @staticmethod
    def rwkv7_gemv(ws, xs, ys, adds, relu_sq):
        old_ext.rwkv7_gemv(ws, xs, ys, adds, relu_sq)

    @staticmethod
    def rwkv7_rkv_lora(ws, xs, ys, lora_xs, lora_ws, partial):  # two launches, as the previous tree
        new_ext.rwkv7_lora_down(lora_xs, lora_ws, partial)
        old_ext.rwkv7_gemv(ws, xs, ys, [], False)


FORMS = {"previous": WithOldGemv(), "current": new_ext}
torch.manual_seed(0)
fam, cfg = config_for("rwkv7-2b9")
m = make(fam, cfg, impl="cuda", dtype="bfloat16", device="cuda")
with torch.no_grad():
    for n, p in m.named_parameters():
        if p.dim() == 2 and "emb" not in n:
            p.normal_(0, p.shape[1] ** -0.5)
        elif "emb" in n:
            p.normal_()
        elif n.endswith(("ln0.weight", "ln1.weight", "ln2.weight", "ln_out.weight", "ln_x.weight")):
            p.fill_(1)
        else:
            p.uniform_(-0.5, 0.5)
weight_bytes = sum(p.numel() * p.element_size() for n, p in m.named_parameters() if "emb" not in n)
bw = copy_bandwidth()
floor = bw / weight_bytes
print(f"{torch.cuda.get_device_name()}: copy rate {bw / 1e12:.2f} TB/s, weights read per step {weight_bytes / 1e9:.2f} GB"
      f" (embedding excluded), floor {floor:.1f} tok/s", flush=True)
tok = torch.ones(1, dtype=torch.long, device="cuda")


def graphed(form):
    decode.extension = lambda: FORMS[form]
    st = m.init_state(1)
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
    return times, g, st


def breakdown(form):
    decode.extension = lambda: FORMS[form]
    st = m.init_state(1)
    for _ in range(3):
        m.step(tok, st)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            m.step(tok, st)
        torch.cuda.synchronize()
    evs = [e for e in prof.key_averages() if e.device_time_total > 0]
    tot = sum(e.device_time_total for e in evs) / 5 / 1e3
    print(f"== {form}: kernel time per step {tot:.3f} ms (eager, profiled)", flush=True)
    for e in sorted(evs, key=lambda e: -e.device_time_total)[:8]:
        print(f"  {e.device_time_total / 5 / 1e3:7.3f} ms {e.count // 5:5d}x {e.device_time_total / e.count:8.2f} us  "
              f"{e.key[:80]}", flush=True)


results = {}
logits = {}
for rnd in range(1 if quick else 2):
    for form in FORMS:
        times, g, st = graphed(form)
        results.setdefault(form, []).extend(times)
        med = statistics.median(times)
        print(f"round {rnd} {form:9s}: graphed step median {med * 1e3:.3f} ms (min {min(times) * 1e3:.3f}, max "
              f"{max(times) * 1e3:.3f}) = {1 / med:.1f} tok/s, {100 / med / floor:.1f}% of the floor", flush=True)
        st2 = m.init_state(1)
        logits[form] = m.step(tok, st2)[0].float()
        del g, st
d = (logits["previous"] - logits["current"]).abs().max().item()
print(f"first-step logits, previous vs current: max abs diff {d:.3e}", flush=True)
for form in FORMS:
    breakdown(form)

# a graphed step equals an eager one from the same state (the PDL edges captured)
decode.extension = lambda: new_ext
st = m.init_state(1)
for _ in range(3):
    m.step(tok, st)
saved = st.checkpoint()
eager = m.step(tok, st)[0].clone()
wkv = st.wkv.clone()
st.restore(saved)
g = GraphedStep(m, st, tok)
graphed_logits = g().clone()
torch.cuda.synchronize()
print(f"graph check (current): logits max diff {(eager - graphed_logits).abs().max().item():.3e}, state max diff "
      f"{(wkv - st.wkv).abs().max().item():.3e}", flush=True)

def bench(fn, reps=16):
    fn(0)
    torch.cuda.synchronize()
    gr = torch.cuda.CUDAGraph()
    with torch.cuda.graph(gr):
        for i in range(reps):
            fn(i)
    gr.replay()
    torch.cuda.synchronize()
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    out = []
    for _ in range(5):
        e0.record()
        gr.replay()
        e1.record()
        torch.cuda.synchronize()
        out.append(e0.elapsed_time(e1) * 1e3 / reps)
    return statistics.median(out)


def gemv_chain(ext, reps=5):
    """The step's 128 projections alone (the model's weights, the tree's GEMV, in a graph): what
    the step would take if the small kernels between them cost nothing."""
    a = [torch.randn(1, n, device="cuda", dtype=torch.bfloat16) for n in (cfg.n_embd,) * 3 + (cfg.dim_ffn,)]
    x, h = a[0], a[3]
    rkv = [torch.empty_like(x) for _ in range(3)]

    def chain():
        for blk in m.blocks:
            att, ffn = blk.att, blk.ffn
            ext.rwkv7_gemv([att.receptance.weight, att.key.weight, att.value.weight], [a[0], a[1], a[2]], rkv, [],
                           False)
            ext.rwkv7_gemv([att.output.weight], [rkv[0]], [x], [x], False)
            ext.rwkv7_gemv([ffn.key.weight], [x], [h], [], True)
            ext.rwkv7_gemv([ffn.value.weight], [h], [x], [x], False)
    chain()
    torch.cuda.synchronize()
    gr = torch.cuda.CUDAGraph()
    with torch.cuda.graph(gr):
        chain()
    for _ in range(10):
        gr.replay()
    torch.cuda.synchronize()
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(50):
            gr.replay()
        torch.cuda.synchronize()
        out.append((time.perf_counter() - t) / 50)
    return statistics.median(out)


for form in FORMS:
    t = gemv_chain(FORMS[form])
    print(f"the 128 projections alone, {form}: {t * 1e3:.3f} ms a step", flush=True)

C, Fd = 2560, 10240
for name, n, rows, cols, mode in (("rkv", 3, C, C, ""), ("out+res", 1, C, C, "add"),
                                  ("ffn key relu2", 1, Fd, C, "relu"), ("ffn value+res", 1, C, Fd, "add")):
    copies = max(4, int(400e6 // (n * rows * cols * 2)))
    W = [[torch.randn(rows, cols, device="cuda", dtype=torch.bfloat16) for _ in range(n)] for _ in range(copies)]
    X = [torch.randn(1, cols, device="cuda", dtype=torch.bfloat16) for _ in range(n)]
    Y = [torch.empty(1, rows, device="cuda", dtype=torch.bfloat16) for _ in range(n)]
    adds = [torch.randn(1, rows, device="cuda", dtype=torch.bfloat16)] * n if mode == "add" else []
    nbytes = n * rows * cols * 2
    line = f"gemv alone {name:14s}"
    for form in FORMS:
        t = bench(lambda i: FORMS[form].rwkv7_gemv(W[i % copies], X, Y, adds, mode == "relu"))
        line += f"  {form} {t:6.2f} us ({nbytes / t / 1e6:4.2f} TB/s)"
    print(line, flush=True)
    del W
summary = {f: statistics.median(t) for f, t in results.items()}
print("SUMMARY " + "  ".join(f"{f}: {v * 1e3:.3f} ms = {1 / v:.1f} tok/s ({100 / v / floor:.1f}% of floor)"
                             for f, v in summary.items()), flush=True)
