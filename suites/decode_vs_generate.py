"""Decode at batch 1: our `step`, captured in a CUDA graph, against the library's own
generate path on the same weights (suites/peers.py: transformers `generate` for the
Transformer, mamba_ssm `generate(cg=True)` for Mamba, fla for RWKV-7), with the achieved weight bandwidth next to the device copy
rate measured in the same run.

    python -m archbench.suites.decode_vs_generate --out results/decode [--models pythia-2.8b mamba-2.8b]

Per model: decode tokens/s at batch 1, median over repeats after warm-up (CUDA events),
with min and max,
- ours: `new` greedy steps after a prefill of `prompt` tokens (graph replays, then eager);
- the library's: its generate loop, timed per token by a streamer (suites/peers.py);
and a correctness check beside each speed: our prefill + one step (eager and replayed)
against the library's full forward on the same tokens (a failed check: exit status 1).
Bandwidth: weight bytes (every parameter once, as gpt-fast counts) x tokens/s. Writes
decode_vs_generate.json (rows + environment) under --out and prints a table.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from archbench.harness.env import environment
from archbench.harness.graphs import GraphedStep
from archbench.harness.interface import decode_read_nbytes
from archbench.harness.registry import config_for, make
from archbench.harness.testing import errors
from archbench.suites.peers import library_forward, peer_decode

DEFAULT_MODELS = ["pythia-2.8b", "mamba-2.8b", "rwkv7-2b9"]
FAST_IMPL = {"transformer": "sdpa", "mamba1": "mamba_ssm", "mamba2": "mamba_ssm", "rwkv7": "cuda"}
# our step against the library's full forward (no cache), bf16, random weights: Mamba keeps
# its SSM state in the model dtype in the step path (mamba_ssm's own choice), and that
# rounding over 64 layers gives ~6% RMS; the Transformer's cache holds the same K, V.
CHECK_TOL = {"transformer": 0.05, "mamba1": 0.1, "mamba2": 0.1, "rwkv7": 0.05}


def _cuda_times(fn, warmup: int, repeats: int, before=None) -> list[float]:
    """Seconds per call of fn after warm-up, by CUDA events; `before` runs untimed first."""
    times = []
    for i in range(warmup + repeats):
        if before is not None:
            before()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        if i >= warmup:
            times.append(start.elapsed_time(end) / 1e3)
    return times


def _summary(per_token_s: list[float]) -> dict:
    med = statistics.median(per_token_s)
    return {"decode_tokens_per_s": 1 / med, "decode_tokens_per_s_min": 1 / max(per_token_s),
            "decode_tokens_per_s_max": 1 / min(per_token_s), "ms_per_token": med * 1e3, "repeats": len(per_token_s)}


def bench_model(name: str, prompt: int, new: int, repeats: int, dtype: str, seed: int = 0,
                peers: bool = True) -> list[dict]:
    family, config = config_for(name)
    model = make(family, config, impl=FAST_IMPL[family], dtype=dtype, device="cuda").init_random_(seed)
    weight_bytes = decode_read_nbytes(model)
    tokens = torch.randint(0, config.vocab_size, (1, prompt), generator=torch.Generator().manual_seed(seed)).cuda()

    # ours: prefill, then the graphed step and the eager step from the same state
    state = model.init_state(1, max_len=prompt + new + 1)
    logits, state = model.forward(tokens, state)
    first = logits[:, -1].argmax(-1)
    after_prefill = state.checkpoint()
    graphed = GraphedStep(model, state, first, greedy=True)
    eager_logits, _ = model.step(first, state)
    state.restore(after_prefill)
    graph_logits = graphed(first).clone()
    state.restore(after_prefill)

    def decode_graphed():
        graphed(first)
        for _ in range(new - 1):
            graphed()

    def decode_eager():
        tok = first
        for _ in range(new):
            tok = model.step(tok, state)[0].argmax(-1)

    again = lambda: state.restore(after_prefill)  # noqa: E731
    graph_t = _cuda_times(decode_graphed, 2, repeats, before=again)
    eager_t = _cuda_times(decode_eager, 1, max(1, repeats // 2), before=again)
    unfused_t = None
    if getattr(model, "decode_kernels", None) and model.fused_decode:  # RWKV-4 / 5.2 / 6 / 7: unfused too
        model.fused_decode = False
        state.restore(after_prefill)
        unfused_logits, _ = model.step(first, state)
        state.restore(after_prefill)
        unfused = GraphedStep(model, state, first, greedy=True)
        unfused_t = _cuda_times(lambda: [unfused(first)] + [unfused() for _ in range(new - 1)], 2, repeats,
                                before=again)
        model.fused_decode = True

    # the library's own path on the same weights; its logits check ours (before any speed is reported)
    check = {"graph_vs_eager_rms_rel": errors(graph_logits, eager_logits)["rms_rel"]}
    check["ok"] = check["graph_vs_eager_rms_rel"] < 0.01
    if peers:
        reference = library_forward(model, torch.cat([tokens, first[:, None]], 1))[:, -1]
        check["vs_library_rms_rel"] = errors(eager_logits, reference)["rms_rel"]
        check["ok"] = check["ok"] and check["vs_library_rms_rel"] < CHECK_TOL[family]
    if unfused_t is not None:
        check["fused_vs_unfused_rms_rel"] = errors(eager_logits, unfused_logits)["rms_rel"]
        # the unfused ops round to the model dtype after each op, the fused kernels once
        check["ok"] = check["ok"] and check["fused_vs_unfused_rms_rel"] < CHECK_TOL[family]

    base = {"model": name, "family": family, "dtype": dtype, "batch": 1, "prompt": prompt, "new_tokens": new,
            "weight_bytes": weight_bytes, "check": check}
    rows = [{**base, "path": "archbench step, CUDA graph", **_summary([t / new for t in graph_t])},
            {**base, "path": "archbench step, eager", **_summary([t / new for t in eager_t])}]
    if unfused_t is not None:
        rows.append({**base, "path": "archbench step unfused, CUDA graph", **_summary([t / new for t in unfused_t])})
    if peers:
        peer = peer_decode(model, tokens, new, repeats)
        rows.append({**base, "path": peer["peer_path"], "decode_tokens_per_s": peer["peer_decode_tokens_per_s"],
                     "decode_tokens_per_s_min": peer["peer_decode_tokens_per_s_min"],
                     "decode_tokens_per_s_max": peer["peer_decode_tokens_per_s_max"],
                     "ms_per_token": 1e3 / peer["peer_decode_tokens_per_s"], "repeats": repeats})
    for row in rows:
        row["achieved_bytes_per_s"] = weight_bytes * row["decode_tokens_per_s"]
        row["vs_library"] = row["decode_tokens_per_s"] / rows[-1]["decode_tokens_per_s"] if peers else None
    return rows


def table(rows: list[dict], copy_rate: float) -> str:
    lines = [f"device copy rate (read + write): {copy_rate / 1e12:.2f} TB/s",
             "| model | path | decode tok/s (min-max) | ms/token | weights GB | achieved TB/s | of copy rate "
             "| vs library | check |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        tok_s, lo, hi = r["decode_tokens_per_s"], r["decode_tokens_per_s_min"], r["decode_tokens_per_s_max"]
        achieved = r["achieved_bytes_per_s"]
        cells = [r["model"], r["path"], f"{tok_s:.1f} ({lo:.1f}-{hi:.1f})", f"{r['ms_per_token']:.2f}",
                 f"{r['weight_bytes'] / 1e9:.2f}", f"{achieved / 1e12:.2f}", f"{achieved / copy_rate:.0%}",
                 "-" if r["vs_library"] is None else f"{r['vs_library']:.2f}x", "ok" if r["check"]["ok"] else f"FAIL {r['check']}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    p.add_argument("--prompt", type=int, default=512, help="prompt tokens before decoding")
    p.add_argument("--new", type=int, default=64, help="tokens decoded per measurement")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--out", default="results/decode_vs_generate")
    p.add_argument("--no-peers", action="store_true",
                   help="skip the libraries' own paths (their generate and the logits check against their forward)")
    args = p.parse_args(argv)
    from archbench.suites.kernel_bench import copy_bandwidth
    copy_rate = copy_bandwidth()
    rows = []
    for name in args.models:
        rows += bench_model(name, args.prompt, args.new, args.repeats, args.dtype, peers=not args.no_peers)
        torch.cuda.empty_cache()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"environment": environment("cuda"), "copy_bytes_per_s": copy_rate, "args": vars(args), "rows": rows}
    (out / "decode_vs_generate.json").write_text(json.dumps(record, indent=1, default=str))
    print(table(rows, copy_rate))
    return 0 if all(r["check"]["ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
