"""The open fp16 case on the CPU: RWKV-6 at the 3B width, 7 layers, random weights, the fused
step's maths run by the PyTorch stand-ins of tests/models/test_fused_decode_cpu.py (fp32 inside
each kernel, one rounding out: the kernels' contracts) instead of the CUDA kernels. If the
stand-ins land as far from fp32 as the GPU's fused step did (6.2e-2 against the unfused 1.7e-2,
call5-check_fp16_rwkv6_4_7.log), the distance comes from where the fused maths rounds, not
from a kernel; then each rounding point can be tried here.

    python results/decode/fused-v4-fp16/cpu_probe.py [LAYERS...]
    python results/decode/fused-v4-fp16/cpu_probe.py --rescale   # 7 layers, rescaling every 6 / never / 3
"""
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests" / "models"))
from test_fused_decode_cpu import StandIns  # noqa: E402

from archbench.harness.registry import config_for, family_class  # noqa: E402
from archbench.harness.testing import errors  # noqa: E402
from archbench.kernels.wkv6 import decode as decode6  # noqa: E402
from archbench.kernels.wkv7 import decode as decode7  # noqa: E402

decode7.extension = lambda: StandIns


def logits_after(m, fused, start, steps=4):
    st = m.init_state(1)
    tok = torch.tensor([start])
    with torch.no_grad():
        for _ in range(steps):
            logits = (decode6.decode_step(m, tok, st) if fused else m.step(tok, st)[0]).float()
            tok = (tok + 7) % 1000
    return logits


fam, cfg = config_for("rwkv6-3b")
if sys.argv[1:] == ["--rescale"]:  # the same weights and tokens with the fp16 rescaling at other periods
    m = family_class(fam)(type(cfg)(**{**cfg.__dict__, "n_layer": 7}), impl="ref").init_random_(0).eval()
    ref = logits_after(m, False, 1)
    m.cast("float16")
    for every in (6, 0, 3):
        m.fp16_rescale_every = every
        u, f = (errors(logits_after(m, fused, 1), ref)["rms_rel"] for fused in (False, True))
        print(f"7 layers, rescaling every {every or 'never'}: fp16 against fp32: unfused {u:.3e}, stand-ins {f:.3e}",
              flush=True)
    sys.exit()
for layers in [int(a) for a in sys.argv[1:]] or [4, 7]:
    t0, res = time.time(), []
    for seed in (0, 1):
        m = family_class(fam)(type(cfg)(**{**cfg.__dict__, "n_layer": layers}), impl="ref").init_random_(seed).eval()
        starts = (1, 100, 200, 300)
        refs = [logits_after(m, False, s) for s in starts]
        assert all(torch.equal(logits_after(m, True, s), r) for s, r in zip(starts, refs))  # fp32: the same bits
        m.cast("float16")
        for s, ref in zip(starts, refs):
            u, f = (errors(logits_after(m, fused, s), ref)["rms_rel"] for fused in (False, True))
            res.append((u, f))
            print(f"{layers} layers, weights seed {seed}, first token {s}: fp16 against fp32: unfused {u:.3e}, "
                  f"stand-ins {f:.3e}", flush=True)
    print(f"{layers} layers, median of {len(res)}: unfused {statistics.median(r[0] for r in res):.3e}, stand-ins "
          f"{statistics.median(r[1] for r in res):.3e}; the stand-ins closer in {sum(r[1] < r[0] for r in res)} "
          f"({time.time() - t0:.0f} s)", flush=True)
