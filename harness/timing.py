"""Timing: warm up first, then repeat; CUDA events on a GPU, perf_counter on a CPU.
Returns the median and the spread (min, max) in seconds."""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def time_fn(fn: Callable[[], object], device: torch.device | str, warmup: int = 1, repeats: int = 3,
            setup: Callable[[], object] | None = None, max_total_s: float | None = None) -> dict:
    """setup (untimed) runs before every call of fn, e.g. to give it a fresh state.
    max_total_s: fewer repeats (at least one) when the last warm-up call (or, without
    warm-up, the first timed one) says that `repeats` calls would take longer than this."""
    device = torch.device(device)
    for _ in range(warmup):
        if setup:
            setup()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if max_total_s is not None:
            repeats = max(1, min(repeats, int(max_total_s / max(time.perf_counter() - t0, 1e-9))))
    times: list[float] = []
    while len(times) < repeats:
        if setup:
            setup()
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        if max_total_s is not None and not warmup and len(times) == 1:
            repeats = max(1, min(repeats, int(max_total_s / max(times[0], 1e-9))))
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "repeats": repeats}
