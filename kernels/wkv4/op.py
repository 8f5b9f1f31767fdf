"""WKV4 on our CUDA kernel: same signature and maths as `wkv4_ref`.

    y, state = wkv4_cuda(w, u, k, v, state)    # w = -exp(time_decay), u = time_first: [C]
"""
from __future__ import annotations

import torch

from archbench.kernels.build import aligned, check_inputs, extension, state_for


def wkv4_cuda(w, u, k, v, state, *, inplace: bool = False, out=None):
    check_inputs("wkv4", dict(k=k, v=v), tuple(k.shape))
    B, T, C = k.shape
    state = state_for("wkv4", state, (B, 3, C), inplace)
    y = torch.empty_like(k) if out is None else out  # out: a preallocated y (graphs, tests)
    w = w.to(device=k.device, dtype=torch.float32).contiguous()
    u = u.to(device=k.device, dtype=torch.float32).contiguous()
    extension().wkv4(w, u, aligned(k), aligned(v), state, y)
    return y, state


# Segment lengths the by-shape choice takes from, longest first: the longest that still gives
# PARALLEL_WAVES x (resident threads of the GPU) threads, else the shortest. Shorter segments
# cost little (k and v are read twice whatever the length; a segment adds 24 bytes of
# workspace traffic per channel and one step of the scan), but the scan (one thread per
# channel) takes T / L steps. Not yet measured on a GPU: the bench's "cuda-parallel-L<n>" rows
# are there to set these.
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
    the segments for their start states, then every segment's outputs. For small batches,
    where `wkv4_cuda` runs only B x C threads. Same signature and results as `wkv4_cuda`.
    Opt-in: `wkv4_cuda` does not take it."""
    check_inputs("wkv4", dict(k=k, v=v), tuple(k.shape))
    if segment < 0:
        raise ValueError(f"wkv4_cuda_parallel: segment must be >= 0 (0: by shape), got {segment}")
    B, T, C = k.shape
    state = state_for("wkv4", state, (B, 3, C), inplace)
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
