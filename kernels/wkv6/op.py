"""WKV6 on our CUDA kernels: same signature and maths as `wkv6_ref`.

    y, state = wkv6_cuda(r, k, v, w, u, state)           # w: log decay per token [B, T, H, N]
    y, state = wkv6_cuda_chunked(r, k, v, w, u, state)   # the chunked tensor-core kernel

Two kernels, as for WKV7: the sequential one (cuda/wkv6.cu, any head size; also WKV5's) and
the chunked one (cuda/wkv6_chunked.cu, chunks of 16 tokens on tensor cores, head size 64).
`wkv6_cuda` picks one with `use_chunked` (kernels/build.py, from the H100 bench).
"""
from __future__ import annotations

import torch

from archbench.kernels.build import (CHUNKED_HEAD_SIZES, aligned, check_inputs, chunked_variant, chunked_workspace,
                                     extension, state_for, use_chunked)
from archbench.kernels.wkv6.pieces import pieces_for, run_in_pieces


def _wkv5(*args, **kw):
    from archbench.kernels.wkv5.op import wkv5_cuda
    return wkv5_cuda(*args, **kw)


def wkv6_cuda(r, k, v, w, u, state, *, inplace: bool = False, variant: int = 0, out=None,
              chunked: bool | None = None):
    """r, k, v, w (log decay): [B, T, H, N] on the GPU, u [H, N]; state [B, H, N, N] fp32.
    variant picks the sequential kernel's layout (0 = by shape); chunked: True / False forces
    a kernel, None follows `use_chunked` (only with variant 0)."""
    if chunked is None:
        chunked = variant == 0 and use_chunked(*r.shape)
    if chunked:
        return wkv6_cuda_chunked(r, k, v, w, u, state, inplace=inplace, out=out)
    w = w.to(r.dtype)
    check_inputs("wkv6", dict(r=r, k=k, v=v, w=w), tuple(r.shape))
    B, T, H, N = r.shape
    state = state_for("wkv6", state, (B, H, N, N), inplace, r.device)
    y = torch.empty_like(r) if out is None else out  # out: a preallocated y (graphs, tests)
    u = u.to(device=r.device, dtype=torch.float32).reshape(H, N).contiguous()
    extension().wkv6(*(aligned(t) for t in (r, k, v, w)), u, state, y, True, variant)
    return y, state


def wkv6_cuda_chunked(r, k, v, w, u, state, *, inplace: bool = False, variant: int = 0, groups: int = 0,
                      form: int = 0, pieces: int = 0, join: str = "auto", out=None):
    """The chunked tensor-core kernel (cuda/wkv6_chunked.cu: chunks of 16 tokens, for long
    prompts at small batch), same arguments and results as `wkv6_cuda`. variant: 0 = by
    shape, 1 / 2 / 3 = 16 / 32 / 64 state columns per thread block; groups: 0 = by shape, 1-3
    producer groups, form: 0 = by shape, 1 / 2 = one / two kernels (as `wkv7_cuda_chunked`);
    pieces: 0 = by shape (`pieces.pieces_for`; with variant, groups and form 0 only), 1 = none,
    P >= 2 = the prompt cut into P pieces that run as a batch and are joined after
    (kernels/wkv6/pieces.py; join: its joining kernel, see `run_in_pieces`).
    w may also be one decay per head [H, N] (WKV5's), read once per
    head by the kernel. Head sizes other than 64 take the sequential kernel."""
    if form == 3:
        raise ValueError("wkv6_cuda_chunked: the fused form (3) is WKV7's only; forms 0-2 here")
    code = chunked_variant(variant, groups, form)
    if r.shape[-1] not in CHUNKED_HEAD_SIZES:
        if w.dim() == 2:
            return _wkv5(r, k, v, w, u, state, inplace=inplace, out=out, chunked=False)
        return wkv6_cuda(r, k, v, w, u, state, inplace=inplace, out=out, chunked=False)
    B, T, H, N = r.shape
    if w.dim() == 2:  # one decay per head
        if tuple(w.shape) != (H, N):
            raise ValueError(f"wkv6_cuda_chunked: a decay per head must be [{H}, {N}], got {tuple(w.shape)}")
        w = w.to(device=r.device, dtype=r.dtype)
        check_inputs("wkv6", dict(r=r, k=k, v=v), tuple(r.shape))
    else:
        w = w.to(r.dtype)
        check_inputs("wkv6", dict(r=r, k=k, v=v, w=w), tuple(r.shape))
    state = state_for("wkv6", state, (B, H, N, N), inplace, r.device)
    if pieces == 0:
        pieces = pieces_for(B, T, H) if variant == groups == form == 0 else 1
    if pieces > 1:
        def base(r, k, v, w, u, state, inplace, out, tail=False):
            if tail:  # the few tokens left over
                return (wkv6_cuda if w.dim() == 4 else _wkv5)(r, k, v, w, u, state, inplace=inplace, out=out)
            return wkv6_cuda_chunked(r, k, v, w, u, state, inplace=inplace, variant=variant, groups=groups,
                                     form=form, pieces=1, out=out)
        return run_in_pieces(base, *(aligned(t) for t in (r, k, v, w)), u, state, pieces=pieces, join=join, out=out,
                             code=code)
    y = torch.empty_like(r) if out is None else out
    u = u.to(device=r.device, dtype=torch.float32).reshape(H, N).contiguous()
    ws = chunked_workspace("wkv6", (B, T, H, N), code, r.device)
    extension().wkv6_chunked(*(aligned(t) for t in (r, k, v, w)), u, state, y, ws, code)
    return y, state
