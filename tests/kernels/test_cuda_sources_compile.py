"""Every .cu compiles with nvcc for sm_90, also on a machine without a GPU (CI)."""
import shutil
import subprocess
from pathlib import Path

import pytest

from archbench.kernels.build import SOURCES

CU = [s for s in SOURCES if s.suffix == ".cu"]


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
def test_every_cu_compiles_for_sm90(tmp_path):
    procs = [subprocess.Popen(["nvcc", "-c", "-std=c++17", "-O3", "--use_fast_math",
                               "-gencode=arch=compute_90,code=sm_90", str(cu), "-o", str(tmp_path / f"{cu.stem}.o")],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for cu in CU]
    for cu, p in zip(CU, procs):
        out, _ = p.communicate(timeout=900)
        assert p.returncode == 0, f"{cu}:\n{out[-3000:]}"
        assert (tmp_path / f"{cu.stem}.o").stat().st_size > 10_000


def test_every_kernel_folder_has_ref_and_source():
    root = Path(SOURCES[0]).parent
    for op in ("wkv4", "wkv5", "wkv6", "wkv7"):
        assert (root / op / "ref.py").exists() and (root / op / "op.py").exists()
    assert {p.parent.parent.name for p in CU} == {"wkv4", "wkv6", "wkv7"}  # wkv5 runs on the wkv6 kernel
