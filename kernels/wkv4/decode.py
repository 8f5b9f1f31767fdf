"""The RWKV-4 decode step (one token per sequence) on fused CUDA kernels: seven launches a
layer at batch 1 instead of the model's ops on a (B, 1) input (about 30 a layer).

The kernels are the other versions' (kernels/wkv7/cuda/decode7.cu) and one of RWKV-4's own:
norm_mix with RWKV-4's interpolations x_prev + (x - x_prev) time_mix (three: r, k, v), the
r / k / v projections in one launch, tmix4 per channel (the WKV4 step of kernels/wkv4/ref.py
on the state in place, times sigmoid(r)), the output projection with the residual, and the
channel mix as RWKV-5's and RWKV-6's (kernels/wkv6/decode.py: `channel_mix`). In fp16 the
kernels apply the model's rescaling (`fp16_scales`).

    logits = decode_step(model, tokens, state)   # tokens (B,), state updated in place
"""
from __future__ import annotations

import torch

from archbench.kernels.wkv6.decode import channel_mix, fp16_scales, mixed_projections
from archbench.kernels.wkv7.decode import _linear, step_logits, step_start


@torch.no_grad()
def decode_step(model, tokens: torch.Tensor, state) -> torch.Tensor:
    """tokens (B,) -> logits (B, V) fp32; state (RWKVState) advanced in place."""
    ext, x, own = step_start(model, tokens)
    mixed = x.new_empty(3, *x.shape)
    for i, block in enumerate(model.blocks):
        att = block.att
        scale, post = fp16_scales(model, i)
        x, (r, k, v) = mixed_projections(ext, own, model, i, state, x, "rkv", mixed)
        out = torch.empty_like(x)
        ext.rwkv4_tmix_decode(r, k, v, att.time_decay, att.time_first, state.wkv[i], out, scale)
        x = _linear(ext, own, out, att.output.weight, add=x)
        x = channel_mix(ext, own, block, i, state, x, mixed, True, scale, post)
    return step_logits(model, x)


def can_fuse(model) -> bool:
    """RWKV-4 on our CUDA kernels, with square r / k / v (dim_att = n_embd, as every released
    model) of width at most 4096 (norm_mix's row)."""
    cfg = model.config
    return (model.impl == "cuda" and model.device.type == "cuda" and cfg.dim_att == cfg.n_embd
            and cfg.n_embd <= 4096)
