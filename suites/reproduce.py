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

from archbench.harness.interface import recorded_read_nbytes
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
    over the `tail` longest contexts measured (where the asymptotic term dominates), on
    one run and prompt setting per model (`one_setting`: for time the one with the most
    contexts, for memory the one that reached the longest)."""
    by_model = defaultdict(list)
    for r in records:
        if r.get("status") == "ok" and r.get("batch", 1) == 1:
            by_model[r["model"]].append(r)
    out = {}
    for model, rs in by_model.items():
        speed = sorted(one_setting(rs, prefer="most"), key=lambda r: r["context"])[-tail:]
        mem = sorted(one_setting(rs, prefer="longest"), key=lambda r: r["context"])
        # a prompt read in pieces: its activations stop growing at the piece size
        past_piece = [r for r in mem if r["context"] > (r.get("prefill_chunk_used") or 0)]
        mem = (past_piece if len(past_piece) >= 2 else mem)[-tail:]
        ctx, mem_ctx = [r["context"] for r in speed], [r["context"] for r in mem]
        memory = [r.get("peak_allocated_bytes") or r.get("state_nbytes") for r in mem]
        # the weights held (records before param_nbytes: weight_nbytes, which then counted them all;
        # since 2026-11-28 it counts the bytes a decode step reads, without the input embedding)
        weights = mem[0].get("param_nbytes", mem[0].get("weight_nbytes", 0)) if mem[0].get("peak_allocated_bytes") else 0
        out[model] = {
            "family": rs[0].get("family", model),
            "prefill_time": loglog_slope(ctx, [r.get("prefill_s") for r in speed]),
            "decode_time_per_token": loglog_slope(ctx, [r.get("decode_s_per_token") for r in speed]),
            # memory beyond the weights: the state or KV cache (and activations)
            "memory": loglog_slope(mem_ctx, [m - weights if m else None for m in memory]),
        }
    return out


def _fmt(v, digits=2):
    return "-" if v is None or v == "" else (f"{v:,.{digits}f}" if isinstance(v, float) else str(v))


def _gpu(record) -> str:
    return record.get("env", {}).get("gpu") or record.get("device") or "?"


def _code(record: dict) -> str:
    """The code a record was measured with: its git commit, short ("+dirty" for uncommitted
    changes); "-" for records without one. Kernels change between runs: a table that mixes
    runs says which code each row is from."""
    env = record.get("env", {})
    sha = env.get("git_sha") or ""
    return (sha[:7] + ("+dirty" if env.get("git_dirty") else "")) if sha and sha != "unknown" else "-"


def on_main_hardware(records: list[dict]) -> tuple[list[dict], list[dict]]:
    """The records of the machine most of them come from, and the others: one report never
    mixes machines (a cell, a slope or a spread over two GPUs would mean nothing)."""
    counts = defaultdict(int)
    for r in records:
        counts[_gpu(r)] += 1
    if not counts:
        return [], []
    main = max(counts, key=counts.get)
    return [r for r in records if _gpu(r) == main], [r for r in records if _gpu(r) != main]


def _latest(records) -> str:
    """When the newest of these records was measured (`measured_at`, ISO UTC; "" for records
    older than that field): ties between runs go to the later one."""
    return max((r.get("measured_at", "") for r in records), default="")


def _cell(records, model, context, among=None):
    """One model's record at one context (batch 1). A model measured in several runs (a
    rerun with other settings: Mamba with its prompt in pieces) takes its cells from one
    run: the one with the most successful cells among the table's contexts (`among`), the
    later run on a tie (by `measured_at`, then by the order of the runs). Runs are told
    apart by the `_run` key `archbench reproduce` adds."""
    mine = [r for r in records if r["model"] == model and r.get("batch", 1) == 1]
    if among is not None:
        score: dict = {}
        for r in mine:
            score.setdefault(r.get("_run"), 0)
            score[r.get("_run")] += r["context"] in among and r["status"] == "ok"
        if score:
            def rank(i_run):
                i, run = i_run
                return score[run], _latest(r for r in mine if r.get("_run") == run), i
            best = max(enumerate(score), key=rank)[1]
            hit = next((r for r in mine if r.get("_run") == best and r["context"] == context), None)
            if hit is not None:
                return hit
    return next((r for r in mine if r["context"] == context), None)


def speed_section(records: list[dict]) -> str:
    rows = ["| model | context | article decode tok/s | ours decode tok/s | ours / article | ours: hardware | "
            "ours: code |", "|---|---|---|---|---|---|---|"]
    for model, figures in ARTICLE_DECODE_TOKENS_PER_S.items():
        for ctx, theirs in figures.items():
            r = _cell(records, model, ctx, figures)
            if r is None:
                ours, ratio = f"not measured: `archbench sweep --preset seed-speed` ({model})", "-"
            elif r["status"] != "ok":
                ours, ratio = r["status"], "-"
            else:
                ours = r["decode_tokens_per_s"]
                ratio = _fmt(ours / theirs) if isinstance(theirs, (int, float)) else "-"
                ours = _fmt(ours, 1)
            hw, code = (_gpu(r), _code(r)) if r is not None else ("-", "-")
            rows.append(f"| {model} | {ctx:,} | {theirs} | {ours} | {ratio} | {hw} | {code} |")
    return "\n".join(rows)


def memory_section(records: list[dict]) -> str:
    rows = ["| model | context | article GB | ours peak GiB | ours state/KV GiB | ours: hardware | ours: code |",
            "|---|---|---|---|---|---|---|"]
    for model, figures in ARTICLE_MEMORY_GB.items():
        for ctx, theirs in figures.items():
            r = _cell(records, model, ctx, figures)
            if r is None:
                rows.append(f"| {model} | {ctx:,} | {theirs} | not measured: `archbench sweep --preset seed-memory` | - | - "
                            "| - |")
                continue
            peak = r.get("peak_allocated_bytes")
            rows.append(f"| {model} | {ctx:,} | {theirs} | {_fmt(peak / 2**30) if peak else r['status']} | "
                        f"{_fmt(r['state_nbytes'] / 2**30, 3) if r.get('state_nbytes') else '-'} | {_gpu(r)} | "
                        f"{_code(r)} |")
    return "\n".join(rows)


def quality_section(checkpoints: dict[str, str], ppl: dict[str, float], evals: dict[str, dict]) -> str:
    rows = ["| model | article params | article Pile ppl | ours | article LAMBADA % | ours | article HellaSwag % | ours |",
            "|---|---|---|---|---|---|---|---|"]
    for model, (params, pile, lambada, hella) in ARTICLE_QUALITY.items():
        if model not in checkpoints:
            rows.append(f"| {model} | {params} | {pile} | no checkpoint: pass `--checkpoint \"{model}=PATH\"` "
                        f"| {lambada} | - | {hella} | - |")
            continue
        e, path = evals.get(model, {}), checkpoints[model]
        todo_ppl = f"run `archbench ppl --model {path} --data PILE_VAL.jsonl`, pass `--ppl RUN`"
        todo_eval = f"run `archbench eval --model {path} --tasks lambada_openai,hellaswag`, pass `--eval RUN`"
        rows.append(f"| {model} | {params} | {pile} | {_fmt(ppl.get(model)) if model in ppl else todo_ppl} | {lambada} "
                    f"| {_fmt(e['lambada']) if 'lambada' in e else todo_eval} | {hella} "
                    f"| {_fmt(e['hellaswag']) if 'hellaswag' in e else todo_eval} |")
    return "\n".join(rows)


def complexity_section(slopes: dict) -> str:
    rows = ["| model | family | prefill time slope (article) | decode time/token slope (article) | memory slope (article) |",
            "|---|---|---|---|---|"]
    for model, s in sorted(slopes.items()):
        claims = ARTICLE_COMPLEXITY[family_kind(s["family"])]
        rows.append(f"| {model} | {s['family']} | {_fmt(s['prefill_time'])} ({claims[0]}) | "
                    f"{_fmt(s['decode_time_per_token'])} ({claims[1]}) | {_fmt(s['memory'])} ({claims[2]}) |")
    return "\n".join(rows)


def one_setting(rs: list[dict], prefer: str = "longest") -> list[dict]:
    """One model's records from one run and one prompt setting, by context, one per context
    (the later record). A group is the records of one sweep folder (`_run`, which
    `archbench reproduce` adds) read the same way (`prefill_chunk_used`: in pieces of that
    size, or in one pass): Mamba was measured both ways, and RWKV-7's decode was rerun after
    its kernels changed, and a fit or a claim over two groups would mix them. prefer:
    "longest", the group that reached the longest context (then the one with more
    contexts), for memory; "most", the group with the most contexts (then the later run, by
    `measured_at` and then by order), for speed."""
    groups: dict = {}
    for r in rs:
        groups.setdefault((r.get("_run"), r.get("prefill_chunk_used")), {})[r["context"]] = r
    order = list(groups.values())
    if prefer == "longest":
        best = max(order, key=lambda g: (max(g), len(g)))
    elif prefer == "most":
        best = max(enumerate(order), key=lambda ig: (len(ig[1]), _latest(ig[1].values()), ig[0]))[1]
    else:
        raise ValueError(f"prefer is 'longest' or 'most', not {prefer!r}")
    return [best[c] for c in sorted(best)]


def _ok(records, kind):
    by_model = defaultdict(list)
    for r in records:
        if r.get("status") == "ok" and r.get("batch", 1) == 1 and family_kind(r.get("family", r["model"])) == kind:
            by_model[r["model"]].append(r)
    return {m: sorted(rs, key=lambda r: r["context"]) for m, rs in by_model.items()}


def claims_section(records: list[dict], copy_rate: float | None = None) -> list[str]:
    """Each claim of the article, and whether the recorded measurements support it,
    contradict it, or cannot say yet (with what is missing)."""
    out = []
    # 1. recurrent decode speed does not depend on context
    for kind in ("rwkv", "mamba"):
        for model, rs in _ok(records, kind).items():
            rs = one_setting(rs, prefer="most")
            tps = [r["decode_tokens_per_s"] for r in rs]
            spread = max(tps) / min(tps)
            span = f"{rs[0]['context']:,} to {rs[-1]['context']:,} tokens ({len(rs)} contexts)"
            verdict = "supports" if spread <= 1.10 else "contradicts"
            out.append(f"- *Recurrent decode speed is independent of context* ({model}): {verdict} it: "
                       f"{min(tps):.1f}-{max(tps):.1f} tok/s from {span}, spread {spread:.3f}x."
                       + (" Only short contexts measured so far." if rs[-1]["context"] < 131072 else ""))
    # 2. and 3. the Transformer: decode slows with context; out of memory at 128K on 80 GB
    for model, rs in _ok(records, "transformer").items():
        a, b = rs[0], rs[-1]
        theirs = ARTICLE_DECODE_TOKENS_PER_S.get(model, {})
        both = [c for c in (a["context"], b["context"]) if isinstance(theirs.get(c), (int, float))]
        article = (f"; the article's own figures fall {theirs[both[0]] / theirs[both[1]]:.1f}x over the same span"
                   if len(both) == 2 else "")
        out.append(f"- *Transformer decode slows as the context grows* ({model}): supports it: "
                   f"{a['decode_tokens_per_s']:.1f} tok/s at {a['context']:,} -> {b['decode_tokens_per_s']:.1f} at "
                   f"{b['context']:,} ({a['decode_tokens_per_s'] / b['decode_tokens_per_s']:.1f}x){article}.")
    for model, figures in ARTICLE_DECODE_TOKENS_PER_S.items():
        for ctx, theirs in figures.items():
            if theirs != "OOM":
                continue
            r = _cell(records, model, ctx, figures)
            if r is None:
                out.append(f"- *{model} runs out of memory at {ctx:,} tokens* (article, A100 80GB): cannot say yet, "
                           f"not measured (`archbench sweep --preset seed-speed --models {model}`).")
            elif r["status"] == "ok":
                out.append(f"- *{model} runs out of memory at {ctx:,} tokens* (article, A100 80GB): contradicts it: "
                           f"ran with {r['peak_allocated_bytes'] / 2**30:.1f} GiB peak on "
                           f"{r.get('env', {}).get('gpu', r.get('device'))}.")
            else:
                out.append(f"- *{model} runs out of memory at {ctx:,} tokens* (article, A100 80GB): supports it: "
                           f"{r['status']} ({r.get('error', '')[:90]}...).")
    # 4. the article's absolute decode speeds against the weight-read floor
    if copy_rate:
        for model, figures in ARTICLE_DECODE_TOKENS_PER_S.items():
            r = next((r for r in records if r["model"] == model and r.get("weight_nbytes")), None)
            nums = [v for v in figures.values() if isinstance(v, (int, float))]
            if r is None or not nums:
                continue
            read = recorded_read_nbytes(r)
            floor = copy_rate / read
            above = [v for v in nums if v > floor]
            bound = (f"reading the {read / 1e9:.2f} GB of weights once per token bounds batch-1 decode "
                     f"at {floor:.0f} tok/s on the H100 measured here (copy rate {copy_rate / 1e12:.2f} TB/s), and "
                     "an A100 has less bandwidth")
            if above:
                out.append(f"- *{model} decodes at up to {max(nums):,} tok/s* (article, A100, batch size not stated): "
                           f"contradicts batch-1 decode for {len(above)} of its {len(nums)} figures: {bound}; "
                           f"{max(nums):,} tok/s needs a batch of at least {max(nums) / floor:.1f}.")
            else:
                out.append(f"- *{model} decode speeds* (article): all under the floor ({bound}).")
    # 5. recurrent inference memory is constant
    for kind in ("rwkv", "mamba"):
        for model, rs in _ok(records, kind).items():
            rs = one_setting(rs, prefer="longest")
            states = {r["state_nbytes"] for r in rs}
            peaks = [r.get("peak_allocated_bytes") for r in rs if r.get("peak_allocated_bytes")]
            if not peaks:
                continue
            chunk = rs[-1].get("prefill_chunk_used")
            out.append(f"- *Recurrent inference memory is constant* ({model}): the state is "
                       + ("constant" if len(states) == 1 else "NOT constant")
                       + f" ({max(states) / 2**20:.1f} MiB); peak memory {peaks[0] / 2**30:.2f} -> "
                       f"{peaks[-1] / 2**30:.2f} GiB from {rs[0]['context']:,} to {rs[-1]['context']:,} tokens "
                       + (f"(prompt read in pieces of up to {chunk:,} tokens)" if chunk else
                          "(prompt read in one pass: the prefill's activations grow with it)") + ".")
    return out or ["- no recorded measurements yet"]


def write_plots(records: list[dict], out_dir) -> list[str]:
    """Decode tokens/s and peak memory against context, ours (solid, the main machine's
    records) beside the article's (dashed), log axes; OOM and crashed cells marked x.
    Returns the file names written under out_dir."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from pathlib import Path
    out_dir = Path(out_dir)
    records, _ = on_main_hardware(records)
    hw = _gpu(records[0]) if records else "-"
    written = []
    for name, table, key, scale, ylabel in (
            ("reproduce-speed.png", ARTICLE_DECODE_TOKENS_PER_S, "decode_tokens_per_s", 1, "decode tokens/s (batch 1)"),
            ("reproduce-memory.png", ARTICLE_MEMORY_GB, "peak_allocated_bytes", 2**-30, "peak memory, GiB")):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for i, (model, figures) in enumerate(table.items()):
            color = f"C{i}"
            art = [(c, v) for c, v in figures.items() if isinstance(v, (int, float))]
            if art:
                ax.plot(*zip(*art), "--", color=color, alpha=0.6, label=f"{model}, article (A100)")
            ours, failed = [], []
            for c in sorted(figures):
                r = _cell(records, model, c, figures)
                if r is None:
                    continue
                if r.get("status") == "ok" and r.get(key):
                    ours.append((c, r[key] * scale))
                else:
                    failed.append(c)
            if ours:
                ax.plot(*zip(*ours), "o-", color=color, label=f"{model}, ours ({hw})")
            for c in failed:
                ax.axvline(c, color=color, linestyle=":", alpha=0.5)
                ax.plot([c], [ax.get_ylim()[1] if ours else 1], "x", color=color)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("context length, tokens")
        ax.set_ylabel(ylabel)
        ax.set_title("dashed: the article's figures; x on a dotted line: our OOM or crash", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        written.append(name)
    return written


def build_report(records: list[dict], checkpoints: dict[str, str] | None = None, ppl: dict | None = None,
                 evals: dict | None = None, only: set[str] | None = None, copy_rate: float | None = None,
                 plots: list[str] | None = None) -> str:
    only = only or {"speed", "memory", "quality", "complexity"}
    records, others = on_main_hardware(records)
    left_out = ""
    if others:
        machines = ", ".join(sorted({_gpu(r) for r in others}))
        left_out = f" {len(others)} records of other machines ({machines}) are left out: one report, one machine."
    parts = ["# The article's tables, measured", "",
             f"Article figures: {ARTICLE_HARDWARE}. Ours: the hardware and the code (git commit) named in each row, "
             "from recorded results."
             + left_out, ""]
    plots = plots or []
    if "speed" in only:
        parts += ["## Tokens/s against context length", "", speed_section(records), ""]
        parts += [f"![decode tokens/s against context]({p})" for p in plots if "speed" in p] + [""]
    if "memory" in only:
        parts += ["## Memory against context length", "", memory_section(records), ""]
        parts += [f"![peak memory against context]({p})" for p in plots if "memory" in p] + [""]
    if "quality" in only:
        parts += ["## Quality", "", quality_section(checkpoints or {}, ppl or {}, evals or {}), ""]
    if "complexity" in only:
        parts += ["## Complexity: log-log slopes against context length (the article's O() exponent in brackets)", "",
                  complexity_section(fit_slopes(records)), ""]
    parts += ["## What the measurements say about the article's claims", "",
              *claims_section(records, copy_rate), ""]
    return "\n".join(parts)
