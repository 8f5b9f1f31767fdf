"""WKV6 on our CUDA kernel: same signature and maths as `wkv6_ref`.

    y, state = wkv6_cuda(r, k, v, w, u, state)     # w: log decay per token [B, T, H, N]
    y, state = wkv6_cuda_chunked(r, k, v, w, u, state)   # the chunked tensor-core kernel (opt-in,
                                                         # untested on a GPU so far)
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


CHUNKED_HEAD_SIZES = (64,)


def wkv6_cuda_chunked(r, k, v, w, u, state, *, inplace: bool = False, variant: int = 0, out=None):
    """The chunked tensor-core kernel (cuda/wkv6_chunked.cu: chunks of 16 tokens, for long
    prompts at small batch), same arguments and results as `wkv6_cuda`. variant: 0 = by
    shape, 1 / 2 / 3 = 16 / 32 / 64 state columns per thread block. Head sizes other than 64
    take the sequential kernel.

    UNTESTED ON A GPU: written without one (tests/kernels/test_wkv6_chunked_cuda.py is ready);
    nothing calls it by default (`wkv6_cuda` always takes the sequential kernel)."""
    if r.shape[-1] not in CHUNKED_HEAD_SIZES:
        return wkv6_cuda(r, k, v, w, u, state, inplace=inplace, out=out)
    w = w.to(r.dtype)
    check_inputs("wkv6", dict(r=r, k=k, v=v, w=w), tuple(r.shape))
    B, T, H, N = r.shape
    state = state_for("wkv6", state, (B, H, N, N), inplace)
    y = torch.empty_like(r) if out is None else out
    u = u.to(device=r.device, dtype=torch.float32).reshape(H, N).contiguous()
    extension().wkv6_chunked(*(aligned(t) for t in (r, k, v, w)), u, state, y, variant)
    return y, state
