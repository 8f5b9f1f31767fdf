"""WKV4 split into segments along time: the three-pass form of the time-parallel CUDA kernel
(kernels/wkv4/cuda/wkv4_parallel.cu), in PyTorch.

The state (aa, bb, pp) stands for a numerator and a denominator in log-scaled form:
a = e^pp aa, b = e^pp bb. In those terms RWKV-4's recurrence is linear with a scalar decay
per channel,

    a_t = e^w a_{t-1} + e^{k_t} v_t,      b_t = e^w b_{t-1} + e^{k_t},
    y_t = (a_{t-1} + e^{u+k_t} v_t) / (b_{t-1} + e^{u+k_t}),

so after n tokens from a start state (a_0, b_0)

    a_n = e^{n w} a_0 + A,    A = sum_{j<n} e^{(n-1-j) w + k_j} v_j     (B likewise, v = 1):

the old state decays by n steps and the segment adds what it would hold had it started from
nothing. (A, B) depends on the segment's tokens only, so every segment computes it at once.
In log space, with P = max_j ((n-1-j) w + k_j) the segment's own scale (the very pp the
one-step recurrence reaches from pp = -inf: pp' = max(w + pp, k) keeps the largest exponent),

    A' = sum_j e^{(n-1-j) w + k_j - P} v_j,   B' = sum_j e^{(n-1-j) w + k_j - P}   (<= n, >= 1),

and the segment's true end state from (aa0, bb0, pp0) combines the two parts on the larger
of their scales, q = pp0 + n w and P:

    p = max(q, P),  aa = e^{q-p} aa0 + e^{P-p} A',  bb = e^{q-p} bb0 + e^{P-p} B',  pp = p.

Every exponent is <= 0, so nothing overflows for any k or w; "no history" (pp0 = -1e38)
gives q = -1e38 and e^{q-p} = 0.

The three passes:
 1. every segment's (A', B', P) from nothing, all segments at once (the closed form above:
    a max and two weighted sums over the segment, [B, S, L, C]);
 2. a scan over the S segments, combining: each segment's true start state, and the end state;
 3. every segment's outputs from its start state, all segments at once, stepping over the L
    tokens of a segment exactly as the reference does.
Passes 1 and 3 are parallel over segments; only pass 2 (S short steps) is sequential.

Same signature and maths as `wkv4_ref`; fp32 inside.

    y, state = wkv4_chunked(w, u, k, v, state, segment=64)   # segment 0: by shape
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def default_segment(T: int) -> int:
    """The power of two nearest sqrt(T): pass 3 steps L times, pass 2 T / L times."""
    return 1 << max(0, round(math.log2(max(T, 1)) / 2))


def wkv4_chunked(w, u, k, v, state, *, segment: int = 0):
    """w, u: [C] (w < 0: per-step log decay); k, v: [B, T, C]; state: [B, 3, C] fp32.
    Returns y [B, T, C] fp32 and the new state (the caller's state is not modified)."""
    if segment < 0:
        raise ValueError(f"wkv4_chunked: segment must be >= 0 (0: by shape), got {segment}")
    B, T, C = k.shape
    w, u = w.float().to(k.device), u.float().to(k.device)
    aa, bb, pp = state.float().unbind(1)
    if T == 0:
        return torch.empty(B, 0, C, device=k.device), torch.stack((aa, bb, pp), dim=1)
    L = min(segment or default_segment(T), T)
    S = -(-T // L)
    pad = S * L - T  # the last segment is short by pad tokens (padded at its end)
    k = F.pad(k.float(), (0, 0, 0, pad)).view(B, S, L, C)
    v = F.pad(v.float(), (0, 0, 0, pad)).view(B, S, L, C)
    # real tokens per segment: L, ..., L, L - pad
    n = torch.full((S,), L, device=k.device, dtype=torch.float32)
    n[-1] = L - pad
    j = torch.arange(L, device=k.device, dtype=torch.float32)
    real = j[None, :] < n[:, None]                                         # [S, L]

    # pass 1: each segment from nothing, in closed form. Exponent of token j in the segment's
    # end state: (n - 1 - j) w + k_j; padding tokens excluded (-inf: they add nothing).
    expo = (n[:, None, None] - 1 - j[None, :, None]) * w + k               # [B, S, L, C]
    expo = expo.masked_fill(~real[None, :, :, None], float("-inf"))
    P = expo.amax(dim=2)                                                   # [B, S, C], finite: n >= 1
    e = torch.exp(expo - P[:, :, None])                                    # <= 1, the largest = 1
    A, Bn = (e * v).sum(dim=2), e.sum(dim=2)

    # pass 2: the scan over segments. starts[s] is segment s's true start state.
    starts = []
    for s in range(S):
        starts.append(torch.stack((aa, bb, pp), dim=1))
        q = pp + n[s] * w                                                  # the old part's scale
        p = torch.maximum(q, P[:, s])
        e_old, e_new = torch.exp(q - p), torch.exp(P[:, s] - p)
        aa, bb, pp = e_old * aa + e_new * A[:, s], e_old * bb + e_new * Bn[:, s], p
    final = torch.stack((aa, bb, pp), dim=1)

    # pass 3: every segment's outputs from its start state, all segments in step (the
    # reference's loop over [B, S, C] at a time). Padding tokens (k = v = 0) are finite and
    # only follow the last real one, so they change nothing that is kept.
    aa, bb, pp = torch.stack(starts, dim=1).unbind(2)                      # [B, S, C] each
    y = torch.empty_like(k)
    for t in range(L):
        kt, vt = k[:, :, t], v[:, :, t]
        ww = u + kt
        p = torch.maximum(pp, ww)
        e1, e2 = torch.exp(pp - p), torch.exp(ww - p)
        y[:, :, t] = (e1 * aa + e2 * vt) / (e1 * bb + e2)
        ww = w + pp
        p = torch.maximum(ww, kt)
        e1, e2 = torch.exp(ww - p), torch.exp(kt - p)
        aa, bb, pp = e1 * aa + e2 * vt, e1 * bb + e2, p
    return y.view(B, S * L, C)[:, :T].contiguous(), final
