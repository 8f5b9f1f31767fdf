"""WKV5 reference: RWKV-5's recurrence, WKV6 with a decay that does not depend on the
input (one log decay per channel, [H, N]; RWKV-5.0/5.1 repeat one value per head).

    y, state = wkv5_ref(r, k, v, w, u, state)   # w = -exp(time_decay), [H, N]
"""
import torch

from archbench.kernels.wkv6.ref import wkv6_ref


def wkv5_ref(r: torch.Tensor, k: torch.Tensor, v: torch.Tensor, w: torch.Tensor,
             u: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """r, k, v: [B, T, H, N]; w, u: [H, N]; state: [B, H, N, N] fp32 ([K, V] layout)."""
    return wkv6_ref(r, k, v, w, u, state)
