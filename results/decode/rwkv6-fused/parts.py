"""Each kernel of the fused RWKV-6 step against PyTorch in fp32 on one layer of the 3B shape
(random weights, impl="cuda"), for finding which part makes the fused step differ from the
reference at C = 2560 (check_3b.log). Prints rms_rel per part.

    python results/decode/rwkv6-fused/parts.py
"""
import torch
import torch.nn.functional as F

from archbench.harness.registry import config_for, family_class
from archbench.harness.testing import errors
from archbench.kernels.build import extension
from archbench.kernels.wkv6.decode import _zeros_ones
from archbench.kernels.wkv7.decode import GROUP_NORM_EPS, KSPLIT, LN_EPS, _empty
from archbench.models.rwkv_common import group_norm_heads

torch.manual_seed(0)
fam, cfg = config_for("rwkv6-3b")
cfg = type(cfg)(**{**cfg.__dict__, "n_layer": 1, "vocab_size": 1000})
m = family_class(fam)(cfg, impl="cuda").init_random_(0).cuda().eval()
ext = extension()
blk = m.blocks[0]
att, ffn = blk.att, blk.ffn
B, C = 1, cfg.n_embd
H, N = cfg.n_head, cfg.head_size
x = torch.randn(B, C, device="cuda")
prev = torch.randn(B, C, device="cuda")
show = lambda name, a, b: print(f"{name:28s} rms_rel {errors(a, b)['rms_rel']:.3e} max abs {errors(a, b)['max_abs']:.3e}",  # noqa: E731
                                flush=True)
with torch.no_grad():
    zeros, ones = _zeros_ones(m, x)
    three = x.new_empty(3, B, C)
    p = prev.clone()
    ext.rwkv7_norm_mix(x, blk.ln1.weight, blk.ln1.bias, p, [zeros, ones, att.time_maa_x], three, LN_EPS)
    xn_t = F.layer_norm(x, (C,), blk.ln1.weight, blk.ln1.bias, LN_EPS)
    show("norm_mix xn", three[0], xn_t)
    show("norm_mix x_prev", three[1], prev)
    xx = prev - xn_t
    xxx_t = xn_t + xx * att.time_maa_x.view(-1)
    show("norm_mix lora input", three[2], xxx_t)
    D5 = att.time_maa_w1.shape[1]
    part = torch.empty(KSPLIT, B, D5, device="cuda")
    none = _empty(x)
    ext.rwkv7_lora_down([xxx_t] * 4, [att.time_maa_w1, none, none, none], part)
    h_t = xxx_t @ att.time_maa_w1
    show("lora_down (summed)", part.sum(0), h_t)
    show("tanh of it", torch.tanh(part.sum(0)), torch.tanh(h_t))
    mixed = x.new_empty(5, B, C)
    ext.rwkv6_mix(xn_t, prev, part, att.time_maa_w2,
                  [att.time_maa_w, att.time_maa_k, att.time_maa_v, att.time_maa_r, att.time_maa_g], mixed)
    hh = torch.tanh(h_t).view(B, 5, -1).transpose(0, 1)
    deltas = torch.bmm(hh, att.time_maa_w2)  # (5, B, C)
    maas = [att.time_maa_w, att.time_maa_k, att.time_maa_v, att.time_maa_r, att.time_maa_g]
    for i, nm in enumerate("wkvrg"):
        show(f"mix6 x_{nm}", mixed[i], xn_t + xx * (maas[i].view(-1) + deltas[i]))
    xw, xk, xv, xr, xg = [xn_t + xx * (maas[i].view(-1) + deltas[i]) for i in range(5)]
    rkvg = x.new_empty(4, B, C)
    dpart = torch.empty(KSPLIT, B, att.time_decay_w1.shape[1], device="cuda")
    ext.rwkv7_rkv_lora([att.receptance.weight, att.key.weight, att.value.weight, att.gate.weight],
                       [xr, xk, xv, xg], list(rkvg), [xw] * 4, [att.time_decay_w1, none, none, none], dpart)
    r_t, k_t, v_t, g_t = (F.linear(xr, att.receptance.weight), F.linear(xk, att.key.weight),
                          F.linear(xv, att.value.weight), F.linear(xg, att.gate.weight))
    for nm, a, b in zip("rkvg", rkvg, (r_t, k_t, v_t, g_t)):
        show(f"gemv {nm}", a, b)
    show("decay lora_down (summed)", dpart.sum(0), xw @ att.time_decay_w1)
    state = torch.randn(B, H, N, N, device="cuda") * 0.1
    st = state.clone()
    out = torch.empty_like(x)
    params = [att.time_decay.view(-1), att.time_faaaa.view(-1), att.ln_x.weight, att.ln_x.bias]
    ext.rwkv6_tmix_decode(r_t, k_t, v_t, g_t, dpart, att.time_decay_w2, params, GROUP_NORM_EPS, st, out)
    w = att.time_decay.view(-1) + torch.tanh(xw @ att.time_decay_w1) @ att.time_decay_w2
    decay = torch.exp(-torch.exp(w)).view(B, H, N)
    r4, k4, v4 = r_t.view(B, H, N), k_t.view(B, H, N), v_t.view(B, H, N)
    kv = k4[..., :, None] * v4[..., None, :]
    y = torch.einsum("bhi,bhij->bhj", r4, state + att.time_faaaa.view(1, H, N, 1) * kv)
    s_t = decay[..., None] * state + kv
    show("tmix6 state", st, s_t)
    y_t = group_norm_heads(y.view(B, 1, H, N), H, att.ln_x.weight, att.ln_x.bias, x.dtype).view(B, C) * F.silu(g_t)
    show("tmix6 out", out, y_t)
    yy = torch.empty_like(x)
    h = torch.relu(F.linear(xk, ffn.key.weight)) ** 2
    rr = F.linear(xr, ffn.receptance.weight)
    ext.rwkv6_gemv_gated([ffn.value.weight], [h], [yy], [x], rr)
    show("gemv gated (FFN value)", yy, x + torch.sigmoid(rr) * F.linear(h, ffn.value.weight))
    hk = torch.empty(B, ffn.key.weight.shape[0], device="cuda")
    ext.rwkv7_gemv([ffn.key.weight], [xk], [hk], [], True)
    show("gemv relu^2 (FFN key)", hk, h)
