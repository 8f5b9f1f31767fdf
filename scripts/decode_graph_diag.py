"""Graphed against eager decode steps of a preset, step by step (for the failure of
tests/kernels/test_second_gpu.py::test_graphed_decode_on_second_gpu on an H200 pair).

    python scripts/decode_graph_diag.py --device cuda:1 --dtype float32 [--current 0]

Prints, per step, the largest |graphed - eager| and, when that is large, which eager step the
graphed one is closest to (a state advanced or held back by k steps shows as k)."""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--name", default="rwkv7-tiny")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--current", type=int, default=None, help="torch.cuda.set_device(this) first")
    p.add_argument("--steps", type=int, default=6)
    a = p.parse_args()
    if a.current is not None:
        torch.cuda.set_device(a.current)
    from helpers import graphed_and_eager_steps
    graphed, eager = graphed_and_eager_steps(a.name, a.dtype, a.device, steps=a.steps)
    g, e = graphed.float().cpu(), eager.float().cpu()
    tag = f"{a.name} {a.dtype} on {a.device} (current {torch.cuda.current_device()}, " \
          f"ARCHBENCH_DECODE_PDL={os.environ.get('ARCHBENCH_DECODE_PDL', '')})"
    worst = 0.0
    for t in range(a.steps):
        d = (g[t] - e[t]).abs().max().item()
        worst = max(worst, d)
        near = min(range(a.steps), key=lambda s: (g[t] - e[s]).abs().max().item())
        near_d = (g[t] - e[near]).abs().max().item()
        print(f"{tag} step {t}: max|graphed-eager| {d:.3g}; nearest eager step {near} ({near_d:.3g})")
    print(f"{tag}: {'OK' if worst < 1e-3 else 'DIFFERENT'} (worst {worst:.3g})")


if __name__ == "__main__":
    main()
