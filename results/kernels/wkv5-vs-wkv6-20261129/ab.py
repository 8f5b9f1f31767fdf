"""Issue 3's "WKV4 and WKV5 at least as fast per token as WKV6", measured in turns: at each
shape of the kernel benchmark (H = 40 and 64, N = 64, bf16) our WKV6, WKV5 and WKV4 prefill
("ours": the kernel each dispatches to by shape) are timed alternately over ROUNDS rounds,
each a graphed replay (`bench_graphed_ms`: 20 calls captured, median of 10 replays), so that
clock and thermal drift fall on all three alike. Prints per shape the median of the rounds'
Mtok/s, their range, and WKV5 / WKV6 and WKV4 / WKV6.

    python results/kernels/wkv5-vs-wkv6-20261129/ab.py [ROUNDS]
"""
import json
import statistics
import sys

import torch

from archbench.harness.env import environment
from archbench.suites.kernel_bench import backends, bench_graphed_ms, make_inputs, spin_up, state_for

SHAPES = {40: [(1, 4096), (1, 16384), (1, 65536), (8, 4096), (16, 16384)],
          64: [(1, 4096), (1, 16384), (8, 4096), (16, 16384)]}
OPS = ("wkv6", "wkv5", "wkv4")


def main(rounds=5):
    spin_up()
    print(json.dumps({k: environment("cuda").get(k) for k in ("gpu", "driver", "torch", "git_sha", "git_dirty")}))
    rows = []
    for H, shapes in SHAPES.items():
        for B, T in shapes:
            ins = {op: (make_inputs(op, B, T, H, 64), state_for(op, B, H, 64)) for op in OPS}
            fns = {op: backends(op)["ours"] for op in OPS}
            mtok = {op: [] for op in OPS}
            for _ in range(rounds):
                for op in OPS:
                    x, s = ins[op]
                    mtok[op].append(B * T / bench_graphed_ms(lambda: fns[op](x, s))["ms"] / 1e3)
            med = {op: statistics.median(v) for op, v in mtok.items()}
            row = dict(H=H, B=B, T=T, **{f"{op}_mtok_s": med[op] for op in OPS},
                       **{f"{op}_range": [min(v), max(v)] for op, v in mtok.items()},
                       wkv5_over_wkv6=med["wkv5"] / med["wkv6"], wkv4_over_wkv6=med["wkv4"] / med["wkv6"])
            rows.append(row)
            print(f"H={H} {B}x{T}: " + ", ".join(f"{op} {med[op]:6.2f} ({min(v):.2f}-{max(v):.2f})"
                                                  for op, v in mtok.items())
                  + f"; wkv5/wkv6 {row['wkv5_over_wkv6']:.3f}, wkv4/wkv6 {row['wkv4_over_wkv6']:.2f}", flush=True)
            del ins
            torch.cuda.empty_cache()
    print("JSON " + json.dumps(rows))


if __name__ == "__main__":
    main(*map(int, sys.argv[1:]))
