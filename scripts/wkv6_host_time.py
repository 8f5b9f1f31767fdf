"""Where an eager call of our WKV6 prefill spends its time at batch 1 (bf16): the host's time
to issue a call (50 calls without waiting, then one wait), the eager time per call (CUDA
events around 50 calls), and the GPU time alone (the calls replayed from a CUDA graph). If
the host issues a call faster than the GPU runs it, but eager calls still take longer than
replays, the difference is spent on the GPU side (between streams or kernels), not in Python.

    python scripts/wkv6_host_time.py

Run on an H200 on 2026-11-28 at 15:16 (results/kernels/host-20261128/wkv6_host_time-h200.log;
what it shows: results/kernels/README.md, the section of 14:39-15:17), and after the pieces path
moved into one C++ call at 16:15 and 16:22 (results/kernels/pieces-cpp-20261128/*/host.log).
"""
import statistics
import time

import torch

from archbench.kernels.wkv6.op import wkv6_cuda
from archbench.suites.kernel_bench import bench_graphed_ms, make_inputs, spin_up, state_for

spin_up()
for H, T in ((40, 4096), (40, 16384), (64, 4096), (64, 16384)):
    x = make_inputs("wkv6", 1, T, H, 64)
    s = state_for("wkv6", 1, H, 64)
    fn = lambda: wkv6_cuda(**x, state=s)  # noqa: E731
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    host, eager = [], []
    for _ in range(5):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        e0.record()
        t = time.perf_counter()
        for _ in range(50):
            fn()
        host.append((time.perf_counter() - t) / 50 * 1e3)
        e1.record()
        torch.cuda.synchronize()
        eager.append(e0.elapsed_time(e1) / 50)
    g = bench_graphed_ms(fn)["ms"]
    print(f"wkv6 1x{T} H={H}: host issues a call in {statistics.median(host):.3f} ms, eager {statistics.median(eager):.3f} ms "
          f"a call, graph replay {g:.3f} ms", flush=True)
