"""WKV6 in chunks: the formulation a tensor-core kernel needs, in PyTorch.

The reference (ref.py) per head, state S [K, V]:
    y_t = r_t^T (S_{t-1} + diag(u) k_t v_t^T),    S_t = diag(e^{w_t}) S_{t-1} + k_t v_t^T
so y_t reads the state *before* token t's decay. Within a chunk of C tokens (t = 0..C-1),
with Λ_t = w_0 + ... + w_t the inclusive cumulative log decay (Λ_{-1} = 0, Λ_C := Λ_{C-1}
the chunk's total) and S_0 the state before the chunk:

    S_t = diag(e^{Λ_t}) S_0 + Σ_{j<=t} diag(e^{Λ_t - Λ_j}) k_j v_j^T
    y_t = (r_t e^{Λ_{t-1}})^T S_0 + Σ_{j<t} A[t, j] v_j + (Σ_i r_ti u_i k_ti) v_t

    Y   = R̃ S_0 + M V                               [C, V]
    S_C = diag(e^{Λ_C}) S_0 + K̂^T V                  [K, V]

with R̃_t = r_t e^{Λ_{t-1}}, K̂_j = k_j e^{Λ_C - Λ_j}, A[t, j] = Σ_i r_ti k_ji e^{Λ_{t-1,i} - Λ_{j,i}}
(j < t) and M = A on the strict lower triangle, the bonus Σ_i r_ti u_i k_ti on the diagonal,
zero above. Every exponent is <= 0 (Λ is non-increasing), so nothing overflows whatever the
decay. Only the state pass between chunks is sequential.

Same signature and maths as `wkv6_ref`; fp32 inside.

    y, state = wkv6_chunked(r, k, v, w, u, state, chunk=16)

The reference of the CUDA kernel cuda/wkv6_chunked.cu (which factorises A around a per-column
midpoint for the tensor cores; see tests/kernels/test_wkv6_chunked_algebra.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def wkv6_chunked(r, k, v, w, u, state, *, chunk: int = 16, group: int = 64):
    """r, k, v, w (log decay, <= 0): [B, T, H, N] (w may broadcast, as in `wkv6_ref`);
    u: [H, N]; state [B, H, N, N] fp32 ([K, V]). Returns y [B, T, H, N] fp32 and the new
    state. The state-independent parts are computed for `group` chunks at a time."""
    B, T, H, N = r.shape
    C = chunk
    n = -(-T // C)
    pad = n * C - T
    w = w.float().expand(B, T, H, N)

    def blocks(x):  # [B, T, H, N] -> [B, H, n, C, N], fp32; padding tokens change nothing
        x = F.pad(x.float(), (0, 0, 0, 0, 0, pad))    # (w = 0: decay 1; r = k = v = 0)
        return x.view(B, n, C, H, N).permute(0, 3, 1, 2, 4)

    r, k, v, w = (blocks(x) for x in (r, k, v, w))
    uu = u.float().reshape(1, H, 1, 1, N).to(r.device)
    idx = torch.arange(C, device=r.device)
    strict = idx[:, None] > idx[None, :]               # j < t
    eye = torch.eye(C, device=r.device, dtype=torch.bool)
    s = state.float()
    ys = []
    for g0 in range(0, n, group):
        sl = slice(g0, min(n, g0 + group))
        rg, kg, vg, wg = (x[:, :, sl] for x in (r, k, v, w))
        lam = torch.cumsum(wg, dim=-2)                 # Λ_t (inclusive), [B, H, g, C, K]
        lam_prev = lam - wg                            # Λ_{t-1}
        lam_end = lam[..., -1:, :]                     # Λ_C
        expo = lam_prev[..., :, None, :] - lam[..., None, :, :]          # [.., C(t), C(j), K]
        expo = expo.masked_fill(~strict[:, :, None], float("-inf"))
        a = torch.einsum("...ti,...ji,...tji->...tj", rg, kg, torch.exp(expo))
        bonus = (rg * uu * kg).sum(-1)                                   # [.., C]
        m = a + torch.diag_embed(bonus) * eye
        r_t = rg * torch.exp(lam_prev)                                   # R̃
        k_hat = (kg * torch.exp(lam_end - lam)).transpose(-1, -2)        # K̂^T
        decay_end = torch.exp(lam_end[..., 0, :, None])                  # [B, H, g, K, 1]
        for c in range(rg.shape[2]):
            ys.append(r_t[:, :, c] @ s + m[:, :, c] @ vg[:, :, c])
            s = decay_end[:, :, c] * s + k_hat[:, :, c] @ vg[:, :, c]
    y = torch.stack(ys, dim=2).reshape(B, H, n * C, N)[:, :, :T].permute(0, 2, 1, 3)
    return y.contiguous(), s
