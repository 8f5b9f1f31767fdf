"""The RWKV-7 decode step (one token per sequence) on fused CUDA kernels.

The unfused step (`RWKV7.forward` on a (B, 1) input) launches about 80 kernels per layer,
most of them elementwise ops on a few KB; at batch 1 their launch gaps, not the weight
reads, set the speed. Here a layer is seven launches at batch 1: a fused layer norm +
token shift + interpolations, the four LoRA first factors and the r/k/v projections (one
launch), one kernel per (sequence, head) for everything between them and the
output projection (LoRA second factors, decay, key normalisation, value residual, the WKV7
state update, group norm, bonus, gate), the output projection with the residual added, and
the channel mix (fused norm + shift, the key projection with relu^2, the value projection
with the residual). The projections run on our matrix-vector kernel up to GEMV_MAX_B
sequences, on cuBLAS above (F.linear / addmm: twelve launches a layer).

The small kernels each move a few KB to a few MB, so at batch 1 their latency is what
counts: each spreads its bytes over many blocks (one SM pulls only a 1/132 share of an
H100's bandwidth), issues all of a thread's loads before waiting on the first, and on
Hopper starts while the kernel before it finishes (programmatic dependent launch: weights
are loaded before the wait for the previous kernel's results; ARCHBENCH_DECODE_PDL=0 turns
it off). kernels/wkv7/cuda/decode7.cu says how, kernel by kernel.

    logits = decode_step(model, tokens, state)   # tokens (B,), state updated in place

Same maths as `TimeMix7.forward` / `ChannelMix7.forward`, in fp32 inside each kernel with
one rounding to the model dtype on the way out; tests/models/test_rwkv_gpu.py holds the
two to the dtype's tolerance.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from archbench.kernels.build import extension

KSPLIT = 16  # row blocks of the LoRA first factors (their partial sums meet in the head kernel; at most 16)
# Up to this batch the projections run on rwkv7_gemv, above it on cuBLAS. Measured on an H200
# (RWKV-7 2.9B, bf16, graphed step, results/decode/rwkv7-unroll/batch_bench.log): at batch 2
# ours 2.961 ms a step against cuBLAS 3.001, at 3 and 4 cuBLAS (3.03 / 3.09 against 3.94 /
# 4.57), whose kernels reuse each weight load across sequences better. (On an H100 with the
# kernel before its register change, cuBLAS won from batch 2.)
GEMV_MAX_B = 2
LN_EPS = 1e-5
GROUP_NORM_EPS = 64e-5


def _empty(like: torch.Tensor) -> torch.Tensor:
    return like.new_empty(0)


def _linear(ext, own: bool, x: torch.Tensor, w: torch.Tensor, add: torch.Tensor | None = None,
            relu_sq: bool = False) -> torch.Tensor:
    """add + x @ w.T, or relu(x @ w.T) ** 2; on rwkv7_gemv if `own`, else on cuBLAS."""
    if own:
        y = x.new_empty(x.shape[0], w.shape[0])
        ext.rwkv7_gemv([w], [x], [y], [] if add is None else [add], relu_sq)
        return y
    if add is not None:
        return torch.addmm(add, x, w.t())
    y = F.linear(x, w)
    return torch.relu_(y).square_() if relu_sq else y


def step_start(model, tokens: torch.Tensor):
    """The extension, the embedded tokens x [B, C], and whether the projections run on our
    GEMV (at most GEMV_MAX_B sequences; it reads 16-byte vectors of every row: widths that
    are multiples of 8 elements). Shared with kernels/wkv6/decode.py."""
    x = model.emb(tokens.view(-1))
    C = x.shape[1]
    return extension(), x, x.shape[0] <= GEMV_MAX_B and C % 8 == 0 and model.config.dim_ffn % 8 == 0


def step_logits(model, x: torch.Tensor) -> torch.Tensor:
    """The final layer norm and the head, fp32 logits [B, V]."""
    return model.head(F.layer_norm(x, (x.shape[1],), model.ln_out.weight, model.ln_out.bias, LN_EPS)).float()


@torch.no_grad()
def decode_step(model, tokens: torch.Tensor, state) -> torch.Tensor:
    """tokens (B,) -> logits (B, V) fp32; state (RWKVState) advanced in place."""
    ext, x, own = step_start(model, tokens)
    B, C = x.shape
    mixed = x.new_empty(6, B, C)
    v_first = torch.empty_like(x)
    out = torch.empty_like(x)
    for i, block in enumerate(model.blocks):
        att, ffn = block.att, block.ffn
        if i == 0:
            x = F.layer_norm(x, (C,), block.ln0.weight, block.ln0.bias, LN_EPS)
        ext.rwkv7_norm_mix(x, block.ln1.weight, block.ln1.bias, state.att_shift[i],
                           [att.x_r, att.x_k, att.x_v, att.x_w, att.x_a, att.x_g], mixed, LN_EPS, False)
        xr, xk, xv, xw, xa, xg = mixed
        first = i == 0
        v1 = _empty(x) if first else att.v1
        v2 = _empty(x) if first else att.v2
        firsts = [att.w1, att.a1, v1, att.g1]
        cols = sum(w.shape[1] for w in firsts if w.numel())
        partial = torch.empty(KSPLIT, B, cols, dtype=torch.float32, device=x.device)
        if own:  # the LoRA first factors, then r, k, v, in one launch
            r, k, v = rkv = x.new_empty(3, B, C)
            ext.rwkv7_rkv_lora([att.receptance.weight, att.key.weight, att.value.weight], [xr, xk, xv], list(rkv),
                               [xw, xa, xv, xg], firsts, partial)
        else:
            r, k, v = F.linear(xr, att.receptance.weight), F.linear(xk, att.key.weight), F.linear(xv, att.value.weight)
            ext.rwkv7_lora_down([xw, xa, xv, xg], firsts, partial)
        params = [att.w0.view(-1), att.a0.view(-1), _empty(x) if first else att.v0.view(-1), att.k_k.view(-1),
                  att.k_a.view(-1), att.r_k, att.ln_x.weight, att.ln_x.bias]
        ext.rwkv7_tmix_decode(r, k, v, partial, [att.w2, att.a2, v2, att.g2], params, GROUP_NORM_EPS,
                              v_first, first, state.wkv[i], out)
        x = _linear(ext, own, out, att.output.weight, add=x)
        ext.rwkv7_norm_mix(x, block.ln2.weight, block.ln2.bias, state.ffn_shift[i], [ffn.x_k], mixed[:1], LN_EPS,
                           False)
        h = _linear(ext, own, mixed[0], ffn.key.weight, relu_sq=True)
        x = _linear(ext, own, h, ffn.value.weight, add=x)
    return step_logits(model, x)


def can_fuse(model) -> bool:
    """The fused step covers RWKV-7 on our CUDA kernels: head sizes 16-128, a width of at
    most 4096, LoRA widths that are multiples of 8 (16-byte loads) and sum to at most 1024."""
    cfg = model.config
    widths = (cfg.decay_lora, cfg.aaa_lora, cfg.mv_lora, cfg.gate_lora)
    return (model.impl == "cuda" and model.device.type == "cuda" and cfg.head_size in (16, 32, 64, 128)
            and cfg.n_embd <= 4096
            and all(w % 8 == 0 for w in widths) and sum(widths) <= 1024 and not model.fp16_rescale_every)
