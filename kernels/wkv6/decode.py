"""The RWKV-6 decode step (one token per sequence) on fused CUDA kernels.

The unfused step (`RWKV6.forward` on a (B, 1) input) launches about 60 kernels a layer,
most of them elementwise ops on a few KB, so at batch 1 their launch gaps, not the weight
reads, set its speed. Here a layer is nine launches at batch 1, on the kernels of the RWKV-7
step (kernels/wkv7/cuda/decode7.cu) and two of its own:

- norm_mix: layer norm, token shift, and three outputs: the normed x, the old token shift
  and the token-shift LoRA's input x + (x_prev - x) maa_x (interpolations with 0, 1, maa_x);
- lora_down: that LoRA's first factor (time_maa_w1) as partial sums;
- mix6: tanh, its second factor (time_maa_w2) and the five interpolations (w, k, v, r, g);
- the decay LoRA's first factor and the r / k / v / g projections in one launch;
- tmix6, per (sequence, head): the decay LoRA's second factor and exp(-exp(.)), the WKV6 state
  update, the group norm and silu(g);
- the output projection with the residual; the channel mix's norm_mix (two interpolations),
  the key (with relu^2) and receptance projections in one launch, and the value projection
  with sigmoid(receptance) and the residual fused.

In fp16 the model scales the output and FFN value projections' inputs and halves the residual
every few layers (`fp16_rescale_every`, as BlinkDL's): the kernels fold those factors into
their epilogues (`fp16_scales`).

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


def fp16_scales(model, i: int) -> tuple[float, float]:
    """(scale, post) of layer i: in fp16, RWKV-4-6 scale the inputs of layer i's output and FFN
    value projections by 0.5 ** (i // k) and halve the residual after every k-th layer
    (k = model.fp16_rescale_every, as BlinkDL's reference; `RWKVBase.forward`); (1, 1) else."""
    k = model.fp16_rescale_every if model.dtype == torch.float16 else 0
    if not k:
        return 1.0, 1.0
    return 0.5 ** (i // k), 0.5 if (i + 1) % k == 0 else 1.0


def channel_mix(ext, own: bool, block, i: int, state, x, mixed, x_weighted: bool, scale: float,
                post: float) -> torch.Tensor:
    """The channel mix of RWKV-4 / 5 / 6, x + sigmoid(W_r x_r) W_v (relu(W_k x_k)^2 scale), times
    post: norm + shift with two interpolations into mixed[:2], the key (relu^2) and receptance
    projections in one launch, the value projection with the gate and the residual. x_weighted:
    RWKV-4/5's time_mix interpolations, else RWKV-6's time_maa. Returns the new x."""
    ffn = block.ffn
    mk, mr = (ffn.time_mix_k, ffn.time_mix_r) if x_weighted else (ffn.time_maa_k, ffn.time_maa_r)
    two = mixed[:2]
    ext.rwkv7_norm_mix(x, block.ln2.weight, block.ln2.bias, state.ffn_shift[i], [mk, mr], two, LN_EPS, x_weighted)
    if not own:
        h = torch.relu_(F.linear(two[0], ffn.key.weight)).square_()
        if scale != 1.0:
            h.mul_(scale)
        y = torch.addcmul(x, torch.sigmoid(F.linear(two[1], ffn.receptance.weight)), F.linear(h, ffn.value.weight))
        return y.mul_(post) if post != 1.0 else y
    B, C = x.shape
    h, rr = x.new_empty(B, ffn.key.weight.shape[0]), torch.empty_like(x)
    ext.rwkv6_key_receptance(ffn.key.weight, ffn.receptance.weight, two[0], two[1], h, rr, scale)
    y = torch.empty_like(x)
    ext.rwkv6_gemv_gated([ffn.value.weight], [h], [y], [x], rr, post)
    return y


def mixed_projections(ext, own: bool, model, i: int, state, x, names: str, mixed) -> tuple[torch.Tensor, list]:
    """RWKV-4 / 5's time mix up to its projections: (layer 0: ln0), ln1 + token shift + the
    interpolations x_prev + (x - x_prev) time_mix_<n> into mixed, and the projections (n in
    names: r receptance, k key, v value, g gate) in one launch. Returns x and the projections."""
    block = model.blocks[i]
    att, n = block.att, len(names)
    if i == 0:
        x = F.layer_norm(x, (x.shape[1],), block.ln0.weight, block.ln0.bias, LN_EPS)
    full = dict(r="receptance", k="key", v="value", g="gate")
    ins = mixed[:n]
    ext.rwkv7_norm_mix(x, block.ln1.weight, block.ln1.bias, state.att_shift[i],
                       [getattr(att, f"time_mix_{c}") for c in names], ins, LN_EPS, True)
    ws = [getattr(att, full[c]).weight for c in names]
    if not own:
        return x, [F.linear(xm, w) for xm, w in zip(ins, ws)]
    out = x.new_empty(n, *x.shape)
    ext.rwkv7_gemv(ws, list(ins), list(out), [], False)
    return x, list(out)


def head_and_channel_mix(ext, own: bool, model, i: int, state, x, rkvg, dpart, decay_w2, mixed,
                         x_weighted: bool) -> torch.Tensor:
    """The rest of an RWKV-5 / RWKV-6 layer from its r, k, v, g projections (g None: RWKV-5.0,
    no gate): the per-head kernel (with the decay LoRA's second factor decay_w2, [0, C] for
    none; RWKV-5.0 / 5.1's decay and bonus per head), the output projection + residual, and
    the channel mix. Returns the new x."""
    block = model.blocks[i]
    att = block.att
    r, k, v, g = rkvg
    scale, post = fp16_scales(model, i)
    out = torch.empty_like(x)
    bonus = att.time_faaaa.view(-1) if hasattr(att, "time_faaaa") else att.time_first  # 5.0 / 5.1: per head
    params = [att.time_decay.view(-1), bonus, att.ln_x.weight, att.ln_x.bias]
    ext.rwkv6_tmix_decode(r, k, v, _empty(x) if g is None else g, dpart, decay_w2, params, GROUP_NORM_EPS,
                          state.wkv[i], out, scale)
    x = _linear(ext, own, out, att.output.weight, add=x)
    return channel_mix(ext, own, block, i, state, x, mixed, x_weighted, scale, post)


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
        x = head_and_channel_mix(ext, own, model, i, state, x, (r, k, v, g), dpart, att.time_decay_w2, mixed, False)
    return step_logits(model, x)


def can_fuse(model) -> bool:
    """The fused step covers RWKV-6 on our CUDA kernels: head sizes 16-128, square r / k / v / g
    (dim_att = n_embd) of width at most 4096, LoRA ranks that fit the kernels (time_maa_w2's a
    multiple of 8 up to 64, time_decay_w2's a multiple of 8 up to 128). In fp16 the kernels
    apply the model's rescaling (`fp16_scales`)."""
    cfg = model.config
    return (model.impl == "cuda" and model.device.type == "cuda" and cfg.head_size in (16, 32, 64, 128)
            and cfg.dim_att == cfg.n_embd and cfg.n_embd <= 4096
            and cfg.mix_lora % 8 == 0 and 0 < cfg.mix_lora <= MIX6_MAX_LORA
            and cfg.decay_lora % 8 == 0 and 0 < cfg.decay_lora <= TMIX6_MAX_LORA)
