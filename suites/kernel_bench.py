"""WKV kernel benchmark: our CUDA kernels against fla (chunk and fused-recurrent) and the
one-thread-per-column layout of BlinkDL's kernels, in the same run on the same GPU; for wkv7
and wkv6 also our chunked tensor-core kernels ("cuda-chunked"; in one kernel at each block
width and number of producer groups, "-vt32-g1" ... "-vt64-g3"; in two kernels, the chunks
built over the whole GPU into a workspace and then the state pass, "-2k-vt16" ...; for wkv6
the prompt cut into P pieces that run as a batch and are joined after, "cuda-pieces-P", P = 1
for none, "-8-j1" with the join's first tile kernel instead of the second), their
PyTorch form ("torch-chunked") and the sequential kernel forced ("ours-seq": "ours"
dispatches by shape); for wkv4 the time-parallel kernel ("cuda-parallel", segment length by
shape, "cuda-parallel-L<n>" at segments of n tokens) and the sequential one forced
("ours-seq").

Per shape: prefill million tokens/s (B x T / median time, `triton.testing.do_bench`
after warm-up, with the 20th-80th percentile spread; with --graphs, replays of the calls
captured in a CUDA graph: the GPU's time without the host's), decode-step latency (T = 1, state
updated in place), the fraction of the memory-bandwidth floor (bytes the op must move /
time, over the copy rate measured in the same run), and the error of each backend
against our fp32 kernel on the same inputs (a correctness check before any speed).

    python -m archbench.suites.kernel_bench --out results/kernels [--ops wkv7 wkv6] [--shapes 2b9|7b|all]
        [--only ours fla-chunk ...] [--bxt 1x4096 16x16384 ...] [--graphs]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import torch

from archbench.harness.env import environment
from archbench.harness.testing import errors
from archbench.kernels import get_op

SHAPES_2B9 = [(1, 4096), (1, 16384), (1, 65536), (8, 4096), (16, 16384)]  # B x T at H=40, N=64
SHAPES_7B = [(1, 4096), (1, 16384), (8, 4096), (16, 16384)]                # at H=64, N=64


def bench_ms(fn) -> dict:
    try:
        from triton.testing import do_bench
        lo, med, hi = do_bench(fn, warmup=25, rep=100, quantiles=[0.2, 0.5, 0.8])
    except ImportError:
        times = []
        for _ in range(3):
            fn()
        for _ in range(10):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            torch.cuda.synchronize()
            times.append(s.elapsed_time(e))
        times.sort()
        lo, med, hi = times[2], times[5], times[7]
    return {"ms": med, "ms_p20": lo, "ms_p80": hi}


def bench_graphed_ms(fn, calls: int = 20) -> dict:
    """GPU time of fn alone: `calls` calls captured in one CUDA graph, replayed (CUDA events,
    median and p20-p80 of 10 replays, per call). Where an op launches many short kernels the
    host's launch rate can set `bench_ms`'s figure; a replay has no host work between them."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # first calls outside the capture (workspaces, compilation)
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(10):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        graph.replay()
        e1.record()
        torch.cuda.synchronize()
        times.append(e0.elapsed_time(e1) / calls)
    times.sort()
    del graph
    return {"ms": times[5], "ms_p20": times[2], "ms_p80": times[7]}


def copy_bandwidth() -> float:
    """Device copy rate in bytes/s (read + write), measured now."""
    x = torch.empty(2**28, dtype=torch.float32, device="cuda")  # 1 GiB
    y = torch.empty_like(x)
    t = bench_ms(lambda: y.copy_(x))["ms"]
    return 2 * x.numel() * 4 / (t / 1e3)


def make_inputs(op: str, B: int, T: int, H: int, N: int, dtype=torch.bfloat16, seed=0) -> dict:
    g = torch.Generator(device="cuda").manual_seed(seed)
    rand = lambda *s: torch.randn(*s, generator=g, device="cuda")  # noqa: E731
    shape = (B, T, H, N)
    if op == "wkv4":
        C = H * N
        return dict(w=-torch.exp(torch.linspace(-5, 1, C, device="cuda")), u=torch.rand(C, generator=g, device="cuda"),
                    k=rand(B, T, C).to(dtype), v=rand(B, T, C).to(dtype))
    if op in ("wkv5", "wkv6"):
        w = -torch.exp(torch.linspace(-6, 1, N, device="cuda").repeat(H, 1))
        if op == "wkv6":
            w = (w * torch.exp(0.3 * rand(*shape))).to(dtype)
        return dict(r=rand(*shape).to(dtype), k=(0.5 * rand(*shape)).to(dtype), v=rand(*shape).to(dtype),
                    w=w, u=0.5 * rand(H, N))
    kk = torch.nn.functional.normalize(rand(*shape), dim=-1)
    return dict(r=rand(*shape).to(dtype), w=(-0.6065 * torch.sigmoid(rand(*shape))).to(dtype), k=rand(*shape).to(dtype),
                v=rand(*shape).to(dtype), a=(-kk).to(dtype), b=(kk * torch.sigmoid(rand(*shape))).to(dtype))


def floor_bytes(op: str, x: dict) -> int:
    """Bytes the op must read and write: per-token inputs, the output, the state in and out."""
    per_token = [t for t in x.values() if t.dim() >= 3]
    out = per_token[-1].numel() * per_token[-1].element_size()
    B = per_token[0].shape[0]
    if op == "wkv4":
        state = B * 3 * per_token[0].shape[-1] * 4
    else:
        H, N = per_token[0].shape[2:]
        state = B * H * N * N * 4
    return sum(t.numel() * t.element_size() for t in per_token) + out + 2 * state


def state_for(op, B, H, N):
    if op == "wkv4":
        s = torch.zeros(B, 3, H * N, device="cuda")
        s[:, 2] = -1e38
        return s
    return torch.zeros(B, H, N, N, device="cuda")


def backends(op: str) -> dict:
    """name -> callable(x, state) for every backend that runs here."""
    cuda = get_op(op, "cuda")
    out = {"ours": lambda x, s: cuda(**x, state=s)}
    if op == "wkv4":
        # the time-parallel kernel (wkv4_parallel.cu, "ours" by shape, use_parallel):
        # segment length by shape, and fixed; the sequential kernel forced
        from archbench.kernels.wkv4.op import wkv4_cuda_parallel
        out["ours-seq"] = lambda x, s: cuda(**x, state=s, parallel=False)
        out["cuda-parallel"] = lambda x, s: wkv4_cuda_parallel(**x, state=s)
        for L in (32, 64, 128, 256, 512):
            out[f"cuda-parallel-L{L}"] = lambda x, s, L=L: wkv4_cuda_parallel(**x, state=s, segment=L)
    if op != "wkv4":
        out["ours-8lane"] = lambda x, s: cuda(**x, state=s, variant=3)
        out["ours-2lane"] = lambda x, s: cuda(**x, state=s, variant=1)
        if op == "wkv7":
            out["ours-4lane"] = lambda x, s: cuda(**x, state=s, variant=2)
        if op == "wkv5":  # "ours" takes the chunked WKV6 kernel for long prompts
            out["ours-seq"] = lambda x, s: cuda(**x, state=s, chunked=False)
        if op in ("wkv6", "wkv7"):
            # the PyTorch chunked form (cuBLAS products, no build); the sequential kernel forced
            # ("ours" dispatches by shape); our chunked tensor-core kernel by shape and at each
            # block width x producer groups
            out["torch-chunked"] = lambda x, s: get_op(op, "chunked")(**x, state=s)
            out["ours-seq"] = lambda x, s: cuda(**x, state=s, chunked=False)
            chunked_cuda = importlib.import_module(f"archbench.kernels.{op}.op").__dict__[f"{op}_cuda_chunked"]
            out["cuda-chunked"] = lambda x, s: chunked_cuda(**x, state=s)
            for variant, cols in ((2, 32), (3, 64)):
                for groups in (1, 2, 3):
                    out[f"cuda-chunked-vt{cols}-g{groups}"] = (
                        lambda x, s, v=variant, g=groups: chunked_cuda(**x, state=s, variant=v, groups=g, form=1))
            # the two-kernel form (build over the whole GPU into a workspace, then the state pass)
            for variant, cols in ((1, 16), (2, 32), (3, 64)):
                out[f"cuda-chunked-2k-vt{cols}"] = (
                    lambda x, s, v=variant: chunked_cuda(**x, state=s, variant=v, form=2))
            if op == "wkv7":  # the fused form: one kernel, the state in registers (1-3 groups)
                for groups in (1, 2, 3):
                    out[f"cuda-fused-g{groups}"] = (
                        lambda x, s, g=groups: chunked_cuda(**x, state=s, groups=g, form=3))
            if op == "wkv6":  # the prompt cut into P pieces run as a batch, joined after (wkv6/pieces.py)
                for P in (1, 2, 4, 5, 8, 16, 32):
                    out[f"cuda-pieces-{P}"] = lambda x, s, P=P: chunked_cuda(**x, state=s, pieces=P)
                out["cuda-pieces-8-j1"] = lambda x, s: chunked_cuda(**x, state=s, pieces=8, join="cuda")
        out["blinkdl-layout"] = lambda x, s: cuda(**x, state=s, variant=4)  # one thread per state column
    if op in ("wkv6", "wkv7"):
        if importlib.util.find_spec("fla") is None:
            print(f"fla not installed: no peer rows for {op}")
        else:
            fla = get_op(op, "fla")
            out["fla-chunk"] = lambda x, s: fla(**x, state=s, mode="chunk")
            out["fla-recurrent"] = lambda x, s: fla(**x, state=s, mode="recurrent")
    return out


def spin_up(seconds: float = 1.0) -> None:
    """Keep the GPU busy for a while before the first measurement (matrix products), so that
    its clocks have left their idle state: a run's first shape measured up to 2x slow without."""
    a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    t = time.perf_counter()
    while time.perf_counter() - t < seconds:
        for _ in range(20):
            a @ a
        torch.cuda.synchronize()


def run(ops, shapes_by_h, out_dir: Path, skip: set[str], only: set[str] | None = None,
        graphs: bool = False) -> list[dict]:
    spin_up()
    timer = bench_graphed_ms if graphs else bench_ms
    bw = copy_bandwidth()
    env = environment("cuda")
    print(f"copy bandwidth {bw / 1e12:.2f} TB/s on {env.get('gpu')}")
    rows = []
    for op in ops:
        for H, shapes in shapes_by_h.items():
            N = 64
            for B, T in shapes:
                x = make_inputs(op, B, T, H, N)
                state = state_for(op, B, H, N)
                # the check: batch row 0, first 4096 tokens, against our fp32 kernel (causal, so a prefix is exact)
                head = {k: (v[:1, :4096].float() if v.dim() >= 3 else v) for k, v in x.items()}
                ref_kw = {"chunked": False} if op == "wkv7" else {}  # the sequential fp32 kernel
                ref_y, _ = get_op(op, "cuda")(**head, state=state[:1], **ref_kw)
                fb = floor_bytes(op, x)
                for name, fn in backends(op).items():
                    if name in skip or (only is not None and name not in only):
                        continue
                    row = dict(op=op, backend=name, B=B, T=T, H=H, N=N, dtype="bf16", env=env,
                               timing="graph" if graphs else "calls")
                    try:
                        y, _ = fn(x, state)
                        err = errors(y[:1, :4096].float(), ref_y)
                        t = timer(lambda: fn(x, state))
                        row.update(t, mtok_s=B * T / t["ms"] / 1e3, floor_fraction=fb / (t["ms"] / 1e3) / bw,
                                   rms_rel_vs_fp32=err["rms_rel"], max_abs_vs_fp32=err["max_abs"],
                                   copy_bw_tb_s=bw / 1e12)
                    except Exception as e:  # noqa: BLE001 - record and go on
                        row.update(error=f"{type(e).__name__}: {str(e)[:300]}")
                    rows.append(row)
                    print(f"{op} {name:15s} B={B:2d} T={T:6d} H={H}: " + (
                        f"{row['mtok_s']:7.2f} Mtok/s ({row['ms']:.3f} ms, p20-p80 {row['ms_p20']:.3f}-{row['ms_p80']:.3f}), "
                        f"floor {row['floor_fraction'] * 100:5.1f}%, rms_rel {row['rms_rel_vs_fp32']:.1e}"
                        if "mtok_s" in row else row["error"]), flush=True)
                del x, state, ref_y
                torch.cuda.empty_cache()
            # decode: one token, state in place
            for B in (1, 16):
                x = make_inputs(op, B, 1, H, N)
                state = state_for(op, B, H, N)
                cuda = get_op(op, "cuda")
                t = bench_ms(lambda: cuda(**x, state=state, inplace=True))
                rows.append(dict(op=op, backend="ours-decode", B=B, T=1, H=H, N=N, dtype="bf16", env=env, **t,
                                 us_per_step=t["ms"] * 1e3))
                print(f"{op} decode step B={B:2d} H={H}: {t['ms'] * 1e3:.1f} us", flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"wkv_bench_{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
    with path.open("w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    print(f"wrote {path}")
    print(summarize(rows))
    return rows


def summarize(rows: list[dict]) -> str:
    """Markdown: Mtok/s per backend for each op and shape, and ours over the best peer."""
    import pandas as pd
    df = pd.DataFrame([r for r in rows if "mtok_s" in r])
    if df.empty:
        return "no measurements\n"
    df["shape"] = [f"H={h} {b}x{t}" for h, b, t in zip(df["H"], df["B"], df["T"])]
    table = df.pivot_table(index=["op", "shape"], columns="backend", values="mtok_s", sort=False)
    peers = [c for c in table.columns if c.startswith(("fla", "blinkdl"))]
    if peers:
        table["ours / best peer"] = table["ours"] / table[peers].max(axis=1)
        if "cuda-chunked" in table.columns:
            table["cuda-chunked / best peer"] = table["cuda-chunked"] / table[peers].max(axis=1)
    table["ours % of floor"] = df[df.backend == "ours"].set_index(["op", "shape"])["floor_fraction"] * 100
    decode = [r for r in rows if r.get("backend") == "ours-decode"]
    text = table.round(2).to_markdown() + "\n"
    if decode:
        text += "\nDecode step (T=1, state in place), microseconds:\n\n"
        text += pd.DataFrame(decode)[["op", "H", "B", "us_per_step"]].round(1).to_markdown(index=False) + "\n"
    return text


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ops", nargs="+", default=["wkv7", "wkv6", "wkv5", "wkv4"])
    p.add_argument("--out", default="results/kernels")
    p.add_argument("--shapes", choices=["2b9", "7b", "all"], default="all", help="H=40 (2.9B), H=64 (7B) or both")
    p.add_argument("--skip", nargs="*", default=[], help="backends to leave out")
    p.add_argument("--only", nargs="*", default=None, help="backends to run (all that run here if not given)")
    p.add_argument("--bxt", nargs="*", default=None, metavar="BxT", help="shapes to run, e.g. 1x4096 16x16384")
    p.add_argument("--graphs", action="store_true",
                   help="time CUDA-graph replays (GPU time alone, no host work between calls)")
    p.add_argument("--summarize", nargs="+", metavar="JSONL", help="only print the table of recorded runs")
    args = p.parse_args(argv)
    if args.summarize:
        print(summarize([json.loads(line) for f in args.summarize for line in open(f) if line.strip()]))
        return
    shapes = {k: [(b, t) for b, t in v if args.bxt is None or f"{b}x{t}" in args.bxt]
              for k, v in {40: SHAPES_2B9, 64: SHAPES_7B}.items()
              if args.shapes == "all" or (k == 40) == (args.shapes == "2b9")}
    known = {f"{b}x{t}" for v in shapes.values() for b, t in v}
    if args.bxt is not None and set(args.bxt) - known:
        p.error(f"--bxt {' '.join(sorted(set(args.bxt) - known))}: not a shape of --shapes {args.shapes} "
                f"(they are {', '.join(f'{b}x{t}' for b, t in SHAPES_2B9)} at H=40, "
                f"{', '.join(f'{b}x{t}' for b, t in SHAPES_7B)} at H=64)")
    if args.only is not None:
        names = {n for op in args.ops for n in backends(op)}
        if set(args.only) - names:
            p.error(f"--only {' '.join(sorted(set(args.only) - names))}: no such backend of {' '.join(args.ops)} "
                    f"here (they are {', '.join(sorted(names))})")
    if not torch.cuda.is_available():
        p.error("the kernel benchmark needs a CUDA GPU")
    run(args.ops, shapes, Path(args.out), set(args.skip), None if args.only is None else set(args.only),
        graphs=args.graphs)


if __name__ == "__main__":
    main()
