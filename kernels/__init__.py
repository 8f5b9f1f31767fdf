"""Kernels, one folder per op (wkv4 ... wkv7), each with a pure-PyTorch `ref.py` that the
tests believe. `get_op("wkv7", "ref")` returns the function for an op and backend; the
backends share one signature per op.
"""
from __future__ import annotations

import importlib
import importlib.util

from archbench.harness.errors import ArchbenchError

# op -> impl -> "module:function" (imported on first use)
OPS: dict[str, dict[str, str]] = {
    "wkv4": {"ref": "archbench.kernels.wkv4.ref:wkv4_ref", "cuda": "archbench.kernels.wkv4.op:wkv4_cuda",
             "chunked": "archbench.kernels.wkv4.chunked:wkv4_chunked"},
    "wkv5": {"ref": "archbench.kernels.wkv5.ref:wkv5_ref", "cuda": "archbench.kernels.wkv5.op:wkv5_cuda"},
    "wkv6": {"ref": "archbench.kernels.wkv6.ref:wkv6_ref", "cuda": "archbench.kernels.wkv6.op:wkv6_cuda",
             "fla": "archbench.kernels.wkv6.fla:wkv6_fla", "chunked": "archbench.kernels.wkv6.chunked:wkv6_chunked"},
    "wkv7": {"ref": "archbench.kernels.wkv7.ref:wkv7_ref", "cuda": "archbench.kernels.wkv7.op:wkv7_cuda",
             "fla": "archbench.kernels.wkv7.fla:wkv7_fla", "chunked": "archbench.kernels.wkv7.chunked:wkv7_chunked"},
}


def available_impls(op: str) -> list[str]:
    """The backends of op that can run here."""
    from archbench.kernels.build import unavailable_reason
    out = ["ref"] + (["chunked"] if "chunked" in OPS.get(op, {}) else [])
    if "cuda" in OPS.get(op, {}) and unavailable_reason() is None:
        out.append("cuda")
    if "fla" in OPS.get(op, {}) and importlib.util.find_spec("fla") is not None and unavailable_reason() is None:
        out.append("fla")
    return out


def resolve_impl(op: str, impl: str, device) -> str:
    """"auto" is our CUDA kernel on a GPU where it can be built, else the reference."""
    if impl != "auto":
        return impl
    on_gpu = str(device).startswith("cuda")
    return "cuda" if on_gpu and "cuda" in available_impls(op) else "ref"


def get_op(op: str, impl: str):
    if op not in OPS:
        raise ArchbenchError(f"unknown kernel op {op!r}; known: {sorted(OPS)}")
    if impl not in OPS[op]:
        raise ArchbenchError(f"no {impl!r} backend for {op}; known: {sorted(OPS[op])}, "
                             f"runnable here: {available_impls(op)}")
    module, name = OPS[op][impl].split(":")
    return getattr(importlib.import_module(module), name)
