"""Old vs new fused RWKV-7 2.9B decode step on the GPU: kernel breakdown (profiler), graphed step time,
and the GEMV against cuBLAS per shape (weights rotated past L2)."""
import importlib.util, os, sys, time
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile
from archbench.harness.registry import config_for, make
from archbench.harness.graphs import GraphedStep
from archbench.kernels.build import extension
from archbench.kernels.wkv7 import decode as new_mod

HERE = os.path.dirname(os.path.abspath(__file__))
which = sys.argv[1:] or ["old", "new", "gemv"]
torch.manual_seed(0)
fam, cfg = config_for("rwkv7-2b9")
m = make(fam, cfg, impl="cuda", dtype="bfloat16", device="cuda") if set(which) - {"gemv", "rpbgemv"} else None
with torch.no_grad():
  if m is not None:
    for n, p in m.named_parameters():
        if p.dim() == 2 and "emb" not in n:
            p.normal_(0, p.shape[1] ** -0.5)
        elif "emb" in n:
            p.normal_()
        elif n.endswith(("ln0.weight", "ln1.weight", "ln2.weight", "ln_out.weight", "ln_x.weight")):
            p.fill_(1)
        else:
            p.uniform_(-0.5, 0.5)
    print(cfg, flush=True)


def run(label, B=1):
    st = m.init_state(B)
    tok = torch.ones(B, dtype=torch.long, device="cuda")
    for _ in range(3):
        m.step(tok, st)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            m.step(tok, st)
        torch.cuda.synchronize()
    evs = prof.key_averages()
    tot = sum(e.device_time_total for e in evs if e.device_time_total > 0)
    n = sum(e.count for e in evs if e.device_time_total > 0) / 5
    print(f"== {label} B={B}: kernel time per step {tot / 5 / 1e3:.3f} ms, {n:.0f} kernels", flush=True)
    for e in sorted(evs, key=lambda e: -e.device_time_total)[:12]:
        if e.device_time_total > 0:
            print(f"  {e.device_time_total / 5 / 1e3:7.3f} ms {e.count // 5:5d}x {e.device_time_total / e.count:8.2f} us  "
                  f"{e.key[:90]}")
    g = GraphedStep(m, st, tok)
    for _ in range(10):
        g()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(100):
        g()
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t) / 100
    print(f"   graphed step {dt * 1e3:.3f} ms = {B / dt:.1f} tok/s", flush=True)
    run.dt = dt
    return g.logits.clone()


def graph_check(B=1):
    """A graphed step (PDL edges captured) equals an eager one from the same state."""
    st = m.init_state(B)
    tok = torch.ones(B, dtype=torch.long, device="cuda")
    for _ in range(3):
        m.step(tok, st)
    saved = st.checkpoint()
    eager = m.step(tok, st)[0].clone()
    wkv = st.wkv.clone()
    st.restore(saved)
    g = GraphedStep(m, st, tok)
    graphed = g().clone()
    torch.cuda.synchronize()
    print(f"graph check B={B}: logits max diff {(eager - graphed).abs().max().item():.3e}, "
          f"state max diff {(wkv - st.wkv).abs().max().item():.3e}", flush=True)


print("PDL env:", os.environ.get("ARCHBENCH_DECODE_PDL", "(default on)"), flush=True)
outs = {}
if "old" in which:
    from torch.utils.cpp_extension import load
    old_ext = load(name="archbench_old_d7", sources=[f"{HERE}/old/wkv7/cuda/decode7.cu", f"{HERE}/old/bind.cpp"],
                   extra_include_paths=[f"{HERE}/old"], extra_cuda_cflags=["-O3", "--use_fast_math", "-std=c++17"],
                   verbose=False)
    spec = importlib.util.spec_from_file_location("decode_old", f"{HERE}/old/decode_old.py")
    old_mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old_mod)
    old_mod.extension = lambda: old_ext
    new_step = new_mod.decode_step
    new_mod.decode_step = old_mod.decode_step  # RWKV7.step looks it up on the module at each call
    outs["old"] = run("old (HEAD)")
    new_mod.decode_step = new_step
if "new" in which:
    outs["new"] = run("new")
    graph_check(1)
    graph_check(3)
if "batch" in which:
    for B in (2, 4):
        run("new, own gemv", B)
        new_mod.GEMV_MAX_B = 1
        run("new, cuBLAS", B)
        new_mod.GEMV_MAX_B = 4
    run("new", 8)
if len(outs) == 2:
    a, b = outs["old"].float(), outs["new"].float()
    print("old vs new logits rms rel", ((a - b).pow(2).mean() / a.pow(2).mean()).sqrt().item())

if "gemv" in which or "rpbgemv" in which:
    ext = extension()

    def bench(fn, reps=16):
        fn(0)
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for i in range(reps):
                fn(i)
        g.replay()
        torch.cuda.synchronize()
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        for _ in range(5):
            g.replay()
        e1.record()
        torch.cuda.synchronize()
        return e0.elapsed_time(e1) * 1e3 / (5 * reps)

    C, Fd = 2560, 10240
    rpbs = ["8", "4", "2", "1"] if "rpbgemv" in which else [os.environ.get("ARCHBENCH_GEMV_RPB", "8")]
    for rpb, B in [(r, b) for r in rpbs for b in ((1,) if "rpbgemv" in which else (1, 2, 4))]:
        os.environ["ARCHBENCH_GEMV_RPB"] = rpb
        print(f"-- rows per block {rpb}")
        for name, n, rows, cols, mode in (("rkv", 3, C, C, ""), ("out+res", 1, C, C, "add"),
                                          ("ffn key relu2", 1, Fd, C, "relu"), ("ffn value+res", 1, C, Fd, "add")):
            copies = max(4, int(400e6 // (n * rows * cols * 2)))
            W = [[torch.randn(rows, cols, device="cuda", dtype=torch.bfloat16) * cols ** -0.5 for _ in range(n)]
                 for _ in range(copies)]
            X = [torch.randn(B, cols, device="cuda", dtype=torch.bfloat16) for _ in range(n)]
            Y = [torch.empty(B, rows, device="cuda", dtype=torch.bfloat16) for _ in range(n)]
            R = torch.randn(B, rows, device="cuda", dtype=torch.bfloat16)
            adds = [R] if mode == "add" else []

            def ours(i):
                ext.rwkv7_gemv(W[i % copies], X, Y, adds, mode == "relu")

            def cublas(i):
                for w, x in zip(W[i % copies], X):
                    if mode == "add":
                        torch.addmm(R, x, w.t())
                    elif mode == "relu":
                        torch.relu_(F.linear(x, w)).square_()
                    else:
                        F.linear(x, w)
            t_o, t_c = bench(ours), bench(cublas)
            nbytes = n * rows * cols * 2
            ours(0)
            ref = []
            for w, x in zip(W[0], X):
                y = x.float() @ w.float().t()
                ref.append(y.relu().square() if mode == "relu" else y + R.float() if mode == "add" else y)
            err = max(((y.float() - r).pow(2).mean() / r.pow(2).mean()).sqrt().item() for y, r in zip(Y, ref))
            print(f"gemv B={B} {name:14s} ours {t_o:6.2f} us ({nbytes / t_o / 1e6:5.2f} TB/s)  cuBLAS {t_c:6.2f} us "
                  f"({nbytes / t_c / 1e6:5.2f} TB/s)  rms rel err {err:.1e}", flush=True)
            del W

if "rpbstep" in which:
    best = None
    for rpb in ["8", "4", "2", "1"]:
        os.environ["ARCHBENCH_GEMV_RPB"] = rpb
        run(f"new, rows per block {rpb}")
        if best is None or run.dt < best[1]:
            best = (rpb, run.dt)
    print("best rows per block", best, flush=True)
    open("/tmp/best_rpb", "w").write(best[0])
    os.environ["ARCHBENCH_GEMV_RPB"] = best[0]
    graph_check(1)
