"""Kernel times of one WKV6 call at 1 x T x 40 heads, bf16, without and with pieces (torch.profiler)."""
import torch
from torch.profiler import ProfilerActivity, profile
from archbench.kernels.wkv6.op import wkv6_cuda_chunked
for T, H, P in ((16384, 40, 1), (16384, 40, 8), (16384, 40, 16), (65536, 40, 16), (4096, 40, 2), (4096, 40, 8), (16384, 64, 5)):
    g = torch.Generator(device="cuda").manual_seed(0)
    sh = (1, T, H, 64)
    x = dict(r=torch.randn(*sh, device="cuda", generator=g).bfloat16(), k=(0.5 * torch.randn(*sh, device="cuda", generator=g)).bfloat16(),
             v=torch.randn(*sh, device="cuda", generator=g).bfloat16(),
             w=(-torch.exp(torch.linspace(-6, 1, 64, device="cuda")) * torch.exp(0.3 * torch.randn(*sh, device="cuda", generator=g))).bfloat16())
    u = torch.randn(H, 64, device="cuda")
    s = torch.zeros(1, H, 64, 64, device="cuda")
    for _ in range(3):
        wkv6_cuda_chunked(**x, u=u, state=s, pieces=P)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            wkv6_cuda_chunked(**x, u=u, state=s, pieces=P)
        torch.cuda.synchronize()
    evs = [e for e in prof.key_averages() if e.device_time_total > 0]
    print(f"== T={T} H={H} pieces={P}: kernel time per call {sum(e.device_time_total for e in evs) / 5 / 1e3:.3f} ms")
    for e in sorted(evs, key=lambda e: -e.device_time_total)[:8]:
        print(f"  {e.device_time_total / 5 / 1e3:7.3f} ms  {e.count // 5:4d}x  {e.key[:80]}")
