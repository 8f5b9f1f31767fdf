"""WKV7 on our CUDA kernels: same signature and maths as `wkv7_ref`.

    y, state = wkv7_cuda(r, w, k, v, a, b, state)            # y in the inputs' dtype
    y, state = wkv7_cuda(..., state, inplace=True)            # updates state, no copy (decode)
    y, state = wkv7_cuda_chunked(r, w, k, v, a, b, state)    # the chunked tensor-core kernel

Two kernels: the sequential one (cuda/wkv7.cu, one token at a time, any head size) and the
chunked one (cuda/wkv7_chunked.cu, chunks of 16 tokens on tensor cores, head size 64; for
long prompts at small batch, where the sequential one is bound by its serial chain).
`wkv7_cuda` picks one with `use_chunked` (kernels/build.py, from the H100 bench).
"""
from __future__ import annotations

import torch

from archbench.kernels.build import (CHUNKED_HEAD_SIZES, aligned, check_inputs, chunked_variant, chunked_workspace,
                                     extension, state_for, use_chunked)


def wkv7_cuda(r, w, k, v, a, b, state, *, inplace: bool = False, variant: int = 0, out=None,
              chunked: bool | None = None):
    """r, w (log decay), k, v, a, b: [B, T, H, N] on the GPU; state [B, H, N, N] fp32 ([K, V]).
    variant picks the sequential kernel's layout (0 = by shape); chunked: True / False forces
    a kernel, None follows `use_chunked` (only with variant 0)."""
    if chunked is None:
        chunked = variant == 0 and use_chunked(*r.shape)
    if chunked:
        return wkv7_cuda_chunked(r, w, k, v, a, b, state, inplace=inplace, out=out)
    w = w.to(r.dtype)
    check_inputs("wkv7", dict(r=r, w=w, k=k, v=v, a=a, b=b), tuple(r.shape))
    B, T, H, N = r.shape
    state = state_for("wkv7", state, (B, H, N, N), inplace, r.device)
    y = torch.empty_like(r) if out is None else out  # out: a preallocated y (graphs, tests)
    extension().wkv7(*(aligned(t) for t in (r, w, k, v, a, b)), state, y, variant)
    return y, state


def wkv7_cuda_chunked(r, w, k, v, a, b, state, *, inplace: bool = False, variant: int = 0, groups: int = 0,
                      form: int = 0, out=None):
    """The chunked tensor-core kernel, same arguments as `wkv7_cuda`. variant: 0 = by shape,
    1 / 2 / 3 = 16 / 32 / 64 state columns per thread block; groups: 0 = by shape, 1-3
    producer groups building chunks ahead (fp32 inputs and 16 columns always take 1); form:
    0 = by shape (two kernels up to 48 heads, B x H; fused above), 1 = one kernel (each
    block builds its chunks, the state in shared memory), 2 = two kernels (the chunks built
    over the whole GPU into a workspace, 25.9 KB per chunk of 16 tokens and head, then the
    state pass with the state in registers, `variant` its columns per block, `groups`
    ignored; longer inputs run in segments of 32-128 chunks, each segment's build on a second
    stream beside the previous segment's state pass, through two workspace buffers of at most
    128 MB each; the first segment runs whole in the fused kernel meanwhile, unless
    ARCHBENCH_FUSED_FIRST=0), 3 = fused (one kernel, each block a head, the state in
    registers of its 4 state warps, 64 columns, 1-3 groups, 3 by default). Head sizes other
    than 64 take the sequential kernel."""
    code = chunked_variant(variant, groups, form)
    if r.shape[-1] not in CHUNKED_HEAD_SIZES:
        return wkv7_cuda(r, w, k, v, a, b, state, inplace=inplace, out=out, chunked=False)
    w = w.to(r.dtype)
    check_inputs("wkv7", dict(r=r, w=w, k=k, v=v, a=a, b=b), tuple(r.shape))
    B, T, H, N = r.shape
    state = state_for("wkv7", state, (B, H, N, N), inplace, r.device)
    y = torch.empty_like(r) if out is None else out
    ws = chunked_workspace("wkv7", (B, T, H, N), code, r.device)
    extension().wkv7_chunked(*(aligned(t) for t in (r, w, k, v, a, b)), state, y, ws, code)
    return y, state
