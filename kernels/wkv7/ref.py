"""WKV7 reference: RWKV-7's generalised delta rule, fp32, one step at a time.

Per head, with the state S laid out [K, V] (key index first):
    S   = diag(exp(w_t)) S + b_t (a_t^T S) + k_t v_t^T
    y_t = S^T r_t                      (read after the update)
RWKV-7 uses a = -kk, b = kk * iclr (kk the normalised key), so the middle term removes
the old value stored under kk at rate iclr. w is the log decay (w <= 0).

    y, state = wkv7_ref(r, w, k, v, a, b, state)
"""
import torch


def wkv7_ref(r: torch.Tensor, w: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
             a: torch.Tensor, b: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """r, w, k, v, a, b: [B, T, H, N]; state: [B, H, N, N] fp32.
    Returns y [B, T, H, N] fp32 and the new state."""
    B, T, H, N = r.shape
    r, k, v, a, b = r.float(), k.float(), v.float(), a.float(), b.float()
    decay = torch.exp(w.float())
    s = state.float()
    y = torch.empty(B, T, H, N, dtype=torch.float32, device=r.device)
    for t in range(T):
        sa = torch.einsum("bhi,bhij->bhj", a[:, t], s)                   # a^T S: (B, H, N)
        s = (decay[:, t, :, :, None] * s + b[:, t, :, :, None] * sa[:, :, None, :]
             + k[:, t, :, :, None] * v[:, t, :, None, :])
        y[:, t] = torch.einsum("bhi,bhij->bhj", r[:, t], s)
    return y, s
