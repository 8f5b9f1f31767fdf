"""The RWKV-5 decode step (one token per sequence) on fused CUDA kernels: seven launches a
layer at batch 1 instead of the model's ops on a (B, 1) input (about 40 a layer).

The kernels are RWKV-6's (kernels/wkv6/decode.py, kernels/wkv7/cuda/decode7.cu) without the
LoRAs: norm_mix with RWKV-5's interpolations x_prev + (x - x_prev) time_mix (r, k, v and, from
5.1, g), the projections in one launch, the per-head kernel with the fixed decay and bonus
(5.2: per channel, time_decay and time_faaaa; 5.0 / 5.1: per head, time_decay and
exp(time_first), read by the kernel from the model's [H] parameters; 5.0 without the gate),
then the output projection and the channel mix as RWKV-6's. In fp16 the kernels apply the
model's rescaling as RWKV-6's.

    logits = decode_step(model, tokens, state)   # tokens (B,), state updated in place
"""
from __future__ import annotations

import torch

from archbench.kernels.wkv6.decode import head_and_channel_mix, mixed_projections
from archbench.kernels.wkv7.decode import KSPLIT, step_logits, step_start


@torch.no_grad()
def decode_step(model, tokens: torch.Tensor, state) -> torch.Tensor:
    """tokens (B,) -> logits (B, V) fp32; state (RWKVState) advanced in place."""
    ext, x, own = step_start(model, tokens)
    B, C = x.shape
    names = "rkv" if model.config.version == "5.0" else "rkvg"
    mixed = x.new_empty(len(names), B, C)
    no_lora = torch.empty(KSPLIT, B, 0, dtype=torch.float32, device=x.device)
    no_w2 = x.new_empty(0, C)
    for i in range(len(model.blocks)):
        x, rkvg = mixed_projections(ext, own, model, i, state, x, names, mixed)
        rkvg = (*rkvg, None)[:4]  # 5.0: no gate
        x = head_and_channel_mix(ext, own, model, i, state, x, rkvg, no_lora, no_w2, mixed, True)
    return step_logits(model, x)


def can_fuse(model) -> bool:
    """RWKV-5 (5.0, 5.1, 5.2) on our CUDA kernels: head sizes 16-128, square projections
    (dim_att = n_embd) of width at most 4096."""
    cfg = model.config
    return (model.impl == "cuda" and model.device.type == "cuda" and cfg.version in ("5.0", "5.1", "5.2")
            and cfg.head_size in (16, 32, 64, 128) and cfg.dim_att == cfg.n_embd and cfg.n_embd <= 4096)
