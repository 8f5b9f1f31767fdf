"""WKV5 on our CUDA kernels (the WKV6 kernels with a fixed decay): same signature as
`wkv5_ref`.

    y, state = wkv5_cuda(r, k, v, w, u, state)     # w: log decay [H, N]

The sequential WKV6 kernel reads the decay once per head (fp32); for long prompts
(`use_chunked`, as WKV6) the chunked tensor-core WKV6 kernel, which also reads it once per
head (in the inputs' dtype), for its speed at small batch (WKV6 on the H100: 7.3-7.7 against
4.8 Mtok/s at B=1).
"""
from __future__ import annotations

import torch

from archbench.kernels.build import aligned, check_inputs, extension, state_for, use_chunked


def wkv5_cuda(r, k, v, w, u, state, *, inplace: bool = False, variant: int = 0, out=None,
              chunked: bool | None = None):
    """chunked: True / False forces the chunked / sequential kernel, None follows
    `use_chunked` (only with variant 0)."""
    check_inputs("wkv5", dict(r=r, k=k, v=v), tuple(r.shape))
    B, T, H, N = r.shape
    if chunked is None:
        chunked = variant == 0 and use_chunked(B, T, H, N)
    if chunked:
        from archbench.kernels.wkv6.op import wkv6_cuda_chunked
        return wkv6_cuda_chunked(r, k, v, w.reshape(H, N), u, state, inplace=inplace, out=out)
    state = state_for("wkv5", state, (B, H, N, N), inplace, r.device)
    y = torch.empty_like(r) if out is None else out  # out: a preallocated y (graphs, tests)
    w = w.to(device=r.device, dtype=torch.float32).reshape(H, N).contiguous()
    u = u.to(device=r.device, dtype=torch.float32).reshape(H, N).contiguous()
    extension().wkv6(*(aligned(t) for t in (r, k, v)), w, u, state, y, False, variant)
    return y, state
