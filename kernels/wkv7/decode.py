"""The RWKV-7 decode step (one token per sequence) on fused CUDA kernels.

The unfused step (`RWKV7.forward` on a (B, 1) input) launches about 80 kernels per layer,
most of them elementwise ops on a few KB; at batch 1 their launch gaps, not the weight
reads, set the speed. Here a layer is twelve launches: a fused layer norm + token shift +
interpolations, the r/k/v projections (cuBLAS), the four LoRA first factors in one
kernel, one kernel per (sequence, head) for everything between them and the output
projection (LoRA second factors, decay, key normalisation, value residual, the WKV7
state update, group norm, bonus, gate), the output projection with the residual added
(cuBLAS addmm), and the channel mix (fused norm + shift, cuBLAS, relu^2, cuBLAS addmm).

    logits = decode_step(model, tokens, state)   # tokens (B,), state updated in place

Same maths as `TimeMix7.forward` / `ChannelMix7.forward`, in fp32 inside each kernel with
one rounding to the model dtype on the way out; tests/models/test_rwkv_gpu.py holds the
two to the dtype's tolerance.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from archbench.kernels.build import extension

KSPLIT = 16  # row blocks of the LoRA first factors (their partial sums meet in the head kernel)
LN_EPS = 1e-5
GROUP_NORM_EPS = 64e-5


def _empty(like: torch.Tensor) -> torch.Tensor:
    return like.new_empty(0)


@torch.no_grad()
def decode_step(model, tokens: torch.Tensor, state) -> torch.Tensor:
    """tokens (B,) -> logits (B, V) fp32; state (RWKVState) advanced in place."""
    ext = extension()
    x = model.emb(tokens.view(-1))
    B, C = x.shape
    mixed = x.new_empty(6, B, C)
    v_first = torch.empty_like(x)
    out = torch.empty_like(x)
    for i, block in enumerate(model.blocks):
        att, ffn = block.att, block.ffn
        if i == 0:
            x = F.layer_norm(x, (C,), block.ln0.weight, block.ln0.bias, LN_EPS)
        ext.rwkv7_norm_mix(x, block.ln1.weight, block.ln1.bias, state.att_shift[i],
                           [att.x_r, att.x_k, att.x_v, att.x_w, att.x_a, att.x_g], mixed, LN_EPS)
        xr, xk, xv, xw, xa, xg = mixed
        r = F.linear(xr, att.receptance.weight)
        k = F.linear(xk, att.key.weight)
        v = F.linear(xv, att.value.weight)
        first = i == 0
        v1 = _empty(x) if first else att.v1
        v2 = _empty(x) if first else att.v2
        firsts = [att.w1, att.a1, v1, att.g1]
        cols = sum(w.shape[1] for w in firsts if w.numel())
        partial = torch.empty(KSPLIT, B, cols, dtype=torch.float32, device=x.device)
        ext.rwkv7_lora_down([xw, xa, xv, xg], firsts, partial)
        params = [att.w0.view(-1), att.a0.view(-1), _empty(x) if first else att.v0.view(-1), att.k_k.view(-1),
                  att.k_a.view(-1), att.r_k, att.ln_x.weight, att.ln_x.bias]
        ext.rwkv7_tmix_decode(r, k, v, partial, [att.w2, att.a2, v2, att.g2], params, GROUP_NORM_EPS,
                              v_first, first, state.wkv[i], out)
        x = torch.addmm(x, out, att.output.weight.t())
        ext.rwkv7_norm_mix(x, block.ln2.weight, block.ln2.bias, state.ffn_shift[i], [ffn.x_k], mixed[:1], LN_EPS)
        h = torch.relu_(F.linear(mixed[0], ffn.key.weight)).square_()
        x = torch.addmm(x, h, ffn.value.weight.t())
    return model.head(F.layer_norm(x, (C,), model.ln_out.weight, model.ln_out.bias, LN_EPS)).float()


def can_fuse(model) -> bool:
    """The fused step covers RWKV-7 on our CUDA kernels: head sizes 16-128, a width of at
    most 4096, LoRA widths that are multiples of 8 (16-byte loads) and sum to at most 1024."""
    cfg = model.config
    widths = (cfg.decay_lora, cfg.aaa_lora, cfg.mv_lora, cfg.gate_lora)
    return (model.impl == "cuda" and model.device.type == "cuda" and cfg.head_size in (16, 32, 64, 128)
            and cfg.n_embd <= 4096
            and all(w % 8 == 0 for w in widths) and sum(widths) <= 1024 and not model.fp16_rescale_every)
