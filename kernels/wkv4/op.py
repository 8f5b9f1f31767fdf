"""WKV4 on our CUDA kernel: same signature and maths as `wkv4_ref`.

    y, state = wkv4_cuda(w, u, k, v, state)    # w = -exp(time_decay), u = time_first: [C]
"""
from __future__ import annotations

import torch

from archbench.kernels.build import aligned, check_inputs, extension, state_for


def wkv4_cuda(w, u, k, v, state, *, inplace: bool = False, out=None):
    check_inputs("wkv4", dict(k=k, v=v), tuple(k.shape))
    B, T, C = k.shape
    state = state_for("wkv4", state, (B, 3, C), inplace)
    y = torch.empty_like(k) if out is None else out  # out: a preallocated y (graphs, tests)
    w = w.to(device=k.device, dtype=torch.float32).contiguous()
    u = u.to(device=k.device, dtype=torch.float32).contiguous()
    extension().wkv4(w, u, aligned(k), aligned(v), state, y)
    return y, state
