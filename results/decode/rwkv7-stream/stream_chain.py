"""Can one persistent kernel stream a decode step's weights at the copy rate through the step's
dependencies, and hide the step's other work behind that stream? (`stream_chain.cu` says how
the kernel works; README.md what was measured.)

The RWKV-7 2.9B step's 129 matrix-vector products as a chain of dependent products, bf16,
batch 1, random weights: per layer r/k/v (7680 x 2560), output (2560 x 2560), FFN key
(10240 x 2560), FFN value (2560 x 10240), times 32, then the head (65536 x 2560); the input
of each product is the first K values of the output of the one before. Optionally with
stand-ins for the step's other work between them (`program`): "+N/Mus" is N us of every
block before r/k/v, FFN key and the head (the norms) and M us of 40 blocks after r/k/v (the
per-head kernel).

Forms, timed in the same process over rounds (graphs, 7 x 50 replays a form a round):
  gemv         - the tree's rwkv7_gemv, one launch a product (programmatic dependent launch)
  Chain(mode, nw, s, ...) - the persistent kernel, nw consumer warps, s ring slots of 20 KB an
                 SM; the producer fills a slot by mode: "tma" (cp.async.bulk; split: in n
                 pieces), "ldgsts" (a warp's 16-byte cp.async), "none" (moves nothing: what the
                 consumers alone cost); wait=False: no waiting for the phase before (results
                 garbage: the streaming rate without dependencies); evict_first: an L2
                 evict-first hint on the weights; vf32: the input vector widened to fp32 in
                 shared memory (one slot fewer); pf: an L2 prefetch window of pf tiles beyond
                 the ring; vreg: a lane's chunks of a 2560-wide vector held in registers; ng:
                 groups of warps sharing a tile (0: a warp a tile)

README.md lists the forms each call ran (the FORMS block below is call 7's, and, with
--small-slots, calls 8-11's).

Checks: every phase of each waiting form (and of the baseline) against fp32 torch on that
form's own input (bf16 rounding only); the no-wait forms are checked too, to show that the
check can fail.

    python results/decode/rwkv7-stream/stream_chain.py [--quick] [--small-slots] [--only=A,B] [--list] [--check-only]
                                                        [--earlier=FILE.cu]
      --quick: 4 layers; --small-slots: calls 8-11's forms (slot_bytes 5120 / 10240: more,
      smaller slots, each released as soon as its warp is done with it; slower, README); --only: those
      forms and the baseline; --list: the forms' names; --check-only: run and check, no timing;
      --earlier: an earlier version of the kernel (20 KB slots, no slot_bytes argument; e.g.
      `git show c22bff9:results/decode/rwkv7-stream/stream_chain.cu`, call 7's) timed beside
"""
import os
import statistics
import sys

import torch
from torch.utils.cpp_extension import load

from archbench.kernels.build import build_directory, build_lock, extension
from archbench.suites.kernel_bench import copy_bandwidth

HERE = os.path.dirname(os.path.abspath(__file__))
quick = "--quick" in sys.argv
with build_lock(build_directory("archbench_stream_chain")):  # a build killed half-way blocks no later one
    chain_ext = load(name="archbench_stream_chain", sources=[f"{HERE}/stream_chain.cu"],
                     extra_cuda_cflags=["-O3", "-std=c++17", "-gencode=arch=compute_90a,code=sm_90a"],
                     build_directory=str(build_directory("archbench_stream_chain")))
own = extension()

C, FF, L, V = 2560, 10240, (4 if quick else 32), 65536
SHAPES = [(3 * C, C), (C, C), (FF, C), (C, FF)] * L + [(V, C)]
torch.manual_seed(0)
W = [torch.randn(r, k, device="cuda").mul_(k ** -0.5).to(torch.bfloat16) for r, k in SHAPES]
weight_bytes = sum(w.numel() * 2 for w in W)
x0 = torch.randn(C, device="cuda").to(torch.bfloat16)


def buffers():
    return [torch.zeros(r, device="cuda", dtype=torch.bfloat16) for r, _ in SHAPES]


def inputs(ys):
    return [x0] + [ys[p - 1][:k] for p, (_, k) in enumerate(SHAPES) if p > 0]


class Gemv:
    def __init__(self):
        self.ys = buffers()
        self.xs = inputs(self.ys)

    def __call__(self):
        for w, x, y in zip(W, self.xs, self.ys):
            own.rwkv7_gemv([w], [x.view(1, -1)], [y.view(1, -1)], [], False)


def program(norm_ns=0, head_ns=0, products=True):
    """The phases of a chain: product indices, and ("delay", ns, blocks) stand-ins for a norm
    (every block) before r/k/v, FFN key and the head, and the per-head work (40 blocks, one a
    head) between r/k/v and the output projection."""
    items = []
    for i in range(len(SHAPES)):
        if i % 4 in (0, 2) and norm_ns:
            items.append(("delay", norm_ns, 1 << 20))
        if products:
            items.append(i)
        if i % 4 == 0 and i < len(SHAPES) - 1 and head_ns:
            items.append(("delay", head_ns, 40))
    return items


class Chain:
    MODES = {"tma": 0, "ldgsts": 1, "none": 2}

    def __init__(self, mode, nw, s, split=1, wait=True, evict_first=False, items=None, pf=0, vf32=False, vreg=False, ng=0,
                 slot_bytes=20480, ext=None):
        self.ys = buffers()
        self.xs = inputs(self.ys)
        rows = []
        for it in items or program():
            if isinstance(it, int):
                w, x, y = W[it], self.xs[it], self.ys[it]
                rows.append([w.data_ptr(), x.data_ptr(), y.data_ptr(), w.shape[0] + (w.shape[1] << 32)])
            else:
                rows.append([0, it[2], 0, it[1] << 32])
        self.products = any(isinstance(it, int) for it in items or program())
        self.table = torch.tensor(rows, dtype=torch.int64, device="cuda")
        self.done = torch.zeros(len(rows), dtype=torch.int32, device="cuda")
        self.args = (nw, s, wait, evict_first, self.MODES[mode], split, pf, vf32, vreg, ng, slot_bytes)
        self.ext = ext or chain_ext
        if ext is not None:  # an earlier kernel (--earlier): 20 KB slots only, no slot_bytes argument
            assert slot_bytes == 20480
            self.args = self.args[:-1]

    def __call__(self):
        self.done.zero_()
        self.ext.chain(self.table, self.done, *self.args)


def check(form) -> float:
    """Largest relative error over the phases of the form's outputs against fp32 torch on its inputs."""
    worst = 0.0
    for w, x, y in zip(W, form.xs, form.ys):
        ref = w.float() @ x.float()
        worst = max(worst, ((y.float() - ref).norm() / ref.norm().clamp_min(1e-30)).item())
    return worst


small = "--small-slots" in sys.argv
if small:  # the next experiment (README): many small slots a warp, each released as soon as its warp is done
    SPECS = (("ldgsts10x10", dict(nw=10, s=10)), ("s5k-10x40", dict(nw=10, s=40, slot_bytes=5120)),
             ("s5k-8x32", dict(nw=8, s=32, slot_bytes=5120)), ("s5k-5x40", dict(nw=5, s=40, slot_bytes=5120)),
             ("s5k-5x20", dict(nw=5, s=20, slot_bytes=5120)),
             ("s10k-10x20", dict(nw=10, s=20, slot_bytes=10240)), ("s10k-5x20", dict(nw=5, s=20, slot_bytes=10240)))
else:  # call 7's
    SPECS = (("ldgsts10x10", dict(nw=10, s=10)), ("g1-10x10", dict(nw=10, s=10, ng=1)),
             ("g2-10x10", dict(nw=10, s=10, ng=2)), ("g5-10x10", dict(nw=10, s=10, ng=5)))
FORMS = {"gemv": Gemv()}
# with stand-ins for the step's other work ("+N/Mus"): N us before r/k/v, FFN key and the head
# (every block), M us of per-head work (40 blocks) after r/k/v
for name, kw in SPECS:
    FORMS[name] = Chain("ldgsts", **kw)
    FORMS[name + "+3/10us"] = Chain("ldgsts", **kw, items=program(3000, 10000))
    FORMS[name + "+1/5us"] = Chain("ldgsts", **kw, items=program(1000, 5000))
    FORMS["none-" + name] = Chain("none", **kw)
if small:
    FORMS["s5k-10x40-nowait"] = Chain("ldgsts", 10, 40, slot_bytes=5120, wait=False)
FORMS["stand-ins alone 3/10us"] = Chain("ldgsts", 10, 10, items=program(3000, 10000, products=False))
FORMS["stand-ins alone 1/5us"] = Chain("ldgsts", 10, 10, items=program(1000, 5000, products=False))
earlier = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--earlier=")), None)
if earlier:  # --earlier=FILE.cu: that kernel's 20 KB form beside this one's, same process (e.g. call 7's)
    with build_lock(build_directory("archbench_stream_chain_earlier")):
        earlier_ext = load(name="archbench_stream_chain_earlier", sources=[earlier],
                           extra_cuda_cflags=["-O3", "-std=c++17", "-gencode=arch=compute_90a,code=sm_90a"],
                           build_directory=str(build_directory("archbench_stream_chain_earlier")))
    FORMS["earlier-ldgsts10x10"] = Chain("ldgsts", 10, 10, ext=earlier_ext)
    FORMS["earlier-ldgsts10x10+3/10us"] = Chain("ldgsts", 10, 10, items=program(3000, 10000), ext=earlier_ext)
    FORMS["earlier-none-ldgsts10x10"] = Chain("none", 10, 10, ext=earlier_ext)
only = next((a.split("=", 1)[1].split(",") for a in sys.argv if a.startswith("--only=")), None)
if only:  # --only=NAME,...: those forms (and the baseline)
    FORMS = {n: f for n, f in FORMS.items() if n in only or n == "gemv"}
if "--list" in sys.argv:
    print("\n".join(FORMS))
    sys.exit(0)

rate = copy_bandwidth()
floor_ms = weight_bytes / rate * 1e3
print(f"{torch.cuda.get_device_name()}  copy rate {rate / 1e12:.3f} TB/s; {len(SHAPES)} products, "
      f"{weight_bytes / 1e9:.3f} GB of weights; floor {floor_ms:.3f} ms", flush=True)

graphs = {}
for name, form in FORMS.items():
    form()
    torch.cuda.synchronize()
    if form.__dict__.get("products", True) and not name.startswith("none"):
        print(f"{name:14s} check: max rel err over phases {check(form):.2e}", flush=True)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        form()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        form()
    graphs[name] = g
    g.replay()
    torch.cuda.synchronize()  # a fault is then this form's
    print(f"{name:14s} ran, eager and graphed", flush=True)
if "--check-only" in sys.argv:
    sys.exit(0)


def time_ms(g, reps=50):
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    e0.record()
    for _ in range(reps):
        g.replay()
    e1.record()
    e1.synchronize()
    return e0.elapsed_time(e1) / reps


for g in graphs.values():
    time_ms(g, 10)
rounds = {n: [] for n in graphs}
for r in range(3):
    for name, g in graphs.items():
        rounds[name].append(statistics.median(time_ms(g) for _ in range(7)))
    print(f"round {r}: " + "  ".join(f"{n} {rounds[n][-1]:.3f}" for n in graphs), flush=True)
print("\nSUMMARY (ms a chain, three rounds; TB/s of weights at the median; of the copy rate)")
base = statistics.median(rounds["gemv"])
for name, ts in rounds.items():
    m = statistics.median(ts)
    print(f"{name:14s} {' / '.join(f'{t:.3f}' for t in ts)}  {weight_bytes / m / 1e9:.2f} TB/s  "
          f"{floor_ms / m * 100:.1f}% of the copy rate  {base / m:.3f}x gemv")
# the check once more, after the replays (the graphs ran the same work on the same buffers)
for name in ("gemv", "s5k-10x40", "s5k-10x40+3/10us", "s5k-5x20", "s5k-5x20+3/10us") if small else ("gemv", "g1-10x10", "g2-10x10+3/10us", "g5-10x10+1/5us"):
    if name not in FORMS:
        continue
    print(f"{name:14s} check after replays: {check(FORMS[name]):.2e}")
