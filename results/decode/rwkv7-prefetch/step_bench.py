"""RWKV-7 2.9B graphed decode step, batch 1, with the L2 prefetch of kernels/wkv7/decode.py
off and on (at several PREFETCH_BYTES), in the same process on the same weights.

Each setting is captured once as a CUDA graph; the settings are then timed in turns (so
clock and thermal drift fall on all of them alike): one sample = 50 replays between two CUDA
events after 10 warm-up replays, ROUNDS samples per setting. Prints median ms per step,
p20-p80, tok/s and the fraction of the weight-read floor (weights / copy rate measured in
the same run), and checks that every setting gives the same logits bit for bit.

    python results/decode/rwkv7-prefetch/step_bench.py [--out DIR]
"""
import argparse
import json
import statistics
import sys

import torch

from archbench.harness.env import environment
from archbench.harness.graphs import GraphedStep
from archbench.harness.registry import build
from archbench.kernels.wkv7 import decode

ROUNDS, REPLAYS = 15, 50


def copy_rate() -> float:
    """Bytes read + written per second by a device-to-device copy of 1 GiB (median of 10)."""
    a = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    times = []
    for _ in range(12):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        b.copy_(a)
        e1.record()
        torch.cuda.synchronize()
        times.append(e0.elapsed_time(e1) / 1e3)
    return 2 * a.numel() / statistics.median(times[2:])


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=None, help="a folder for step_bench.jsonl")
    p.add_argument("--model", default="rwkv7-2b9")
    args = p.parse_args()
    model = build(args.model, impl="cuda", dtype="bfloat16", device="cuda")
    weights = sum(t.numel() * t.element_size() for t in model.parameters())
    rate = copy_rate()
    floor = rate / weights
    tok = torch.ones(1, dtype=torch.long, device="cuda")
    settings = [("off", False, 0)] + [(f"on {mb} MB", True, mb << 20) for mb in (8, 16, 32)]
    graphs, logits = {}, {}
    for name, on, nbytes in settings:
        decode.PREFETCH, decode.PREFETCH_BYTES = on, nbytes or decode.PREFETCH_BYTES
        state = model.init_state(1)
        model.step(tok, state)
        graphs[name] = (GraphedStep(model, state, tok), state)
        st = graphs[name][1]
        saved = st.checkpoint()
        logits[name] = graphs[name][0](tok).clone()
        st.restore(saved)
    same = all(torch.equal(logits["off"], v) for v in logits.values())
    samples = {name: [] for name, _, _ in settings}
    for _ in range(ROUNDS):
        for name, _, _ in settings:
            g = graphs[name][0]
            for _ in range(10):
                g()
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record()
            for _ in range(REPLAYS):
                g()
            e1.record()
            torch.cuda.synchronize()
            samples[name].append(e0.elapsed_time(e1) / REPLAYS)
    env = environment("cuda")
    rows = []
    print(f"{args.model}: weights {weights / 1e9:.2f} GB, copy rate {rate / 1e12:.2f} TB/s, floor {floor:.1f} tok/s; "
          f"logits identical across settings: {same}")
    for name, on, nbytes in settings:
        ms = sorted(samples[name])
        med = statistics.median(ms)
        q = statistics.quantiles(ms, n=5)
        row = dict(model=args.model, setting=name, prefetch=on, prefetch_bytes=nbytes, ms_per_step=med,
                   ms_p20=q[0], ms_p80=q[-1], tokens_per_s=1e3 / med, floor_tokens_per_s=floor,
                   fraction_of_floor=1e3 / med / floor, copy_rate_bytes_per_s=rate, logits_identical=same, env=env)
        rows.append(row)
        print(f"  {name:>10}: {med:.3f} ms (p20-p80 {q[0]:.3f}-{q[-1]:.3f}) = {1e3 / med:.1f} tok/s, "
              f"{100e3 / med / floor:.1f}% of the floor")
    if args.out:
        from pathlib import Path
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        with (out / "step_bench.jsonl").open("a") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
