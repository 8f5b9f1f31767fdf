"""Runs BlinkDL's `rwkv` package (the reference) on checkpoints, in its own process.

The package picks RWKV-7 or v4-v6 at import time (RWKV_V7_ON), so each kind needs a fresh
interpreter. Usage: python oracle_rwkv.py JOBS.json [--v7]
JOBS.json lists {"ckpt": path.pth, "tokens": [...], "out": path.pt, "strategy": optional,
default "cpu fp32"}; each out gets
{"seq": logits of the whole-sequence run (T, V), "steps": token by token (T, V),
"state": the state list after the prompt}.
"""
import json
import os
import sys

if __name__ == "__main__":
    if "--v7" in sys.argv:
        os.environ["RWKV_V7_ON"] = "1"
    import torch
    from rwkv.model import RWKV

    for job in json.load(open(sys.argv[1])):
        ckpt = job["ckpt"] if "--v7" not in sys.argv else job["ckpt"][: -len(".pth")]
        strategy = job.get("strategy", "cpu fp32")
        model = RWKV(ckpt, strategy) if "--v7" in sys.argv else RWKV(ckpt, strategy, verbose=False)
        tokens = job["tokens"]
        seq, state = model.forward(list(tokens), None, full_output=True)
        steps, s = [], None
        for t in tokens:
            logits, s = model.forward([t], s)
            steps.append(logits.float().clone())
        torch.save({"seq": seq.float(), "steps": torch.stack(steps), "state": [x.float() for x in state]}, job["out"])
