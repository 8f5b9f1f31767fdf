"""RWKV-7 (Goose): the generalised delta rule with vector decay and in-context learning
rate (kernels/wkv7), value residual from layer 0, and a bonus term r.k.r_k v."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from archbench.models.rwkv_common import (MatrixStateTimeMix, RWKVBase, RWKVConfig, group_norm_heads,
                                          lora_init, token_shift)

DECAY_SCALE = math.exp(-0.5)  # w = exp(-exp(-0.5) * sigmoid(.)): decay per step in [0.545, 1)


def lora_widths(n_embd: int) -> dict[str, int]:
    """BlinkDL's default LoRA widths for a given width (what the published models use)."""
    def r32(x):
        return max(32, int(round(x / 32)) * 32)
    return {"decay_lora": r32(1.8 * n_embd ** 0.5), "aaa_lora": r32(1.8 * n_embd ** 0.5),
            "mv_lora": r32(1.3 * n_embd ** 0.5), "gate_lora": r32(0.6 * n_embd ** 0.8)}


class TimeMix7(MatrixStateTimeMix):
    def __init__(self, config: RWKVConfig, layer_id: int):
        super().__init__()
        C, H, N = config.n_embd, config.n_head, config.head_size
        self.layer_id, self.n_head, self.head_size = layer_id, H, N
        for name in ("r", "w", "k", "v", "a", "g"):
            setattr(self, f"x_{name}", nn.Parameter(torch.empty(1, 1, C)))
        self.w0 = nn.Parameter(torch.empty(1, 1, C))
        self.w1 = nn.Parameter(torch.empty(C, config.decay_lora))
        self.w2 = nn.Parameter(torch.empty(config.decay_lora, C))
        self.a0 = nn.Parameter(torch.empty(1, 1, C))
        self.a1 = nn.Parameter(torch.empty(C, config.aaa_lora))
        self.a2 = nn.Parameter(torch.empty(config.aaa_lora, C))
        if layer_id > 0 or config.layer0_v_lora:  # layer 0 is the value residual's source
            self.v0 = nn.Parameter(torch.empty(1, 1, C))
            self.v1 = nn.Parameter(torch.empty(C, config.mv_lora))
            self.v2 = nn.Parameter(torch.empty(config.mv_lora, C))
        self.g1 = nn.Parameter(torch.empty(C, config.gate_lora))
        self.g2 = nn.Parameter(torch.empty(config.gate_lora, C))
        self.k_k = nn.Parameter(torch.empty(1, 1, C))
        self.k_a = nn.Parameter(torch.empty(1, 1, C))
        self.r_k = nn.Parameter(torch.empty(H, N))
        if config.time_state:
            self.time_state = nn.Parameter(torch.zeros(H, N, N))
        self.receptance = nn.Linear(C, C, bias=False)
        self.key = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(C, C, bias=False)
        self.output = nn.Linear(C, C, bias=False)
        self.ln_x = nn.GroupNorm(H, C)

    def init_random_(self, gen, layer_id):
        C = self.w0.shape[-1]
        for name in ("r", "w", "k", "v", "a", "g"):
            getattr(self, f"x_{name}").copy_(torch.rand(1, 1, C, generator=gen))
        self.w0.copy_((torch.linspace(-6, 1, C) + 0.5 * torch.randn(C, generator=gen)).view(1, 1, C))
        self.a0.copy_(0.5 * torch.randn(1, 1, C, generator=gen))
        self.k_k.copy_(0.85 + 0.1 * torch.randn(1, 1, C, generator=gen))
        self.k_a.copy_(1 + 0.1 * torch.randn(1, 1, C, generator=gen))
        self.r_k.copy_(0.5 * torch.randn(self.r_k.shape, generator=gen))
        for name in ("w1", "w2", "a1", "a2", "v1", "v2", "g1", "g2"):
            if hasattr(self, name):
                p = getattr(self, name)
                p.copy_(lora_init(*p.shape, 1 / math.sqrt(p.shape[0]), gen))
        if hasattr(self, "v0"):
            self.v0.copy_(1 + 0.5 * torch.randn(1, 1, C, generator=gen))
        self.ln_x.weight.copy_(1 + 0.1 * torch.randn(C, generator=gen))
        self.ln_x.bias.copy_(0.1 * torch.randn(C, generator=gen))

    def forward(self, x, prev, state, v_first, scale: float):
        B, T, C = x.shape
        H, N = self.n_head, self.head_size
        xx = token_shift(x, prev) - x
        xr, xw, xk = x + xx * self.x_r, x + xx * self.x_w, x + xx * self.x_k
        xv, xa, xg = x + xx * self.x_v, x + xx * self.x_a, x + xx * self.x_g

        r = self.receptance(xr)
        w = torch.tanh(xw @ self.w1) @ self.w2
        k = self.key(xk)
        v = self.value(xv)
        a = torch.sigmoid(self.a0 + (xa @ self.a1) @ self.a2)
        g = torch.sigmoid(xg @ self.g1) @ self.g2

        kk = F.normalize((k * self.k_k).view(B, T, H, N), dim=-1, p=2.0)
        k = k * (1 + (a - 1) * self.k_a)
        if self.layer_id == 0:
            v_first = v
        else:
            v = v + (v_first - v) * torch.sigmoid(self.v0 + (xv @ self.v1) @ self.v2)
        log_w = -DECAY_SCALE * torch.sigmoid(self.w0.float() + w.float())

        shape = (B, T, H, N)
        y, state = self.wkv(r.view(shape), log_w.view(shape), k.view(shape), v.view(shape),
                            -kk, kk * a.view(shape), state)
        y = group_norm_heads(y, H, self.ln_x.weight, self.ln_x.bias, x.dtype)
        bonus = (r.view(shape) * k.view(shape) * self.r_k).sum(dim=-1, keepdim=True) * v.view(shape)
        y = y + bonus.view(B, T, C)
        return self.output(y * g), state, v_first


class ChannelMix7(nn.Module):
    def __init__(self, config: RWKVConfig, layer_id: int):
        super().__init__()
        C = config.n_embd
        self.x_k = nn.Parameter(torch.empty(1, 1, C))
        self.key = nn.Linear(C, config.dim_ffn, bias=False)
        self.value = nn.Linear(config.dim_ffn, C, bias=False)

    def init_random_(self, gen, layer_id):
        self.x_k.copy_(torch.rand(self.x_k.shape, generator=gen))

    def forward(self, x, prev, scale: float = 1.0):
        xx = token_shift(x, prev) - x
        k = torch.relu(self.key(x + xx * self.x_k)) ** 2
        return self.value(k)


class RWKV7(RWKVBase):
    time_mix_cls = TimeMix7
    channel_mix_cls = ChannelMix7
    wkv_op = "wkv7"
    decode_kernels = "archbench.kernels.wkv7.decode"
