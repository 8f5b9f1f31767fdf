"""WKV6 reference: RWKV-6's matrix-valued recurrence with data-dependent decay, fp32.

Per head, with the state S laid out [K, V] (key index first):
    y_t = r_t^T (S + diag(u) k_t v_t^T)
    S   = diag(exp(w_t)) S + k_t v_t^T
w is the log of the decay (w <= 0), so exp(w) is in (0, 1].

    y, state = wkv6_ref(r, k, v, w, u, state)
"""
import torch


def wkv6_ref(r: torch.Tensor, k: torch.Tensor, v: torch.Tensor, w: torch.Tensor,
             u: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """r, k, v, w: [B, T, H, N] (w may also broadcast, e.g. [H, N] for WKV5);
    u: [H, N]; state: [B, H, N, N] fp32. Returns y [B, T, H, N] fp32 and the new state."""
    B, T, H, N = r.shape
    r, k, v, u = r.float(), k.float(), v.float(), u.float()
    decay = torch.exp(w.float()).expand(B, T, H, N)
    s = state.float()
    y = torch.empty(B, T, H, N, dtype=torch.float32, device=r.device)
    for t in range(T):
        kv = k[:, t, :, :, None] * v[:, t, :, None, :]                    # (B, H, N, N)
        y[:, t] = torch.einsum("bhi,bhij->bhj", r[:, t], s + u[:, :, None] * kv)
        s = decay[:, t, :, :, None] * s + kv
    return y, s
