"""WKV7 (ours, bf16, N = 64) at batch-1 / short shapes against the chunks a build block takes
where the two-kernel form's build runs alone (ARCHBENCH_BUILD_CPB_ALONE, read at every call;
unset = the op's choice), graph replays (suites/kernel_bench.bench_graphed_ms), settings
alternated over two rounds, Mtok/s = B x T / time.

    python results/kernels/alone-cpb-20261128/alone_cpb.py          (the op's choice, 2, 4, 6, 16)
    SHORT=1 SETTINGS=,8 python results/kernels/alone-cpb-20261128/alone_cpb.py
"""
import os

import torch

from archbench.suites.kernel_bench import backends, bench_graphed_ms, make_inputs, state_for

ours = backends("wkv7")["ours"]
SETTINGS = os.environ.get("SETTINGS", ",2,4,6,16").split(",")
print(torch.cuda.get_device_name(), flush=True)
SHAPES = ((1, 4096, 40), (1, 16384, 40), (1, 4096, 64), (8, 4096, 40), (1, 1024, 40))
if os.environ.get("SHORT"):  # the shapes where the build runs alone
    SHAPES = ((1, 512, 40), (1, 1024, 40), (1, 2048, 40), (1, 1024, 64), (1, 2048, 64), (4, 1024, 40))
for B, T, H in SHAPES:
    x = make_inputs("wkv7", B, T, H, 64)
    for rnd in range(2):
        line = f"round {rnd} B={B} T={T} H={H}:"
        for cpb in SETTINGS:
            if cpb:
                os.environ["ARCHBENCH_BUILD_CPB_ALONE"] = cpb
            else:
                os.environ.pop("ARCHBENCH_BUILD_CPB_ALONE", None)
            s = state_for("wkv7", B, H, 64)
            r = bench_graphed_ms(lambda: ours(x, s))
            line += f"  {cpb or 'default'} {B * T / r['ms'] / 1e3:6.2f}"
        print(line + "  Mtok/s", flush=True)
os.environ.pop("ARCHBENCH_BUILD_CPB_ALONE", None)
