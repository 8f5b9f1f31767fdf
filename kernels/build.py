"""Builds the WKV CUDA kernels on first use with torch.utils.cpp_extension.

One extension holds every op (the .cu files compile in parallel); each kernel is a
template instantiated for float32/float16/bfloat16 and head sizes 16, 32, 64 and 128. The
build is cached per GPU architecture and source hash (under TORCH_EXTENSIONS_DIR), so a
second process loads it in a second. A build killed half-way (a sweep cell's timeout,
Ctrl-C) leaves torch's lock file behind, on which every later build would wait forever;
`build_lock` clears it.

    ext = extension()          # raises MissingDependencyError with the reason if impossible
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shutil
import sys
import warnings
from pathlib import Path

import torch

from archbench.harness.errors import MissingDependencyError

ROOT = Path(__file__).resolve().parent
SOURCES = [ROOT / "binding.cpp", ROOT / "wkv4/cuda/wkv4.cu", ROOT / "wkv4/cuda/wkv4_parallel.cu",
           ROOT / "wkv6/cuda/wkv6.cu", ROOT / "wkv7/cuda/wkv7.cu",
           ROOT / "wkv7/cuda/wkv7_chunked.cu", ROOT / "wkv7/cuda/decode7.cu",
           ROOT / "wkv6/cuda/wkv6_chunked.cu", ROOT / "wkv6/cuda/wkv6_pieces.cu"]
HEADERS = sorted([*ROOT.rglob("*.cuh"), *ROOT.rglob("*.h")])  # every header the sources include
HEAD_SIZES = (16, 32, 64, 128)


def unavailable_reason() -> str | None:
    """Why the CUDA kernels cannot be built here, or None if they can."""
    if torch.version.cuda is None:
        return "this torch build has no CUDA support (install a CUDA build of torch)"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible to torch"
    from torch.utils.cpp_extension import CUDA_HOME
    if CUDA_HOME is None and shutil.which("nvcc") is None:
        return "nvcc was not found: install the CUDA toolkit or set CUDA_HOME"
    return None


def _defines() -> list[str]:
    """ARCHBENCH_CUDA_DEFINES="NAME=VALUE ...": macros for the kernels' compile-time knobs (for
    measuring, e.g. ARCHBENCH_STATE_STAGES in state_tc.cuh); part of the build's cache key."""
    return [f"-D{d}" for d in os.environ.get("ARCHBENCH_CUDA_DEFINES", "").split()]


def _source_hash() -> str:
    h = hashlib.sha256()
    for p in SOURCES + HEADERS:
        h.update(p.read_bytes())
    h.update(" ".join(_defines()).encode())
    return h.hexdigest()[:10]


def build_directory(name: str) -> Path:
    """Where torch builds extension `name`: TORCH_EXTENSIONS_DIR, or torch's default root with
    its per-Python, per-CUDA folder (the place torch itself would choose)."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if not root:
        from torch.utils.cpp_extension import get_default_build_root
        cuda = (torch.version.cuda or "cpu").replace(".", "")
        root = os.path.join(get_default_build_root(), f"py{sys.version_info.major}{sys.version_info.minor}_cu{cuda}")
    d = Path(root) / name
    d.mkdir(parents=True, exist_ok=True)
    return d


@contextlib.contextmanager
def build_lock(directory: Path):
    """Holds an OS file lock on `directory` (released by the OS when its process dies, however
    it dies), then removes torch's own lock file there if one is left. torch marks a build in
    progress by creating `lock` and waits, without end, for it to go away; a process killed
    mid-build never removes it. Under our lock no live archbench build can own it."""
    try:
        import fcntl
    except ImportError:  # not POSIX: torch's lock alone
        yield
        return
    with open(directory / "archbench.flock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        try:
            stale = directory / "lock"
            if stale.exists():
                warnings.warn(f"removing the lock file of an interrupted build: {stale}")
                stale.unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)


@functools.lru_cache(maxsize=None)
def extension():
    reason = unavailable_reason()
    if reason:
        raise MissingDependencyError(f"the CUDA WKV kernels (impl='cuda') cannot be built: {reason}; "
                                     "use impl='ref' instead")
    from torch.utils.cpp_extension import load
    major, minor = torch.cuda.get_device_capability()
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", f"{major}.{minor}")
    name = f"archbench_wkv_sm{major}{minor}_{_source_hash()}"
    flags = ["-O3", "--use_fast_math", "-std=c++17", "-lineinfo", "--split-compile=0", f"-I{ROOT}", *_defines()]
    directory = build_directory(name)
    with build_lock(directory):
        return load(name=name, sources=[str(s) for s in SOURCES], extra_cuda_cflags=flags,
                    extra_cflags=["-O3", f"-I{ROOT}"], build_directory=str(directory),
                    verbose=os.environ.get("ARCHBENCH_VERBOSE_BUILD") == "1")


def check_inputs(op: str, tensors: dict[str, torch.Tensor], shape: tuple[int, ...]) -> torch.dtype:
    """Same device (CUDA), same float dtype and the expected shape for every input."""
    dtypes = {t.dtype for t in tensors.values()}
    if len(dtypes) != 1 or next(iter(dtypes)) not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"{op}: inputs must share one dtype of float32/float16/bfloat16, got "
                         + ", ".join(f"{n}={t.dtype}" for n, t in tensors.items()))
    for n, t in tensors.items():
        if not t.is_cuda:
            raise ValueError(f"{op}: {n} is on {t.device}; the CUDA kernel needs every input on the GPU")
    devices = {t.device for t in tensors.values()}
    if len(devices) > 1:
        raise ValueError(f"{op}: inputs must be on one GPU, got " + ", ".join(f"{n}={t.device}" for n, t in tensors.items()))
    for n, t in tensors.items():
        if tuple(t.shape) != shape:
            raise ValueError(f"{op}: {n} has shape {tuple(t.shape)}, expected {shape}")
    if len(shape) == 4 and shape[-1] not in HEAD_SIZES:
        raise ValueError(f"{op}: head size {shape[-1]} is not built; the kernels cover {HEAD_SIZES} "
                         "(use impl='ref' for others)")
    return next(iter(dtypes))


def aligned(t: torch.Tensor) -> torch.Tensor:
    """Contiguous and 16-byte aligned (the kernels read 16-byte vectors)."""
    t = t.contiguous()
    return t if t.data_ptr() % 16 == 0 else t.clone()


def state_for(op: str, state: torch.Tensor, shape: tuple[int, ...], inplace: bool, device: torch.device) -> torch.Tensor:
    """The state the kernel updates: `state` itself (inplace) or a contiguous copy on the
    inputs' `device`."""
    if tuple(state.shape) != shape or state.dtype != torch.float32:
        raise ValueError(f"{op}: state must be float32 of shape {shape}, got {state.dtype} {tuple(state.shape)}")
    if state.device != device:
        if inplace:
            raise ValueError(f"{op}: an in-place state must be on the inputs' device {device}, got {state.device}")
        return state.to(device).contiguous()
    if inplace:
        if not state.is_contiguous():
            raise ValueError(f"{op}: an in-place state must be contiguous")
        return state
    return state.contiguous().clone()


def chunked_variant(variant: int, groups: int, form: int = 0) -> int:
    """The chunked kernels' launch code: variant 0 (by shape) or 1 / 2 / 3 (16 / 32 / 64
    state columns per block), groups 0 (by shape) or 1-3 producer groups per block, form 0
    (by shape), 1 (one kernel: each block builds its chunks), 2 (two kernels: the chunks
    built over the whole GPU into a workspace, then the state pass; see chunked_tc.cuh) or 3
    (WKV7 only, fused: one kernel, the state in registers; 64 columns)."""
    if variant not in (0, 1, 2, 3) or groups not in (0, 1, 2, 3) or form not in (0, 1, 2, 3):
        raise ValueError(f"chunked kernel: variant must be 0-3, groups 0-3 and form 0-3, got {variant}, {groups}, {form}")
    if form == 3 and variant not in (0, 3):
        raise ValueError(f"chunked kernel: the fused form (3) takes 64 columns (variant 0 or 3), got variant {variant}")
    return variant + 10 * groups + 100 * form


def chunked_workspace(op: str, shape, code: int, device) -> torch.Tensor:
    """The workspace the chunked kernel `op` ("wkv6" / "wkv7") needs at shape [B, T, H, N]
    with launch code `code` (empty for the one-kernel form)."""
    nbytes = getattr(extension(), f"{op}_chunked_workspace")(*shape, code)
    return torch.empty(nbytes, dtype=torch.uint8, device=device)


# The chunked tensor-core kernels (wkv6/cuda/wkv6_chunked.cu, wkv7/cuda/wkv7_chunked.cu) and
# when `wkv6_cuda` / `wkv7_cuda` take them, from the H100 bench of 2026-11-28
# (results/kernels/wkv_bench_20261128-021524.jsonl, bf16, H=40, N=64, T >= 4096), chunked by
# shape against sequential, Mtok/s, WKV7 / WKV6: B=1 5.1-5.3 vs 3.0 / 7.4-7.7 vs 4.8; B=8
# 10.3 vs 10.4 (a tie) / 16.6 vs 15.7; B=16 13.1 vs 12.1 / 21.2 vs 17.9. So: chunked for long
# prompts at any batch, head size 64 (the kernels' only one). Since then the chunked kernels
# run in two kernels at few heads (chunked_tc.cuh: B=1 WKV7 7.0-7.2, WKV6 12.9-13.7) and WKV7
# fused above 48 heads (16 x 16384 x 40: 24.5 on an H200; B=1 9.2-9.5 with the first segment
# fused), which only widens the gap.
CHUNKED_HEAD_SIZES = (64,)
CHUNKED_MIN_T = 1024


def use_chunked(B: int, T: int, H: int, N: int) -> bool:
    """Whether `wkv6_cuda` / `wkv7_cuda` take the chunked kernel for this shape."""
    return N in CHUNKED_HEAD_SIZES and T >= CHUNKED_MIN_T
