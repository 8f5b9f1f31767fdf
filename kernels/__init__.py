"""Kernels, one folder per op (wkv4 ... wkv7), each with a pure-PyTorch `ref.py` that the
tests believe. `get_op("wkv7", "ref")` returns the function for an op and backend; the
backends share one signature per op.
"""
from __future__ import annotations

import importlib

from archbench.harness.errors import ArchbenchError

# op -> impl -> "module:function" (imported on first use)
OPS: dict[str, dict[str, str]] = {
    "wkv4": {"ref": "archbench.kernels.wkv4.ref:wkv4_ref"},
    "wkv5": {"ref": "archbench.kernels.wkv5.ref:wkv5_ref"},
    "wkv6": {"ref": "archbench.kernels.wkv6.ref:wkv6_ref"},
    "wkv7": {"ref": "archbench.kernels.wkv7.ref:wkv7_ref"},
}


def available_impls(op: str) -> list[str]:
    return sorted(OPS.get(op, {}))


def get_op(op: str, impl: str):
    if op not in OPS:
        raise ArchbenchError(f"unknown kernel op {op!r}; known: {sorted(OPS)}")
    if impl not in OPS[op]:
        raise ArchbenchError(f"no {impl!r} backend for {op}; available: {available_impls(op)}")
    module, name = OPS[op][impl].split(":")
    return getattr(importlib.import_module(module), name)
