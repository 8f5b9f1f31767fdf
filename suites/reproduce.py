"""Rebuild the article's comparison tables (shared/seed) from recorded measurements.

For every row of the article's speed, memory, quality and complexity tables: the
article's figure, ours, the ratio, and the hardware each came from. Rows we have no
measurement for say what is missing and how to get it, instead of failing.

    report = build_report(sweep_records, quality={"RWKV-7 Goose": "ckpt.pth"}, ppl_records=[...])
    Path("results/reproduce/seed.md").write_text(report)
"""
from __future__ import annotations

import math
from collections import defaultdict

from archbench.suites.seed_article import ARTICLE_DECODE_TOKENS_PER_S, ARTICLE_HARDWARE, ARTICLE_MEMORY_GB

# Quality table of the article: model -> (params, Pile val ppl, LAMBADA acc %, HellaSwag acc %)
ARTICLE_QUALITY = {
    "RWKV-4": ("7B", 8.28, 67.2, 52.5), "RWKV-5 Eagle": ("7B", 8.15, 68.1, 53.2),
    "RWKV-6 Finch": ("7B", 8.05, 69.0, 54.1), "RWKV-7 Goose": ("2.9B", 9.60, 65.8, 51.0),
    "Pythia (Transformer)": ("6.9B", 8.25, 67.1, 52.0), "LLaMA-like": ("7B", 7.95, 73.0, 56.4),
    "Mamba": ("2.8B", 9.80, 64.9, 50.3),
}

# The article's complexity claims, as log-log slopes against context length T.
ARTICLE_COMPLEXITY = {
    # family: (prefill time, decode time per token, inference memory)
    "rwkv": (1, 0, 0), "mamba": (1, 0, 0), "transformer": (2, 1, 1),
}


def family_kind(family: str) -> str:
    return "rwkv" if family.startswith("rwkv") else "mamba" if family.startswith("mamba") else "transformer"


def loglog_slope(xs, ys) -> float | None:
    """Least-squares slope of log y against log x (None with fewer than two points)."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y and y > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx if sxx else None


def fit_slopes(records: list[dict], tail: int = 3) -> dict[str, dict[str, float | None]]:
    """Per model: slopes of prefill time, decode time per token and memory against context,
    over the `tail` longest contexts measured (where the asymptotic term dominates)."""
    by_model = defaultdict(list)
    for r in records:
        if r.get("status") == "ok" and r.get("batch", 1) == 1:
            by_model[r["model"]].append(r)
    out = {}
    for model, rs in by_model.items():
        rs = sorted(rs, key=lambda r: r["context"])[-tail:]
        ctx = [r["context"] for r in rs]
        memory = [r.get("peak_allocated_bytes") or r.get("state_nbytes") for r in rs]
        weights = rs[0].get("weight_nbytes", 0) if rs[0].get("peak_allocated_bytes") else 0
        out[model] = {
            "family": rs[0].get("family", model),
            "prefill_time": loglog_slope(ctx, [r.get("prefill_s") for r in rs]),
            "decode_time_per_token": loglog_slope(ctx, [r.get("decode_s_per_token") for r in rs]),
            # memory beyond the weights: the state or KV cache (and activations)
            "memory": loglog_slope(ctx, [m - weights if m else None for m in memory]),
        }
    return out


def _fmt(v, digits=2):
    return "-" if v is None or v == "" else (f"{v:,.{digits}f}" if isinstance(v, float) else str(v))


def _cell(records, model, context):
    return next((r for r in records if r["model"] == model and r["context"] == context and r.get("batch", 1) == 1), None)


def speed_section(records: list[dict]) -> str:
    rows = ["| model | context | article decode tok/s | ours decode tok/s | ours / article | ours: hardware |",
            "|---|---|---|---|---|---|"]
    for model, figures in ARTICLE_DECODE_TOKENS_PER_S.items():
        for ctx, theirs in figures.items():
            r = _cell(records, model, ctx)
            if r is None:
                ours, ratio, hw = f"not measured: `archbench sweep --preset seed-speed` ({model})", "-", "-"
            elif r["status"] != "ok":
                ours, ratio, hw = r["status"], "-", r.get("env", {}).get("gpu", r.get("device"))
            else:
                ours = r["decode_tokens_per_s"]
                ratio = _fmt(ours / theirs) if isinstance(theirs, (int, float)) else "-"
                hw = r.get("env", {}).get("gpu") or r.get("device")
                ours = _fmt(ours, 1)
            rows.append(f"| {model} | {ctx:,} | {theirs} | {ours} | {ratio} | {hw} |")
    return "\n".join(rows)


def memory_section(records: list[dict]) -> str:
    rows = ["| model | context | article GB | ours peak GiB | ours state/KV GiB | ours: hardware |", "|---|---|---|---|---|---|"]
    for model, figures in ARTICLE_MEMORY_GB.items():
        for ctx, theirs in figures.items():
            r = _cell(records, model, ctx)
            if r is None:
                rows.append(f"| {model} | {ctx:,} | {theirs} | not measured: `archbench sweep --preset seed-memory` | - | - |")
                continue
            peak = r.get("peak_allocated_bytes")
            rows.append(f"| {model} | {ctx:,} | {theirs} | {_fmt(peak / 2**30) if peak else r['status']} | "
                        f"{_fmt(r['state_nbytes'] / 2**30, 3) if r.get('state_nbytes') else '-'} | "
                        f"{r.get('env', {}).get('gpu') or r.get('device')} |")
    return "\n".join(rows)


def quality_section(checkpoints: dict[str, str], ppl: dict[str, float], evals: dict[str, dict]) -> str:
    rows = ["| model | article params | article Pile ppl | ours | article LAMBADA % | ours | article HellaSwag % | ours |",
            "|---|---|---|---|---|---|---|---|"]
    for model, (params, pile, lambada, hella) in ARTICLE_QUALITY.items():
        if model not in checkpoints:
            rows.append(f"| {model} | {params} | {pile} | no checkpoint: pass `--checkpoint \"{model}=PATH\"` "
                        f"| {lambada} | - | {hella} | - |")
            continue
        e = evals.get(model, {})
        rows.append(f"| {model} | {params} | {pile} | {_fmt(ppl.get(model))} | {lambada} | {_fmt(e.get('lambada'))} "
                    f"| {hella} | {_fmt(e.get('hellaswag'))} |")
    return "\n".join(rows)


def complexity_section(slopes: dict) -> str:
    rows = ["| model | family | prefill time slope (article) | decode time/token slope (article) | memory slope (article) |",
            "|---|---|---|---|---|"]
    for model, s in sorted(slopes.items()):
        claims = ARTICLE_COMPLEXITY[family_kind(s["family"])]
        rows.append(f"| {model} | {s['family']} | {_fmt(s['prefill_time'])} ({claims[0]}) | "
                    f"{_fmt(s['decode_time_per_token'])} ({claims[1]}) | {_fmt(s['memory'])} ({claims[2]}) |")
    return "\n".join(rows)


def build_report(records: list[dict], checkpoints: dict[str, str] | None = None, ppl: dict | None = None,
                 evals: dict | None = None, only: set[str] | None = None) -> str:
    only = only or {"speed", "memory", "quality", "complexity"}
    parts = ["# The article's tables, measured", "",
             f"Article figures: {ARTICLE_HARDWARE}. Ours: the hardware named in each row, from recorded results.", ""]
    if "speed" in only:
        parts += ["## Tokens/s against context length", "", speed_section(records), ""]
    if "memory" in only:
        parts += ["## Memory against context length", "", memory_section(records), ""]
    if "quality" in only:
        parts += ["## Quality", "", quality_section(checkpoints or {}, ppl or {}, evals or {}), ""]
    if "complexity" in only:
        parts += ["## Complexity: log-log slopes against context length (the article's O() exponent in brackets)", "",
                  complexity_section(fit_slopes(records)), ""]
    return "\n".join(parts)
