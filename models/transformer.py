"""Pythia (GPT-NeoX) and Llama-family causal LMs from transformers behind SequenceModel.

The layers and weights are transformers' own (`GPTNeoXForCausalLM`, `LlamaForCausalLM`);
attention goes through one function registered with transformers' `AttentionInterface`
that keeps keys and values in a preallocated cache owned by our state. `forward` fills
it (in chunks if you like) and `step` appends one token in place with static shapes, so
a decode step can be captured in a CUDA graph.

    model = archbench.build("pythia-2.8b", dtype="bfloat16", device="cuda")
    model = archbench.load("path/to/pythia-160m")                # a Hugging Face folder
    state = model.init_state(batch_size=1, max_len=4096)         # room for 4096 tokens
    logits, state = model.forward(prompt, state)                 # fills the cache
    logits, state = model.step(logits[:, -1].argmax(-1), state)  # appends one token

impl: "sdpa" (torch's scaled_dot_product_attention: FlashAttention kernels for a prompt
on a GPU, the math kernel on a CPU) or "flash_attn" (FlashAttention-2's
`flash_attn_with_kvcache`, when installed); "auto" takes flash_attn where it can run.
The state is updated in place and returned: clone() it to keep the old one. A state
that runs out of room grows (a copy); size it with init_state(max_len=...) to avoid that.
"""
from __future__ import annotations

import importlib.util
import math
from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from archbench.harness.errors import ArchbenchError, CheckpointError, MissingDependencyError
from archbench.harness.interface import State, resolve_dtype
from archbench.models.library import LibraryModel

ARCHS = ("gpt_neox", "llama")
IMPLS = ("sdpa", "flash_attn")
ATTENTION = "archbench_kv"  # the name our attention function is registered under
KV_RESERVE = 256            # free token slots a state gets when forward has to size it
POS_NBYTES = 8              # the int64 position counter on the device


@dataclass(frozen=True)
class TransformerConfig:
    arch: str                     # "gpt_neox" (Pythia) or "llama"
    vocab_size: int
    n_embd: int
    n_layer: int
    n_head: int
    n_kv_head: int | None = None  # grouped-query attention; defaults to n_head
    head_dim: int | None = None   # defaults to n_embd // n_head
    dim_ffn: int | None = None    # defaults to 4 * n_embd
    rotary_pct: float | None = None  # share of each head that is rotated: Pythia 0.25, Llama 1
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    max_position: int = 2048

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise ArchbenchError(f"unknown transformer arch {self.arch!r}; known: {ARCHS}")
        defaults = dict(n_kv_head=self.n_head, head_dim=self.n_embd // self.n_head, dim_ffn=4 * self.n_embd,
                        rotary_pct=0.25 if self.arch == "gpt_neox" else 1.0)
        for name, value in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)

    @property
    def family(self) -> str:
        return "transformer"

    def to_dict(self) -> dict:
        return asdict(self)

    def to_hf(self):
        """The transformers config of this shape."""
        rope = {"rope_type": "default", "rope_theta": self.rope_theta, "partial_rotary_factor": self.rotary_pct}
        common = dict(vocab_size=self.vocab_size, hidden_size=self.n_embd, num_hidden_layers=self.n_layer,
                      num_attention_heads=self.n_head, intermediate_size=self.dim_ffn, rope_parameters=rope,
                      max_position_embeddings=self.max_position, tie_word_embeddings=self.tie_embeddings)
        if self.arch == "gpt_neox":
            from transformers import GPTNeoXConfig
            return GPTNeoXConfig(layer_norm_eps=self.norm_eps, use_parallel_residual=True, **common)
        from transformers import LlamaConfig
        return LlamaConfig(num_key_value_heads=self.n_kv_head, head_dim=self.head_dim, rms_norm_eps=self.norm_eps,
                           **common)

    @classmethod
    def from_hf(cls, hf) -> "TransformerConfig":
        """The shape of a transformers config (a loaded model keeps the full config in `lm.config`)."""
        rope = getattr(hf, "rope_parameters", None) or {}
        return cls(arch=hf.model_type, vocab_size=hf.vocab_size, n_embd=hf.hidden_size, n_layer=hf.num_hidden_layers,
                   n_head=hf.num_attention_heads, n_kv_head=getattr(hf, "num_key_value_heads", None),
                   head_dim=getattr(hf, "head_dim", None), dim_ffn=hf.intermediate_size,
                   rotary_pct=rope.get("partial_rotary_factor", 1.0), rope_theta=rope.get("rope_theta", 10000.0),
                   norm_eps=getattr(hf, "layer_norm_eps", None) or getattr(hf, "rms_norm_eps", 1e-5),
                   tie_embeddings=bool(hf.tie_word_embeddings), max_position=hf.max_position_embeddings)


@dataclass
class TransformerState(State):
    k: torch.Tensor     # (L, B, H_kv, capacity, D) model dtype; slots at and past `length` are zero
    v: torch.Tensor     # (L, B, H_kv, capacity, D)
    pos: torch.Tensor   # (1,) int64 on the device: tokens held (step reads it, so a graph can replay)
    length: int = 0     # the same count on the host (forward reads it)
    rows_share_position: ClassVar[bool] = True

    @property
    def capacity(self) -> int:
        return self.k.shape[3]

    def checkpoint(self) -> "TransformerState":
        return TransformerState(k=self.k, v=self.v, pos=self.pos.clone(), length=self.length)

    def restore(self, saved: "TransformerState") -> None:
        if saved.k is not self.k:  # a clone, not a checkpoint: copy the cache too
            return super().restore(saved)
        self.pos.copy_(saved.pos)
        self.length = saved.length


@dataclass
class _Call:
    """What the attention function needs during one forward or step."""
    state: TransformerState
    positions: torch.Tensor          # (T,) cache slots of this call's tokens
    mask: torch.Tensor | None        # (T, S) True = attend, over the first S cache slots; None = causal prompt
    kv_len: int | None               # S for forward; None = the whole cache (step)
    cache_seqlens: torch.Tensor      # (B,) int32 tokens held before this call, for flash_attn


def flash_attn_available() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def resolve_impl(impl: str | None, device=None) -> str:
    """"auto": FlashAttention-2 on a GPU where it is installed, else SDPA; "ref" is SDPA."""
    if impl in (None, "auto"):
        return "flash_attn" if str(device).startswith("cuda") and flash_attn_available() else "sdpa"
    if impl == "ref":
        return "sdpa"
    if impl not in IMPLS:
        raise ArchbenchError(f"unknown impl {impl!r} for the Transformer; choose one of {IMPLS} or 'auto'")
    if impl == "flash_attn" and not flash_attn_available():
        raise MissingDependencyError(
            "impl 'flash_attn' needs FlashAttention-2, which is not installed: `pip install flash-attn "
            "--no-build-isolation` on a CUDA machine. impl 'sdpa' needs nothing more (torch's "
            "scaled_dot_product_attention, with its own FlashAttention kernel for prompts on a GPU)")
    return impl


def _attention(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0, **kwargs):
    """transformers' attention interface for models built by `Transformer`: the new keys and
    values go into the cache of the state being run, and the queries attend over it.
    query (B, H, T, D), key/value (B, H_kv, T, D) -> (B, T, H, D)."""
    return module.archbench_attend(module.layer_idx, query, key, value, scaling), None


def _register_attention() -> None:
    from transformers import AttentionInterface
    AttentionInterface.register(ATTENTION, _attention)


def _grouped_sdpa(q, k, v, mask, scale):
    """SDPA with H_kv key/value heads shared by groups of query heads, without copying the
    cache: each group's queries become extra rows. q (B, H, T, D), k/v (B, H_kv, S, D)."""
    B, H, T, D = q.shape
    groups = H // k.shape[1]
    q = q.reshape(B, k.shape[1], groups * T, D)
    mask = mask.repeat(groups, 1) if groups > 1 else mask
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale).view(B, H, T, D)


class Transformer(LibraryModel):
    config_cls = TransformerConfig
    family = "transformer"
    resolve_impl = staticmethod(resolve_impl)

    def __init__(self, config: TransformerConfig, impl: str = "auto", lm: nn.Module | None = None):
        super().__init__()
        _register_attention()
        self.config = config
        self.impl = resolve_impl(impl, torch.get_default_device())
        self.lm = lm if lm is not None else self._empty_lm(config)
        self._tie()
        self._call: _Call | None = None
        for module in self.lm.modules():
            if hasattr(module, "layer_idx") and hasattr(module, "is_causal"):  # the attention blocks
                module.archbench_attend = self._attend

    @staticmethod
    def _empty_lm(config: TransformerConfig) -> nn.Module:
        """transformers' model of this shape, built without initialising (init_random_ or
        a checkpoint fills it) on the current default device."""
        from transformers import AutoModelForCausalLM
        device = torch.get_default_device()
        with torch.device("meta"):
            lm = AutoModelForCausalLM.from_config(config.to_hf(), attn_implementation=ATTENTION)
        lm.to_empty(device=device)
        Transformer._rebuild_rotary(lm, device)
        return lm

    # ---- construction -------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return self.lm.get_input_embeddings().weight.dtype

    @property
    def device(self) -> torch.device:
        return self.lm.get_input_embeddings().weight.device

    def to_empty(self, *, device, recurse=True):
        super().to_empty(device=device, recurse=recurse)
        self._rebuild_rotary(self.lm, device)
        return self

    def use_own_attention(self) -> None:
        """Back to our attention (after a library path switched `lm` to its own, e.g. "sdpa")."""
        self.lm.set_attn_implementation(ATTENTION)

    def _tie(self) -> None:
        if self.config.tie_embeddings:
            self.lm.get_output_embeddings().weight = self.lm.get_input_embeddings().weight

    @staticmethod
    def _rebuild_rotary(lm: nn.Module, device) -> None:
        """The rotary frequencies are buffers computed at construction, not stored in
        checkpoints: recompute them after the model leaves the meta device."""
        if torch.device(device).type == "meta":
            return
        for module in lm.modules():
            if type(module).__name__.endswith("RotaryEmbedding"):
                with torch.device("cpu"):
                    fresh = type(module)(module.config)
                for name, buf in fresh.named_buffers(recurse=False):
                    getattr(module, name).copy_(buf)

    @torch.no_grad()
    def init_random_(self, seed: int = 0) -> "Transformer":
        """Random weights of trained-like scale: N(0, 1/fan_in) matrices, norms near 1."""
        gen = torch.Generator(device=self.device).manual_seed(seed)
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                p.normal_(0, 1 / math.sqrt(p.shape[-1]), generator=gen)
            elif name.endswith("weight"):  # LayerNorm / RMSNorm
                p.normal_(1, 0.1, generator=gen)
            else:
                p.normal_(0, 0.02, generator=gen)
        return self

    @classmethod
    def read_config(cls, path) -> TransformerConfig:
        from transformers import AutoConfig
        try:
            return TransformerConfig.from_hf(AutoConfig.from_pretrained(path))
        except (OSError, ValueError, KeyError) as e:
            raise CheckpointError(path, f"transformers could not read its config.json: {e}") from None

    @classmethod
    def load(cls, path, impl: str = "auto", dtype="float32", device="cpu") -> "Transformer":
        """A GPT-NeoX or Llama Hugging Face folder, through transformers' own loader (which
        reads safetensors, or .bin with weights_only, and never runs code from the folder)."""
        from transformers import AutoConfig, AutoModelForCausalLM
        impl = resolve_impl(impl, device)
        try:
            hf_config = AutoConfig.from_pretrained(path)
            if hf_config.model_type not in ARCHS:
                raise CheckpointError(path, f"has model_type {hf_config.model_type!r}; the Transformer loads {ARCHS}")
            _register_attention()
            lm = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(dtype), attn_implementation=ATTENTION)
        except (OSError, ValueError, KeyError) as e:
            raise CheckpointError(path, f"transformers could not load it: {e}") from None
        model = cls(TransformerConfig.from_hf(hf_config), impl=impl, lm=lm).to(device).eval()
        model.source = str(path)
        return model

    # ---- the SequenceModel protocol ----------------------------------------------
    def init_state(self, batch_size: int, max_len: int | None = None) -> TransformerState:
        """An empty cache with room for max_len tokens (KV_RESERVE if not given)."""
        cfg = self.config
        shape = (cfg.n_layer, batch_size, cfg.n_kv_head, KV_RESERVE if max_len is None else max_len, cfg.head_dim)
        return TransformerState(k=torch.zeros(shape, dtype=self.dtype, device=self.device),
                                v=torch.zeros(shape, dtype=self.dtype, device=self.device),
                                pos=torch.zeros(1, dtype=torch.long, device=self.device))

    def state_nbytes(self, batch_size: int, context_len: int) -> int:
        """Bytes of a cache made for context_len tokens (init_state(batch_size, context_len)):
        keys and values of every layer, plus the position counter."""
        cfg = self.config
        return 2 * cfg.n_layer * batch_size * cfg.n_kv_head * context_len * cfg.head_dim * self.dtype.itemsize \
            + POS_NBYTES

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())  # shared (tied) parameters count once
        if non_embedding:
            n -= sum(p.numel() for p in {self.lm.get_input_embeddings().weight,
                                         self.lm.get_output_embeddings().weight})
        return n

    @torch.no_grad()
    def forward(self, tokens: torch.Tensor, state: TransformerState | None = None, last_only: bool = False):
        """tokens (B, T) -> logits (B, T, V) in fp32 ((B, 1, V) with last_only), and the
        state holding T more tokens. A
        new state (state=None) gets room for KV_RESERVE tokens of decode beyond the T."""
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be (batch, time), got shape {tuple(tokens.shape)}")
        B, T = tokens.shape
        state = self.init_state(B, max_len=T + KV_RESERVE) if state is None else state
        start, end = state.length, state.length + T
        self._make_room(state, end)
        positions = torch.arange(start, end, device=self.device)
        mask = None if start == 0 else positions[:, None] >= torch.arange(end, device=self.device)
        seqlens = torch.full((B,), start, dtype=torch.int32, device=self.device)
        logits = self._run(tokens, positions, _Call(state, positions, mask, end, seqlens), last_only)
        state.pos.fill_(end)
        state.length = end
        return logits, state

    @torch.no_grad()
    def step(self, tokens: torch.Tensor, state: TransformerState):
        """tokens (B,) -> logits (B, V): one decode step. No host sync and static shapes (SDPA
        attends over the whole capacity, masked), so a CUDA graph can capture it while the
        state has room."""
        self._make_room(state, state.length + 1)
        mask = (torch.arange(state.capacity, device=self.device) <= state.pos).view(1, -1)
        seqlens = state.pos.to(torch.int32).expand(tokens.shape[0]).contiguous()
        logits = self._run(tokens.view(-1, 1), state.pos, _Call(state, state.pos, mask, None, seqlens))
        state.pos.add_(1)
        state.length += 1
        return logits[:, 0], state

    # ---- internals ------------------------------------------------------------------
    def _run(self, tokens, positions, call: _Call, last_only: bool = False) -> torch.Tensor:
        self._call = call
        try:
            out = self.lm(input_ids=tokens, position_ids=positions.view(1, -1), use_cache=False,
                          logits_to_keep=1 if last_only else 0)
        finally:
            self._call = None
        return out.logits.float()

    def _make_room(self, state: TransformerState, n: int) -> None:
        """Grows the cache (a copy) when it cannot hold n tokens."""
        if n <= state.capacity:
            return
        L, B, H, _, D = state.k.shape
        for name in ("k", "v"):
            new = torch.zeros((L, B, H, n + KV_RESERVE, D), dtype=state.k.dtype, device=state.k.device)
            new[:, :, :, :state.length] = getattr(state, name)[:, :, :, :state.length]
            setattr(state, name, new)

    def _attend(self, layer: int, q, k, v, scale) -> torch.Tensor:
        call = self._call
        K, V = call.state.k[layer], call.state.v[layer]  # (B, H_kv, capacity, D)
        if self.impl == "flash_attn":
            from flash_attn import flash_attn_with_kvcache  # writes k, v into the cache itself
            return flash_attn_with_kvcache(q.transpose(1, 2), K.transpose(1, 2), V.transpose(1, 2),
                                           k=k.transpose(1, 2), v=v.transpose(1, 2),
                                           cache_seqlens=call.cache_seqlens, softmax_scale=scale, causal=True)
        K.index_copy_(2, call.positions, k)
        V.index_copy_(2, call.positions, v)
        if call.mask is None:  # a prompt into an empty cache: causal attention over its own keys
            groups = q.shape[1] // k.shape[1]
            k, v = (x.repeat_interleave(groups, dim=1) if groups > 1 else x for x in (k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=q.shape[2] > 1, scale=scale)
        else:
            S = call.kv_len or K.shape[2]
            y = _grouped_sdpa(q, K[:, :, :S], V[:, :, :S], call.mask, scale)
        return y.transpose(1, 2)
