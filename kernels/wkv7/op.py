"""WKV7 on our CUDA kernels: same signature and maths as `wkv7_ref`.

    y, state = wkv7_cuda(r, w, k, v, a, b, state)            # y in the inputs' dtype
    y, state = wkv7_cuda(..., state, inplace=True)            # updates state, no copy (decode)
    y, state = wkv7_cuda_chunked(r, w, k, v, a, b, state)    # the chunked tensor-core kernel

Two kernels: the sequential one (cuda/wkv7.cu, one token at a time, any head size) and the
chunked one (cuda/wkv7_chunked.cu, chunks of 16 tokens on tensor cores, head size 64; for
long prompts at small batch, where the sequential one is bound by its serial chain).
`wkv7_cuda` picks one with `use_chunked`.
"""
from __future__ import annotations

import torch

from archbench.kernels.build import aligned, check_inputs, extension, state_for

CHUNKED_HEAD_SIZES = (64,)
# The dispatch rule, from the H100 bench of 2026-11-28 (results/kernels/wkv_bench_20261128-002335.jsonl,
# bf16, H=40, N=64): at B=1 (B x H = 40) the chunked kernel at 32 columns per block reads 3.9-4.0
# Mtok/s against the sequential kernel's 3.0 (and fla's chunk_rwkv7 3.8), from T=4096 on; at
# B=8 and B=16 (B x H = 320, 640) the sequential kernel is faster (10.5 vs 8.9, 11.3 vs 10.8).
# So: chunked for long prompts on few heads. B x H between 40 and 320 was not measured: the
# bound of 64 stays near the measured point.
CHUNKED_MIN_T = 1024
CHUNKED_MAX_HEADS = 64  # B x H


def use_chunked(B: int, T: int, H: int, N: int) -> bool:
    """Whether `wkv7_cuda` takes the chunked kernel for this shape."""
    return N in CHUNKED_HEAD_SIZES and T >= CHUNKED_MIN_T and B * H <= CHUNKED_MAX_HEADS


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
    state = state_for("wkv7", state, (B, H, N, N), inplace)
    y = torch.empty_like(r) if out is None else out  # out: a preallocated y (graphs, tests)
    extension().wkv7(*(aligned(t) for t in (r, w, k, v, a, b)), state, y, variant)
    return y, state


def wkv7_cuda_chunked(r, w, k, v, a, b, state, *, inplace: bool = False, variant: int = 0, out=None):
    """The chunked tensor-core kernel, same arguments as `wkv7_cuda`. variant: 0 = by shape,
    1 / 2 / 3 = 16 / 32 / 64 state columns per thread block. Head sizes other than 64 take
    the sequential kernel."""
    if r.shape[-1] not in CHUNKED_HEAD_SIZES:
        return wkv7_cuda(r, w, k, v, a, b, state, inplace=inplace, out=out, chunked=False)
    w = w.to(r.dtype)
    check_inputs("wkv7", dict(r=r, w=w, k=k, v=v, a=a, b=b), tuple(r.shape))
    B, T, H, N = r.shape
    state = state_for("wkv7", state, (B, H, N, N), inplace)
    y = torch.empty_like(r) if out is None else out
    extension().wkv7_chunked(*(aligned(t) for t in (r, w, k, v, a, b)), state, y, variant)
    return y, state
