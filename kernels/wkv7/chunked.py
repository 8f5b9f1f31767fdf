"""WKV7 in chunks: the formulation a tensor-core kernel needs, in PyTorch.

Within a chunk of C tokens the recurrence S_t = diag(d_t) S_{t-1} + b_t (a_t^T S_{t-1})
+ k_t v_t^T unrolls into matrix products. With Λ_t the cumulative log decay inside the
chunk (Λ_0 = 0) and u_t = a_t^T S_{t-1} (the row the delta rule removes):

    U = (I - L_ab)^{-1} (Ã S_0 + L_ak V)              [C, V]
    Y = R̃ S_0 + M_rb U + M_rk V                        [C, V]
    S_C = diag(e^{Λ_C}) S_0 + B̂^T U + K̂^T V

where Ã_t = a_t e^{Λ_{t-1}}, R̃_t = r_t e^{Λ_t}, B̂_j = b_j e^{Λ_C - Λ_j}, K̂_j likewise, and
the C x C matrices hold the pairwise products with their decay between the two tokens:
L_ab[t, j] = Σ_i a_ti b_ji e^{Λ_{t-1,i} - Λ_{j,i}} for j < t (L_ak with k), M_rb[t, j] =
Σ_i r_ti b_ji e^{Λ_{t,i} - Λ_{j,i}} for j <= t (M_rk with k). Every exponent is <= 0, so
nothing overflows whatever the decay. Only the state pass between chunks is sequential:
T / C steps of small matrix products instead of T steps of vector ones.

Same signature and maths as `wkv7_ref`; fp32 inside.

    y, state = wkv7_chunked(r, w, k, v, a, b, state, chunk=16)

A CUDA kernel of this form (tensor cores for the products) is what the batch-1 prefill
targets of issue 3 need; this file is its reference and a GPU path that needs no build.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def wkv7_chunked(r, w, k, v, a, b, state, *, chunk: int = 16, group: int = 64):
    """r, w (log decay), k, v, a, b: [B, T, H, N]; state [B, H, N, N] fp32 ([K, V]).
    Returns y [B, T, H, N] fp32 and the new state. The parts that do not depend on the
    state are computed for `group` chunks at a time (memory B H group C^2 N floats)."""
    B, T, H, N = r.shape
    C = chunk
    n = -(-T // C)
    pad = n * C - T

    def blocks(x):  # [B, T, H, N] -> [B, H, n, C, N], fp32; padding tokens change nothing
        x = F.pad(x.float(), (0, 0, 0, 0, 0, pad))    # (w = 0: decay 1; k = a = b = r = v = 0)
        return x.view(B, n, C, H, N).permute(0, 3, 1, 2, 4)

    r, w, k, v, a, b = (blocks(x) for x in (r, w, k, v, a, b))
    idx = torch.arange(C, device=r.device)
    strict = (idx[:, None] > idx[None, :])             # j < t
    incl = (idx[:, None] >= idx[None, :])              # j <= t
    eye = torch.eye(C, device=r.device)
    s = state.float()
    ys = []
    for g0 in range(0, n, group):
        sl = slice(g0, min(n, g0 + group))
        rg, wg, kg, vg, ag, bg = (x[:, :, sl] for x in (r, w, k, v, a, b))
        lam = torch.cumsum(wg, dim=-2)                 # Λ_t, [B, H, g, C, K]
        lam_prev = lam - wg                            # Λ_{t-1}
        lam_end = lam[..., -1:, :]                     # Λ_C

        def pair(x, lam_x, y, mask):  # Σ_i x_ti y_ji e^{lam_x[t, i] - Λ_{j, i}} where mask[t, j]
            expo = lam_x[..., :, None, :] - lam[..., None, :, :]        # [.., C(t), C(j), K]
            expo = expo.masked_fill(~mask[:, :, None], float("-inf"))
            return torch.einsum("...ti,...ji,...tji->...tj", x, y, torch.exp(expo))

        L_ab, L_ak = pair(ag, lam_prev, bg, strict), pair(ag, lam_prev, kg, strict)
        M_rb, M_rk = pair(rg, lam, bg, incl), pair(rg, lam, kg, incl)
        # (I - L_ab)^{-1}: unit lower triangular, once per chunk
        inv = torch.linalg.solve_triangular(eye - L_ab, eye.expand_as(L_ab), upper=False, unitriangular=True)
        a_t = ag * torch.exp(lam_prev)                                   # Ã
        r_t = rg * torch.exp(lam)                                        # R̃
        b_hat = (bg * torch.exp(lam_end - lam)).transpose(-1, -2)        # B̂^T (the chunk's end decay folded in)
        k_hat = (kg * torch.exp(lam_end - lam)).transpose(-1, -2)
        decay_end = torch.exp(lam_end[..., 0, :, None])                  # [B, H, g, K, 1]
        for c in range(rg.shape[2]):  # the sequential part: a few small matrix products per chunk
            u = inv[:, :, c] @ (a_t[:, :, c] @ s + L_ak[:, :, c] @ vg[:, :, c])
            ys.append(r_t[:, :, c] @ s + M_rb[:, :, c] @ u + M_rk[:, :, c] @ vg[:, :, c])
            s = decay_end[:, :, c] * s + b_hat[:, :, c] @ u + k_hat[:, :, c] @ vg[:, :, c]
    y = torch.stack(ys, dim=2).reshape(B, H, n * C, N)[:, :, :T].permute(0, 2, 1, 3)
    return y.contiguous(), s
