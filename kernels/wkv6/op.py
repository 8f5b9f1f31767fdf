"""WKV6 on our CUDA kernel: same signature and maths as `wkv6_ref`.

    y, state = wkv6_cuda(r, k, v, w, u, state)     # w: log decay per token [B, T, H, N]
"""
from __future__ import annotations

import torch

from archbench.kernels.build import aligned, check_inputs, extension, state_for


def wkv6_cuda(r, k, v, w, u, state, *, inplace: bool = False, variant: int = 0, out=None):
    w = w.to(r.dtype)
    check_inputs("wkv6", dict(r=r, k=k, v=v, w=w), tuple(r.shape))
    B, T, H, N = r.shape
    state = state_for("wkv6", state, (B, H, N, N), inplace)
    y = torch.empty_like(r) if out is None else out  # out: a preallocated y (graphs, tests)
    u = u.to(device=r.device, dtype=torch.float32).reshape(H, N).contiguous()
    extension().wkv6(*(aligned(t) for t in (r, k, v, w)), u, state, y, True, variant)
    return y, state
