"""Mamba-1 and Mamba-2 behind SequenceModel, on two paths with one state:

- impl "mamba_ssm": state-spaces' `MambaLMHeadModel` and its CUDA/Triton kernels (a GPU
  only; its decode step is what `generate(cg=True)` captures in a CUDA graph);
- impl "hf": transformers' `MambaForCausalLM` / `Mamba2ForCausalLM`, the reference that
  runs on a CPU.

"auto" takes mamba_ssm on a GPU where it is installed, else hf (and says so on a GPU).

    model = archbench.build("mamba-2.8b", impl="mamba_ssm", dtype="bfloat16", device="cuda")
    model = archbench.load("path/to/mamba-130m")        # state-spaces or *-hf folder, either impl
    logits, state = model.forward(prompt)               # conv + SSM state out, constant size
    logits, state = model.step(next_token, state)       # updates the state in place

Both checkpoint formats load into both paths: `state_spaces_to_hf` / `hf_to_state_spaces`
convert the keys. A prompt can go in pieces with the state carried (`chunked_prefill`,
memory flat in its length): on mamba_ssm a piece after the first runs the library's
kernels from the carried state (`_continue`: Mamba-2's scan takes an initial state,
Mamba-1's gets it from a few virtual tokens, `state_prefix`); transformers continues
Mamba-2 itself and Mamba-1 one step per token.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn

from archbench.harness.errors import ArchbenchError, CheckpointError, MissingDependencyError
from archbench.harness.interface import State
from archbench.models.library import LibraryModel

IMPLS = ("hf", "mamba_ssm")
INSTALL_HINT = ("Install them with `pip install archbench[gpu]` (with internet), or on the offline GPU "
                "machine with scripts/build_mamba.sh (builds both from the sdists in .whl/)")


@dataclass(frozen=True)
class MambaConfig:
    version: int                 # 1 or 2
    vocab_size: int              # rows of the embedding (the padded vocabulary)
    n_embd: int                  # d_model
    n_layer: int
    d_state: int | None = None   # 16 for Mamba-1, 128 for Mamba-2
    d_conv: int = 4
    expand: int = 2
    dt_rank: int | None = None   # Mamba-1: ceil(n_embd / 16)
    headdim: int = 64            # Mamba-2
    ngroups: int = 1             # Mamba-2: groups sharing B and C
    chunk_size: int = 256        # Mamba-2 scan chunk
    norm_eps: float = 1e-5
    tie_embeddings: bool = True

    def __post_init__(self):
        if self.version not in (1, 2):
            raise ArchbenchError(f"Mamba version must be 1 or 2, got {self.version!r}")
        if self.d_state is None:
            object.__setattr__(self, "d_state", 16 if self.version == 1 else 128)
        if self.dt_rank is None and self.version == 1:
            object.__setattr__(self, "dt_rank", math.ceil(self.n_embd / 16))

    @property
    def family(self) -> str:
        return f"mamba{self.version}"

    @property
    def d_inner(self) -> int:
        return self.expand * self.n_embd

    @property
    def n_heads(self) -> int:
        return self.d_inner // self.headdim

    @property
    def conv_dim(self) -> int:
        return self.d_inner + (2 * self.ngroups * self.d_state if self.version == 2 else 0)

    def ssm_state_shape(self, batch_size: int) -> tuple[int, ...]:
        if self.version == 1:
            return (batch_size, self.d_inner, self.d_state)
        return (batch_size, self.n_heads, self.headdim, self.d_state)

    def to_dict(self) -> dict:
        return asdict(self)

    # ---- the two libraries' configs -----------------------------------------------
    def to_hf(self):
        common = dict(vocab_size=self.vocab_size, hidden_size=self.n_embd, num_hidden_layers=self.n_layer,
                      state_size=self.d_state, conv_kernel=self.d_conv, expand=self.expand,
                      layer_norm_epsilon=self.norm_eps, tie_word_embeddings=self.tie_embeddings,
                      residual_in_fp32=True, use_bias=False, use_conv_bias=True)
        if self.version == 1:
            from transformers import MambaConfig as HFMambaConfig
            return HFMambaConfig(time_step_rank=self.dt_rank, **common)
        from transformers import Mamba2Config
        return Mamba2Config(num_heads=self.n_heads, head_dim=self.headdim, n_groups=self.ngroups,
                            chunk_size=self.chunk_size, time_step_limit=(0.0, float("inf")), **common)

    @classmethod
    def from_hf(cls, cfg: dict) -> "MambaConfig":
        """From a transformers config.json (model_type mamba or mamba2)."""
        version = 2 if cfg["model_type"] == "mamba2" else 1
        if cfg.get("use_bias", False) or not cfg.get("use_conv_bias", True):
            raise ValueError("projection biases (use_bias) or a conv without bias are not supported")
        kw = dict(version=version, vocab_size=cfg["vocab_size"], n_embd=cfg["hidden_size"],
                  n_layer=cfg["num_hidden_layers"], d_state=cfg.get("state_size"), d_conv=cfg.get("conv_kernel", 4),
                  expand=cfg.get("expand", 2), norm_eps=cfg.get("layer_norm_epsilon", 1e-5),
                  tie_embeddings=cfg.get("tie_word_embeddings", version == 1))
        if version == 1:
            rank = cfg.get("time_step_rank", "auto")
            kw["dt_rank"] = math.ceil(kw["n_embd"] / 16) if rank == "auto" else rank
        else:
            kw.update(headdim=cfg.get("head_dim", 64), ngroups=cfg.get("n_groups", 1),
                      chunk_size=cfg.get("chunk_size", 256))
        return cls(**kw)

    def to_state_spaces(self) -> dict:
        """The config.json of a state-spaces (mamba_ssm) checkpoint of this shape."""
        ssm = dict(layer=f"Mamba{self.version}", d_state=self.d_state, d_conv=self.d_conv, expand=self.expand)
        if self.version == 1:
            ssm["dt_rank"] = self.dt_rank
        else:
            ssm.update(headdim=self.headdim, ngroups=self.ngroups, chunk_size=self.chunk_size)
        return dict(d_model=self.n_embd, d_intermediate=0, n_layer=self.n_layer, vocab_size=self.vocab_size,
                    ssm_cfg=ssm, attn_layer_idx=[], attn_cfg={}, rms_norm=True, residual_in_fp32=True,
                    fused_add_norm=True, pad_vocab_size_multiple=1, tie_embeddings=self.tie_embeddings)

    @classmethod
    def from_state_spaces(cls, cfg: dict) -> "MambaConfig":
        """From a state-spaces config.json (d_model, n_layer, ssm_cfg, ...)."""
        if cfg.get("d_intermediate", 0) or cfg.get("attn_layer_idx") or not cfg.get("rms_norm", True):
            raise ValueError("hybrid checkpoints (MLP or attention layers) and LayerNorm variants are not supported")
        ssm = dict(cfg.get("ssm_cfg") or {})
        version = 2 if ssm.pop("layer", "Mamba1") == "Mamba2" else 1
        vocab, multiple = cfg["vocab_size"], cfg.get("pad_vocab_size_multiple", 8)
        vocab += -vocab % multiple  # mamba_ssm pads the embedding this way
        kw = dict(version=version, vocab_size=vocab, n_embd=cfg["d_model"], n_layer=cfg["n_layer"],
                  tie_embeddings=cfg.get("tie_embeddings", True))
        for key in ("d_state", "d_conv", "expand", "headdim", "ngroups", "chunk_size"):
            if key in ssm:
                kw[key] = ssm[key]
        if version == 1 and ssm.get("dt_rank", "auto") != "auto":
            kw["dt_rank"] = ssm["dt_rank"]
        return cls(**kw)

    def to_mamba_ssm(self):
        from mamba_ssm.models.config_mamba import MambaConfig as SSMConfig
        return SSMConfig(**self.to_state_spaces())


@dataclass
class MambaState(State):
    conv: torch.Tensor  # (L, B, conv_dim, d_conv) the last inputs of each short convolution, model dtype
    ssm: torch.Tensor   # (L, B, d_inner, d_state) Mamba-1; (L, B, n_heads, headdim, d_state) Mamba-2
    length: int = 0     # tokens consumed (host side); 0 = fresh, which takes the whole-sequence kernels


# ---- checkpoint keys: the two layouts differ only in the embedding's name ------------
def state_spaces_to_hf(sd: dict[str, torch.Tensor], tie_embeddings: bool = True) -> dict[str, torch.Tensor]:
    """mamba_ssm `MambaLMHeadModel` keys -> transformers `Mamba(2)ForCausalLM` keys."""
    out = {k.replace("backbone.embedding.", "backbone.embeddings."): v for k, v in sd.items()}
    return _with_head(out, "backbone.embeddings.weight", tie_embeddings)


def hf_to_state_spaces(sd: dict[str, torch.Tensor], tie_embeddings: bool = True) -> dict[str, torch.Tensor]:
    """transformers `Mamba(2)ForCausalLM` keys -> mamba_ssm `MambaLMHeadModel` keys."""
    out = {k.replace("backbone.embeddings.", "backbone.embedding."): v for k, v in sd.items()}
    return _with_head(out, "backbone.embedding.weight", tie_embeddings)


def _with_head(sd: dict, embedding: str, tied: bool) -> dict:
    """Tied checkpoints may omit lm_head (safetensors stores a shared tensor once)."""
    if tied and "lm_head.weight" not in sd and embedding in sd:
        sd["lm_head.weight"] = sd[embedding]
    return sd


def mamba_ssm_import_error() -> str | None:
    """Why mamba_ssm cannot be used here (None if it can)."""
    try:
        importlib.import_module("mamba_ssm.models.mixer_seq_simple")
        return None
    except Exception as e:  # ImportError, or an OSError / undefined symbol from a mismatched build
        return f"{type(e).__name__}: {e}"


def _check_causal_conv1d() -> None:
    if importlib.util.find_spec("causal_conv1d") is None:
        warnings.warn(f"causal-conv1d is not installed: mamba_ssm falls back to PyTorch convolutions, slower. "
                      f"{INSTALL_HINT}.", stacklevel=4)


def resolve_impl(impl: str | None, device=None) -> str:
    """"auto": mamba_ssm on a GPU where it imports, else hf; "ref" is hf."""
    on_gpu = str(device).startswith("cuda")
    if impl in (None, "auto"):
        if not on_gpu:
            return "hf"
        why = mamba_ssm_import_error()
        if why is None:
            _check_causal_conv1d()
            return "mamba_ssm"
        warnings.warn(f"mamba-ssm cannot be used ({why}): Mamba runs on transformers' path (impl 'hf'), "
                      f"far slower on a GPU. {INSTALL_HINT}.", stacklevel=3)
        return "hf"
    if impl == "ref":
        return "hf"
    if impl not in IMPLS:
        raise ArchbenchError(f"unknown impl {impl!r} for Mamba; choose one of {IMPLS} or 'auto'")
    if impl == "mamba_ssm":
        why = mamba_ssm_import_error()
        if why is not None:
            raise MissingDependencyError(f"impl 'mamba_ssm' needs mamba-ssm and causal-conv1d, which cannot be "
                                         f"imported ({why}). {INSTALL_HINT}. impl 'hf' (transformers) runs "
                                         "without them, on a CPU too.")
        _check_causal_conv1d()
    return impl


class MambaBase(LibraryModel):
    """A Mamba language model of either library, with the state in and out."""

    config_cls = MambaConfig
    version: int
    resolve_impl = staticmethod(resolve_impl)

    def __init__(self, config: MambaConfig, impl: str = "auto"):
        super().__init__()
        if config.version != self.version:
            raise ArchbenchError(f"{type(self).__name__} takes a version-{self.version} config, got {config.version}")
        self.config = config
        self.family = config.family
        self.impl = resolve_impl(impl, torch.get_default_device())
        device = torch.get_default_device()
        with torch.device("meta"):  # weights are filled by init_random_ or a checkpoint
            if self.impl == "hf":
                from transformers import AutoModelForCausalLM
                self.lm = AutoModelForCausalLM.from_config(config.to_hf())
            else:
                from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel
                self.lm = MambaLMHeadModel(config.to_mamba_ssm())
        self.lm.to_empty(device=device)
        self._tie()
        self._cache_arg = None  # the name transformers' forward takes the cache by
        if self.impl == "hf":
            params = inspect.signature(self.lm.forward).parameters
            self._cache_arg = "cache" if "cache" in params else "cache_params"

    # ---- construction -------------------------------------------------------------
    @property
    def embedding(self) -> nn.Embedding:
        return self.lm.backbone.embeddings if self.impl == "hf" else self.lm.backbone.embedding

    @property
    def dtype(self) -> torch.dtype:
        return self.embedding.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.embedding.weight.device

    def _tie(self) -> None:
        if self.config.tie_embeddings:
            self.lm.lm_head.weight = self.embedding.weight

    @torch.no_grad()
    def init_random_(self, seed: int = 0) -> "MambaBase":
        """Random weights of trained-like scale, with Mamba's own A, D and dt initialisation."""
        gen = torch.Generator(device=self.device).manual_seed(seed)
        rand = lambda p: torch.rand(p.shape, generator=gen, device=p.device)  # noqa: E731
        for name, p in self.named_parameters():
            if name.endswith("A_log"):  # Mamba-1: A = -(1..d_state) per channel; Mamba-2: one A in [1, 16) per head
                A = torch.arange(1, p.shape[-1] + 1, device=p.device).expand(p.shape) if p.dim() == 2 \
                    else 1 + 15 * rand(p)
                p.copy_(torch.log(A.float()))
            elif name.endswith(".D"):
                p.fill_(1.0)
            elif name.endswith(("dt_bias", "dt_proj.bias")):  # softplus(bias) = dt, log-uniform in [1e-3, 0.1]
                dt = torch.exp(rand(p) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
                p.copy_(dt + torch.log(-torch.expm1(-dt)))
            elif name.endswith("conv1d.weight"):
                p.uniform_(-1 / math.sqrt(p.shape[-1]), 1 / math.sqrt(p.shape[-1]), generator=gen)
            elif p.dim() >= 2:
                p.normal_(0, 1 / math.sqrt(p.shape[-1]), generator=gen)
            elif name.endswith("weight"):  # RMSNorms
                p.normal_(1, 0.1, generator=gen)
            else:
                p.normal_(0, 0.02, generator=gen)
        return self

    def load_weights(self, sd: dict[str, torch.Tensor], source) -> None:
        """Loads a state dict in either layout into this model's library."""
        tied = self.config.tie_embeddings
        sd = state_spaces_to_hf(sd, tied) if self.impl == "hf" else hf_to_state_spaces(sd, tied)
        expected = self.lm.state_dict()
        missing = [k for k in expected if k not in sd]
        unexpected = [k for k in sd if k not in expected]
        if missing or unexpected:
            raise CheckpointError(source, f"does not match a {self.family} of its config: missing {missing[:4]}, "
                                  f"unexpected {unexpected[:4]}")
        bad = [k for k, v in expected.items() if sd[k].shape != v.shape]
        if bad:
            raise CheckpointError(source, f"tensor {bad[0]!r} has shape {tuple(sd[bad[0]].shape)}, the config "
                                  f"implies {tuple(expected[bad[0]].shape)}")
        self.lm.load_state_dict({k: sd[k] for k in expected})

    @classmethod
    def read_config(cls, path) -> MambaConfig:
        return read_mamba_config(Path(path))

    @classmethod
    def load(cls, path, impl: str = "auto", dtype="float32", device="cpu") -> "MambaBase":
        """A transformers folder (model_type mamba / mamba2) or a state-spaces folder
        (config.json with d_model, n_layer, ssm_cfg and pytorch_model.bin), into either impl."""
        from archbench.harness.registry import make
        from archbench.models.checkpoint import read_tensors
        path, impl = Path(path), resolve_impl(impl, device)
        config = read_mamba_config(path)
        files = sorted(path.glob("*.safetensors")) or sorted(path.glob("pytorch_model*.bin"))
        if not files:
            raise CheckpointError(path, "has a config.json but no weights (*.safetensors, pytorch_model*.bin)")
        sd = {}
        for f in files:
            sd.update(read_tensors(f))
        model = make(config.family, config, impl=impl, dtype="float32", device="cpu")
        model.load_weights(sd, path)
        model = model.to(device).cast(dtype).eval()
        model.source = str(path)
        return model

    # ---- the SequenceModel protocol ----------------------------------------------
    def init_state(self, batch_size: int, max_len: int | None = None) -> MambaState:
        cfg, kw = self.config, dict(dtype=self.dtype, device=self.device)
        return MambaState(conv=torch.zeros(cfg.n_layer, batch_size, cfg.conv_dim, cfg.d_conv, **kw),
                          ssm=torch.zeros(cfg.n_layer, *cfg.ssm_state_shape(batch_size), **kw))

    def state_nbytes(self, batch_size: int, context_len: int = 0) -> int:
        """Bytes of the conv and SSM states: independent of the context length."""
        cfg = self.config
        per_layer = batch_size * cfg.conv_dim * cfg.d_conv + math.prod(cfg.ssm_state_shape(batch_size))
        return cfg.n_layer * per_layer * self.dtype.itemsize

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())  # a tied head counts once
        if non_embedding:
            n -= sum(p.numel() for p in {self.embedding.weight, self.lm.lm_head.weight})
        return n

    @torch.no_grad()
    def forward(self, tokens: torch.Tensor, state: MambaState | None = None, last_only: bool = False):
        """tokens (B, T) -> logits (B, T, V) in fp32 ((B, 1, V) with last_only), and the
        state after the last token."""
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be (batch, time), got shape {tuple(tokens.shape)}")
        state = self.init_state(tokens.shape[0]) if state is None else state
        if state.length and tokens.shape[1] > 1 and not self.chunked_prefill:  # hf Mamba-1
            steps = [self.step(tokens[:, t], state)[0] for t in range(tokens.shape[1])]
            return torch.stack(steps[-1:] if last_only else steps, dim=1), state
        if state.length and tokens.shape[1] > 1 and self.impl == "mamba_ssm":
            logits = self._continue(tokens, state, last_only)
        else:
            logits = self._run(tokens, state, started=state.length > 0, last_only=last_only)
        state.length += tokens.shape[1]
        return logits, state

    @torch.no_grad()
    def step(self, tokens: torch.Tensor, state: MambaState):
        """tokens (B,) -> logits (B, V): one decode step, the state updated in place. A zero
        state is a fresh one, so this is the single-token kernel path even for the first token."""
        logits = self._run(tokens.view(-1, 1), state, started=True)[:, 0]
        state.length += 1
        return logits, state

    @property
    def chunked_prefill(self) -> bool:
        """Whether a prompt can go in pieces, each a whole-sequence forward from the carried
        state (memory flat in the prompt length): mamba_ssm's kernels both ways (see
        `_continue`), transformers' for Mamba-2; its Mamba-1 steps token by token instead."""
        return self.impl == "mamba_ssm" or self.version == 2

    # ---- the two libraries ----------------------------------------------------------
    def _run(self, tokens: torch.Tensor, state: MambaState, started: bool, last_only: bool = False) -> torch.Tensor:
        keep = 1 if last_only else 0
        if self.impl == "hf":
            cache = self._hf_cache(state, started)
            out = self.lm(input_ids=tokens, use_cache=True, logits_to_keep=keep, **{self._cache_arg: cache})
        else:
            if self.device.type != "cuda":
                raise ArchbenchError("impl 'mamba_ssm' runs on CUDA only; use impl 'hf' on a CPU")
            from mamba_ssm.utils.generation import InferenceParams
            params = InferenceParams(max_seqlen=state.length + tokens.shape[1], max_batch_size=tokens.shape[0],
                                     seqlen_offset=int(started))  # > 0 selects the one-token step kernels
            params.key_value_memory_dict = {i: (state.conv[i], state.ssm[i]) for i in range(self.config.n_layer)}
            out = self.lm(tokens, inference_params=params, num_last_tokens=keep)
        return out.logits.float()

    def _continue(self, tokens: torch.Tensor, state: MambaState, last_only: bool) -> torch.Tensor:
        """A multi-token forward from a carried state on mamba_ssm's kernels, which start
        every sequence from zero: mamba_ssm's own MixerModel loop (fused add + RMSNorm)
        around our continuation of each mixer."""
        from mamba_ssm.ops.triton.layer_norm import RMSNorm, layer_norm_fn
        backbone = self.lm.backbone
        mixer_continue = _mamba1_continue if self.version == 1 else _mamba2_continue
        hidden, residual = backbone.embedding(tokens), None
        for i, layer in enumerate(backbone.layers):
            hidden, residual = layer_norm_fn(hidden, layer.norm.weight, layer.norm.bias, residual=residual,
                                             prenorm=True, residual_in_fp32=layer.residual_in_fp32,
                                             eps=layer.norm.eps, is_rms_norm=isinstance(layer.norm, RMSNorm))
            hidden = mixer_continue(layer.mixer, hidden, state.conv[i], state.ssm[i])
        norm = backbone.norm_f
        hidden = layer_norm_fn(hidden, norm.weight, norm.bias, residual=residual, prenorm=False, eps=norm.eps,
                               residual_in_fp32=backbone.residual_in_fp32, is_rms_norm=isinstance(norm, RMSNorm))
        if last_only:
            hidden = hidden[:, -1:]
        return self.lm.lm_head(hidden).float()

    def _hf_cache(self, state: MambaState, started: bool):
        """A transformers cache whose tensors are our state's, so the model updates them in
        place. transformers (5.x) keeps each layer's tensors in LinearAttentionLayer dicts;
        `has_previous_state` picks its decode path (tested with 5.17 and 5.24)."""
        from transformers import DynamicCache
        cache = DynamicCache(config=self.lm.config)
        for i, layer in enumerate(cache.layers):
            layer.lazy_initialization(conv_states=state.conv[i], recurrent_states=state.ssm[i],
                                      conv_kernel_size=self.config.d_conv)
            layer.conv_states[0], layer.recurrent_states[0] = state.conv[i], state.ssm[i]
            layer.has_previous_state[0] = started
        return cache


# ---- a multi-token forward from a carried state, on mamba_ssm's kernels ---------------
def _short_conv(mixer, x: torch.Tensor, conv_state: torch.Tensor) -> torch.Tensor:
    """The causal depthwise convolution + SiLU of x (B, D, L), continuing from conv_state
    (B, D, d_conv: the last inputs, newest last), which is updated in place. The history
    goes in front of x, so the kernel's zero padding never reaches a real output."""
    width = conv_state.shape[-1]
    x = torch.cat([conv_state[..., 1:], x], dim=-1)
    conv_state.copy_(x[..., -width:])
    try:
        from causal_conv1d import causal_conv1d_fn
    except ImportError:
        causal_conv1d_fn = None
    if causal_conv1d_fn is None:
        y = mixer.act(mixer.conv1d(x)[..., :x.shape[-1]])
    else:
        y = causal_conv1d_fn(x, mixer.conv1d.weight.squeeze(1), mixer.conv1d.bias, activation=mixer.activation)
    return y[..., width - 1:]


def state_prefix(h0: torch.Tensor, A: torch.Tensor, delta_bias: torch.Tensor, dtype: torch.dtype):
    """Mamba-1's selective scan (mamba_ssm's CUDA kernel) has no initial state: it starts
    from h = 0 and runs h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t x_t, y_t = C_t h_t (+ D x_t).
    This builds d_state virtual tokens that take h from 0 to h0 exactly, so that h0 + the
    real tokens are one scan: token j writes column j (B_j = e_j) and is decayed by the
    tokens after it, which x_j makes up for. Every virtual token of channel d has the
    same Δ = 1 / (d_state max_n |A_dn|), so the decay to make up for is at most e^-1 and
    x_j stays in range. Their outputs are dropped.

    h0 (B, D, N), A (D, N) fp32 (negative), delta_bias (D,) fp32. Returns u (B, D, N), raw
    delta (B, D, N) (before the kernel's softplus(delta + delta_bias)), B (B, N, N), in
    `dtype`. The only error is rounding u to `dtype`."""
    n = A.shape[1]
    target = 1.0 / (n * (-A).amax(dim=1))                               # Δ wanted, (D,)
    raw = (torch.log(torch.expm1(target)) - delta_bias).to(dtype)       # softplus^-1, as the kernel will see it
    delta = torch.nn.functional.softplus(raw.float() + delta_bias)      # the Δ the kernel computes from it
    after = torch.arange(n - 1, -1, -1, device=A.device, dtype=torch.float32)   # tokens after token j
    decay = torch.exp(A * delta[:, None] * after)                       # (D, N): e^{Δ A_dj (N-1-j)}
    u = (h0.float() / (delta[:, None] * decay)).to(dtype)
    batch = h0.shape[0]
    B = torch.eye(n, device=A.device, dtype=dtype).expand(batch, n, n)  # B[:, state n, token j] = [n == j]
    return u, raw[None, :, None].expand_as(u), B


def _mamba1_continue(mixer, hidden: torch.Tensor, conv_state: torch.Tensor, ssm_state: torch.Tensor):
    """mamba_ssm's `Mamba.forward` (its non-fused path) from a carried conv and SSM state."""
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    length = hidden.shape[1]
    x, z = mixer.in_proj(hidden).transpose(1, 2).chunk(2, dim=1)       # (B, D, L) each
    x = _short_conv(mixer, x, conv_state)
    dt, B, C = torch.split(mixer.x_proj(x.transpose(1, 2)), [mixer.dt_rank, mixer.d_state, mixer.d_state], dim=-1)
    dt = (dt @ mixer.dt_proj.weight.t()).transpose(1, 2)               # (B, D, L), bias added by the kernel
    A, delta_bias = -torch.exp(mixer.A_log.float()), mixer.dt_proj.bias.float()
    u0, dt0, B0 = state_prefix(ssm_state, A, delta_bias, x.dtype)
    n = u0.shape[-1]
    y, last = selective_scan_fn(torch.cat([u0, x], -1), torch.cat([dt0, dt], -1), A,
                                torch.cat([B0, B.transpose(1, 2)], -1),
                                torch.cat([torch.zeros_like(B0), C.transpose(1, 2)], -1), mixer.D.float(),
                                z=torch.cat([torch.zeros_like(u0), z], -1), delta_bias=delta_bias,
                                delta_softplus=True, return_last_state=True)
    ssm_state.copy_(last)
    return mixer.out_proj(y[..., n:n + length].transpose(1, 2))


def _mamba2_continue(mixer, hidden: torch.Tensor, conv_state: torch.Tensor, ssm_state: torch.Tensor):
    """mamba_ssm's `Mamba2.forward` (its non-fused path) from a carried state: its chunked
    scan takes an initial state."""
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    m = mixer
    zxbcdt = m.in_proj(hidden)
    groups = m.ngroups * m.d_state
    d_mlp = (zxbcdt.shape[-1] - 2 * m.d_ssm - 2 * groups - m.nheads) // 2
    z0, x0, z, xBC, dt = torch.split(zxbcdt, [d_mlp, d_mlp, m.d_ssm, m.d_ssm + 2 * groups, m.nheads], dim=-1)
    xBC = _short_conv(m, xBC.transpose(1, 2), conv_state).transpose(1, 2)
    x, B, C = torch.split(xBC, [m.d_ssm, groups, groups], dim=-1)
    heads = lambda t, last: t.unflatten(-1, (-1, last))  # noqa: E731  (b l (h p)) -> (b l h p)
    limit = {} if m.dt_limit == (0.0, float("inf")) else dict(dt_limit=m.dt_limit)
    D = m.D.view(-1, m.headdim) if m.D_has_hdim else m.D
    y, last = mamba_chunk_scan_combined(heads(x, m.headdim), dt, -torch.exp(m.A_log.float()), heads(B, m.d_state),
                                        heads(C, m.d_state), chunk_size=m.chunk_size, D=D,
                                        z=None if m.rmsnorm else heads(z, m.headdim), dt_bias=m.dt_bias,
                                        dt_softplus=True, initial_states=ssm_state, return_final_states=True, **limit)
    ssm_state.copy_(last)
    y = y.flatten(-2)
    if m.rmsnorm:
        y = m.norm(y, z)
    if d_mlp > 0:
        y = torch.cat([torch.nn.functional.silu(z0) * x0, y], dim=-1)
    return m.out_proj(y)


class Mamba1(MambaBase):
    version = 1


class Mamba2(MambaBase):
    version = 2


def read_mamba_config(path: Path) -> MambaConfig:
    """The config of a transformers Mamba folder or a state-spaces one."""
    config_file = Path(path) / "config.json"
    try:
        cfg = json.loads(config_file.read_text())
        return MambaConfig.from_hf(cfg) if "model_type" in cfg else MambaConfig.from_state_spaces(cfg)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(config_file, f"cannot be read as JSON ({e})") from None
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(config_file, f"is not a Mamba config we can read ({type(e).__name__}: {e})") from None
