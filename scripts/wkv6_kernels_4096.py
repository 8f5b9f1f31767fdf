"""Where the GPU time of a WKV6 prefill goes at 1 x 4096 (bf16): per-kernel device time from
torch.profiler (10 calls, ms a call), ours by shape and at other piece counts, fla's
chunk_rwkv6 beside it, with eager and CUDA-graph replay times of each.

    python scripts/wkv6_kernels_4096.py [--heads 40 64] [--cases ours pieces-8 fla-chunk]

Run on an H200 on 2026-11-28 (results/kernels/pieces-cpp-20261128/*/kernels4096.log; what they
show: results/kernels/README.md, the section of 16:00-16:35).
"""
import argparse
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from archbench.kernels import get_op
from archbench.kernels.wkv6.op import wkv6_cuda_chunked
from archbench.suites.kernel_bench import bench_graphed_ms, bench_ms, make_inputs, spin_up, state_for


def kernels(fn, calls=10):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    tot, cnt = defaultdict(float), defaultdict(int)
    for e in prof.key_averages():
        if e.self_device_time_total > 0:
            tot[e.key[:60]] += e.self_device_time_total / calls / 1e3
            cnt[e.key[:60]] += e.count // calls
    return tot, cnt


ap = argparse.ArgumentParser()
ap.add_argument("--heads", type=int, nargs="+", default=[40, 64])
ap.add_argument("--cases", nargs="+", default=None, help="ours, pieces-P (P in 1 2 4 8 16), fla-chunk; default all")
args = ap.parse_args()
spin_up()
fla = get_op("wkv6", "fla")
for H in args.heads:
    T = 4096
    x = make_inputs("wkv6", 1, T, H, 64)
    s = state_for("wkv6", 1, H, 64)
    cases = {"ours": lambda: wkv6_cuda_chunked(**x, state=s)}
    for P in (1, 2, 4, 8, 16):
        cases[f"pieces-{P}"] = lambda P=P: wkv6_cuda_chunked(**x, state=s, pieces=P)
    cases["fla-chunk"] = lambda: fla(**x, state=s, mode="chunk")
    for name, fn in cases.items():
        if args.cases and name not in args.cases:
            continue
        eager, graph = bench_ms(fn), bench_graphed_ms(fn)  # before any profiler runs
        tot, cnt = kernels(fn)
        print(f"\nH={H} 1x{T} {name}: eager {eager['ms']:.4f} ms ({eager['ms_p20']:.4f}-{eager['ms_p80']:.4f}), "
              f"replay {graph['ms']:.4f} ms, kernel sum {sum(tot.values()):.4f} ms", flush=True)
        for k, ms in sorted(tot.items(), key=lambda kv: -kv[1]):
            print(f"   {ms * 1e3:8.1f} us  x{cnt[k]:<3d} {k}")
