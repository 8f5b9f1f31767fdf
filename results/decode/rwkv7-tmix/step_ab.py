"""RWKV-7 2.9B fused decode step (bf16, batch 1, random weights, graphed), the extension built
with each given set of compile-time defines, in one process, forms alternated over rounds of
7 x 50 replays; each form's first-step logits against the first form's; the floor from the
copy rate measured in the same run.

    python results/decode/rwkv7-tmix/step_ab.py "" "ARCHBENCH_TMIX_GROUPS=4" ...   ("": no defines)
"""
import os
import statistics
import subprocess
import sys
import time

import torch

from archbench.harness.graphs import GraphedStep
from archbench.harness.registry import config_for, make
from archbench.kernels import build
from archbench.kernels.wkv7 import decode
from archbench.suites.kernel_bench import copy_bandwidth


def model_2b9():
    """RWKV-7 at the 2.9B shape on the GPU, bf16, random weights (scaled by fan-in, norms at 1)."""
    torch.manual_seed(0)
    fam, cfg = config_for("rwkv7-2b9")
    m = make(fam, cfg, impl="cuda", dtype="bfloat16", device="cuda")
    with torch.no_grad():
        for n, p in m.named_parameters():
            if p.dim() == 2 and "emb" not in n:
                p.normal_(0, p.shape[1] ** -0.5)
            elif "emb" in n:
                p.normal_()
            elif n.endswith(("ln0.weight", "ln1.weight", "ln2.weight", "ln_out.weight", "ln_x.weight")):
                p.fill_(1)
            else:
                p.uniform_(-0.5, 0.5)
    return m


def main(variants):
    t0 = time.time()
    procs = [subprocess.Popen([sys.executable, "-c", "from archbench.kernels.build import extension; extension()"],
                              env={**os.environ, "ARCHBENCH_CUDA_DEFINES": v}) for v in variants]
    for p in procs:
        p.wait()
    EXT = {}
    for v in variants:
        os.environ["ARCHBENCH_CUDA_DEFINES"] = v
        EXT[v or "(no defines)"] = build.extension.__wrapped__()
    os.environ.pop("ARCHBENCH_CUDA_DEFINES", None)
    print(f"built {len(EXT)} extensions in {time.time() - t0:.0f} s", flush=True)

    m = model_2b9()
    weight_bytes = sum(p.numel() * p.element_size() for n, p in m.named_parameters() if "emb" not in n)
    bw = copy_bandwidth()
    floor = bw / weight_bytes
    print(f"{torch.cuda.get_device_name()}: copy rate {bw / 1e12:.2f} TB/s, weights read per step {weight_bytes / 1e9:.2f} GB,"
          f" floor {floor:.1f} tok/s", flush=True)
    tok = torch.ones(1, dtype=torch.long, device="cuda")

    ref = None
    for v, ext in EXT.items():
        decode.extension = lambda ext=ext: ext
        logits = m.step(tok, m.init_state(1))[0].float()
        ref = logits if ref is None else ref
        print(f"first-step logits, {v} against {variants[0] or '(no defines)'}: max abs diff {(logits - ref).abs().max().item():.3e}", flush=True)

    steps = {}
    for rnd in range(3):
        for v, ext in EXT.items():
            decode.extension = lambda ext=ext: ext
            st = m.init_state(1)
            for _ in range(3):
                m.step(tok, st)
            g = GraphedStep(m, st, tok)
            for _ in range(20):
                g()
            torch.cuda.synchronize()
            ts = []
            for _ in range(7):
                t = time.perf_counter()
                for _ in range(50):
                    g()
                torch.cuda.synchronize()
                ts.append((time.perf_counter() - t) / 50)
            del g
            steps.setdefault(v, []).extend(ts)
            med = statistics.median(ts)
            print(f"round {rnd} {v:28s}: step {med * 1e3:.3f} ms (min {min(ts) * 1e3:.3f}, max {max(ts) * 1e3:.3f}) = "
                  f"{1 / med:.1f} tok/s, {100 / med / floor:.1f}% of the floor", flush=True)
    print("SUMMARY " + "; ".join(f"{v}: {statistics.median(t) * 1e3:.3f} ms, {1 / statistics.median(t):.1f} tok/s "
                                 f"({100 / statistics.median(t) / floor:.1f}%)" for v, t in steps.items()), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
