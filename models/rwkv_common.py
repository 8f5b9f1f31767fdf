"""What RWKV v4-v7 share: the config, the state, the embedding -> blocks -> head stack,
token shift and the fp16 rescaling.

Parameters carry BlinkDL's own names and shapes (`blocks.3.att.time_decay`, ...), so a
BlinkDL `.pth` loads with `load_state_dict` and `state_dict()` writes one back. Each
version file (rwkv4.py ... rwkv7.py) supplies its TimeMix and ChannelMix modules.
"""
from __future__ import annotations

import functools
import importlib
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from archbench.harness.interface import State, resolve_dtype
from archbench.kernels import get_op

# In fp16, v4-v6 halve the residual every 6 layers (and scale the output projections to
# match), as BlinkDL's reference does, so deep models do not overflow. RWKV-7 needs none.
RESCALE_EVERY_FP16 = 6
# Parameters kept in fp32 whatever the model dtype: the decay and bonus feed exp() over
# long sequences, and the group norm runs in fp32 in the reference.
FP32_PARAMS = ("time_decay", "time_first", "time_faaaa", "time_state", "ln_x.weight", "ln_x.bias", "w0")


@dataclass(frozen=True)
class RWKVConfig:
    version: str                 # "4", "5.0", "5.1", "5.2", "6", "7"
    vocab_size: int
    n_embd: int
    n_layer: int
    dim_att: int | None = None   # defaults to n_embd
    dim_ffn: int | None = None   # defaults per version
    head_size: int = 64          # v5-v7
    mix_lora: int = 0            # v6: time_maa_w1 width / 5
    decay_lora: int = 0          # v6 time_decay_w1, v7 w1
    aaa_lora: int = 0            # v7 a1
    mv_lora: int = 0             # v7 v1
    gate_lora: int = 0           # v7 g1
    time_state: bool = False     # state-tuned checkpoint: blocks.i.att.time_state is the initial state
    layer0_v_lora: bool = False  # v7 checkpoint carries (unused) v0/v1/v2 on layer 0

    def __post_init__(self):
        if self.dim_att is None:
            object.__setattr__(self, "dim_att", self.n_embd)
        if self.dim_ffn is None:
            default = {"4": 4 * self.n_embd, "7": 4 * self.n_embd}.get(self.version, int(self.n_embd * 3.5) // 32 * 32)
            object.__setattr__(self, "dim_ffn", default)

    @property
    def n_head(self) -> int:
        return self.dim_att // self.head_size

    @property
    def family(self) -> str:
        return "rwkv" + self.version.split(".")[0]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RWKVState(State):
    att_shift: torch.Tensor   # (L, B, C) last normalised input of each time mix, model dtype
    ffn_shift: torch.Tensor   # (L, B, C) same for each channel mix
    wkv: torch.Tensor         # v4: (L, B, 3, C); v5-v7: (L, B, H, N, N) [K, V] layout; fp32


def token_shift(x: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
    """x (B, T, C), prev (B, C) -> the input one step back, (B, T, C)."""
    return torch.cat((prev.unsqueeze(1), x[:, :-1]), dim=1)


def lora_init(rows: int, cols: int, scale: float, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(rows, cols, generator=gen) * scale


class RWKVBase(nn.Module):
    """emb -> ln0 -> blocks -> ln_out -> head, with state in and state out.

    A subclass sets `time_mix_cls` and `channel_mix_cls`, and `wkv_op` (kernel name)."""

    time_mix_cls: type[nn.Module]
    channel_mix_cls: type[nn.Module]
    wkv_op: str
    chunked_prefill = True  # forward continues a state in parallel: a prompt can go in pieces

    def __init__(self, config: RWKVConfig, impl: str = "ref"):
        super().__init__()
        self.config = config
        self.family = config.family
        self.impl = impl
        op = get_op(self.wkv_op, impl)
        # our kernels write the state they are given; the others return a new one, copied back
        self.wkv = functools.partial(op, inplace=True) if impl == "cuda" else op
        # the reference's RWKV_RESCALE_LAYER; 0 turns it off
        self.fp16_rescale_every = RESCALE_EVERY_FP16 if config.version != "7" else 0
        C = config.n_embd
        self.emb = nn.Embedding(config.vocab_size, C)
        self.blocks = nn.ModuleList(Block(self, config, i) for i in range(config.n_layer))
        self.ln_out = nn.LayerNorm(C)
        self.head = nn.Linear(C, config.vocab_size, bias=False)

    # ---- construction -------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return self.emb.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.emb.weight.device

    def cast(self, dtype: str | torch.dtype) -> "RWKVBase":
        """Cast to dtype, keeping the decay, bonus and group-norm parameters in fp32."""
        dtype = resolve_dtype(dtype)
        for name, p in self.named_parameters():
            p.data = p.data.to(torch.float32 if name.endswith(FP32_PARAMS) else dtype)
        return self

    @torch.no_grad()
    def init_random_(self, seed: int = 0) -> "RWKVBase":
        """Random weights in the ranges trained models have (for speed, memory and tests)."""
        gen = torch.Generator().manual_seed(seed)
        C = self.config.n_embd
        for name, p in self.named_parameters():
            if name.endswith(("ln0.weight", "ln1.weight", "ln2.weight", "ln_out.weight")):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith(("ln0.bias", "ln1.bias", "ln2.bias", "ln_out.bias")):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif name == "emb.weight":
                p.copy_(torch.randn(p.shape, generator=gen))
            elif name == "head.weight":
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(C))
            elif p.dim() == 2 and name.endswith(".weight"):
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[1]))
        for i, block in enumerate(self.blocks):
            block.att.init_random_(gen, i)
            block.ffn.init_random_(gen, i)
        return self

    # ---- the SequenceModel protocol ----------------------------------------------
    def _wkv_state_shape(self, batch_size: int) -> tuple[int, ...]:
        cfg = self.config
        return (batch_size, cfg.n_head, cfg.head_size, cfg.head_size)

    def init_state(self, batch_size: int, max_len: int | None = None) -> RWKVState:
        cfg, dev = self.config, self.device
        L, C = cfg.n_layer, cfg.n_embd
        wkv = torch.zeros((L, *self._wkv_state_shape(batch_size)), dtype=torch.float32, device=dev)
        for i, block in enumerate(self.blocks):
            block.att.init_wkv_state_(wkv[i])
        return RWKVState(
            att_shift=torch.zeros(L, batch_size, C, dtype=self.dtype, device=dev),
            ffn_shift=torch.zeros(L, batch_size, C, dtype=self.dtype, device=dev),
            wkv=wkv,
        )

    def state_nbytes(self, batch_size: int, context_len: int = 0) -> int:
        """Bytes of the recurrent state: independent of the context length."""
        cfg = self.config
        shifts = 2 * cfg.n_layer * batch_size * cfg.n_embd * self.dtype.itemsize
        return shifts + cfg.n_layer * math.prod(self._wkv_state_shape(batch_size)) * 4

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.emb.weight.numel() + self.head.weight.numel()
        return n

    @torch.no_grad()
    def forward(self, tokens: torch.Tensor, state: RWKVState | None = None,
                last_only: bool = False) -> tuple[torch.Tensor, RWKVState]:
        """tokens (B, T) -> logits (B, T, V) in fp32 ((B, 1, V) with last_only), and the
        state after the last token, written into the given state's tensors."""
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be (batch, time), got shape {tuple(tokens.shape)}")
        if state is None:
            state = self.init_state(tokens.shape[0])
        rescale = self.fp16_rescale_every if self.dtype == torch.float16 else 0
        x = self.emb(tokens)
        v_first = None
        for i, block in enumerate(self.blocks):
            scale = 0.5 ** (i // rescale) if rescale else 1.0
            wkv = state.wkv[i]
            x, v_first, (a, f, s) = block(x, (state.att_shift[i], state.ffn_shift[i], wkv), v_first, scale)
            state.att_shift[i].copy_(a)
            state.ffn_shift[i].copy_(f)
            if s is not wkv:
                wkv.copy_(s)
            if rescale and (i + 1) % rescale == 0:
                x = x / 2
        if last_only:
            x = x[:, -1:]
        return self.head(self.ln_out(x)).float(), state

    # step() on fused CUDA kernels (the module `decode_kernels`: kernels/wkv4/decode.py ...
    # kernels/wkv7/decode.py) where they apply; False: the model's own ops on a (B, 1) input
    fused_decode = True
    decode_kernels: str | None = None

    def step(self, tokens: torch.Tensor, state: RWKVState) -> tuple[torch.Tensor, RWKVState]:
        """tokens (B,) -> logits (B, V): one decode step, the state updated in place (so a
        CUDA graph can capture it)."""
        if self.fused_decode and self.decode_kernels:
            fused = importlib.import_module(self.decode_kernels)
            if fused.can_fuse(self):
                return fused.decode_step(self, tokens, state), state
        logits, state = self.forward(tokens.view(-1, 1), state)
        return logits[:, 0], state


class Block(nn.Module):
    def __init__(self, model: RWKVBase, config: RWKVConfig, layer_id: int):
        super().__init__()
        C = config.n_embd
        if layer_id == 0:
            self.ln0 = nn.LayerNorm(C)
        self.ln1 = nn.LayerNorm(C)
        self.ln2 = nn.LayerNorm(C)
        self.att = model.time_mix_cls(config, layer_id)
        self.ffn = model.channel_mix_cls(config, layer_id)
        self.att.wkv = model.wkv  # the kernel, shared by every layer

    def forward(self, x, state, v_first, scale: float):
        att_shift, ffn_shift, wkv = state
        if hasattr(self, "ln0"):
            x = self.ln0(x)
        xx = self.ln1(x)
        out, wkv, v_first = self.att(xx, att_shift, wkv, v_first, scale)
        x = x + out
        att_shift = xx[:, -1]
        xx = self.ln2(x)
        x = x + self.ffn(xx, ffn_shift, scale)
        return x, v_first, (att_shift, xx[:, -1], wkv)


class ChannelMix(nn.Module):
    """RWKV-4 and RWKV-5 channel mix: r * W_v relu(W_k x_k)^2 with time_mix interpolation."""

    def __init__(self, config: RWKVConfig, layer_id: int):
        super().__init__()
        C, F_ = config.n_embd, config.dim_ffn
        self.time_mix_k = nn.Parameter(torch.empty(1, 1, C))
        self.time_mix_r = nn.Parameter(torch.empty(1, 1, C))
        self.key = nn.Linear(C, F_, bias=False)
        self.receptance = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(F_, C, bias=False)

    def init_random_(self, gen, layer_id):
        for p in (self.time_mix_k, self.time_mix_r):
            p.copy_(torch.rand(p.shape, generator=gen))

    def mix(self, x, prev):
        xx = token_shift(x, prev)
        return x * self.time_mix_k + xx * (1 - self.time_mix_k), x * self.time_mix_r + xx * (1 - self.time_mix_r)

    def forward(self, x, prev, scale: float = 1.0):
        xk, xr = self.mix(x, prev)
        k = torch.relu(self.key(xk)) ** 2
        if scale != 1.0:
            k = k * scale
        return torch.sigmoid(self.receptance(xr)) * self.value(k)


class ChannelMix6(ChannelMix):
    """RWKV-6 channel mix: the same maths, interpolation written x + (x_prev - x) * maa."""

    def __init__(self, config: RWKVConfig, layer_id: int):
        nn.Module.__init__(self)
        C, F_ = config.n_embd, config.dim_ffn
        self.time_maa_k = nn.Parameter(torch.empty(1, 1, C))
        self.time_maa_r = nn.Parameter(torch.empty(1, 1, C))
        self.key = nn.Linear(C, F_, bias=False)
        self.receptance = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(F_, C, bias=False)

    def init_random_(self, gen, layer_id):
        for p in (self.time_maa_k, self.time_maa_r):
            p.copy_(torch.rand(p.shape, generator=gen))

    def mix(self, x, prev):
        xx = token_shift(x, prev) - x
        return x + xx * self.time_maa_k, x + xx * self.time_maa_r


class MatrixStateTimeMix(nn.Module):
    """Base of the v5-v7 time mixes: the (H, N, N) state starts at zero, or at the
    `time_state` of a state-tuned checkpoint (stored [H, V, K]; our state is [H, K, V])."""

    def init_wkv_state_(self, s: torch.Tensor) -> None:
        if hasattr(self, "time_state"):
            s.copy_(self.time_state.float().transpose(-1, -2).expand_as(s))


def group_norm_heads(y: torch.Tensor, n_head: int, weight, bias, dtype) -> torch.Tensor:
    """(B, T, H, N) -> per-head group norm in fp32 (eps 64e-5, as BlinkDL's ln_x), (B, T, C)."""
    B, T = y.shape[:2]
    y = F.group_norm(y.reshape(B * T, -1).float(), n_head, weight.float(), bias.float(), eps=64e-5)
    return y.view(B, T, -1).to(dtype)
