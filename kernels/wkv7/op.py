"""WKV7 on our CUDA kernel: same signature and maths as `wkv7_ref`.

    y, state = wkv7_cuda(r, w, k, v, a, b, state)            # y in the inputs' dtype
    y, state = wkv7_cuda(..., state, inplace=True)            # updates state, no copy (decode)
"""
from __future__ import annotations

import torch

from archbench.kernels.build import aligned, check_inputs, extension, state_for


def wkv7_cuda(r, w, k, v, a, b, state, *, inplace: bool = False, variant: int = 0, out=None):
    """r, w (log decay), k, v, a, b: [B, T, H, N] on the GPU; state [B, H, N, N] fp32 ([K, V])."""
    w = w.to(r.dtype)
    check_inputs("wkv7", dict(r=r, w=w, k=k, v=v, a=a, b=b), tuple(r.shape))
    B, T, H, N = r.shape
    state = state_for("wkv7", state, (B, H, N, N), inplace)
    y = torch.empty_like(r) if out is None else out  # out: a preallocated y (graphs, tests)
    extension().wkv7(*(aligned(t) for t in (r, w, k, v, a, b)), state, y, variant)
    return y, state
