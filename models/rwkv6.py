"""RWKV-6 (Finch): data-dependent token shift and decay through small LoRAs (kernels/wkv6)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from archbench.models.rwkv_common import (ChannelMix6, MatrixStateTimeMix, RWKVBase, RWKVConfig,
                                          group_norm_heads, lora_init, token_shift)


class TimeMix6(MatrixStateTimeMix):
    def __init__(self, config: RWKVConfig, layer_id: int):
        super().__init__()
        C, A, H, N = config.n_embd, config.dim_att, config.n_head, config.head_size
        D, D2 = config.mix_lora, config.decay_lora
        self.n_head, self.head_size = H, N
        for name in ("x", "w", "k", "v", "r", "g"):
            setattr(self, f"time_maa_{name}", nn.Parameter(torch.empty(1, 1, C)))
        self.time_maa_w1 = nn.Parameter(torch.empty(C, 5 * D))
        self.time_maa_w2 = nn.Parameter(torch.empty(5, D, C))
        self.time_decay = nn.Parameter(torch.empty(1, 1, A))
        self.time_decay_w1 = nn.Parameter(torch.empty(C, D2))
        self.time_decay_w2 = nn.Parameter(torch.empty(D2, A))
        self.time_faaaa = nn.Parameter(torch.empty(H, N))
        if config.time_state:
            self.time_state = nn.Parameter(torch.zeros(H, N, N))
        self.receptance = nn.Linear(C, A, bias=False)
        self.key = nn.Linear(C, A, bias=False)
        self.value = nn.Linear(C, A, bias=False)
        self.gate = nn.Linear(C, A, bias=False)
        self.output = nn.Linear(A, C, bias=False)
        self.ln_x = nn.GroupNorm(H, A)

    def init_random_(self, gen, layer_id):
        A = self.time_decay.shape[-1]
        for name in ("x", "w", "k", "v", "r", "g"):
            p = getattr(self, f"time_maa_{name}")
            p.copy_(torch.rand(p.shape, generator=gen))
        self.time_maa_w1.copy_(lora_init(*self.time_maa_w1.shape, 0.1, gen))
        self.time_maa_w2.copy_(torch.randn(self.time_maa_w2.shape, generator=gen) * 0.1)
        self.time_decay.copy_((torch.linspace(-6, 0, A) + 0.3 * torch.randn(A, generator=gen)).view(1, 1, A))
        self.time_decay_w1.copy_(lora_init(*self.time_decay_w1.shape, 0.1, gen))
        self.time_decay_w2.copy_(lora_init(*self.time_decay_w2.shape, 0.1, gen))
        self.time_faaaa.copy_(0.5 * torch.randn(self.time_faaaa.shape, generator=gen))
        self.ln_x.weight.copy_(1 + 0.1 * torch.randn(A, generator=gen))
        self.ln_x.bias.copy_(0.1 * torch.randn(A, generator=gen))

    def forward(self, x, prev, state, v_first, scale: float):
        B, T, C = x.shape
        H, N = self.n_head, self.head_size
        xx = token_shift(x, prev) - x
        xxx = torch.tanh((x + xx * self.time_maa_x) @ self.time_maa_w1)         # (B, T, 5*D)
        xxx = xxx.view(B * T, 5, -1).transpose(0, 1)                            # (5, B*T, D)
        mw, mk, mv, mr, mg = torch.bmm(xxx, self.time_maa_w2).view(5, B, T, C).unbind(0)
        xw = x + xx * (self.time_maa_w + mw)
        xk = x + xx * (self.time_maa_k + mk)
        xv = x + xx * (self.time_maa_v + mv)
        xr = x + xx * (self.time_maa_r + mr)
        xg = x + xx * (self.time_maa_g + mg)

        r = self.receptance(xr).view(B, T, H, N)
        k = self.key(xk).view(B, T, H, N)
        v = self.value(xv).view(B, T, H, N)
        g = F.silu(self.gate(xg))
        w = self.time_decay.float().view(-1) + (torch.tanh(xw @ self.time_decay_w1) @ self.time_decay_w2).float()
        w = -torch.exp(w).view(B, T, H, N)
        y, state = self.wkv(r, k, v, w, self.time_faaaa.float(), state)
        y = group_norm_heads(y, H, self.ln_x.weight, self.ln_x.bias, x.dtype) * g
        if scale != 1.0:
            y = y * scale
        return self.output(y), state, v_first


class RWKV6(RWKVBase):
    time_mix_cls = TimeMix6
    channel_mix_cls = ChannelMix6
    wkv_op = "wkv6"
    decode_kernels = "archbench.kernels.wkv6.decode"
