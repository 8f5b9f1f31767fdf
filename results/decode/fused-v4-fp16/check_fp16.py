"""The fused steps in fp16 (the model's rescaling folded into the kernels) at the 3B shapes of
RWKV-4, 5.2 and 6, random weights of the harness's `build`: fused and unfused fp16 logits
after 4 steps, each against the unfused fp32 logits of the same weights (fp16's own spread
beside the two forms' difference); at 32 layers and, where random weights amplify rounding
less, at 12 (two halvings of the residual, layers from 6 scaled); or at the layer counts given.

    python results/decode/fused-v4-fp16/check_fp16.py [PRESET...] [LAYERS...]
"""
import sys

import torch

from archbench.harness.registry import config_for, family_class
from archbench.harness.testing import errors


def logits_after(m, fused, steps=4):
    m.fused_decode = fused
    st = m.init_state(1)
    tok = torch.tensor([1], device="cuda")
    for _ in range(steps):
        logits = m.step(tok, st)[0].float()
        tok = (tok + 7) % 1000
    return logits


if __name__ == "__main__":
    presets = [a for a in sys.argv[1:] if not a.isdigit()] or ["rwkv4-3b", "rwkv5-3b", "rwkv6-3b"]
    counts = [int(a) for a in sys.argv[1:] if a.isdigit()]
    for preset in presets:
        fam, cfg = config_for(preset)
        for layers in counts or (12, cfg.n_layer):
            c = type(cfg)(**{**cfg.__dict__, "n_layer": layers})
            m = family_class(fam)(c, impl="cuda").init_random_(0).cuda().eval()
            ref = logits_after(m, False)
            m.cast("float16")
            got = {f: logits_after(m, f) for f in (False, True)}
            e = {f: errors(got[f], ref) for f in got}
            d = errors(got[True], got[False])
            print(f"{preset} {layers} layers fp16 against fp32 unfused: unfused rms_rel {e[False]['rms_rel']:.3e} "
                  f"(max abs {e[False]['max_abs']:.3e}), fused {e[True]['rms_rel']:.3e} ({e[True]['max_abs']:.3e}); "
                  f"fused against unfused {d['rms_rel']:.3e}", flush=True)
            del m
            torch.cuda.empty_cache()
