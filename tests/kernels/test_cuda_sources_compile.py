"""Every .cu compiles with nvcc for sm_90, also on a machine without a GPU (CI)."""
import shutil
import subprocess
from pathlib import Path

import pytest

from archbench.kernels.build import SOURCES

CU = [s for s in SOURCES if s.suffix == ".cu"]


def nc_loads_after_wait(ptx: str) -> list[str]:
    """The kernels (.entry names) of a PTX text with a non-coherent load (ld.global.nc) after
    a griddepcontrol.wait (programmatic dependent launch, common.cuh: pdl_wait). The kernel
    before is still running until that wait returns, and may be writing what is read after
    it; loads the compiler takes for read-only over the whole kernel (const __restrict__)
    may be issued early or served from a cache that its writes do not reach (the graphed
    fp32 decode step read stale activations so, 2026-11-28). Textual order: a load on a path
    that skips the wait counts too."""
    bad, name, waited = [], None, False
    for line in ptx.splitlines():
        if ".entry " in line:
            name, waited = line.split(".entry ")[1].split("(")[0].strip(), False
        elif "griddepcontrol.wait" in line:
            waited = True
        elif waited and "ld.global.nc" in line and name not in bad:
            bad.append(name)
    return bad


def test_nc_loads_after_wait_are_found():
    ptx = """.visible .entry ok(\n ld.global.nc.f32 %f1, [%rd1];\n griddepcontrol.wait;\n ld.global.f32 %f2, [%rd2];
.visible .entry bad(\n griddepcontrol.wait;\n ld.global.nc.v4.u32 {%r1, %r2, %r3, %r4}, [%rd3];
.visible .entry no_wait(\n ld.global.nc.f32 %f3, [%rd4];"""
    assert nc_loads_after_wait(ptx.replace("\\n", "\n")) == ["bad"]


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
def test_every_cu_compiles_for_sm90(tmp_path):
    """Every .cu compiles; and in its PTX (kept from the same compile) no kernel loads
    through the non-coherent path after waiting for the kernel before it (nc_loads_after_wait)."""
    procs = []
    for cu in CU:
        (tmp_path / cu.stem).mkdir()
        procs.append(subprocess.Popen(["nvcc", "-c", "-std=c++17", "-O3", "--use_fast_math",
                                       "-gencode=arch=compute_90,code=sm_90", str(cu), "-o", str(tmp_path / f"{cu.stem}.o"),
                                       "--keep", "--keep-dir", str(tmp_path / cu.stem)],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    waits = 0
    for cu, p in zip(CU, procs):
        out, _ = p.communicate(timeout=900)
        assert p.returncode == 0, f"{cu}:\n{out[-3000:]}"
        assert (tmp_path / f"{cu.stem}.o").stat().st_size > 10_000
        ptx = (tmp_path / cu.stem / f"{cu.stem}.ptx").read_text()
        waits += ptx.count("griddepcontrol.wait")
        assert nc_loads_after_wait(ptx) == [], f"{cu}: ld.global.nc after griddepcontrol.wait"
    assert waits > 0  # the decode and chunked kernels wait: the check above looked at something


def test_every_kernel_folder_has_ref_and_source():
    root = Path(SOURCES[0]).parent
    for op in ("wkv4", "wkv5", "wkv6", "wkv7"):
        assert (root / op / "ref.py").exists() and (root / op / "op.py").exists()
    assert {p.parent.parent.name for p in CU} == {"wkv4", "wkv6", "wkv7"}  # wkv5 runs on the wkv6 kernel


DISPATCH_PROGRAM = r"""
#include <cstdio>
#include "chunked_tc.cuh"
using namespace archbench;
int main() {
  const int codes[] = {0,   1,   2,   3,   10,  12,  13,  20,  21,  22,  23,  30,  31,  32,  33,
                       100, 101, 102, 103, 110, 112, 113, 120, 121, 122, 123, 130, 131, 132, 133,
                       200, 201, 202, 203, 210, 212, 213, 220, 221, 222, 223, 230, 231, 232, 233};
  const long heads[] = {40, 48, 49, 264, 265, 640, 641, 1024, 1025};
  const long split[] = {tc::WKV7_SPLIT_MAX_HEADS, tc::WKV6_SPLIT_MAX_HEADS};
  for (long sp : split)
    for (int dtype = 0; dtype < 4; ++dtype)
      for (long h : heads)
        for (int code : codes) {
          cudaError_t e = tc::dispatch(dtype, h, code, sp, [&](auto f, auto vt, auto g, auto two) {
            std::printf("%ld %d %ld %d %d %d %d %d\n", sp, dtype, h, code, (int)sizeof(typename decltype(f)::type),
                        decltype(vt)::value, decltype(g)::value, decltype(two)::value);
            return cudaSuccess;
          });
          if (e != cudaSuccess) std::printf("%ld %d %ld %d invalid\n", sp, dtype, h, code);
        }
  const int fused[] = {300, 303, 310, 313, 320, 323, 330, 301, 302, 0, 100};
  for (int dtype = 0; dtype < 4; ++dtype)
    for (int code : fused) {
      cudaError_t e = tc::dispatch<true>(dtype, 640, code, tc::WKV7_SPLIT_MAX_HEADS, [&](auto f, auto vt, auto g, auto form) {
        std::printf("fused %d %d %d %d %d %d\n", dtype, code, (int)sizeof(typename decltype(f)::type),
                    decltype(vt)::value, decltype(g)::value, decltype(form)::value);
        return cudaSuccess;
      });
      if (e != cudaSuccess) std::printf("fused %d %d invalid\n", dtype, code);
    }
  const long seg_heads[] = {1, 40, 48, 49, 64, 96, 97, 264, 640, 100000};
  const int seg_chunks[] = {1, 4, 32, 33, 63, 64, 65, 257, 1250, 4096, 65536};
  for (long h : seg_heads)
    for (int n : seg_chunks) {
      const tc::Segments a = tc::segments<true>(h, n), b = tc::segments<false>(h, n);
      std::printf("seg %d %ld %d %d %d %d %d\n", tc::WsLayout<true>::FLOATS, h, n, a.seg, a.bufs, a.length(0),
                  a.length(1));
      std::printf("seg %d %ld %d %d %d %d %d\n", tc::WsLayout<false>::FLOATS, h, n, b.seg, b.bufs, b.length(0),
                  b.length(1));
    }
}
"""


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
def test_chunked_launch_codes_pick_the_measured_defaults(tmp_path):
    """tc::dispatch (chunked_tc.cuh, host code: runs without a GPU) maps every launch code,
    dtype and head count to the kernel it should. By shape: up to the op's head count (B x H
    48 for WKV7, 1024 for WKV6) the two-kernel form (build, then the register state pass) at
    64 state columns a block, above it one kernel with 64 columns and 1 producer group (WKV7:
    the fused form, 3 groups, fp32 1). One
    kernel, block width by shape: 32 columns with 2 groups up to 264 heads, 64 with 1 above;
    fp32 and 16 columns always one group. Two kernels: the width alone (64 unless given).
    The fused form (3, WKV7's dispatch<true> only): 64 columns, 1-3 groups (fp32 1); other
    widths refused. An unknown dtype is an error. The fourth field is
    the form (1, 2, 3)."""
    src, exe = tmp_path / "dispatch.cu", tmp_path / "dispatch"
    src.write_text(DISPATCH_PROGRAM)
    root = Path(SOURCES[0]).parent
    subprocess.run(["nvcc", "-std=c++17", f"-I{root}", str(src), "-o", str(exe)], check=True, timeout=600)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split("\n")
    segs = [[int(x) for x in line.split()[1:]] for line in out if line.startswith("seg ")]
    fused = {tuple(int(x) for x in line.split()[1:3]): line.split()[3:] for line in out if line.startswith("fused ")}
    out = [line for line in out if not line.startswith(("seg ", "fused "))]
    for (dtype, code), result in fused.items():
        size = {0: 4, 1: 2, 2: 2}.get(dtype)
        if code == 100:  # one kernel asked for: not the fused form
            want = ["invalid"] if dtype == 3 else [str(size), "64", "1", "1"]
        elif dtype == 3 or code % 10 in (1, 2):
            want = ["invalid"]
        else:  # 640 heads by shape (code 0) or asked for: fused, 3 groups unless given (fp32: 1)
            want = [str(size), "64", str(code // 10 % 10 or 3) if dtype != 0 else "1", "3"]
        assert result == want, (dtype, code, result)
    assert len(fused) == 4 * 11
    got = {tuple(line.split()[:4]): line.split()[4:] for line in out if line}
    assert {int(k[0]) for k in got} == {48, 1024}
    for (split, dtype, heads, code), result in got.items():
        split, dtype, heads, code = int(split), int(dtype), int(heads), int(code)
        if dtype == 3:
            assert result == ["invalid"]
            continue
        form = code // 100 or (2 if heads <= split else 1)
        size = {0: 4, 1: 2, 2: 2}[dtype]
        if form == 2:  # the state pass's width only (producer groups do not apply)
            tile = code % 10 or 3
            assert result == [str(size), str({1: 16, 2: 32, 3: 64}[tile]), "1", "2"], (split, dtype, heads, code, result)
            continue
        tile = code % 10 or (2 if heads <= 264 else 3)
        groups = code // 10 % 10 or (2 if tile == 2 else 1)
        if dtype == 0 or tile == 1:
            groups = 1
        want = [str(size), str({1: 16, 2: 32, 3: 64}[tile]), str(groups), "1"]
        assert result == want, (split, dtype, heads, code, result)
    assert len(got) == 2 * 4 * 9 * 45
    # tc::segments: the two-kernel form's segments (chunks each: the first, the later ones) and
    # workspace buffers (chunks each, how many), by head count (B x H) and op (WKV7's workspace
    # is the larger, 6464 floats a chunk and head); WKV6 at 49-64 heads: 128 chunks, then 192,
    # or 64 each at 256 chunks or fewer
    assert len(segs) == 2 * 10 * 11 and {s[0] for s in segs} == {6464, 2368}
    for floats, heads, nchunks, seg, bufs, first, later in segs:
        fit = (256 << 20) // 2 // (floats * 4 * heads)
        if floats == 6464:
            want = 64 if heads <= 48 else 128 if heads <= 96 else 32
        elif 48 < heads <= 64 and nchunks <= 256:
            want = 64
        else:
            want = 96 if heads <= 48 else 128
        then = 192 if floats == 2368 and 48 < heads <= 64 and nchunks > 256 else want
        buf, want = max(1, min(fit, max(want, then))), max(1, min(fit, want))
        what = (floats, heads, nchunks, seg, bufs, first, later)
        if buf >= nchunks and want >= nchunks:  # one segment, one buffer
            assert (seg, bufs) == (nchunks, 1), what
        else:  # two buffers within the budget (or a chunk each), built one segment ahead
            assert (seg, bufs) == (min(buf, nchunks), 2), what
            assert (first, later) == (min(want, seg), min(then, seg)), what
            assert bufs * seg * heads * floats * 4 <= (256 << 20) or seg == 1


def _cuda_include() -> Path | None:
    """The CUDA toolkit's include folder (cuda_runtime_api.h), from nvcc's location or CUDA_HOME."""
    import os
    for root in filter(None, [os.environ.get("CUDA_HOME"), shutil.which("nvcc") and str(Path(shutil.which("nvcc")).resolve().parents[1]),
                              "/usr/local/cuda"]):
        for inc in (Path(root) / "include", *Path(root).parent.glob("cuda*/include")):
            if (inc / "cuda_runtime_api.h").exists():
                return inc
    return None


@pytest.mark.skipif(shutil.which("g++") is None or _cuda_include() is None, reason="no g++ or CUDA headers")
def test_binding_compiles_against_torch_headers(tmp_path):
    """kernels/binding.cpp (the torch side of the extension: one broken line there breaks every
    CUDA kernel at its first use on a GPU) passes a C++ syntax check against this torch's
    headers. A CPU build of torch ships ATen's CUDA headers but not the cuBLAS / cuSPARSE /
    cuSOLVER ones they include; the binding uses none of those, so stand-ins declare the few
    names the headers need."""
    import sysconfig

    from torch.utils.cpp_extension import include_paths
    stubs = {
        "cusparse.h": "typedef struct cusparseContext* cusparseHandle_t; typedef int cusparseStatus_t;\n"
                      "const char* cusparseGetErrorString(cusparseStatus_t);",
        "cublas_v2.h": "typedef struct cublasContext* cublasHandle_t; typedef int cublasStatus_t;",
        "cublasLt.h": "typedef struct cublasLtContext* cublasLtHandle_t;",
        "cusolverDn.h": "typedef struct cusolverDnContext* cusolverDnHandle_t;",
        "cusolver_common.h": "typedef int cusolverStatus_t;",
        "c10/cuda/impl/cuda_cmake_macros.h": "",
    }
    for name, text in stubs.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("#pragma once\n" + text + "\n")
    root = Path(SOURCES[0]).parent
    cmd = ["g++", "-fsyntax-only", "-std=c++17", "-DTORCH_EXTENSION_NAME=archbench_check",
           *(f"-I{p}" for p in include_paths()), f"-I{sysconfig.get_paths()['include']}", f"-I{_cuda_include()}",
           f"-I{tmp_path}", f"-I{root}", str(root / "binding.cpp")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
