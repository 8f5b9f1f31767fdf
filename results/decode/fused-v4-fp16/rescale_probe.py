"""RWKV-6 at the 3B width, 7 layers, random weights: is the fused fp16 step's distance from fp32
the model's rescaling (halve the residual after layer 5, scale layer 6's projections) or depth?
The same comparison with the rescaling on and off (fp16_rescale_every = 0 for both forms), and
fused against unfused in fp32.

    python results/decode/fused-v4-fp16/rescale_probe.py [LAYERS]
"""
import sys

from check_fp16 import logits_after  # this folder's

from archbench.harness.registry import config_for, family_class
from archbench.harness.testing import errors


fam, cfg = config_for("rwkv6-3b")
layers = int(sys.argv[1]) if len(sys.argv) > 1 else 7
m = family_class(fam)(type(cfg)(**{**cfg.__dict__, "n_layer": layers}), impl="cuda").init_random_(0).cuda().eval()
ref = logits_after(m, False)
print(f"{layers} layers fp32: fused against unfused {errors(logits_after(m, True), ref)['rms_rel']:.3e}", flush=True)
m.cast("float16")
for every in (6, 0):
    m.fp16_rescale_every = every
    u, f = logits_after(m, False), logits_after(m, True)
    print(f"{layers} layers fp16, rescale every {every or 'never'}: against fp32 unfused: unfused "
          f"{errors(u, ref)['rms_rel']:.3e}, fused {errors(f, ref)['rms_rel']:.3e}; fused against unfused "
          f"{errors(f, u)['rms_rel']:.3e}", flush=True)
