"""Convert Hugging Face-style RWKV checkpoints to and from BlinkDL's ``.pth`` layout.

archbench's RWKV models keep their parameters exactly as BlinkDL/RWKV-LM saves
them (and as the ``rwkv`` PyPI package loads them).  This module holds pure
functions over ``dict[str, torch.Tensor]`` that translate three Hugging Face
folder formats into that layout and back:

=============  ==========================================  ==========================
format         model class                                 ``config["model_type"]``
=============  ==========================================  ==========================
``hf-rwkv4``   transformers ``RwkvForCausalLM`` (RWKV-4)   ``"rwkv"``
``fla-rwkv6``  flash-linear-attention ``RWKV6ForCausalLM``  ``"rwkv6"``
``fla-rwkv7``  flash-linear-attention ``RWKV7ForCausalLM``  ``"rwkv7"``
=============  ==========================================  ==========================

Every ``*_to_blink`` function takes the Hugging Face state dict plus the folder's
``config.json`` contents (a dict, or a ``PretrainedConfig``) and returns a BlinkDL
state dict; every ``blink_to_*`` function returns ``(state_dict, config_dict)``
such that ``ModelClass(ConfigClass(**config_dict)).load_state_dict(state_dict)``
loads with no missing or unexpected keys.  Conversions only rename, reshape,
transpose and reorder tensors: values and dtypes are never changed, so
``blink -> X -> blink`` reproduces every tensor bit for bit (see each function
for the few BlinkDL keys that a format has no slot for).  Keys a converter does
not recognise raise ``ValueError`` instead of being dropped silently.  Returned
tensors may be views of the input tensors (clone before mutating in place).

Some differences are not in the weights but in hyper-parameters baked into
the model classes (normalisation epsilons).  BlinkDL computes every LayerNorm
with eps 1e-5 and the per-head GroupNorm ``ln_x`` of RWKV-5/6/7 with eps 64e-5.
Where a Hugging Face class cannot reproduce that, the converters raise
:class:`InexactConversionError` unless called with ``allow_inexact=True``:

* ``hf-rwkv4``: exact when ``layer_norm_epsilon == 1e-5`` (the default).
* ``fla-rwkv7``: fla uses ``norm_eps`` for the LayerNorms and
  ``head_dim * norm_eps`` for ``g_norm`` (= ``ln_x``), so it is exact exactly
  when ``norm_eps == 1e-5`` and ``head_dim == 64`` (every released RWKV-7).
* ``fla-rwkv6``: fla uses ``norm_eps`` for the LayerNorms *and* for ``g_norm``,
  so one ``norm_eps`` cannot be both 1e-5 and 64e-5: an fla RWKV-6 never runs
  BlinkDL's maths exactly and both RWKV-6 directions need ``allow_inexact=True``.
  (fla's own ``utils/convert_from_rwkv6.py`` patches ``g_norm.eps`` on the live
  module, which ``config.json`` cannot record.)
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import torch

__all__ = [
    "HF_RWKV4",
    "FLA_RWKV6",
    "FLA_RWKV7",
    "BLINK_LN_EPS",
    "BLINK_LN_X_EPS",
    "InexactConversionError",
    "detect_hf_format",
    "hf_rwkv4_to_blink",
    "blink_to_hf_rwkv4",
    "fla_rwkv6_to_blink",
    "blink_to_fla_rwkv6",
    "fla_rwkv7_to_blink",
    "blink_to_fla_rwkv7",
]

HF_RWKV4 = "hf-rwkv4"
FLA_RWKV6 = "fla-rwkv6"
FLA_RWKV7 = "fla-rwkv7"

#: eps of every LayerNorm (ln0, ln1, ln2, ln_out) in BlinkDL's code and the rwkv package.
BLINK_LN_EPS = 1e-5
#: eps of the per-head GroupNorm ``att.ln_x`` of BlinkDL RWKV-5/6/7 (1e-5 * head_size_divisor**2).
BLINK_LN_X_EPS = 64e-5

StateDict = dict[str, torch.Tensor]


class InexactConversionError(ValueError):
    """The target model class would not compute exactly what the source computes."""


# --------------------------------------------------------------------------------------
# format detection
# --------------------------------------------------------------------------------------

# model_type -> (format, architecture names of that library's classes)
_KNOWN_TYPES: dict[str, tuple[str, tuple[str, ...]]] = {
    "rwkv": (HF_RWKV4, ("RwkvForCausalLM", "RwkvModel")),
    "rwkv6": (FLA_RWKV6, ("RWKV6ForCausalLM", "RWKV6Model")),
    "rwkv7": (FLA_RWKV7, ("RWKV7ForCausalLM", "RWKV7Model")),
}


def detect_hf_format(config: Mapping[str, Any] | Any) -> str:
    """Name the checkpoint format of a Hugging Face folder from its ``config.json``.

    Returns ``"hf-rwkv4"`` (transformers' RWKV-4, model_type ``rwkv``),
    ``"fla-rwkv6"`` or ``"fla-rwkv7"`` (flash-linear-attention, model_type
    ``rwkv6`` / ``rwkv7``).  Raises ``ValueError`` for any other model type, and
    for configs whose ``architectures`` name classes of another library that
    reuse these model types (RWKV's own ``trust_remote_code`` ports such as
    ``Rwkv6ForCausalLM``, whose parameter names differ from fla's).
    """
    cfg = _config_dict(config)
    model_type = cfg.get("model_type")
    if model_type is None:
        raise ValueError(
            "config has no 'model_type'; expected one of "
            f"{sorted(_KNOWN_TYPES)} (got keys {sorted(cfg)[:12]})"
        )
    if model_type not in _KNOWN_TYPES:
        raise ValueError(
            f"unsupported model_type {model_type!r}: archbench converts only "
            "'rwkv' (transformers RWKV-4), 'rwkv6' (fla RWKV-6) and 'rwkv7' (fla RWKV-7)"
        )
    fmt, known_archs = _KNOWN_TYPES[model_type]
    archs = cfg.get("architectures") or []
    foreign = [a for a in archs if a not in known_archs]
    if foreign:
        raise ValueError(
            f"config has model_type {model_type!r} but architectures {archs}; the "
            f"{fmt} converter understands only {list(known_archs)}.  Checkpoints "
            "written by other implementations (e.g. RWKV's own trust_remote_code "
            "classes) use different parameter names and are not supported"
        )
    return fmt


# --------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------

_ID, _T, _FLAT = "id", "T", "flat"  # tensor transforms: same / transpose / [C] <-> [1,1,C]


def _config_dict(config: Mapping[str, Any] | Any) -> dict[str, Any]:
    if config is None:
        return {}
    if isinstance(config, Mapping):
        return dict(config)
    if hasattr(config, "to_dict"):
        return dict(config.to_dict())
    raise TypeError(f"config must be a mapping or a PretrainedConfig, not {type(config).__name__}")


def _to_blink_tensor(kind: str, t: torch.Tensor) -> torch.Tensor:
    if kind == _ID:
        return t
    if kind == _T:
        return t.t().contiguous()
    if kind == _FLAT:
        return t.reshape(1, 1, -1)
    raise AssertionError(kind)


def _from_blink_tensor(kind: str, t: torch.Tensor) -> torch.Tensor:
    if kind == _ID:
        return t
    if kind == _T:
        return t.t().contiguous()
    if kind == _FLAT:
        return t.reshape(-1)
    raise AssertionError(kind)


class _Source:
    """A state dict being consumed; reports missing and left-over keys clearly."""

    def __init__(self, sd: Mapping[str, torch.Tensor], what: str):
        if not isinstance(sd, Mapping):
            raise TypeError(f"{what}: expected a dict of tensors, not {type(sd).__name__}")
        self.sd = dict(sd)
        self.what = what
        self.left = set(self.sd)

    def __contains__(self, key: str) -> bool:
        return key in self.sd

    def take(self, key: str) -> torch.Tensor:
        if key not in self.sd:
            raise KeyError(f"{self.what}: missing key {key!r}")
        self.left.discard(key)
        return self.sd[key]

    def drop(self, key: str) -> None:
        self.left.discard(key)

    def finish(self) -> None:
        if self.left:
            extra = sorted(self.left)
            more = f" (and {len(extra) - 10} more)" if len(extra) > 10 else ""
            raise ValueError(f"{self.what}: unexpected keys {extra[:10]}{more}")


def _check_shape(t: torch.Tensor, shape: tuple[int, ...], name: str) -> None:
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {tuple(t.shape)}")


def _run_table(
    src: _Source,
    table: list[tuple[str, str, str, tuple[int, ...]]],
    *,
    to_blink: bool,
) -> StateDict:
    """Apply ``(blink_key, other_key, transform, blink_shape)`` rows in one direction."""
    out: StateDict = {}
    for blink_key, other_key, kind, blink_shape in table:
        if to_blink:
            t = _to_blink_tensor(kind, src.take(other_key))
            _check_shape(t, blink_shape, f"{src.what}: {other_key} -> {blink_key}")
            out[blink_key] = t
        else:
            t = src.take(blink_key)
            _check_shape(t, blink_shape, f"{src.what}: {blink_key}")
            out[other_key] = _from_blink_tensor(kind, t)
    return out


def _blink_num_layers(sd: Mapping[str, torch.Tensor], what: str) -> int:
    ids = {int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))}
    if not ids:
        raise ValueError(f"{what}: no 'blocks.<i>.' keys; not a BlinkDL RWKV state dict")
    n = max(ids) + 1
    if ids != set(range(n)):
        raise ValueError(f"{what}: layer indices are not contiguous: {sorted(ids)}")
    return n


def _prefix(src: _Source, with_prefix: str, probe: str) -> str:
    """Return ``with_prefix`` if keys carry it (…ForCausalLM), ``""`` for a bare base model."""
    if with_prefix + probe in src:
        return with_prefix
    if probe in src:
        return ""
    raise KeyError(f"{src.what}: found neither {with_prefix + probe!r} nor {probe!r}")


def _close(a: float, b: float) -> bool:
    return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=0.0)


def _inexact(allow: bool, message: str) -> None:
    if not allow:
        raise InexactConversionError(message + " (pass allow_inexact=True to convert anyway)")


def _expect_cfg(cfg: dict[str, Any], key: str, value: Any, what: str) -> None:
    got = cfg.get(key)
    if got is not None and got != value:
        raise ValueError(f"{what}: config {key}={got!r} but the state dict implies {value!r}")


def _uniform(values: list[int], name: str, what: str) -> int:
    if len(set(values)) != 1:
        raise ValueError(
            f"{what}: {name} differs between layers ({values}); the fla config holds one "
            "value for all layers, so this model cannot be represented"
        )
    return values[0]


def _norm_rows(blink: str, other: str, C: int) -> list[tuple[str, str, str, tuple[int, ...]]]:
    return [
        (f"{blink}.weight", f"{other}.weight", _ID, (C,)),
        (f"{blink}.bias", f"{other}.bias", _ID, (C,)),
    ]


def _layered_table(L: int, V: int, C: int, with_ln0: bool, emb: str, layer: str, norms: tuple[str, str, str],
                   ln_out: str, head: str, body) -> list[tuple[str, str, str, tuple[int, ...]]]:
    """A rename table's rows in BlinkDL's parameter order: the embedding (emb), per layer i the
    norms (ln0 on layer 0 if with_ln0, ln1, ln2 -> `layer.format(i)` + norms[0..2]) and
    body(i, blink layer prefix, other layer prefix), then the final norm and the head."""
    rows = [("emb.weight", emb, _ID, (V, C))]
    for i in range(L):
        b, o = f"blocks.{i}.", layer.format(i)
        if i == 0 and with_ln0:
            rows += _norm_rows(b + "ln0", o + norms[0], C)
        rows += _norm_rows(b + "ln1", o + norms[1], C)
        rows += _norm_rows(b + "ln2", o + norms[2], C)
        rows += body(i, b, o)
    rows += _norm_rows("ln_out", ln_out, C)
    rows.append(("head.weight", head, _ID, (V, C)))
    return rows


def _fla_table(L: int, V: int, C: int, with_ln0: bool, fp: str, body):
    """_layered_table with fla's names (RWKV6ForCausalLM, RWKV7ForCausalLM)."""
    return _layered_table(L, V, C, with_ln0, f"{fp}embeddings.weight", fp + "layers.{}.",
                          ("pre_norm", "attn_norm", "ffn_norm"), f"{fp}norm", "lm_head.weight", body)


def _add_zero_norm_biases(src: _Source, norm_names: list[str]) -> None:
    """fla with ``norm_bias=False`` has bias-free LayerNorms; BlinkDL's always have a bias."""
    for name in norm_names:
        if f"{name}.weight" in src and f"{name}.bias" not in src:
            w = src.sd[f"{name}.weight"]
            src.sd[f"{name}.bias"] = torch.zeros_like(w)
            src.left.add(f"{name}.bias")


# --------------------------------------------------------------------------------------
# transformers RwkvForCausalLM (RWKV-4)
# --------------------------------------------------------------------------------------

def _rwkv4_table(L: int, V: int, C: int, A: int, F: int, hp: str, with_ln0: bool):
    def body(i, b, h):
        ba, ha = b + "att.", h + "attention."
        return [
            (ba + "time_decay", ha + "time_decay", _ID, (A,)),
            (ba + "time_first", ha + "time_first", _ID, (A,)),
            (ba + "time_mix_k", ha + "time_mix_key", _ID, (1, 1, C)),
            (ba + "time_mix_v", ha + "time_mix_value", _ID, (1, 1, C)),
            (ba + "time_mix_r", ha + "time_mix_receptance", _ID, (1, 1, C)),
            (ba + "key.weight", ha + "key.weight", _ID, (A, C)),
            (ba + "value.weight", ha + "value.weight", _ID, (A, C)),
            (ba + "receptance.weight", ha + "receptance.weight", _ID, (A, C)),
            (ba + "output.weight", ha + "output.weight", _ID, (C, A)),
            (b + "ffn.time_mix_k", h + "feed_forward.time_mix_key", _ID, (1, 1, C)),
            (b + "ffn.time_mix_r", h + "feed_forward.time_mix_receptance", _ID, (1, 1, C)),
            (b + "ffn.key.weight", h + "feed_forward.key.weight", _ID, (F, C)),
            (b + "ffn.receptance.weight", h + "feed_forward.receptance.weight", _ID, (C, C)),
            (b + "ffn.value.weight", h + "feed_forward.value.weight", _ID, (C, F)),
        ]
    return _layered_table(L, V, C, with_ln0, f"{hp}embeddings.weight", hp + "blocks.{}.", ("pre_ln", "ln1", "ln2"),
                          f"{hp}ln_out", "head.weight", body)


def hf_rwkv4_to_blink(
    sd: Mapping[str, torch.Tensor],
    config: Mapping[str, Any] | Any,
    *,
    allow_inexact: bool = False,
) -> StateDict:
    """transformers ``RwkvForCausalLM`` state dict -> BlinkDL RWKV-4 state dict.

    Accepts the keys of ``RwkvForCausalLM`` (``rwkv.`` prefix plus ``head.weight``)
    or of a bare ``RwkvModel`` (no prefix; then ``head.weight`` is taken from the
    embeddings if ``tie_word_embeddings`` is set, else it must be present).
    ``time_decay``/``time_first`` are stored raw by both libraries (each applies
    ``-exp(time_decay)`` itself), so all tensors are copied unchanged.

    Pass the weights as saved in a checkpoint.  Do not pass ``state_dict()`` of an
    ``RwkvModel`` that has run a forward pass in eval mode with ``rescale_every > 0``:
    transformers then divides ``attention.output`` and ``feed_forward.value``
    weights by ``2 ** (layer // rescale_every)`` in place.

    Raises :class:`InexactConversionError` if ``layer_norm_epsilon != 1e-5``
    (BlinkDL's LayerNorms always use 1e-5) unless ``allow_inexact``.
    """
    cfg = _config_dict(config)
    what = "hf-rwkv4 state dict"
    if cfg.get("model_type", "rwkv") != "rwkv":
        raise ValueError(f"{what}: config model_type is {cfg.get('model_type')!r}, expected 'rwkv'")
    eps = cfg.get("layer_norm_epsilon", BLINK_LN_EPS)
    if not _close(eps, BLINK_LN_EPS):
        _inexact(allow_inexact, f"{what}: layer_norm_epsilon={eps} but BlinkDL RWKV-4 uses {BLINK_LN_EPS}")

    src = _Source(sd, what)
    hp = _prefix(src, "rwkv.", "embeddings.weight")
    if "head.weight" not in src:
        if not cfg.get("tie_word_embeddings", False):
            raise KeyError(f"{what}: missing key 'head.weight' and tie_word_embeddings is not set")
        src.sd["head.weight"] = src.sd[f"{hp}embeddings.weight"]
        src.left.add("head.weight")

    V, C = src.sd[f"{hp}embeddings.weight"].shape
    L = cfg.get("num_hidden_layers")
    if L is None:
        L = len({m.group(1) for k in src.sd if (m := re.match(rf"{re.escape(hp)}blocks\.(\d+)\.", k))})
    A = src.take(f"{hp}blocks.0.attention.key.weight").shape[0]
    F = src.take(f"{hp}blocks.0.feed_forward.key.weight").shape[0]
    _expect_cfg(cfg, "hidden_size", C, what)
    _expect_cfg(cfg, "vocab_size", V, what)
    _expect_cfg(cfg, "attention_hidden_size", A, what)
    _expect_cfg(cfg, "intermediate_size", F, what)

    out = _run_table(src, _rwkv4_table(L, V, C, A, F, hp, True), to_blink=True)
    src.finish()
    return out


def blink_to_hf_rwkv4(
    sd: Mapping[str, torch.Tensor],
    *,
    rescale_every: int = 6,
    context_length: int = 1024,
) -> tuple[StateDict, dict[str, Any]]:
    """BlinkDL RWKV-4 state dict -> ``(RwkvForCausalLM state dict, RwkvConfig kwargs)``.

    ``rescale_every`` is written to the config; 6 is transformers' default and
    what the published RWKV-4 checkpoints use.  It does not change the weights
    (transformers rescales its live modules in eval mode), but it does change
    fp32 results very slightly: halving the residual stream every 6 layers is
    equivalent to BlinkDL's maths only up to the LayerNorm eps (eps effectively
    grows by 4 per halving).  Pass ``rescale_every=0`` for a config whose eval
    forward matches BlinkDL / the ``rwkv`` package to fp32 round-off.
    ``context_length`` only sizes transformers' optional CUDA kernel.
    """
    what = "BlinkDL RWKV-4 state dict"
    src = _Source(sd, what)
    L = _blink_num_layers(src.sd, what)
    V, C = src.take("emb.weight").shape
    A = src.take("blocks.0.att.key.weight").shape[0]
    F = src.take("blocks.0.ffn.key.weight").shape[0]
    if "blocks.0.ln0.weight" not in src:
        raise ValueError(f"{what}: missing blocks.0.ln0.*; transformers' RWKV-4 always applies pre_ln")
    out = _run_table(src, _rwkv4_table(L, V, C, A, F, "rwkv.", True), to_blink=False)
    src.finish()
    config = {
        "model_type": "rwkv",
        "architectures": ["RwkvForCausalLM"],
        "vocab_size": int(V),
        "hidden_size": int(C),
        "num_hidden_layers": int(L),
        "attention_hidden_size": int(A),
        "intermediate_size": int(F),
        "layer_norm_epsilon": BLINK_LN_EPS,
        "rescale_every": int(rescale_every),
        "tie_word_embeddings": False,
        "context_length": int(context_length),
    }
    return out, config


# --------------------------------------------------------------------------------------
# fla RWKV7ForCausalLM
# --------------------------------------------------------------------------------------

_V7_LORAS = ("w", "a", "v", "g")


def _rwkv7_table(L, V, C, H, N, F, dims, with_ln0, fp):
    """dims: low-rank widths {'w': Dw, 'a': Da, 'v': Dv, 'g': Dg}."""
    def body(i, b, f):
        ba, fa = b + "att.", f + "attn."
        # rows follow the parameter order of BlinkDL's RWKV_Tmix_x070
        rows = []
        for x in ("r", "w", "k", "v", "a", "g"):
            rows.append((ba + f"x_{x}", fa + f"x_{x}", _ID, (1, 1, C)))
        for lo in _V7_LORAS:
            if lo == "v" and i == 0:
                continue  # fla builds no v_lora on layer 0 (BlinkDL never uses it there)
            D = dims[lo]
            lora = fa + f"{lo}_lora.lora."
            if lo != "g":  # g has no bias; w0/a0/v0 are the bias of the second layer
                rows.append((ba + f"{lo}0", lora + "2.bias", _FLAT, (1, 1, C)))
            # BlinkDL x @ w1 (w1: [C, D]) is fla's Linear(C, D) with weight w1.T, likewise w2.
            rows += [
                (ba + f"{lo}1", lora + "0.weight", _T, (C, D)),
                (ba + f"{lo}2", lora + "2.weight", _T, (D, C)),
            ]
        rows += [
            (ba + "k_k", fa + "k_k", _FLAT, (1, 1, C)),
            (ba + "k_a", fa + "k_a", _FLAT, (1, 1, C)),
            (ba + "r_k", fa + "r_k", _ID, (H, N)),
            (ba + "receptance.weight", fa + "r_proj.weight", _ID, (C, C)),
            (ba + "key.weight", fa + "k_proj.weight", _ID, (C, C)),
            (ba + "value.weight", fa + "v_proj.weight", _ID, (C, C)),
            (ba + "output.weight", fa + "o_proj.weight", _ID, (C, C)),
        ]
        rows += _norm_rows(ba + "ln_x", fa + "g_norm", C)
        return rows + [
            (b + "ffn.x_k", f + "ffn.x_k", _FLAT, (1, 1, C)),
            (b + "ffn.key.weight", f + "ffn.key.weight", _ID, (F, C)),
            (b + "ffn.value.weight", f + "ffn.value.weight", _ID, (C, F)),
        ]
    return _fla_table(L, V, C, with_ln0, fp, body)


def _fla_norms_and_head(src: _Source, cfg: dict[str, Any], fp: str, L: int, what: str) -> bool:
    """fla's side before the table: zero biases for bias-free norms, the head from the
    embedding where they are tied; whether layer 0 has a pre-norm (BlinkDL's ln0)."""
    norms = [f"{fp}layers.{i}.{n}" for i in range(L) for n in ("pre_norm", "attn_norm", "ffn_norm")]
    _add_zero_norm_biases(src, norms + [f"{fp}norm"])
    if "lm_head.weight" not in src:
        if not cfg.get("tie_word_embeddings", False):
            raise KeyError(f"{what}: missing key 'lm_head.weight' and tie_word_embeddings is not set")
        src.sd["lm_head.weight"] = src.sd[f"{fp}embeddings.weight"]
        src.left.add("lm_head.weight")
    return f"{fp}layers.0.pre_norm.weight" in src


def _check_fla_common(cfg: dict[str, Any], what: str, model_type: str) -> None:
    if cfg.get("model_type", model_type) != model_type:
        raise ValueError(f"{what}: config model_type is {cfg.get('model_type')!r}, expected {model_type!r}")
    if cfg.get("attn"):
        raise ValueError(
            f"{what}: config.attn={cfg['attn']!r} makes some layers softmax attention "
            "(a hybrid model); BlinkDL's RWKV has no such layers"
        )
    act = cfg.get("hidden_act", "sqrelu")
    if act != "sqrelu":
        raise ValueError(f"{what}: hidden_act={act!r}; BlinkDL's channel mix is relu(x)**2 ('sqrelu')")


def fla_rwkv7_to_blink(
    sd: Mapping[str, torch.Tensor],
    config: Mapping[str, Any] | Any,
    *,
    layer0_v_lora: bool = False,
    allow_inexact: bool = False,
) -> StateDict:
    """fla ``RWKV7ForCausalLM`` state dict -> BlinkDL RWKV-7 state dict.

    Mapping (per layer; ``f`` = ``model.layers.i.attn``, ``b`` = ``blocks.i.att``):
    ``f.{r,k,v,o}_proj`` = ``b.{receptance,key,value,output}``; ``f.x_*`` = ``b.x_*``;
    ``f.k_k``/``f.k_a`` ([C]) = ``b.k_k``/``b.k_a`` ([1,1,C]); ``f.r_k`` = ``b.r_k``;
    ``f.X_lora.lora.0.weight`` = ``b.X1.T``, ``lora.2.weight`` = ``b.X2.T`` and
    ``lora.2.bias`` = ``b.X0`` for X in w, a, v (layers >= 1), g (no bias);
    ``f.g_norm`` = ``b.ln_x``; ``pre_norm/attn_norm/ffn_norm`` = ``ln0/ln1/ln2``;
    ``ffn.x_k`` ([C]) = ``ffn.x_k`` ([1,1,C]); ``model.norm`` = ``ln_out``.
    fla computes the same maths with the same numbers (log-decay
    ``-exp(-0.5) * sigmoid(w_lora(xw))``, ``a = sigmoid(a_lora(xa))``,
    ``v = lerp(v, v_first, sigmoid(v_lora(xv)))``, ``g = g_lora(xg)`` with a
    sigmoid between its two layers, k/kk/r_k as BlinkDL), so nothing is rescaled.

    fla has no v-LoRA on layer 0; BlinkDL's training code creates
    ``blocks.0.att.v0/v1/v2`` but never uses them and the rwkv package ignores
    them.  They are omitted unless ``layer0_v_lora=True``, which writes zeros of
    BlinkDL's shapes (for code that loads strictly into BlinkDL's module).

    With ``norm_first=False`` the result has no ``blocks.0.ln0.*`` (fla then
    applies no ln0 either); with ``norm_bias=False`` LayerNorm biases are zeros;
    with ``tie_word_embeddings`` and no ``lm_head.weight`` the head is the embedding.

    Raises :class:`InexactConversionError` unless ``norm_eps == 1e-5`` and
    ``head_dim == 64`` (fla's ``g_norm`` eps is ``head_dim * norm_eps``; BlinkDL's
    ``ln_x`` eps is 64e-5), unless ``allow_inexact``.  Raises ``ValueError`` for
    things BlinkDL cannot hold at all: hybrid ``attn`` layers, ``value_dim`` other
    than ``hidden_size``, a ``hidden_act`` other than sqrelu.
    """
    cfg = _config_dict(config)
    what = "fla-rwkv7 state dict"
    _check_fla_common(cfg, what, "rwkv7")

    src = _Source(sd, what)
    fp = _prefix(src, "model.", "embeddings.weight")
    V, C = src.sd[f"{fp}embeddings.weight"].shape
    _expect_cfg(cfg, "hidden_size", C, what)
    _expect_cfg(cfg, "vocab_size", V, what)
    L = cfg.get("num_hidden_layers")
    if L is None:
        L = len({m.group(1) for k in src.sd if (m := re.match(rf"{re.escape(fp)}layers\.(\d+)\.", k))})
    value_dim = cfg.get("value_dim")
    if value_dim is not None:
        vds = value_dim if isinstance(value_dim, (list, tuple)) else [value_dim]
        if any(int(v) != C for v in vds):
            raise ValueError(f"{what}: value_dim={value_dim!r}; BlinkDL RWKV-7 needs value_dim == hidden_size ({C})")

    H, N = src.sd[f"{fp}layers.0.attn.r_k"].shape
    _expect_cfg(cfg, "head_dim", N, what)
    _expect_cfg(cfg, "num_heads", H, what)
    norm_eps = cfg.get("norm_eps", 1e-5)
    if not (_close(norm_eps, BLINK_LN_EPS) and _close(N * norm_eps, BLINK_LN_X_EPS)):
        _inexact(
            allow_inexact,
            f"{what}: fla uses LayerNorm eps {norm_eps} and g_norm eps head_dim*norm_eps = {N * norm_eps}, "
            f"BlinkDL uses {BLINK_LN_EPS} and {BLINK_LN_X_EPS}",
        )

    def width(lo: str, i: int) -> int:
        return src.sd[f"{fp}layers.{i}.attn.{lo}_lora.lora.0.weight"].shape[0]

    dims = {}
    for lo in _V7_LORAS:
        layers = [i for i in range(L) if not (lo == "v" and i == 0)]
        if layers:
            dims[lo] = _uniform([width(lo, i) for i in layers], f"{lo}_lora width", what)
        else:  # one layer: no v_lora anywhere
            dims[lo] = int(cfg.get("v_low_rank_dim") or 32)
    F = src.sd[f"{fp}layers.0.ffn.key.weight"].shape[0]

    with_ln0 = _fla_norms_and_head(src, cfg, fp, L, what)

    out = _run_table(src, _rwkv7_table(L, V, C, H, N, F, dims, with_ln0, fp), to_blink=True)
    src.finish()
    if layer0_v_lora:
        ref = out["blocks.0.att.w0"]
        extra = {
            "blocks.0.att.v0": torch.zeros(1, 1, C, dtype=ref.dtype),
            "blocks.0.att.v1": torch.zeros(C, dims["v"], dtype=ref.dtype),
            "blocks.0.att.v2": torch.zeros(dims["v"], C, dtype=ref.dtype),
        }
        out = _insert_after(out, "blocks.0.att.a2", extra)
    return out


def _insert_after(d: StateDict, anchor: str, extra: StateDict) -> StateDict:
    res: StateDict = {}
    for k, v in d.items():
        res[k] = v
        if k == anchor:
            res.update(extra)
    return res


def blink_to_fla_rwkv7(
    sd: Mapping[str, torch.Tensor],
    *,
    allow_inexact: bool = False,
) -> tuple[StateDict, dict[str, Any]]:
    """BlinkDL RWKV-7 state dict -> ``(RWKV7ForCausalLM state dict, RWKV7Config kwargs)``.

    The inverse of :func:`fla_rwkv7_to_blink` (see there for the mapping).
    ``blocks.0.att.v0/v1/v2``, if present, are dropped: fla has no slot for them
    and no RWKV-7 implementation reads them.  A state dict without
    ``blocks.0.ln0.*`` gives ``norm_first=False``.  LoRA widths must be the same
    in every layer (fla's config has one value each).  Raises
    :class:`InexactConversionError` for a head size other than 64 (see module
    docstring) unless ``allow_inexact``, in which case ``norm_eps=1e-5`` keeps
    the LayerNorms exact and only ``g_norm`` differs.

    Note: fla 0.6.0 cannot build a one-layer ``RWKV7ForCausalLM`` (its weight
    init divides by ``num_hidden_layers - 1``); the conversion itself works.
    """
    what = "BlinkDL RWKV-7 state dict"
    src = _Source(sd, what)
    L = _blink_num_layers(src.sd, what)
    V, C = src.sd["emb.weight"].shape
    H, N = src.sd["blocks.0.att.r_k"].shape
    if H * N != C:
        raise ValueError(f"{what}: r_k is [{H}, {N}] but n_embd is {C}")
    if not _close(N * BLINK_LN_EPS, BLINK_LN_X_EPS):
        _inexact(
            allow_inexact,
            f"{what}: head size {N}: fla's g_norm eps would be {N * BLINK_LN_EPS}, BlinkDL's ln_x eps is {BLINK_LN_X_EPS}",
        )

    def width(lo: str, i: int) -> int:
        return src.sd[f"blocks.{i}.att.{lo}1"].shape[1]

    dims = {}
    for lo in _V7_LORAS:
        layers = [i for i in range(L) if not (lo == "v" and i == 0)]
        if not layers:  # a one-layer model has no used v-LoRA
            dims[lo] = src.sd["blocks.0.att.v1"].shape[1] if "blocks.0.att.v1" in src else 32
        else:
            dims[lo] = _uniform([width(lo, i) for i in layers], f"{lo}1 width", what)
    F = src.sd["blocks.0.ffn.key.weight"].shape[0]
    with_ln0 = "blocks.0.ln0.weight" in src
    for k in ("blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2"):
        src.drop(k)

    out = _run_table(src, _rwkv7_table(L, V, C, H, N, F, dims, with_ln0, "model."), to_blink=False)
    src.finish()
    config = {
        "model_type": "rwkv7",
        "architectures": ["RWKV7ForCausalLM"],
        "vocab_size": int(V),
        "hidden_size": int(C),
        "num_hidden_layers": int(L),
        "head_dim": int(N),
        "num_heads": int(H),
        "decay_low_rank_dim": int(dims["w"]),
        "a_low_rank_dim": int(dims["a"]),
        "v_low_rank_dim": int(dims["v"]),
        "gate_low_rank_dim": int(dims["g"]),
        "intermediate_size": int(F),
        "hidden_ratio": F / C,
        "hidden_act": "sqrelu",
        "norm_first": with_ln0,
        "norm_bias": True,
        "norm_eps": BLINK_LN_EPS,
        "value_dim": None,
        "attn": None,
        "tie_word_embeddings": False,
    }
    return out, config


# --------------------------------------------------------------------------------------
# fla RWKV6ForCausalLM
# --------------------------------------------------------------------------------------

# BlinkDL orders the five token-shift LoRA outputs w, k, v, r, g (time_maa_w1 columns,
# time_maa_w2 rows); fla's x_proj/x_bias order them r, w, k, v, g.
_V6_BLINK_ORDER = ("w", "k", "v", "r", "g")
_V6_FLA_ORDER = ("r", "w", "k", "v", "g")
_V6_FLA_FROM_BLINK = [_V6_BLINK_ORDER.index(x) for x in _V6_FLA_ORDER]  # [3, 0, 1, 2, 4]
_V6_BLINK_FROM_FLA = [_V6_FLA_ORDER.index(x) for x in _V6_BLINK_ORDER]  # [1, 2, 3, 0, 4]


def _rwkv6_table(L, V, C, A, H, N, F, D, D2, with_ln0, fp):
    """Rows that are plain renames; the five-way x_proj/x_bias tensors are handled apart."""
    def body(i, b, f):
        ba, fa = b + "att.", f + "attn."
        # rows follow the parameter order of BlinkDL's RWKV_Tmix_x060 (the five-way
        # time_maa_{w,k,v,r,g}/w1/w2 tensors are inserted after time_maa_x by _v6_merge)
        rows = [
            (ba + "time_maa_x", fa + "x_proj.0.mu", _FLAT, (1, 1, C)),
            # decay: time_decay + tanh(xw @ w1) @ w2 == fla's LoRA with bias; w = -exp(.) in both
            (ba + "time_decay", fa + "w_proj.linear.lora.2.bias", _FLAT, (1, 1, A)),
            (ba + "time_decay_w1", fa + "w_proj.linear.lora.0.weight", _T, (C, D2)),
            (ba + "time_decay_w2", fa + "w_proj.linear.lora.2.weight", _T, (D2, A)),
            (ba + "time_faaaa", fa + "bonus", _ID, (H, N)),
            (ba + "receptance.weight", fa + "r_proj.linear.weight", _ID, (A, C)),
            (ba + "key.weight", fa + "k_proj.linear.weight", _ID, (A, C)),
            (ba + "value.weight", fa + "v_proj.linear.weight", _ID, (A, C)),
            (ba + "output.weight", fa + "o_proj.weight", _ID, (C, A)),
            (ba + "gate.weight", fa + "g_proj.linear.weight", _ID, (A, C)),
        ]
        rows += _norm_rows(ba + "ln_x", fa + "g_norm", A)
        bf, ff = b + "ffn.", f + "ffn."
        return rows + [
            (bf + "time_maa_k", ff + "key.mu", _FLAT, (1, 1, C)),
            (bf + "time_maa_r", ff + "receptance.mu", _FLAT, (1, 1, C)),
            (bf + "key.weight", ff + "key.linear.weight", _ID, (F, C)),
            (bf + "receptance.weight", ff + "receptance.linear.weight", _ID, (C, C)),
            (bf + "value.weight", ff + "value.weight", _ID, (C, F)),
        ]
    return _fla_table(L, V, C, with_ln0, fp, body)


def _v6_mix_to_fla(src: _Source, i: int, C: int, D: int, fp: str) -> StateDict:
    ba, fa = f"blocks.{i}.att.", f"{fp}layers.{i}.attn."
    w1 = src.take(ba + "time_maa_w1")  # [C, 5D], column block j feeds output j (w,k,v,r,g)
    w2 = src.take(ba + "time_maa_w2")  # [5, D, C]
    _check_shape(w1, (C, 5 * D), ba + "time_maa_w1")
    _check_shape(w2, (5, D, C), ba + "time_maa_w2")
    maa = {x: src.take(ba + f"time_maa_{x}") for x in _V6_BLINK_ORDER}
    for x, t in maa.items():
        _check_shape(t, (1, 1, C), ba + f"time_maa_{x}")
    perm = torch.tensor(_V6_FLA_FROM_BLINK)
    # fla: x_proj.0 = Linear(C, 5D) with row block n feeding fla output n (r,w,k,v,g)
    lin0 = w1.reshape(C, 5, D)[:, perm, :].reshape(C, 5 * D).t().contiguous()
    # fla: out[..., n, h] = sum_r z[..., n, r] * x_proj.2.weight.view(C, 5, D)[h, n, r]
    lin2 = w2[perm].permute(2, 0, 1).reshape(C, 5 * D).contiguous()
    bias = torch.stack([maa[x].reshape(C) for x in _V6_FLA_ORDER])
    return {fa + "x_proj.0.linear.weight": lin0, fa + "x_proj.2.weight": lin2, fa + "x_bias": bias}


def _v6_mix_to_blink(src: _Source, i: int, C: int, D: int, fp: str) -> StateDict:
    ba, fa = f"blocks.{i}.att.", f"{fp}layers.{i}.attn."
    lin0 = src.take(fa + "x_proj.0.linear.weight")  # [5D, C]
    lin2 = src.take(fa + "x_proj.2.weight")  # [C, 5D]
    bias = src.take(fa + "x_bias")  # [5, C]
    _check_shape(lin0, (5 * D, C), fa + "x_proj.0.linear.weight")
    _check_shape(lin2, (C, 5 * D), fa + "x_proj.2.weight")
    _check_shape(bias, (5, C), fa + "x_bias")
    inv = torch.tensor(_V6_BLINK_FROM_FLA)
    w1 = lin0.t().reshape(C, 5, D)[:, inv, :].reshape(C, 5 * D).contiguous()
    w2 = lin2.reshape(C, 5, D).permute(1, 2, 0)[inv].contiguous()
    out = {ba + f"time_maa_{x}": bias[_V6_FLA_ORDER.index(x)].reshape(1, 1, C).clone()
           for x in ("w", "k", "v", "r", "g")}
    out[ba + "time_maa_w1"] = w1
    out[ba + "time_maa_w2"] = w2
    return out


def _v6_merge(plain: StateDict, mixes: dict[int, StateDict], blink: bool) -> StateDict:
    """Put each layer's five-way mixing tensors next to its other attention tensors."""
    out: StateDict = {}
    for k, v in plain.items():
        if blink and re.fullmatch(r"blocks\.\d+\.att\.time_maa_x", k):
            out[k] = v
            out.update(mixes[int(k.split(".")[1])])
            continue
        if not blink and k.endswith(".attn.x_proj.0.mu"):
            out[k] = v
            out.update(mixes[int(k.split(".")[-5])])
            continue
        out[k] = v
    return out


def _rwkv6_eps_check(norm_eps: float, allow: bool, what: str) -> None:
    # fla's RWKV6Attention builds g_norm with eps=norm_eps, the LayerNorms use norm_eps too.
    if not (_close(norm_eps, BLINK_LN_EPS) and _close(norm_eps, BLINK_LN_X_EPS)):
        _inexact(
            allow,
            f"{what}: fla RWKV-6 uses norm_eps={norm_eps} for both its LayerNorms and g_norm, "
            f"BlinkDL uses {BLINK_LN_EPS} (LayerNorm) and {BLINK_LN_X_EPS} (ln_x); no fla config "
            "reproduces both",
        )


def fla_rwkv6_to_blink(
    sd: Mapping[str, torch.Tensor],
    config: Mapping[str, Any] | Any,
    *,
    allow_inexact: bool = False,
) -> StateDict:
    """fla ``RWKV6ForCausalLM`` state dict -> BlinkDL RWKV-6 state dict.

    Mapping (per layer; ``f`` = ``model.layers.i.attn``, ``b`` = ``blocks.i.att``):
    ``f.x_proj.0.mu`` = ``b.time_maa_x``; ``f.x_proj.0.linear.weight`` ([5D, C]) and
    ``f.x_proj.2.weight`` ([C, 5D]) are ``b.time_maa_w1`` ([C, 5D]) transposed and
    ``b.time_maa_w2`` ([5, D, C]) permuted, with the five blocks reordered from
    fla's (r, w, k, v, g) to BlinkDL's (w, k, v, r, g); ``f.x_bias`` rows are
    ``b.time_maa_{r,w,k,v,g}``; ``f.{r,k,v,g}_proj.linear.weight`` =
    ``b.{receptance,key,value,gate}.weight``; ``f.w_proj.linear.lora.0.weight`` =
    ``b.time_decay_w1.T``, ``lora.2.weight`` = ``b.time_decay_w2.T``, ``lora.2.bias``
    = ``b.time_decay`` (both compute decay ``exp(-exp(time_decay + tanh(xw@w1)@w2))``);
    ``f.bonus`` = ``b.time_faaaa``; ``f.g_norm`` = ``b.ln_x``; ``f.o_proj`` =
    ``b.output``; ``ffn.{key,receptance}.mu`` = ``ffn.time_maa_{k,r}``,
    ``ffn.{key,receptance}.linear.weight`` = ``ffn.{key,receptance}.weight``.

    Always raises :class:`InexactConversionError` unless ``allow_inexact=True``:
    fla's ``g_norm`` eps equals its LayerNorm eps (``norm_eps``), BlinkDL's ``ln_x``
    eps is 64e-5 against 1e-5 for LayerNorms.  The weights themselves convert
    exactly.  ``expand_k`` must equal ``expand_v`` (BlinkDL uses one attention
    width for r, k, v, g); hybrid ``attn`` layers and non-sqrelu FFNs raise ValueError.
    """
    cfg = _config_dict(config)
    what = "fla-rwkv6 state dict"
    _check_fla_common(cfg, what, "rwkv6")
    _rwkv6_eps_check(cfg.get("norm_eps", 1e-5), allow_inexact, what)

    src = _Source(sd, what)
    fp = _prefix(src, "model.", "embeddings.weight")
    V, C = src.sd[f"{fp}embeddings.weight"].shape
    _expect_cfg(cfg, "hidden_size", C, what)
    _expect_cfg(cfg, "vocab_size", V, what)
    L = cfg.get("num_hidden_layers")
    if L is None:
        L = len({m.group(1) for k in src.sd if (m := re.match(rf"{re.escape(fp)}layers\.(\d+)\.", k))})
    a0 = f"{fp}layers.0.attn."
    A = src.sd[a0 + "r_proj.linear.weight"].shape[0]
    Av = src.sd[a0 + "v_proj.linear.weight"].shape[0]
    if Av != A:
        raise ValueError(f"{what}: key width {A} != value width {Av} (expand_k != expand_v); BlinkDL needs them equal")
    H, N = src.sd[a0 + "bonus"].shape
    _expect_cfg(cfg, "num_heads", H, what)
    D = src.sd[a0 + "x_proj.0.linear.weight"].shape[0] // 5
    D2 = src.sd[a0 + "w_proj.linear.lora.0.weight"].shape[0]
    F = src.sd[f"{fp}layers.0.ffn.key.linear.weight"].shape[0]

    with_ln0 = _fla_norms_and_head(src, cfg, fp, L, what)

    mixes = {i: _v6_mix_to_blink(src, i, C, D, fp) for i in range(L)}
    plain = _run_table(src, _rwkv6_table(L, V, C, A, H, N, F, D, D2, with_ln0, fp), to_blink=True)
    src.finish()
    return _v6_merge(plain, mixes, blink=True)


def blink_to_fla_rwkv6(
    sd: Mapping[str, torch.Tensor],
    *,
    allow_inexact: bool = False,
    norm_eps: float = BLINK_LN_EPS,
) -> tuple[StateDict, dict[str, Any]]:
    """BlinkDL RWKV-6 state dict -> ``(RWKV6ForCausalLM state dict, RWKV6Config kwargs)``.

    The inverse of :func:`fla_rwkv6_to_blink` (see there for the mapping).
    Raises :class:`InexactConversionError` unless ``allow_inexact=True``, because
    fla's RWKV-6 cannot use eps 1e-5 for LayerNorms and 64e-5 for ``ln_x`` at
    once.  ``norm_eps`` picks the compromise written to the config: the default
    1e-5 keeps every LayerNorm exact (only ``g_norm`` differs); 64e-5 does the
    opposite.  Low-rank widths must be the same in every layer.
    """
    what = "BlinkDL RWKV-6 state dict"
    _rwkv6_eps_check(norm_eps, allow_inexact, what)
    src = _Source(sd, what)
    L = _blink_num_layers(src.sd, what)
    V, C = src.sd["emb.weight"].shape
    A = src.sd["blocks.0.att.key.weight"].shape[0]
    H, N = src.sd["blocks.0.att.time_faaaa"].shape
    if H * N != A:
        raise ValueError(f"{what}: time_faaaa is [{H}, {N}] but the attention width is {A}")
    D = _uniform([src.sd[f"blocks.{i}.att.time_maa_w1"].shape[1] // 5 for i in range(L)], "time_maa_w1 width", what)
    D2 = _uniform([src.sd[f"blocks.{i}.att.time_decay_w1"].shape[1] for i in range(L)], "time_decay_w1 width", what)
    F = _uniform([src.sd[f"blocks.{i}.ffn.key.weight"].shape[0] for i in range(L)], "ffn width", what)
    with_ln0 = "blocks.0.ln0.weight" in src

    mixes = {i: _v6_mix_to_fla(src, i, C, D, "model.") for i in range(L)}
    plain = _run_table(src, _rwkv6_table(L, V, C, A, H, N, F, D, D2, with_ln0, "model."), to_blink=False)
    src.finish()
    expand = A / C
    config = {
        "model_type": "rwkv6",
        "architectures": ["RWKV6ForCausalLM"],
        "vocab_size": int(V),
        "hidden_size": int(C),
        "num_hidden_layers": int(L),
        "num_heads": int(H),
        "expand_k": expand,
        "expand_v": expand,
        "proj_low_rank_dim": int(D),
        "gate_low_rank_dim": int(D2),
        "intermediate_size": int(F),
        "hidden_ratio": F / C,
        "hidden_act": "sqrelu",
        "norm_first": with_ln0,
        "norm_bias": True,
        "norm_eps": float(norm_eps),
        "attn": None,
        "tie_word_embeddings": False,
    }
    return _v6_merge(plain, mixes, blink=False), config
