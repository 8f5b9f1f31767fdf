"""One closeness check for every test: max abs error and RMS-relative error, NaN fails,
tolerances from one per-dtype table.

    report = assert_close(ours, reference, dtype=torch.bfloat16, what="wkv7 y")
"""
from __future__ import annotations

import torch

# RMS-relative error allowed against an fp32 reference, per compute dtype.
RMS_REL_TOL = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 5e-3}


def errors(actual: torch.Tensor, expected: torch.Tensor) -> dict[str, float]:
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    diff = a - e
    rms_ref = e.pow(2).mean().sqrt().item()
    return {
        "max_abs": diff.abs().max().item() if diff.numel() else 0.0,
        "rms_rel": diff.pow(2).mean().sqrt().item() / max(rms_ref, 1e-30),
        "max_rel": diff.abs().max().item() / max(e.abs().max().item(), 1e-30) if diff.numel() else 0.0,
    }


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype = torch.float32,
                 what: str = "", rms_rel: float | None = None, max_rel: float | None = None) -> dict[str, float]:
    """Fails on NaN/inf, a shape mismatch, or an error above the dtype's tolerance; returns the errors."""
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}")
    if not torch.isfinite(actual).all():
        raise AssertionError(f"{what}: {(~torch.isfinite(actual)).sum().item()} non-finite values")
    err = errors(actual, expected)
    tol = RMS_REL_TOL[dtype] if rms_rel is None else rms_rel
    if err["rms_rel"] > tol or (max_rel is not None and err["max_rel"] > max_rel):
        raise AssertionError(f"{what}: rms_rel={err['rms_rel']:.3g} (tol {tol:.3g}), max_rel={err['max_rel']:.3g}"
                             f"{f' (tol {max_rel:.3g})' if max_rel is not None else ''}, max_abs={err['max_abs']:.3g}")
    return err
