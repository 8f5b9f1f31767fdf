"""Eager RWKV-7 2.9B decode steps (bf16, batch 1, random weights, our fused step) for a
profiler to pick kernels from: run under ncu, e.g.

    ncu -k regex:tmix7_decode --launch-skip 64 --launch-count 2 --cache-control none \
        --section SpeedOfLight --section WarpStateStats --section SourceCounters \
        python results/decode/rwkv7-tmix/profile_step.py
"""
import torch

from archbench.harness.registry import config_for, make

torch.manual_seed(0)
fam, cfg = config_for("rwkv7-2b9")
m = make(fam, cfg, impl="cuda", dtype="bfloat16", device="cuda")
with torch.no_grad():
    for n, p in m.named_parameters():
        if p.dim() == 2 and "emb" not in n:
            p.normal_(0, p.shape[1] ** -0.5)
        elif "emb" in n:
            p.normal_()
        elif n.endswith(("ln0.weight", "ln1.weight", "ln2.weight", "ln_out.weight", "ln_x.weight")):
            p.fill_(1)
        else:
            p.uniform_(-0.5, 0.5)
tok = torch.ones(1, dtype=torch.long, device="cuda")
st = m.init_state(1)
for _ in range(4):
    m.step(tok, st)
torch.cuda.synchronize()
print("done", flush=True)
