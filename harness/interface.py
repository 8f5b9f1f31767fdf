"""The one protocol every architecture implements; suites talk only to it.

    model = archbench.build("rwkv6-tiny")
    state = model.init_state(batch_size=2)
    logits, state = model.forward(tokens, state)   # [B, T] -> [B, T, V], state carried
    logits, state = model.step(next_tokens, state) # [B] -> [B, V]

`forward` over T tokens equals T calls of `step` and equals `forward` over any split of
the T tokens with the state carried between the pieces.

`forward` and `step` consume the state they are given: every family updates its tensors in
place (RWKV's shifts and WKV state, Mamba's conv and SSM state, the Transformer's
preallocated KV cache), so that a decode step can be captured in a CUDA graph. Keep
`state.clone()` to reuse a state. `forward(tokens, state, last_only=True)` returns only the
last position's logits (B, 1, V): a long prompt then never holds (B, T, V) logits.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, fields
from typing import ClassVar
from typing import Any, Protocol, runtime_checkable

import torch

DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[dtype]
    except KeyError:
        from archbench.harness.errors import ArchbenchError
        raise ArchbenchError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}") from None


@dataclass
class State:
    """A model's recurrent state (or KV cache): named tensors, all with batch first
    after any leading layer axis. Subclasses add no behaviour, only fields."""

    rows_share_position: ClassVar[bool] = False  # a KV cache: one position for every row

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)
                if isinstance(getattr(self, f.name), torch.Tensor)}

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors().values())

    def clone(self) -> "State":
        return type(self)(**{f.name: (v.clone() if isinstance(v := getattr(self, f.name), torch.Tensor) else v)
                             for f in fields(self)})

    def repeat_batch(self, n: int) -> "State":
        """A new state with each sequence repeated n times (batch axis 1, after the layer
        axis; a tensor of one dimension, like a shared position counter, is copied)."""
        return type(self)(**{f.name: ((v.repeat_interleave(n, dim=1) if v.dim() >= 2 else v.clone())
                                      if isinstance(v := getattr(self, f.name), torch.Tensor) else v)
                             for f in fields(self)})

    @classmethod
    def cat(cls, states: list["State"]) -> "State":
        """Several states as one batch, in order (batch axis 1; one-dimensional tensors and
        other fields from the first). For states whose rows share nothing, which is every
        recurrent one; a KV cache's rows share one position (`rows_share_position`)."""
        if cls.rows_share_position:
            raise ValueError(f"{cls.__name__} rows share one position: sequences of different lengths cannot "
                             "be batched")
        first = states[0]
        return cls(**{f.name: ((torch.cat([getattr(x, f.name) for x in states], dim=1) if v.dim() >= 2 else v.clone())
                               if isinstance(v := getattr(first, f.name), torch.Tensor) else v)
                      for f in fields(first)})

    def checkpoint(self) -> "State":
        """What `restore` needs to bring this state back to now (a clone; a KV cache only
        keeps its counters, since later tokens never overwrite earlier slots)."""
        return self.clone()

    def restore(self, saved: "State") -> None:
        """Back to `saved` (from `checkpoint`), into this state's own tensors, so a CUDA
        graph captured on them replays from there."""
        for f in fields(self):
            value = getattr(saved, f.name)
            if isinstance(value, torch.Tensor):
                getattr(self, f.name).copy_(value)
            else:
                setattr(self, f.name, value)


@runtime_checkable
class SequenceModel(Protocol):
    family: str
    config: Any

    def init_state(self, batch_size: int, max_len: int | None = None) -> State: ...

    def forward(self, tokens: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]: ...

    def step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]: ...

    def state_nbytes(self, batch_size: int, context_len: int) -> int: ...

    def num_params(self, non_embedding: bool = False) -> int: ...


def decode_read_nbytes(model: torch.nn.Module) -> int:
    """Bytes of weights one decode step reads: every parameter once (a tied one too), except
    input embedding tables that are not also a layer's weight (the output head's, when tied):
    a lookup reads one row per token, not the table."""
    tables = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    elsewhere = {id(p) for m in model.modules() if not isinstance(m, torch.nn.Embedding)
                 for p in m._parameters.values() if p is not None}
    return sum(p.numel() * p.element_size() for p in model.parameters() if id(p) not in tables - elsewhere)


def recorded_read_nbytes(record: dict) -> int:
    """Bytes of weights a decode step of a sweep record's model reads. Records with
    param_nbytes (since 2026-11-28) say it in weight_nbytes; before, weight_nbytes counted
    every parameter, the input embedding table too, so a preset's model is built on the meta
    device (no memory) and counted as the sweep now counts it; a model that is not a preset
    keeps its recorded figure."""
    if "param_nbytes" in record:
        return record["weight_nbytes"]
    return _preset_read_nbytes(record["model"], record.get("dtype", "bfloat16")) or record["weight_nbytes"]


@functools.lru_cache(maxsize=None)
def _preset_read_nbytes(name: str, dtype: str) -> int | None:
    from archbench.harness.errors import UnknownModelError
    from archbench.harness.registry import config_for, make
    try:
        family, cfg = config_for(name)
    except UnknownModelError:
        return None
    with torch.device("meta"):
        return decode_read_nbytes(make(family, cfg, impl="ref", dtype=dtype, device="meta"))
