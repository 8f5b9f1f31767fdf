"""The `archbench` command.

    archbench list                       presets of every family
    archbench info rwkv7-2b9             shape, parameters, state size
    archbench sweep                      the embedded default: tiny models on this machine
    archbench report runs/default        tables and plots from recorded results
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from archbench.harness.errors import ArchbenchError


def _ints(text: str) -> list[int]:
    try:
        return [int(x.lower().replace("k", "")) * (1024 if x.lower().endswith("k") else 1) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 512,4k,32k, got {text!r}") from None


def cmd_list(args) -> int:
    from archbench.harness.registry import config_for, list_models, make
    print(f"{'preset':16s} {'family':11s} {'layers':>6s} {'width':>6s} {'params':>9s}")
    for name in list_models():
        family, cfg = config_for(name)
        n = make(family, cfg, device="meta").num_params()
        print(f"{name:16s} {family:11s} {cfg.n_layer:6d} {cfg.n_embd:6d} {n / 1e6:8.1f}M")
    return 0


def _model(args):
    from archbench.harness.registry import build, load
    from archbench.models.checkpoint import is_checkpoint
    if is_checkpoint(args.model):
        return load(args.model, impl=args.impl, dtype=args.dtype, device=args.device)
    return build(args.model, impl=args.impl, dtype=args.dtype, device="meta" if args.device == "meta" else args.device)


def _tokenizer_source(model: str):
    """A checkpoint's own tokenizer (beside it, or in its hub snapshot); bytes for a preset
    (random weights have no tokenizer, and bytes fit every vocabulary)."""
    from archbench.models.checkpoint import is_checkpoint, local_path
    return local_path(model) if is_checkpoint(model) else "bytes"


def cmd_info(args) -> int:
    from archbench.harness.registry import config_for, make
    from archbench.models.checkpoint import is_checkpoint, read_checkpoint
    if is_checkpoint(args.model):
        cfg, _ = read_checkpoint(args.model)
        family = cfg.family
    else:
        family, cfg = config_for(args.model)
    model = make(family, cfg, dtype=args.dtype, device="meta")
    print(f"model        {args.model} ({family})")
    for k, v in cfg.to_dict().items():
        print(f"  {k:14s} {v}")
    print(f"parameters   {model.num_params() / 1e6:.1f}M ({model.num_params(non_embedding=True) / 1e6:.1f}M without embeddings)")
    sizes = {ctx: model.state_nbytes(1, ctx) / 2**20 for ctx in (4096, 131072)}
    if sizes[4096] == sizes[131072]:
        print(f"state        {sizes[4096]:.2f} MiB at batch 1 ({args.dtype}), any context length")
    else:
        print(f"state        {sizes[4096]:.1f} MiB at 4K tokens, {sizes[131072]:.1f} MiB at 128K (batch 1, {args.dtype})")
    return 0


def sweep_spec(args):
    """The SweepSpec that `archbench sweep` arguments ask for: a preset (or the embedded
    default) with the given options laid over it."""
    import torch

    from archbench.harness.sweep import DEFAULT, PRESETS, SweepSpec
    if args.preset and args.preset not in PRESETS:
        raise ArchbenchError(f"unknown sweep preset {args.preset!r}; known: {', '.join(PRESETS)}")
    base = PRESETS[args.preset] if args.preset else DEFAULT
    device = args.device or (base.device if args.preset else ("cuda" if torch.cuda.is_available() else "cpu"))
    return SweepSpec(models=args.models or base.models, contexts=args.contexts or base.contexts,
                     batches=args.batches or base.batches, impl=args.impl, dtype=args.dtype or base.dtype,
                     device=device, decode_tokens=args.decode_tokens or base.decode_tokens,
                     repeats=args.repeats or base.repeats,
                     prefill_chunk=args.prefill_chunk if args.prefill_chunk is not None else base.prefill_chunk,
                     cuda_graphs=not args.no_cuda_graphs, peers=(args.peers or base.peers) and not args.no_peers)


def cmd_sweep(args) -> int:
    from archbench.harness.report import throughput_table, write_report
    from archbench.harness.sweep import run_sweep
    spec = sweep_spec(args)
    device = spec.device
    print(f"sweep: {len(spec.models)} models x {len(spec.contexts)} contexts x {len(spec.batches)} batches "
          f"on {device} ({spec.dtype}) -> {args.out}")
    store = run_sweep(spec, args.out, progress=not args.no_progress, isolate=not args.inline,
                      cell_timeout=args.cell_timeout)
    records = store.records()
    paths = write_report(records, args.out)
    print(throughput_table(records).to_markdown(index=False))
    print("\nwrote " + ", ".join(str(p) for p in paths.values()))
    failed = [r for r in records if r["status"] not in ("ok", "OOM")]
    if failed:
        print(f"{len(failed)} cell(s) failed ({', '.join(sorted({r['status'] for r in failed}))}); "
              f"see 'error' in {store.path}", file=sys.stderr)
    return 0


def _run_records(run: str) -> list[dict]:
    from archbench.harness.results import ResultsStore
    path = Path(run)
    if path.is_dir():
        path = next((path / n for n in ("results.jsonl", "ppl.jsonl", "niah.jsonl", "eval.jsonl")
                     if (path / n).exists()),
                    path / "results.jsonl")
    if not path.exists():
        raise ArchbenchError(f"{run}: no results.jsonl there (run `archbench sweep --out {run}` first)")
    return ResultsStore(path).records()


def cmd_report(args) -> int:
    from archbench.harness.report import compare_runs, throughput_table, write_report
    out = args.out or (Path(args.runs[0]) if Path(args.runs[0]).is_dir() else Path(args.runs[0]).parent)
    if args.compare:
        if len(args.runs) != 2:
            raise ArchbenchError("--compare takes exactly two runs: BASE NEW")
        table = compare_runs(_run_records(args.runs[0]), _run_records(args.runs[1]))
        if table.empty:
            raise ArchbenchError("the two runs share no successfully measured cell")
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "compare.md").write_text(table.to_markdown(index=False) + "\n")
        table.to_csv(Path(out) / "compare.csv", index=False)
        print(table.to_markdown(index=False))
        print(f"\nwrote {Path(out) / 'compare.md'}, {Path(out) / 'compare.csv'}")
        return 0
    records = [r for run in args.runs for r in _run_records(run)]
    paths = write_report(records, out)
    print(throughput_table(records).to_markdown(index=False))
    print("\nwrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def cmd_ppl(args) -> int:
    import json as _json

    from archbench.harness.env import environment
    from archbench.harness.results import ResultsStore
    from archbench.models.tokenizer import load_tokenizer
    from archbench.suites.perplexity import evaluate, load_documents
    docs = load_documents(args.data, args.field)
    model = _model(args)
    tokenizer = load_tokenizer(args.tokenizer or _tokenizer_source(args.model))
    if getattr(tokenizer, "vocab_size", 0) > model.config.vocab_size:
        raise ArchbenchError(f"tokenizer {tokenizer.name} has {tokenizer.vocab_size} ids but {args.model} only "
                             f"{model.config.vocab_size}; pass a matching --tokenizer")
    import time

    import torch
    on_gpu = model.device.type == "cuda"
    if on_gpu:
        torch.cuda.reset_peak_memory_stats(model.device)
    started = time.perf_counter()
    result = evaluate(model, tokenizer, docs, mode=args.mode, max_length=args.max_length, stride=args.stride,
                      chunk=args.chunk, progress=not args.no_progress)
    seconds = time.perf_counter() - started
    usage = {"seconds": seconds, "tokens_per_s": result.tokens / seconds}
    if on_gpu:
        usage.update(peak_allocated_bytes=torch.cuda.max_memory_allocated(model.device),
                     peak_reserved_bytes=torch.cuda.max_memory_reserved(model.device))
    record = dict(model=args.model, data=str(args.data), field=args.field, tokenizer=tokenizer.name,
                  max_length=args.max_length, stride=args.stride, chunk=args.chunk, dtype=args.dtype,
                  documents=len(docs), env=environment(str(model.device)), **result.summary(), **usage)
    store = ResultsStore(Path(args.out) / "ppl.jsonl")
    store.append(record)
    from archbench.harness.report import plot_loss_by_position
    plot = plot_loss_by_position(store.records(), Path(args.out) / "loss_by_position.png")
    print(f"{args.model} {args.mode}: token ppl {result.token_perplexity:.4f}, bits/byte {result.bits_per_byte:.4f}, "
          f"word ppl {result.word_perplexity:.4f} ({result.tokens} tokens, {result.bytes} bytes, {result.words} words) "
          f"in {seconds:.1f} s" + (f", peak {usage['peak_allocated_bytes'] / 2**30:.2f} GiB allocated" if on_gpu else ""))
    for stop in result.stopped:
        print(f"document {stop['document']}: out of memory after {stop['tokens_scored']} of {stop['tokens']} tokens "
              f"(scored up to there; recorded as status OOM)")
    print("loss by position: " + _json.dumps({k: round(v, 4) for k, v in result.loss_by_position().items()}))
    print(f"appended to {store.path}; plot of every record there: {plot}")
    return 0


def cmd_niah(args) -> int:
    from archbench.models.tokenizer import load_tokenizer
    from archbench.suites.niah import grid, plot_accuracy, plot_heatmap, read_haystack, run_grid, summary
    cells = grid(args.contexts, depths=args.depths, trials=args.trials, task=args.task, needles=args.needles,
                 queries=args.queries)
    haystack = read_haystack(args.haystack) if args.haystack else None
    model = _model(args)
    tokenizer = load_tokenizer(args.tokenizer or _tokenizer_source(args.model))
    store = run_grid(model, tokenizer, cells, args.out, args.model, chunk=args.chunk, haystack=haystack,
                     progress=not args.no_progress)
    everything = store.records()
    records = [r for r in everything if r["model"] == args.model]
    name = Path(args.model).name + ("" if args.task == "passkey" else f"_{args.task}")
    plot = plot_heatmap(records, Path(args.out) / f"heatmap_{name}.png", model=args.model, task=args.task)
    lines = plot_accuracy(everything, Path(args.out) / "accuracy.png")   # every model in the folder
    table = summary(everything)
    (Path(args.out) / "results.md").write_text(table.reset_index().to_markdown(index=False) + "\n")
    rows = table.reset_index()
    print(rows[(rows["model"] == args.model) & (rows["task"] == args.task)].to_markdown(index=False))
    print(f"\nwrote {store.path}, {plot}, {lines}, {Path(args.out) / 'results.md'}")
    return 0


def cmd_eval(args) -> int:
    try:
        from archbench.suites import eval as ev
    except ImportError as e:
        raise ArchbenchError(f"archbench eval needs lm-eval ({e}): pip install 'archbench[eval]'") from None
    from archbench.harness.env import environment
    from archbench.harness.registry import config_for
    from archbench.harness.results import ResultsStore
    tasks = [t for t in args.tasks.split(",") if t]
    from archbench.models.checkpoint import is_checkpoint
    if not is_checkpoint(args.model):
        config_for(args.model)  # an unknown name fails here, before lm-eval indexes its tasks
    results = ev.evaluate(args.model, tasks, impl=args.impl, dtype=args.dtype, device=args.device, limit=args.limit,
                          reuse_state=False if args.no_reuse_state else "auto", max_length=args.max_length,
                          tokenizer=args.tokenizer)
    run = dict(impl=args.impl, dtype=args.dtype, device=args.device, limit=args.limit,
               reuse_state=False if args.no_reuse_state else "auto", max_length=args.max_length,
               env=environment(args.device))
    rows = ev.records(results, args.model, run)
    store = ResultsStore(Path(args.out) / "eval.jsonl")
    for row in rows:
        store.append(row)
    print(ev.table(rows))
    print(f"\nappended {len(rows)} records to {store.path}")
    return 0


def _run_quality(args, checkpoints: dict[str, str], columns: dict[str, str]) -> None:
    """`reproduce --run-quality`: for each checkpoint, windowed perplexity on --ppl-data and
    the two lm-eval tasks, recorded under OUT/quality-runs and read back like --ppl/--eval
    runs. A checkpoint that fails says why and leaves its row saying what is missing."""
    import torch
    if not checkpoints:
        raise ArchbenchError("--run-quality needs at least one --checkpoint NAME=PATH")
    runs = Path(args.out) / "quality-runs"
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    common = ["--dtype", args.dtype, "--device", device]
    for name, path in checkpoints.items():
        print(f"== quality: {name} ({path})")
        if args.ppl_data:
            main(["ppl", "--model", path, "--data", args.ppl_data, "--mode", "windowed", *common,
                  "--out", str(runs / "ppl"), "--no-progress"])
        main(["eval", "--model", path, "--tasks", ",".join(columns.values()), *common, "--out", str(runs / "eval")]
             + (["--limit", str(args.limit)] if args.limit else []))
    args.ppl = (args.ppl or []) + ([str(runs / "ppl")] if args.ppl_data else [])
    args.eval = (args.eval or []) + [str(runs / "eval")]


def cmd_reproduce(args) -> int:
    import glob
    import json

    from archbench.suites.reproduce import build_report, write_plots
    if args.what != "seed":
        raise ArchbenchError(f"unknown article {args.what!r}; known: seed")
    runs = args.results or sorted(glob.glob("results/sweeps/*/results.jsonl"))
    records = [dict(r, _run=run) for run in runs for r in _run_records(run)]
    checkpoints = dict(c.split("=", 1) for c in args.checkpoint or [] if "=" in c)
    columns = {"lambada": "lambada_openai", "hellaswag": "hellaswag"}  # quality column -> lm-eval task
    for item in (args.quality_tasks or "").split(","):
        column, _, task = item.partition("=")
        if column.strip() not in columns or not task.strip():
            if item.strip():
                raise ArchbenchError(f"--quality-tasks takes lambada=TASK,hellaswag=TASK, got {item!r}")
            continue
        columns[column.strip()] = task.strip()
    metrics = {(columns["lambada"], "acc"): "lambada", (columns["hellaswag"], "acc_norm"): "hellaswag"}
    if args.run_quality:
        _run_quality(args, checkpoints, columns)
    ppl = {}
    for name, path in checkpoints.items():  # perplexities recorded by `archbench ppl --model PATH`
        for run in args.ppl or []:
            for r in _run_records(run):
                if r.get("model") == path and r.get("mode") == "windowed":
                    ppl[name] = r["token_perplexity"]
    evals = {}  # accuracies recorded by `archbench eval --model PATH --tasks lambada_openai,hellaswag`
    for name, path in checkpoints.items():
        for run in args.eval or []:
            for r in _run_records(run):
                if r.get("model") == path and (r.get("task"), r.get("metric")) in metrics:
                    evals.setdefault(name, {})[metrics[r["task"], r["metric"]]] = 100 * r["value"]
    only = set(args.only.split(",")) if args.only else None
    copy_rate = None  # the device copy rate a decode_vs_generate run measured, for the weight-read floor
    for path in sorted(glob.glob("results/decode/*.json")):
        copy_rate = json.loads(Path(path).read_text()).get("copy_bytes_per_s") or copy_rate
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plots = write_plots(records, out) if records else []
    report = build_report(records, checkpoints=checkpoints, ppl=ppl, evals=evals, only=only, copy_rate=copy_rate,
                          plots=plots)
    (out / "seed.md").write_text(report)
    print(report)
    print(f"wrote {out / 'seed.md'} from {len(runs)} sweep run(s), {len(records)} record(s)")
    return 0


def _model_args(s) -> None:
    """The arguments that pick one model: eval, ppl and niah share them."""
    s.add_argument("--model", required=True, help="preset or checkpoint path")
    s.add_argument("--impl", default="auto", help="backend: auto (fastest here), ref, cuda, fla, ...")
    s.add_argument("--dtype", default="float32")
    s.add_argument("--device", default="cpu")
    s.add_argument("--tokenizer", help="rwkv-world, bytes, or a folder/file (default: the checkpoint's; bytes for presets)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="archbench", description="Sequence-model architectures measured side by side.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("list", help="list model presets", description="List every model preset.")
    s.set_defaults(func=cmd_list)

    s = sub.add_parser("info", help="shape, parameters and state size of a preset or checkpoint",
                       description="Show a preset's or checkpoint's shape, parameter count and state size.")
    s.add_argument("model", help="preset name (see `archbench list`) or checkpoint path")
    s.add_argument("--dtype", default="bfloat16")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("sweep", help="measure prefill/decode tokens/s and memory over context lengths",
                       description="Measure prefill and decode tokens/s and memory for models x contexts x "
                                   "batches. With no arguments: tiny models of every family on this machine, "
                                   "about a minute on a 2-core CPU. Cells already recorded in --out are skipped.")
    s.add_argument("--models", nargs="+", help="presets or checkpoint paths (default: tiny preset of each family)")
    s.add_argument("--contexts", type=_ints, help="comma-separated context lengths, e.g. 512,4k,32k")
    s.add_argument("--batches", type=_ints, help="comma-separated batch sizes (default 1)")
    s.add_argument("--preset", help="a named sweep: seed-speed, seed-memory (the article's tables)")
    s.add_argument("--impl", default="auto", help="backend: auto (fastest here), ref, cuda, fla, ...")
    s.add_argument("--dtype", help="float32, bfloat16 or float16 (default float32, or the preset's)")
    s.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    s.add_argument("--decode-tokens", type=int, help="tokens generated per decode measurement (default 16)")
    s.add_argument("--repeats", type=int, help="timed repeats per cell, median reported (default 3)")
    s.add_argument("--prefill-chunk", type=int, help="feed prompts in pieces of this many tokens, state carried "
                   "(flat memory for RWKV; 0: whole prompts)")
    s.add_argument("--no-cuda-graphs", action="store_true", help="decode with eager steps instead of graph replays")
    s.add_argument("--peers", action="store_true", help="also time each library's own decode path on the same "
                   "weights (transformers generate, mamba_ssm generate(cg=True), fla RWKV-7), per cell")
    s.add_argument("--no-peers", action="store_true", help="leave the peers out (where a preset has them)")
    s.add_argument("--out", default="runs/default", help="folder for results.jsonl, tables and plots")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.add_argument("--inline", action="store_true",
                   help="measure in this process (default: worker processes, so a crash or hang is one cell's result)")
    s.add_argument("--cell-timeout", type=float, default=1800, help="seconds before a cell is recorded as timeout")
    s.set_defaults(func=cmd_sweep)

    s = sub.add_parser("eval", help="lm-eval tasks on a model; results as JSON lines and a table",
                       description="lm-evaluation-harness tasks (ours: archbench_mc, archbench_cloze, "
                       "archbench_rolling, archbench_gen; any of lm-eval's where its data is reachable) on a preset or "
                       "checkpoint, with the RNN state of a shared context reused across continuations.")
    _model_args(s)
    s.add_argument("--tasks", required=True, help="comma-separated task names")
    s.add_argument("--limit", type=int, help="at most this many documents per task")
    s.add_argument("--max-length", type=int, default=2048)
    s.add_argument("--no-reuse-state", action="store_true", help="score every continuation from scratch")
    s.add_argument("--out", default="runs/eval", help="folder for eval.jsonl")
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("ppl", help="perplexity, bits per byte and loss by position",
                       description="Perplexity of a model on local text (.txt, .jsonl, .parquet): windowed like "
                                   "lm-eval's loglikelihood_rolling, sliding with a stride, or streaming the whole "
                                   "document through the state.")
    _model_args(s)
    s.add_argument("--data", required=True, help=".txt (one document), .jsonl or .parquet (one per row)")
    s.add_argument("--field", default="text", help="field or column holding the text (default text)")
    s.add_argument("--mode", default="windowed", choices=["windowed", "sliding", "streaming"])
    s.add_argument("--max-length", type=int, default=2048, help="window length (windowed, sliding)")
    s.add_argument("--stride", type=int, help="sliding: tokens a window adds (default max-length/2)")
    s.add_argument("--chunk", type=int, help="streaming: tokens per forward call, state carried")
    s.add_argument("--out", default="runs/ppl", help="folder for ppl.jsonl")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=cmd_ppl)

    s = sub.add_parser("niah", help="needle-in-a-haystack and passkey retrieval over length and depth",
                       description="Retrieval accuracy over context length x needle depth, with a heatmap. "
                                   "Cells already recorded in --out are skipped.")
    _model_args(s)
    s.add_argument("--task", default="passkey", choices=["passkey", "needle", "multi-query"])
    s.add_argument("--contexts", type=_ints, default=[1024, 4096], help="e.g. 1k,4k,32k,512k")
    s.add_argument("--depths", type=_ints, default=list(range(0, 101, 10)), help="percents, e.g. 0,50,100")
    s.add_argument("--trials", type=int, default=1)
    s.add_argument("--needles", type=int, default=4, help="needle, multi-query: key-value needles hidden (RULER style)")
    s.add_argument("--queries", type=int, help="needle, multi-query: keys asked (default 1 and 2); the rest distract")
    s.add_argument("--chunk", type=int, help="read the prompt in pieces of this many tokens, state carried")
    s.add_argument("--haystack", help="a text file to use as haystack (default: generated sentences)")
    s.add_argument("--out", default="runs/niah")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=cmd_niah)

    s = sub.add_parser("reproduce", help="the article's tables, from recorded measurements",
                       description="Rebuild the comparison tables of the article in shared/seed (speed, memory, "
                                   "quality, complexity) beside the article's figures, from recorded results.")
    s.add_argument("what", help="the article: seed")
    s.add_argument("--only", help="comma-separated: speed,memory,quality,complexity")
    s.add_argument("--results", nargs="*", help="sweep runs (default results/sweeps/*/results.jsonl)")
    s.add_argument("--ppl", nargs="*", help="ppl runs (folders with ppl.jsonl) for the quality table")
    s.add_argument("--eval", nargs="*", help="eval runs (folders with eval.jsonl: lambada_openai, hellaswag) for it")
    s.add_argument("--checkpoint", action="append", metavar="NAME=PATH",
                   help="a checkpoint for a quality row, e.g. \"RWKV-7 Goose=RWKV-x070-World-2.9B.pth\"")
    s.add_argument("--run-quality", action="store_true",
                   help="run the quality cells of every --checkpoint now (perplexity on --ppl-data, lm-eval tasks)")
    s.add_argument("--ppl-data", help="text for the perplexity column (.txt, .jsonl, .parquet or hf:NAME...), "
                   "e.g. a Pile validation file")
    s.add_argument("--quality-tasks", help="lm-eval tasks of the columns (default lambada=lambada_openai,"
                   "hellaswag=hellaswag; stand-ins for offline tests, e.g. lambada=archbench_cloze)")
    s.add_argument("--limit", type=int, help="examples per task (a quick look, not the article's numbers)")
    s.add_argument("--dtype", default="float32", help="model dtype for --run-quality")
    s.add_argument("--device", help="cpu or cuda for --run-quality (default: cuda if available)")
    s.add_argument("--out", default="results/reproduce")
    s.set_defaults(func=cmd_reproduce)

    s = sub.add_parser("report", help="tables and plots from recorded results",
                       description="Build tables (markdown, CSV) and plots from one or more runs' results.")
    s.add_argument("runs", nargs="+", help="run folders or results.jsonl files")
    s.add_argument("--out", help="where to write (default: the first run's folder)")
    s.add_argument("--compare", action="store_true", help="two runs, BASE NEW: side by side with new/base ratios")
    s.set_defaults(func=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except ArchbenchError as e:
        print(f"archbench: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `archbench list | head`
        sys.stdout = open(os.devnull, "w")
        return 0
    except KeyboardInterrupt:
        print("\narchbench: interrupted; finished cells are kept and a rerun resumes", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
