"""RWKV-5 (Eagle): multi-head matrix state with a fixed per-channel decay (kernels/wkv5).

Three sub-versions, told apart by the checkpoint's keys:
5.0 (ln_x, no gate; one decay and bonus per head), 5.1 (adds the SiLU gate),
5.2 (decay and bonus per channel, `time_faaaa` is the bonus itself).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from archbench.models.rwkv_common import (ChannelMix, MatrixStateTimeMix, RWKVBase, RWKVConfig,
                                          group_norm_heads, token_shift)


class TimeMix5(MatrixStateTimeMix):
    def __init__(self, config: RWKVConfig, layer_id: int):
        super().__init__()
        C, A, H, N = config.n_embd, config.dim_att, config.n_head, config.head_size
        self.sub = config.version
        self.n_head, self.head_size = H, N
        if self.sub == "5.2":
            self.time_decay = nn.Parameter(torch.empty(H, N))
            self.time_faaaa = nn.Parameter(torch.empty(H, N))
        else:
            self.time_decay = nn.Parameter(torch.empty(H))
            self.time_first = nn.Parameter(torch.empty(H))
        if config.time_state:
            self.time_state = nn.Parameter(torch.zeros(H, N, N))
        self.time_mix_k = nn.Parameter(torch.empty(1, 1, C))
        self.time_mix_v = nn.Parameter(torch.empty(1, 1, C))
        self.time_mix_r = nn.Parameter(torch.empty(1, 1, C))
        self.receptance = nn.Linear(C, A, bias=False)
        self.key = nn.Linear(C, A, bias=False)
        self.value = nn.Linear(C, A, bias=False)
        if self.sub != "5.0":
            self.time_mix_g = nn.Parameter(torch.empty(1, 1, C))
            self.gate = nn.Linear(C, A, bias=False)
        self.output = nn.Linear(A, C, bias=False)
        self.ln_x = nn.GroupNorm(H, A)

    def init_random_(self, gen, layer_id):
        H, N = self.n_head, self.head_size
        if self.sub == "5.2":
            self.time_decay.copy_(torch.linspace(-6, 0, H * N).view(H, N) + 0.3 * torch.randn(H, N, generator=gen))
            self.time_faaaa.copy_(0.5 * torch.randn(H, N, generator=gen))
        else:
            self.time_decay.copy_(torch.linspace(-4, -0.5, H) + 0.2 * torch.randn(H, generator=gen))
            self.time_first.copy_(-0.5 + 0.3 * torch.randn(H, generator=gen))
        for name, p in self.named_parameters():
            if name.startswith("time_mix"):
                p.copy_(torch.rand(p.shape, generator=gen))
        self.ln_x.weight.copy_(1 + 0.1 * torch.randn(self.ln_x.weight.shape, generator=gen))
        self.ln_x.bias.copy_(0.1 * torch.randn(self.ln_x.bias.shape, generator=gen))

    def decay_and_bonus(self):
        """log decay w and bonus u, both (H, N) fp32."""
        w = -torch.exp(self.time_decay.float())
        if self.sub == "5.2":
            return w, self.time_faaaa.float()
        u = torch.exp(self.time_first.float())
        return w[:, None].expand(-1, self.head_size), u[:, None].expand(-1, self.head_size)

    def forward(self, x, prev, state, v_first, scale: float):
        B, T, C = x.shape
        H, N = self.n_head, self.head_size
        xx = token_shift(x, prev)

        def lerp(m):
            return x * m + xx * (1 - m)

        r = self.receptance(lerp(self.time_mix_r)).view(B, T, H, N)
        k = self.key(lerp(self.time_mix_k)).view(B, T, H, N)
        v = self.value(lerp(self.time_mix_v)).view(B, T, H, N)
        w, u = self.decay_and_bonus()
        y, state = self.wkv(r, k, v, w, u, state)
        y = group_norm_heads(y, H, self.ln_x.weight, self.ln_x.bias, x.dtype)
        if self.sub != "5.0":
            y = y * F.silu(self.gate(lerp(self.time_mix_g)))
        if scale != 1.0:
            y = y * scale
        return self.output(y), state, v_first


class RWKV5(RWKVBase):
    time_mix_cls = TimeMix5
    channel_mix_cls = ChannelMix
    wkv_op = "wkv5"
    decode_kernels = "archbench.kernels.wkv5.decode"
