"""How much reusing a shared context's state saves on a multiple-choice task: the same
requests scored with reuse on and off, medians of repeated runs, after a warm-up.

    python -m archbench.suites.lm_eval_reuse_bench --model rwkv7-2b9 --dtype bfloat16 --device cuda
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from lm_eval.api.instance import Instance

from archbench.harness.env import environment
from archbench.suites.lm_eval_adapter import ArchbenchLM


def requests(n_questions: int, context_tokens: int, choices: int = 4, seed: int = 0) -> list[Instance]:
    """Questions of about context_tokens bytes-tokens, each with `choices` short answers."""
    g = torch.Generator().manual_seed(seed)
    words = ["alpha", "beta", "gamma", "delta", "river", "stone", "light", "north", "quiet", "amber"]
    out = []
    for q in range(n_questions):
        body = " ".join(words[int(i)] for i in torch.randint(0, len(words), (context_tokens // 6,), generator=g))
        context = f"{body}\nQuestion {q}: which word came first? Answer:"
        out += [Instance("loglikelihood", {}, (context, f" {w}"), len(out)) for w in words[:choices]]
    return out


def run(model: str, dtype: str, device: str, n_questions: int, context_tokens: int, repeats: int,
        batch_size: int = 1) -> dict:
    reqs = requests(n_questions, context_tokens)
    row = dict(model=model, dtype=dtype, device=device, questions=n_questions, choices=4, batch_size=batch_size,
               context_tokens=context_tokens, env=environment(device))
    for reuse in (True, False):
        lm = ArchbenchLM(model=model, dtype=dtype, device=device, reuse_state=reuse, max_length=context_tokens * 2,
                         batch_size=batch_size)
        row["continuation_tokens"] = statistics.mean(len(lm.tok_encode(r.args[1])) for r in reqs)
        lm.loglikelihood(reqs[:4], disable_tqdm=True)  # warm-up
        times = []
        for _ in range(repeats):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            lm.loglikelihood(reqs, disable_tqdm=True)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        key = "reuse" if reuse else "no_reuse"
        row[f"{key}_s"], row[f"{key}_min_s"], row[f"{key}_max_s"] = statistics.median(times), min(times), max(times)
    row["speedup"] = row["no_reuse_s"] / row["reuse_s"]
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="rwkv7-tiny")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--questions", type=int, default=4)
    p.add_argument("--context-tokens", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=1, help="requests per forward, both ways (lm-eval's batch_size)")
    p.add_argument("--out", help="append the row (with the environment) to OUT/reuse.jsonl")
    args = p.parse_args(argv)
    row = run(args.model, args.dtype, args.device, args.questions, args.context_tokens, args.repeats, args.batch_size)
    print(json.dumps({k: v for k, v in row.items() if k != "env"}, indent=1))
    if args.out:
        path = Path(args.out) / "reuse.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"appended to {path}")


if __name__ == "__main__":
    main()
