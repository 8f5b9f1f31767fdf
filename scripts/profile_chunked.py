"""Per-kernel times of the chunked WKV7 / WKV6 kernels (the build against the state pass) at
1 x 16384, H=40, bf16, from torch.profiler: the logs in results/kernels/split-20261128/.

    python scripts/profile_chunked.py                      # every form and width, a line each
    ncu --section WarpStateStats --print-details all -k regex:state_kernel -s 2 -c 1 \
        python scripts/profile_chunked.py --one wkv7 3 0 2  # one call: op, width, groups, form
"""
import sys
import torch
from torch.profiler import profile, ProfilerActivity
from archbench.suites.kernel_bench import make_inputs
from archbench.kernels.wkv7.op import wkv7_cuda_chunked
from archbench.kernels.wkv6.op import wkv6_cuda_chunked

B, T, H, N = 1, 16384, 40, 64
if len(sys.argv) > 1 and sys.argv[1] == "--one":  # one call for ncu
    op, v, g, f = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    x = make_inputs(op, B, T, H, N)
    fn = wkv7_cuda_chunked if op == "wkv7" else wkv6_cuda_chunked
    s = torch.zeros(B, H, N, N, device="cuda")
    fn(**x, state=s, variant=v, groups=g, form=f)
    torch.cuda.synchronize()
    sys.exit()
for op in ("wkv7", "wkv6"):
    x = make_inputs(op, B, T, H, N)
    fn = wkv7_cuda_chunked if op == "wkv7" else wkv6_cuda_chunked
    for v, g, f in ((1, 0, 2), (2, 0, 2), (3, 0, 2), (2, 2, 1)):
        s = torch.zeros(B, H, N, N, device="cuda")
        for _ in range(3):
            fn(**x, state=s, variant=v, groups=g, form=f)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                fn(**x, state=s, variant=v, groups=g, form=f)
            torch.cuda.synchronize()
        tot = {}
        for e in prof.key_averages():
            if e.device_type.name == "CUDA" or "kernel" in e.key:
                name = "build" if "build" in e.key else "state" if ("chunked_kernel" in e.key or "state_kernel" in e.key) else e.key[:30]
                tot[name] = tot.get(name, 0) + e.self_device_time_total / 5 / 1e3
        print(op, f"vt{16 << (v - 1)} g{g} form{f}:", ", ".join(f"{k} {ms:.3f} ms" for k, ms in tot.items()),
              f"=> {B * T / sum(tot.values()) / 1e3:.2f} Mtok/s", flush=True)
