"""WKV6 over time segments: parallelism for one long prompt at small batch.

At batch 1 the chunked kernel has one thread block per (head, column tile): 80 blocks at
40 heads, on a GPU of 132 SMs, each walking all T / 16 chunks in order. The recurrence is
linear in the state and its transition is diagonal (WKV6: S = diag(exp(w_t)) S + k_t v_t^T),
so the prompt can be cut into `segments` pieces that run side by side:

1. each segment's end state from a zero start, Z_j = sum_t diag(exp(w_{t+1} + ... + w_end))
   k_t v_t^T: one batched matrix product of the decayed keys with the values (no
   recurrence), and each segment's total decay D_j = exp(sum of its w);
2. the start states in order: S_0 = the state given, S_j = diag(D_{j-1}) S_{j-1} + Z_{j-1}
   (segments - 1 elementwise steps over [B, H, N, N]);
3. every segment through `inner` (the chunked kernel) from its start state, as one call
   with batch B x segments: outputs, and the last segment's end state is the final state.

Step 3 is the whole kernel's work once, at a batch that fills the GPU; step 1 reads the
inputs once more. WKV5 (a decay per head, repeated over the tokens) takes the same path.
Tokens past the last whole segment (T % segments) go through `inner` from the final state.

    y, state = wkv6_segmented(r, k, v, w, u, state, segments=8, inner=wkv6_cuda_chunked)
"""
from __future__ import annotations

import torch


def segment_end_states(k: torch.Tensor, v: torch.Tensor, w: torch.Tensor):
    """k, v, w: [B, S, L, H, N] (w the log decay). Returns Z [B, S, H, N, N], each segment's
    end state from zero ([K, V] layout), and D [B, S, H, N], each segment's total decay."""
    w = w.float()
    # suffix sums of the log decay, each token's own w excluded: the decay a token's k v^T
    # sees until the segment's end (flip, cumsum, flip: no difference of two large sums)
    suffix = torch.flip(torch.cumsum(torch.flip(w, [2]), 2), [2])
    keys = k.float() * torch.exp(suffix - w)
    z = torch.einsum("bslhk,bslhv->bshkv", keys, v.float())
    return z, torch.exp(suffix[:, :, 0])


def wkv6_segmented(r, k, v, w, u, state, *, segments: int, inner, inplace: bool = False, out=None):
    """Same arguments and results as `wkv6_cuda` (w: [B, T, H, N] log decay, or a view
    that broadcasts to it); `inner` runs the segments (any WKV6 op of that signature)."""
    B, T, H, N = r.shape
    if segments < 1:
        raise ValueError(f"wkv6_segmented: segments must be >= 1, got {segments}")
    w = w.expand(B, T, H, N)
    L = T // segments
    if segments == 1 or L == 0:
        return inner(r, k, v, w, u, state, inplace=inplace, out=out)
    main = segments * L

    def pieces(t):  # [B, main, H, N] -> [B, S, L, H, N] (a view where t is contiguous)
        return t[:, :main].reshape(B, segments, L, H, N)

    z, d = segment_end_states(pieces(k), pieces(v), pieces(w))
    starts = [state.float()]
    for j in range(1, segments):
        starts.append(d[:, j - 1, :, :, None] * starts[-1] + z[:, j - 1])
    starts = torch.stack(starts, 1).reshape(B * segments, H, N, N)

    def batch(t):  # [B, S, L, H, N] -> [B * S, L, H, N]
        return pieces(t).reshape(B * segments, L, H, N)

    y_main, ends = inner(batch(r), batch(k), batch(v), batch(w), u, starts, inplace=True)
    final = ends.view(B, segments, H, N, N)[:, -1]
    y = y_main.view(B, main, H, N)
    if main < T:
        y_tail, final = inner(r[:, main:], k[:, main:], v[:, main:], w[:, main:], u, final.contiguous(),
                              inplace=True)
        y = torch.cat([y, y_tail], 1)
    if out is not None:
        out.copy_(y)
        y = out
    if inplace:
        state.copy_(final)
        return y, state
    return y, final.contiguous()
