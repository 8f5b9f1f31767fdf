"""WKV4 on our CUDA kernels: same signature and maths as `wkv4_ref`.

    y, state = wkv4_cuda(w, u, k, v, state)    # w = -exp(time_decay), u = time_first: [C]

Two kernels: the sequential one (cuda/wkv4.cu, one thread per channel walks the tokens) and
the time-parallel one (cuda/wkv4_parallel.cu, the tokens cut into segments). `wkv4_cuda`
takes the parallel one from PARALLEL_MIN_T tokens on while the batch has fewer than
PARALLEL_MAX_CHANNELS channels (`use_parallel`).
"""
from __future__ import annotations

import torch

from archbench.kernels.build import aligned, check_inputs, extension, state_for


# From this many tokens on, `wkv4_cuda` takes the time-parallel kernel. Measured at T >= 4096
# only (where it always wins); below 1024 the sequential kernel's one pass is kept, as for
# the chunked WKV6/WKV7 kernels (CHUNKED_MIN_T).
PARALLEL_MIN_T = 1024
# From this many channels over the batch (B x C) on, the sequential kernel alone fills the
# GPU and wins. On the H100 (Mtok/s, parallel / sequential): at C = 2560 (H=40) 43-71 / 5.4
# at B=1, 71.8 / 39.7 at 8x4096 and 84.1 / 70.8 at 16x16384 (B x C = 40960,
# results/kernels/wkv_bench_20261128-055427.jsonl); at C = 4096 (H=64) 33-42 / 5.3-5.4 at
# B=1, 50.7 / 37.6 at 8x4096 (32768) but 52.8 / 61.6 at 16x16384 (65536,
# wkv_bench_20261128-063127.jsonl).
PARALLEL_MAX_CHANNELS = 65536


def use_parallel(B: int, T: int, C: int) -> bool:
    """Whether `wkv4_cuda` takes the time-parallel kernel for this shape."""
    return T >= PARALLEL_MIN_T and B * C < PARALLEL_MAX_CHANNELS


def wkv4_cuda(w, u, k, v, state, *, inplace: bool = False, out=None, parallel: bool | None = None):
    """parallel: True / False forces the time-parallel / sequential kernel, None chooses by
    shape (`use_parallel`)."""
    if parallel is None:
        parallel = k.dim() == 3 and use_parallel(*k.shape)
    if parallel:
        return wkv4_cuda_parallel(w, u, k, v, state, inplace=inplace, out=out)
    check_inputs("wkv4", dict(k=k, v=v), tuple(k.shape))
    B, T, C = k.shape
    state = state_for("wkv4", state, (B, 3, C), inplace, k.device)
    y = torch.empty_like(k) if out is None else out  # out: a preallocated y (graphs, tests)
    w = w.to(device=k.device, dtype=torch.float32).contiguous()
    u = u.to(device=k.device, dtype=torch.float32).contiguous()
    extension().wkv4(w, u, aligned(k), aligned(v), state, y)
    return y, state


# Segment lengths the by-shape choice takes from, longest first: the longest that still gives
# PARALLEL_WAVES x (resident threads of the GPU) threads, else the shortest. Shorter segments
# cost little (k and v are read twice whatever the length; a segment adds 24 bytes of
# workspace traffic per channel and one step of the scan), but the scan (one thread per
# channel) takes T / L steps. On the H100 (wkv_bench_20261128-035916.jsonl) the choice is
# within 5% of the best fixed length at every bench shape (H=40, N=64) but 1x4096 (43.4 vs
# 45.7 Mtok/s at L=64) and 1x16384 (55.6 vs 59.7 at L=256).
PARALLEL_SEGMENTS = (512, 256, 128, 64, 32)
PARALLEL_WAVES = 2
THREADS_PER_SM = 2048  # resident threads per SM on sm_80 / sm_90


def parallel_segment(B: int, T: int, C: int, sms: int) -> int:
    """The segment length `wkv4_cuda_parallel` takes for this shape on a GPU of `sms` SMs."""
    want = PARALLEL_WAVES * sms * THREADS_PER_SM
    for L in PARALLEL_SEGMENTS:
        if B * -(-T // L) * C >= want:
            return L
    return PARALLEL_SEGMENTS[-1]


def wkv4_cuda_parallel(w, u, k, v, state, *, inplace: bool = False, out=None, segment: int = 0):
    """WKV4 parallel over time (kernels/wkv4/cuda/wkv4_parallel.cu): T cut into segments of
    `segment` tokens (0: by shape, `parallel_segment`), each run from no history, a scan over
    the segments for their start states, then every segment's outputs: B x C x T / L threads
    where the sequential kernel has B x C. Same signature and results as `wkv4_cuda`, which
    takes it by shape (`use_parallel`)."""
    check_inputs("wkv4", dict(k=k, v=v), tuple(k.shape))
    if segment < 0:
        raise ValueError(f"wkv4_cuda_parallel: segment must be >= 0 (0: by shape), got {segment}")
    B, T, C = k.shape
    state = state_for("wkv4", state, (B, 3, C), inplace, k.device)
    y = torch.empty_like(k) if out is None else out
    if T == 0:
        return y, state
    w = w.to(device=k.device, dtype=torch.float32).contiguous()
    u = u.to(device=k.device, dtype=torch.float32).contiguous()
    L = segment or parallel_segment(B, T, C, torch.cuda.get_device_properties(k.device).multi_processor_count)
    L = min(L, T)  # one segment at most as long as the prompt (and the length fits an int)
    # the segments' states: written by pass 1, turned into start states by pass 2, read by pass
    # 3. torch.empty: no fill kernel, and inside a graph capture it comes from the graph's pool
    work = torch.empty(B, -(-T // L), 3, C, dtype=torch.float32, device=k.device)
    extension().wkv4_parallel(w, u, aligned(k), aligned(v), state, y, work, L)
    return y, state
