"""The fused steps in fp16 (the model's rescaling folded into the kernels) at the 3B shapes of
RWKV-4, 5.2 and 6, random weights of the harness's `build`: fused and unfused fp16 logits
after 4 steps, each against the unfused fp32 logits of the same weights (fp16's own spread
beside the two forms' difference); at 32 layers and, where random weights amplify rounding
less, at 12 (two halvings of the residual, layers from 6 scaled); or at the layer counts given.
PRESET:VERSION runs the preset's shape as another RWKV version (rwkv5-3b:5.1); a dtype among
the arguments (bfloat16) replaces fp16.

    python results/decode/fused-v4-fp16/check_fp16.py [PRESET[:VERSION]...] [LAYERS...] [DTYPE]
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
    DTYPES = ("float16", "bfloat16")
    dtype = next((a for a in sys.argv[1:] if a in DTYPES), "float16")
    presets = [a for a in sys.argv[1:] if not a.isdigit() and a not in DTYPES] or ["rwkv4-3b", "rwkv5-3b", "rwkv6-3b"]
    counts = [int(a) for a in sys.argv[1:] if a.isdigit()]
    for preset in presets:
        name, _, version = preset.partition(":")
        fam, cfg = config_for(name)
        for layers in counts or (12, cfg.n_layer):
            c = type(cfg)(**{**cfg.__dict__, "n_layer": layers, **({"version": version} if version else {})})
            m = family_class(fam)(c, impl="cuda").init_random_(0).cuda().eval()
            ref = logits_after(m, False)
            e32 = errors(logits_after(m, True), ref)
            print(f"{preset} {layers} layers fp32 fused against fp32 unfused: rms_rel {e32['rms_rel']:.3e} "
                  f"(max abs {e32['max_abs']:.3e})", flush=True)
            m.cast(dtype)
            got = {f: logits_after(m, f) for f in (False, True)}
            e = {f: errors(got[f], ref) for f in got}
            d = errors(got[True], got[False])
            print(f"{preset} {layers} layers {dtype} against fp32 unfused: unfused rms_rel {e[False]['rms_rel']:.3e} "
                  f"(max abs {e[False]['max_abs']:.3e}), fused {e[True]['rms_rel']:.3e} ({e[True]['max_abs']:.3e}); "
                  f"fused against unfused {d['rms_rel']:.3e}", flush=True)
            del m
            torch.cuda.empty_cache()
