"""DIAG: the two-kernel form with the builds overlapped on a second stream: segment length and
state-pass exclusivity knobs, against the serial order, one kernel and fla, same run."""
import os, sys
import torch
from archbench.suites.kernel_bench import make_inputs, bench_ms
from archbench.harness.testing import errors
from archbench.kernels.wkv7.op import wkv7_cuda_chunked
from archbench.kernels.wkv6.op import wkv6_cuda_chunked
from archbench.kernels import get_op

print(torch.cuda.get_device_name(), flush=True)
shapes = [(1, 4096, 40), (1, 16384, 40), (1, 65536, 40), (1, 4096, 64), (1, 16384, 64), (8, 4096, 40), (4, 16384, 64)]
configs = [("form1", 1, {}), ("serial", 2, {"ARCHBENCH_SERIAL": "1"}), ("serial-seg1e6", 2, {"ARCHBENCH_SERIAL": "1", "ARCHBENCH_SEG_CHUNKS": "1000000"}),
           ("ovl", 2, {}), ("ovl-seg16", 2, {"ARCHBENCH_SEG_CHUNKS": "16"}), ("ovl-seg64", 2, {"ARCHBENCH_SEG_CHUNKS": "64"}),
           ("ovl-seg128", 2, {"ARCHBENCH_SEG_CHUNKS": "128"}), ("ovl-excl", 2, {"ARCHBENCH_STATE_SMEM": "200000"}),
           ("ovl-seg64-excl", 2, {"ARCHBENCH_SEG_CHUNKS": "64", "ARCHBENCH_STATE_SMEM": "200000"})]
for op in sys.argv[1:] or ("wkv7", "wkv6"):
    fn = wkv7_cuda_chunked if op == "wkv7" else wkv6_cuda_chunked
    fla = get_op(op, "fla")
    for B, T, H in shapes:
        x = make_inputs(op, B, T, H, 64)
        s0 = torch.zeros(B, H, 64, 64, device="cuda")
        y_ref, _ = fn(**x, state=s0.clone(), form=1)
        line = []
        for name, form, env in configs:
            for k in ("ARCHBENCH_SERIAL", "ARCHBENCH_SEG_CHUNKS", "ARCHBENCH_STATE_SMEM"):
                os.environ.pop(k, None)
            os.environ.update(env)
            y, _ = fn(**x, state=s0.clone(), form=form)
            e = errors(y.float(), y_ref.float())["rms_rel"]
            t = bench_ms(lambda: fn(**x, state=s0.clone(), form=form))
            line.append(f"{name} {B*T/t['ms']/1e3:.2f}" + (f"(err {e:.1e})" if e > 1e-6 else ""))
        for k in ("ARCHBENCH_SERIAL", "ARCHBENCH_SEG_CHUNKS", "ARCHBENCH_STATE_SMEM"):
            os.environ.pop(k, None)
        try:
            t = bench_ms(lambda: fla(**x, state=s0.clone(), mode="chunk"))
            line.append(f"fla {B*T/t['ms']/1e3:.2f}")
        except Exception as ex:
            line.append(f"fla failed {type(ex).__name__}")
        print(f"{op} {B}x{T} H={H}:", " | ".join(line), flush=True)
