"""WKV4 reference: RWKV-4's weighted key-value recurrence, in fp32, one step at a time.

State per channel is (aa, bb, pp): numerator, denominator and the log of their common
scale, so exp() never overflows (the log-space running maximum of BlinkDL's kernels).

    y, state = wkv4_ref(w, u, k, v, state)   # w = -exp(time_decay), u = time_first
"""
import torch

NEG_INF = -1e38  # initial pp: "no history"


def wkv4_init_state(batch: int, channels: int, device=None) -> torch.Tensor:
    s = torch.zeros(batch, 3, channels, dtype=torch.float32, device=device)
    s[:, 2] = NEG_INF
    return s


def wkv4_ref(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
             state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w, u: [C] (w < 0 is the per-step log decay); k, v: [B, T, C]; state: [B, 3, C] fp32.
    Returns y [B, T, C] fp32 and the new state."""
    w, u = w.float(), u.float()
    k, v = k.float(), v.float()
    aa, bb, pp = state.float().unbind(1)
    y = torch.empty_like(k)
    for t in range(k.shape[1]):
        kt, vt = k[:, t], v[:, t]
        ww = u + kt
        p = torch.maximum(pp, ww)
        e1, e2 = torch.exp(pp - p), torch.exp(ww - p)
        y[:, t] = (e1 * aa + e2 * vt) / (e1 * bb + e2)
        ww = w + pp
        p = torch.maximum(ww, kt)
        e1, e2 = torch.exp(ww - p), torch.exp(kt - p)
        aa, bb, pp = e1 * aa + e2 * vt, e1 * bb + e2, p
    return y, torch.stack((aa, bb, pp), dim=1)
