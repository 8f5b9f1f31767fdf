"""Eager RWKV-7 2.9B decode steps (bf16, batch 1, random weights, our fused step) for a
profiler to pick kernels from: run under ncu, e.g.

    ncu -k regex:tmix7_decode --launch-skip 64 --launch-count 2 --cache-control none \
        --section SpeedOfLight --section WarpStateStats --section SourceCounters \
        python results/decode/rwkv7-tmix/profile_step.py
"""
import torch

from step_ab import model_2b9  # this folder's (the script's folder is first on sys.path)

m = model_2b9()
tok = torch.ones(1, dtype=torch.long, device="cuda")
st = m.init_state(1)
for _ in range(4):
    m.step(tok, st)
torch.cuda.synchronize()
print("done", flush=True)
