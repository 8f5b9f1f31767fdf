"""WKV5 on our CUDA kernel (the WKV6 kernel with a fixed decay): same signature as
`wkv5_ref`.

    y, state = wkv5_cuda(r, k, v, w, u, state)     # w: log decay [H, N]
"""
from __future__ import annotations

import torch

from archbench.kernels.build import aligned, check_inputs, extension, state_for


def wkv5_cuda(r, k, v, w, u, state, *, inplace: bool = False, variant: int = 0, out=None):
    check_inputs("wkv5", dict(r=r, k=k, v=v), tuple(r.shape))
    B, T, H, N = r.shape
    state = state_for("wkv5", state, (B, H, N, N), inplace)
    y = torch.empty_like(r) if out is None else out  # out: a preallocated y (graphs, tests)
    w = w.to(device=r.device, dtype=torch.float32).reshape(H, N).contiguous()
    u = u.to(device=r.device, dtype=torch.float32).reshape(H, N).contiguous()
    extension().wkv6(*(aligned(t) for t in (r, k, v)), w, u, state, y, False, variant)
    return y, state
