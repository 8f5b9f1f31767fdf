"""Families and presets by name, imported lazily; `build` makes a random-weight model of a
preset's shape, `load` reads a checkpoint.

    archbench.build("rwkv7-2b9", dtype="bfloat16", device="cuda")
    archbench.load("RWKV-x070-World-2.9B.pth", dtype="bfloat16", device="cuda")

Adding a family means one model file and one line in FAMILIES.
"""
from __future__ import annotations

import difflib
import os
import importlib
from pathlib import Path

import torch

from archbench.harness.errors import UnknownModelError
from archbench.harness.interface import resolve_dtype

# family -> "module:class"; a class takes (config, impl=...) and has `config_cls`.
FAMILIES: dict[str, str] = {
    "rwkv4": "archbench.models.rwkv4:RWKV4",
    "rwkv5": "archbench.models.rwkv5:RWKV5",
    "rwkv6": "archbench.models.rwkv6:RWKV6",
    "rwkv7": "archbench.models.rwkv7:RWKV7",
    "transformer": "archbench.models.transformer:Transformer",
    "mamba1": "archbench.models.mamba:Mamba1",
    "mamba2": "archbench.models.mamba:Mamba2",
}


def family_class(family: str):
    if family not in FAMILIES:
        raise UnknownModelError(f"unknown model family {family!r}{_did_you_mean(family, FAMILIES)}; "
                                f"known: {', '.join(FAMILIES)}")
    module, name = FAMILIES[family].split(":")
    return getattr(importlib.import_module(module), name)


def presets() -> dict[str, tuple[str, dict]]:
    from archbench.models.presets import PRESETS
    return PRESETS


def list_models() -> list[str]:
    return sorted(presets())


def _did_you_mean(name: str, choices) -> str:
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def config_for(name: str):
    """The config of a preset, without building the model."""
    if name not in presets():
        raise UnknownModelError(f"unknown model {name!r}{_did_you_mean(name, presets())}; "
                                "`archbench list` shows every preset")
    family, kwargs = presets()[name]
    config_cls = getattr(family_class(family), "config_cls", None)
    if config_cls is None:
        from archbench.models.rwkv_common import RWKVConfig as config_cls
    return family, config_cls(**kwargs)


def _impl(cls, impl: str, device) -> str:
    if hasattr(cls, "resolve_impl"):  # a family with its own backends (Transformer, Mamba)
        return cls.resolve_impl(impl, device)
    op = getattr(cls, "wkv_op", None)
    if op is None:
        return impl
    from archbench.kernels import resolve_impl
    return resolve_impl(op, impl, device)


def make(family: str, config, impl: str = "auto", dtype="float32", device="cpu"):
    """An uninitialised model of this family and config, in dtype on device."""
    cls = family_class(family)
    impl = _impl(cls, impl, device)
    with torch.device("meta"):
        model = cls(config, impl=impl)
    model = model.to_empty(device=device)
    return model.cast(resolve_dtype(dtype)).eval()


# a folder where build() keeps the random weights it made, for the next process to load
# (a 3B model takes about 40 s to draw on the CPU, a few to load); unset: no cache
WEIGHT_CACHE_ENV = "ARCHBENCH_WEIGHT_CACHE"


def build(name: str, impl: str = "auto", dtype="float32", device="cpu", seed: int = 0):
    """A preset's exact shape with random weights. impl "auto": the fastest backend here."""
    family, config = config_for(name)
    impl = _impl(family_class(family), impl, device)
    cache = os.environ.get(WEIGHT_CACHE_ENV)
    path = Path(cache) / f"{name}-seed{seed}-{resolve_dtype(dtype)}.pt".replace("torch.", "") if cache else None
    if path is not None and path.exists():
        model = make(family, config, impl=impl, dtype=dtype, device=device)
        model.load_state_dict(torch.load(path, map_location=device, weights_only=True, mmap=True))
        return model
    # initialised on the CPU in fp32 (the same weights on every device), no default init first
    model = make(family, config, impl=impl, dtype="float32", device="cpu").init_random_(seed)
    model = model.to(device=device).cast(resolve_dtype(dtype)).eval()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)
    return model


def load(path, impl: str = "auto", dtype="float32", device="cpu"):
    """A model from a checkpoint: a BlinkDL .pth, or a Hugging Face / fla folder."""
    from archbench.models.checkpoint import load_model
    return load_model(path, impl=impl, dtype=dtype, device=device)
