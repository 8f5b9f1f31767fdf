"""RWKV-4: per-channel decay, numerator/denominator state (kernels/wkv4)."""
from __future__ import annotations

import torch
import torch.nn as nn

from archbench.kernels.wkv4.ref import NEG_INF
from archbench.models.rwkv_common import ChannelMix, RWKVBase, RWKVConfig, token_shift


class TimeMix4(nn.Module):
    def __init__(self, config: RWKVConfig, layer_id: int):
        super().__init__()
        C, A = config.n_embd, config.dim_att
        self.time_decay = nn.Parameter(torch.empty(A))
        self.time_first = nn.Parameter(torch.empty(A))
        self.time_mix_k = nn.Parameter(torch.empty(1, 1, C))
        self.time_mix_v = nn.Parameter(torch.empty(1, 1, C))
        self.time_mix_r = nn.Parameter(torch.empty(1, 1, C))
        self.key = nn.Linear(C, A, bias=False)
        self.value = nn.Linear(C, A, bias=False)
        self.receptance = nn.Linear(C, A, bias=False)
        self.output = nn.Linear(A, C, bias=False)

    def init_random_(self, gen, layer_id):
        A = self.time_decay.numel()
        self.time_decay.copy_(torch.linspace(-5, 1, A) + 0.3 * torch.randn(A, generator=gen))
        self.time_first.copy_(0.3 + 0.7 * torch.rand(A, generator=gen))
        for p in (self.time_mix_k, self.time_mix_v, self.time_mix_r):
            p.copy_(torch.rand(p.shape, generator=gen))

    def init_wkv_state_(self, s):
        s[:, 2] = NEG_INF

    def forward(self, x, prev, state, v_first, scale: float):
        xx = token_shift(x, prev)
        mk, mv, mr = self.time_mix_k, self.time_mix_v, self.time_mix_r
        xk, xv, xr = x * mk + xx * (1 - mk), x * mv + xx * (1 - mv), x * mr + xx * (1 - mr)
        r = torch.sigmoid(self.receptance(xr))
        y, state = self.wkv(-torch.exp(self.time_decay.float()), self.time_first.float(),
                            self.key(xk), self.value(xv), state)
        y = r * y.to(x.dtype)
        if scale != 1.0:
            y = y * scale
        return self.output(y), state, v_first


class RWKV4(RWKVBase):
    time_mix_cls = TimeMix4
    channel_mix_cls = ChannelMix
    wkv_op = "wkv4"
    decode_kernels = "archbench.kernels.wkv4.decode"

    def _wkv_state_shape(self, batch_size: int) -> tuple[int, ...]:
        return (batch_size, 3, self.config.dim_att)
