"""Tables and plots built from recorded results only.

    table = throughput_table(ResultsStore(path).records())
    write_report(records, out_dir)   # results.md, results.csv, throughput.png
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd


def to_frame(records: list[dict]) -> pd.DataFrame:
    rows = [{k: v for k, v in r.items() if not isinstance(v, dict)} for r in records]
    return pd.DataFrame(rows)


def throughput_table(records: list[dict]) -> pd.DataFrame:
    """One row per cell: model, context, batch, prefill and decode tokens/s (or the failure)."""
    df = to_frame(records)
    if df.empty:
        return df
    for col in ("prefill_tokens_per_s", "decode_tokens_per_s", "state_nbytes", "peak_allocated_bytes"):
        if col not in df:
            df[col] = float("nan")
    df = df.sort_values(["model", "batch", "context"])
    out = pd.DataFrame({
        "model": df["model"], "dtype": df["dtype"], "device": df["device"], "batch": df["batch"],
        "context": df["context"],
        "prefill tok/s": df["prefill_tokens_per_s"].map(lambda v: f"{v:,.0f}" if pd.notna(v) else ""),
        "decode tok/s": df["decode_tokens_per_s"].map(lambda v: f"{v:,.1f}" if pd.notna(v) else ""),
        "state MiB": (df["state_nbytes"] / 2**20).map(lambda v: f"{v:.3f}" if pd.notna(v) else ""),
        "peak GiB": (df["peak_allocated_bytes"] / 2**30).map(lambda v: f"{v:.2f}" if pd.notna(v) else "-"),
        "status": df["status"],
    })
    if "decode_weight_bytes_per_s" in df and df["decode_weight_bytes_per_s"].notna().any():
        # the bytes a step reads, also for records that counted the input embedding in weight_nbytes
        from archbench.harness.interface import recorded_read_nbytes
        read = [recorded_read_nbytes({k: v for k, v in r.items() if not (isinstance(v, float) and v != v)})
                if pd.notna(r.get("decode_weight_bytes_per_s")) else float("nan")
                for r in df.to_dict("records")]
        out["decode weights TB/s"] = (pd.Series(read, index=df.index) * df["decode_tokens_per_s"] / df["batch"]
                                      / 1e12).map(lambda v: f"{v:.2f}" if pd.notna(v) else "")
    if "peer_status" in df and df["peer_status"].notna().any():  # the library's own decode, same cell
        peer = df.get("peer_decode_tokens_per_s", pd.Series(float("nan"), index=df.index))
        out["peer"] = df.get("peer_path", "").fillna("")
        out["peer decode tok/s"] = [f"{v:,.1f}" if pd.notna(v) else (st if isinstance(st, str) else "")
                                    for v, st in zip(peer, df["peer_status"])]
        out["ours / peer"] = (df["decode_tokens_per_s"] / peer).map(lambda v: f"{v:.2f}x" if pd.notna(v) else "")
    from archbench.suites.seed_article import ARTICLE_DECODE_TOKENS_PER_S as article
    if df["model"].isin(list(article)).any():
        out["article A100 decode tok/s"] = [article.get(m, {}).get(c, "") for m, c in zip(df["model"], df["context"])]
    return out.reset_index(drop=True)


COMPARE_KEYS = ["model", "dtype", "batch", "context"]


def compare_runs(base: list[dict], new: list[dict]) -> pd.DataFrame:
    """Cells measured in both runs, side by side, with new / base ratios."""
    def ok(records):
        df = to_frame([r for r in records if r.get("status") == "ok"])
        cols = COMPARE_KEYS + ["prefill_tokens_per_s", "decode_tokens_per_s", "peak_allocated_bytes"]
        return df.reindex(columns=cols)

    both = ok(base).merge(ok(new), on=COMPARE_KEYS, suffixes=(" base", " new"))
    out = both[COMPARE_KEYS].copy()
    for col, name in (("prefill_tokens_per_s", "prefill tok/s"), ("decode_tokens_per_s", "decode tok/s")):
        out[f"{name} base"] = both[f"{col} base"].round(1)
        out[f"{name} new"] = both[f"{col} new"].round(1)
        out[f"{name} ratio"] = (both[f"{col} new"] / both[f"{col} base"]).round(3)
    if both["peak_allocated_bytes base"].notna().any():
        out["peak GiB ratio"] = (both["peak_allocated_bytes new"] / both["peak_allocated_bytes base"]).round(3)
    return out.sort_values(COMPARE_KEYS).reset_index(drop=True)


def plot_throughput(records: list[dict], path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = to_frame(records)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, col, title in ((axes[0], "prefill_tokens_per_s", "prefill"), (axes[1], "decode_tokens_per_s", "decode")):
        for (model, batch), g in df.groupby(["model", "batch"]):
            g = g.sort_values("context")
            ok = g[g["status"] == "ok"]
            label = f"{model}" + (f" B={batch}" if df["batch"].nunique() > 1 else "")
            line, = ax.plot(ok["context"], ok[col], marker="o", label=label)
            failed = g[g["status"] != "ok"]
            if len(failed):  # failed cells (OOM) marked at the bottom edge
                ax.plot(failed["context"], [ax.get_ylim()[0]] * len(failed), "x", color=line.get_color(), ms=9)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel("tokens / s")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_loss_by_position(records: list[dict], path) -> Path:
    """Mean loss in log-spaced position buckets, one line per model and mode (ppl records)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in records:
        points = sorted((int(k), v) for k, v in r["loss_by_position"].items())
        ax.plot([max(k, 1) for k, _ in points], [v for _, v in points], marker="o", label=f"{r['model']} ({r['mode']})")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("token position (bucket start)")
    ax.set_ylabel("mean loss (nats)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def write_report(records: list[dict], out_dir) -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = throughput_table(records)
    paths = {"markdown": out_dir / "results.md", "csv": out_dir / "results.csv", "plot": out_dir / "throughput.png"}
    paths["markdown"].write_text(table.to_markdown(index=False) + "\n" if not table.empty else "no results\n")
    to_frame(records).to_csv(paths["csv"], index=False)
    plot_throughput(records, paths["plot"])
    return paths
