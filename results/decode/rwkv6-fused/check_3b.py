"""The fused RWKV-6 step at the 3B shape (random weights of the harness's `build`) against the
model's own ops. Random 32-layer models amplify rounding differences from step to step, so the
script separates the two: fp32 both ways after 1 and after 4 steps, at 4 layers and at 32;
RWKV-7 2.9B's fused step (tested since 2026-11-27) the same way for scale; and bf16 both ways,
each against the fp32 unfused logits (bf16's own spread beside the two forms' difference).

    python results/decode/rwkv6-fused/check_3b.py
"""
import torch

from archbench.harness.registry import build, config_for, family_class
from archbench.harness.testing import errors


def run(m, fused, steps):
    m.fused_decode = fused
    st = m.init_state(1)
    tok = torch.tensor([1], device="cuda")
    for _ in range(steps):
        logits = m.step(tok, st)[0].float()
        tok = (tok + 7) % 1000  # the same tokens for every form
    return logits


def compare(m, what):
    for steps in (1, 4):
        e = errors(run(m, True, steps), run(m, False, steps))
        print(f"{what}, {steps} step(s): fused against unfused logits rms_rel {e['rms_rel']:.3e} "
              f"max abs {e['max_abs']:.3e}", flush=True)


fam, cfg = config_for("rwkv6-3b")
cfg4 = type(cfg)(**{**cfg.__dict__, "n_layer": 4})
m4 = family_class(fam)(cfg4, impl="cuda").init_random_(0).cuda().eval()
compare(m4, "rwkv6 C=2560 4 layers fp32")
# the same weights on the PyTorch reference ops (impl="ref": no tensor cores in the WKV)
ref4 = family_class(fam)(cfg4, impl="ref").cuda().eval()
ref4.load_state_dict(m4.state_dict())
for steps in (1, 4):
    want = run(ref4, False, steps)
    for fused in (True, False):
        e = errors(run(m4, fused, steps), want)
        print(f"rwkv6 C=2560 4 layers fp32, {steps} step(s): {'fused' if fused else 'unfused'} (cuda) against impl=ref "
              f"logits rms_rel {e['rms_rel']:.3e} max abs {e['max_abs']:.3e}", flush=True)
del m4, ref4
m7 = build("rwkv7-2b9", impl="cuda", dtype="float32", device="cuda")
compare(m7, "rwkv7-2b9 fp32")
del m7
m = build("rwkv6-3b", impl="cuda", dtype="float32", device="cuda")
compare(m, "rwkv6-3b fp32")
ref = run(m, False, 4)
m.cast("bfloat16")
for fused in (False, True):
    e = errors(run(m, fused, 4), ref)
    print(f"rwkv6-3b bf16 {'fused' if fused else 'unfused'} against fp32 unfused, 4 steps: logits rms_rel "
          f"{e['rms_rel']:.3e} max abs {e['max_abs']:.3e}", flush=True)
compare(m, "rwkv6-3b bf16")
