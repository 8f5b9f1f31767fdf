"""The environment a result was measured in, stored beside every record."""
from __future__ import annotations

import functools
import os
import platform
import socket
import subprocess
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@functools.lru_cache(maxsize=None)
def environment(device: str = "cpu") -> dict:
    # a copy whose .git is missing or stale (the GPU machine) is told its commit through the
    # environment, and that wins over what git says there
    told = os.environ.get("ARCHBENCH_GIT_SHA")
    sha = None if told else _git("rev-parse", "HEAD")
    env = {
        "git_sha": told or sha,
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")) if sha
        else os.environ.get("ARCHBENCH_GIT_DIRTY") == "1",
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.device(device))
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   cuda=torch.version.cuda, driver=_nvidia_driver())
        try:
            import triton
            env["triton"] = triton.__version__
        except ImportError:
            env["triton"] = None
    return env


def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return None
