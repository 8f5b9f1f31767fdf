"""DIAG 2: segment length / first segment / exclusivity at B=1, each config measured twice (interleaved)."""
import os, sys
import torch
from archbench.suites.kernel_bench import make_inputs, bench_ms
from archbench.kernels.wkv7.op import wkv7_cuda_chunked
from archbench.kernels.wkv6.op import wkv6_cuda_chunked
from archbench.harness.testing import errors

KEYS = ("ARCHBENCH_SERIAL", "ARCHBENCH_SEG_CHUNKS", "ARCHBENCH_STATE_SMEM", "ARCHBENCH_SEG_FIRST")
shapes = [(1, 4096, 40), (1, 16384, 40), (1, 65536, 40), (1, 4096, 64), (1, 16384, 64), (2, 16384, 64), (4, 4096, 40)]
configs = [("serial", {"ARCHBENCH_SERIAL": "1", "ARCHBENCH_SEG_CHUNKS": "1000000"})]
for seg in (32, 48, 64, 96, 128, 192, 256):
    configs.append((f"s{seg}", {"ARCHBENCH_SEG_CHUNKS": str(seg)}))
for seg in (64, 128, 256):
    configs.append((f"s{seg}x", {"ARCHBENCH_SEG_CHUNKS": str(seg), "ARCHBENCH_STATE_SMEM": "200000"}))
for seg, first in ((64, 16), (64, 32), (96, 32), (128, 32), (128, 64)):
    configs.append((f"s{seg}f{first}", {"ARCHBENCH_SEG_CHUNKS": str(seg), "ARCHBENCH_SEG_FIRST": str(first)}))
for op in sys.argv[1:] or ("wkv7", "wkv6"):
    fn = wkv7_cuda_chunked if op == "wkv7" else wkv6_cuda_chunked
    for B, T, H in shapes:
        x = make_inputs(op, B, T, H, 64)
        s0 = torch.zeros(B, H, 64, 64, device="cuda")
        y_ref, _ = fn(**x, state=s0.clone(), form=1)
        res = {}
        for rep in range(2):
            for name, env in configs:
                for k in KEYS:
                    os.environ.pop(k, None)
                os.environ.update(env)
                if rep == 0:
                    y, _ = fn(**x, state=s0.clone(), form=2)
                    assert errors(y.float(), y_ref.float())['rms_rel'] < 5e-3, name
                t = bench_ms(lambda: fn(**x, state=s0.clone(), form=2))
                res.setdefault(name, []).append(B * T / t["ms"] / 1e3)
        for k in KEYS:
            os.environ.pop(k, None)
        best = max(res, key=lambda n: min(res[n]))
        print(f"{op} {B}x{T} H={H}: best {best} |", " ".join(f"{n} {a:.2f}/{b:.2f}" for n, (a, b) in res.items()), flush=True)
