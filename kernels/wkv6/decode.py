"""The RWKV-6 decode step (one token per sequence) on fused CUDA kernels.

The unfused step (`RWKV6.forward` on a (B, 1) input) launches about 60 kernels a layer,
most of them elementwise ops on a few KB, so at batch 1 their launch gaps, not the weight
reads, set its speed. Here a layer is ten launches at batch 1, on the kernels of the RWKV-7
step (kernels/wkv7/cuda/decode7.cu) and two of its own:

- norm_mix: layer norm, token shift, and three outputs: the normed x, the old token shift
  and the token-shift LoRA's input x + (x_prev - x) maa_x (interpolations with 0, 1, maa_x);
- lora_down: that LoRA's first factor (time_maa_w1) as partial sums;
- mix6: tanh, its second factor (time_maa_w2) and the five interpolations (w, k, v, r, g);
- the decay LoRA's first factor and the r / k / v / g projections in one launch;
- tmix6, per (sequence, head): the decay LoRA's second factor and exp(-exp(.)), the WKV6 state
  update, the group norm and silu(g);
- the output projection with the residual; the channel mix's norm_mix (two interpolations),
  key projection with relu^2, receptance projection, and the value projection with
  sigmoid(receptance) and the residual fused.

The projections run on our matrix-vector kernel up to GEMV_MAX_B sequences, on cuBLAS above.
Same maths as `TimeMix6.forward` / `ChannelMix6.forward`, in fp32 inside each kernel with one
rounding on the way out; tests/models/test_rwkv_gpu.py holds the two to the dtype's tolerance.

    logits = decode_step(model, tokens, state)   # tokens (B,), state updated in place
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from archbench.kernels.wkv7.decode import GROUP_NORM_EPS, KSPLIT, LN_EPS, _empty, _linear, step_logits, step_start

MIX6_MAX_LORA = 64     # time_maa_w2's rank (decode7.h)
TMIX6_MAX_LORA = 128   # time_decay_w2's rank


def _zeros_ones(model, x: torch.Tensor):
    """[C] zeros and ones in x's dtype and device, made once per model (the eager warm-up steps
    of a CUDA graph make them before the capture)."""
    c = getattr(model, "_decode6_consts", None)
    if c is None or c[0].dtype != x.dtype or c[0].device != x.device:
        C = x.shape[1]
        c = model._decode6_consts = (x.new_zeros(C), x.new_ones(C))
    return c


def head_and_channel_mix(ext, own: bool, block, i: int, state, x, rkvg, dpart, decay_w2, mixed,
                         x_weighted: bool) -> torch.Tensor:
    """The rest of an RWKV-5.2 / RWKV-6 layer from its r, k, v, g projections: the per-head
    kernel (with the decay LoRA's second factor decay_w2, [0, C] for none), the output
    projection + residual, and the channel mix (norm + shift with two interpolations, key with
    relu^2, receptance, value with sigmoid(receptance) and the residual). Returns the new x."""
    att, ffn = block.att, block.ffn
    B, C = x.shape
    r, k, v, g = rkvg
    out = torch.empty_like(x)
    params = [att.time_decay.view(-1), att.time_faaaa.view(-1), att.ln_x.weight, att.ln_x.bias]
    ext.rwkv6_tmix_decode(r, k, v, g, dpart, decay_w2, params, GROUP_NORM_EPS, state.wkv[i], out)
    x = _linear(ext, own, out, att.output.weight, add=x)
    mk, mr = (ffn.time_mix_k, ffn.time_mix_r) if x_weighted else (ffn.time_maa_k, ffn.time_maa_r)
    two = mixed[:2]
    ext.rwkv7_norm_mix(x, block.ln2.weight, block.ln2.bias, state.ffn_shift[i], [mk, mr], two, LN_EPS, x_weighted)
    h = _linear(ext, own, two[0], ffn.key.weight, relu_sq=True)
    rr = _linear(ext, own, two[1], ffn.receptance.weight)
    if not own:
        return torch.addcmul(x, torch.sigmoid(rr), F.linear(h, ffn.value.weight))
    y = torch.empty_like(x)
    ext.rwkv6_gemv_gated([ffn.value.weight], [h], [y], [x], rr)
    return y


@torch.no_grad()
def decode_step(model, tokens: torch.Tensor, state) -> torch.Tensor:
    """tokens (B,) -> logits (B, V) fp32; state (RWKVState) advanced in place."""
    ext, x, own = step_start(model, tokens)
    B, C = x.shape
    zeros, ones = _zeros_ones(model, x)
    mixed = x.new_empty(5, B, C)
    for i, block in enumerate(model.blocks):
        att = block.att
        if i == 0:
            x = F.layer_norm(x, (C,), block.ln0.weight, block.ln0.bias, LN_EPS)
        xn, xp, xxx = three = x.new_empty(3, B, C)
        ext.rwkv7_norm_mix(x, block.ln1.weight, block.ln1.bias, state.att_shift[i], [zeros, ones, att.time_maa_x],
                           three, LN_EPS, False)
        D5 = att.time_maa_w1.shape[1]
        partial = torch.empty(KSPLIT, B, D5, dtype=torch.float32, device=x.device)
        none = _empty(x)
        ext.rwkv7_lora_down([xxx, xxx, xxx, xxx], [att.time_maa_w1, none, none, none], partial)
        ext.rwkv6_mix(xn, xp, partial, att.time_maa_w2,
                      [att.time_maa_w, att.time_maa_k, att.time_maa_v, att.time_maa_r, att.time_maa_g], mixed)
        xw, xk, xv, xr, xg = mixed
        dpart = torch.empty(KSPLIT, B, att.time_decay_w1.shape[1], dtype=torch.float32, device=x.device)
        if own:  # the decay LoRA's first factor, then r, k, v, g, in one launch
            r, k, v, g = rkvg = x.new_empty(4, B, C)
            ext.rwkv7_rkv_lora([att.receptance.weight, att.key.weight, att.value.weight, att.gate.weight],
                               [xr, xk, xv, xg], list(rkvg), [xw, xw, xw, xw], [att.time_decay_w1, none, none, none],
                               dpart)
        else:
            r, k, v, g = (F.linear(xr, att.receptance.weight), F.linear(xk, att.key.weight),
                          F.linear(xv, att.value.weight), F.linear(xg, att.gate.weight))
            ext.rwkv7_lora_down([xw, xw, xw, xw], [att.time_decay_w1, none, none, none], dpart)
        x = head_and_channel_mix(ext, own, block, i, state, x, (r, k, v, g), dpart, att.time_decay_w2, mixed, False)
    return step_logits(model, x)


def can_fuse(model) -> bool:
    """The fused step covers RWKV-6 on our CUDA kernels: head sizes 16-128, square r / k / v / g
    (dim_att = n_embd) of width at most 4096, LoRA ranks that fit the kernels (time_maa_w2's a
    multiple of 8 up to 64, time_decay_w2's a multiple of 8 up to 128); not in fp16, where the
    model halves its activations every few layers (`fp16_rescale_every`, as BlinkDL's)."""
    cfg = model.config
    return (model.impl == "cuda" and model.device.type == "cuda" and cfg.head_size in (16, 32, 64, 128)
            and cfg.dim_att == cfg.n_embd and cfg.n_embd <= 4096
            and cfg.mix_lora % 8 == 0 and 0 < cfg.mix_lora <= MIX6_MAX_LORA
            and cfg.decay_lora % 8 == 0 and 0 < cfg.decay_lora <= TMIX6_MAX_LORA
            and not (model.fp16_rescale_every and model.dtype == torch.float16))
