"""Timing: warm up first, then repeat; CUDA events on a GPU, perf_counter on a CPU.
Returns the median and the spread (min, max) in seconds."""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def time_fn(fn: Callable[[], object], device: torch.device | str, warmup: int = 1, repeats: int = 3,
            setup: Callable[[], object] | None = None) -> dict:
    """setup (untimed) runs before every call of fn, e.g. to give it a fresh state."""
    device = torch.device(device)
    for _ in range(warmup):
        if setup:
            setup()
        fn()
    times = []
    for _ in range(repeats):
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
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "repeats": repeats}
