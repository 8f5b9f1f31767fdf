"""Our CUDA WKV kernels against the fp32 references, on the GPU: awkward lengths and
batches, states carried over several calls, outputs pre-filled with NaN, each dtype's
error reported and bounded. Skipped without a GPU."""
import json
import os

import pytest
import torch
import torch.nn.functional as F

from archbench.harness.testing import errors
from archbench.kernels import get_op

pytestmark = pytest.mark.gpu

TS = [1, 2, 63, 64, 65, 1000, 4097]
BS = [1, 3, 16]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TOL = {"fp32": 1e-4, "bf16": 6e-3, "fp16": 1.5e-3}  # RMS-relative, against fp32 on the same rounded inputs


def inputs(op, B, T, H, N, seed=0):
    """Random inputs in the ranges trained models produce."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    rand = lambda *s: torch.randn(*s, generator=g, device="cuda")  # noqa: E731
    shape = (B, T, H, N)
    if op == "wkv4":
        C = H * N
        return dict(w=-torch.exp(torch.linspace(-5, 1, C, device="cuda")), u=0.3 + 0.7 * torch.rand(C, generator=g, device="cuda"),
                    k=2 * rand(B, T, C), v=rand(B, T, C))
    if op in ("wkv5", "wkv6"):
        w = -torch.exp(torch.linspace(-6, 1, N, device="cuda").repeat(H, 1) + 0.3 * rand(H, N))
        if op == "wkv6":
            w = -torch.exp(torch.clamp(torch.log(-w) + 0.5 * rand(*shape), max=2.5))
        return dict(r=0.5 * rand(*shape), k=0.5 * rand(*shape), v=rand(*shape), w=w, u=0.5 * rand(H, N))
    kk = F.normalize(rand(*shape), dim=-1)
    iclr = torch.sigmoid(rand(*shape))
    return dict(r=rand(*shape), w=-0.6065 * torch.sigmoid(rand(*shape)), k=rand(*shape), v=rand(*shape),
                a=-kk, b=kk * iclr)


def state0(op, B, H, N):
    if op == "wkv4":
        s = torch.zeros(B, 3, H * N, device="cuda")
        s[:, 2] = -1e38
        return s
    return 0.1 * torch.randn(B, H, N, N, device="cuda")


PER_TOKEN = {"wkv4": ("k", "v"), "wkv5": ("r", "k", "v"), "wkv6": ("r", "k", "v", "w"), "wkv7": ("r", "w", "k", "v", "a", "b")}


def run(fn, x, state, **kw):
    return fn(**x, state=state, **kw)


def record(**row):
    if os.environ.get("ARCHBENCH_KERNEL_ERRORS"):
        with open(os.environ["ARCHBENCH_KERNEL_ERRORS"], "a") as f:
            f.write(json.dumps(row) + "\n")


@pytest.mark.parametrize("op", ["wkv4", "wkv5", "wkv6", "wkv7"])
@pytest.mark.parametrize("B", BS)
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_kernel_matches_reference(op, B, dtype):
    ref_fn, cuda_fn = get_op(op, "ref"), get_op(op, "cuda")
    H, N = (3, 64) if B < 16 else (2, 64)
    worst = {}
    for T in TS:
        x = inputs(op, B, T, H, N, seed=T)
        x = {k: (t.to(DTYPES[dtype]) if k in PER_TOKEN[op] else t) for k, t in x.items()}
        xf = {k: t.float() for k, t in x.items()}
        s = state0(op, B, H, N)
        s_before = s.clone()
        y_ref, s_ref = run(ref_fn, xf, s)
        out = torch.full_like(x[PER_TOKEN[op][0]], float("nan"))
        y, s_new = run(cuda_fn, x, s, out=out)
        assert torch.equal(s, s_before)  # the caller's state is not modified
        e_y, e_s = errors(y.float(), y_ref), errors(s_new, s_ref)
        record(op=op, dtype=dtype, B=B, T=T, H=H, N=N, y_rms_rel=e_y["rms_rel"], y_max_abs=e_y["max_abs"],
               state_rms_rel=e_s["rms_rel"])
        assert torch.isfinite(y).all(), f"T={T}: NaN left in the output"
        assert e_y["rms_rel"] < TOL[dtype], f"T={T} y {e_y}"
        assert e_s["rms_rel"] < TOL[dtype], f"T={T} state {e_s}"
        worst = max(worst, e_y, key=lambda e: e.get("rms_rel", 0))
    print(f"{op} {dtype} B={B}: worst y rms_rel {worst['rms_rel']:.2e}, max_abs {worst['max_abs']:.2e}")


@pytest.mark.parametrize("op", ["wkv4", "wkv5", "wkv6", "wkv7"])
@pytest.mark.parametrize("N", [16, 32, 64, 128])
def test_state_carried_over_calls(op, N):
    """Three calls of odd lengths with the state carried equal one call over the whole."""
    ref_fn, cuda_fn = get_op(op, "ref"), get_op(op, "cuda")
    B, H, T = 2, 2, 200
    x = inputs(op, B, T, H, N, seed=N)
    s = state0(op, B, H, N)
    y_ref, s_ref = run(ref_fn, x, s)
    pieces, state = [], s
    for a, b in ((0, 37), (37, 38), (38, 200)):
        part = {k: (t[:, a:b] if k in PER_TOKEN[op] else t) for k, t in x.items()}
        y, state = run(cuda_fn, part, state)
        pieces.append(y)
    e = errors(torch.cat(pieces, 1), y_ref)
    assert e["rms_rel"] < 1e-4, e
    assert errors(state, s_ref)["rms_rel"] < 1e-4


@pytest.mark.parametrize("op", ["wkv5", "wkv6", "wkv7"])
@pytest.mark.parametrize("variant", [1, 3, 4])
def test_every_variant_agrees(op, variant):
    cuda_fn = get_op(op, "cuda")
    x = inputs(op, 2, 77, 3, 64)
    s = state0(op, 2, 3, 64)
    y0, s0 = run(get_op(op, "ref"), x, s)
    y, s1 = run(cuda_fn, x, s, variant=variant)
    assert errors(y, y0)["rms_rel"] < 1e-4 and errors(s1, s0)["rms_rel"] < 1e-4


def test_inplace_state_and_graph_capture():
    """Decode: the state updated in place, the step captured in a CUDA graph and replayed."""
    cuda_fn = get_op("wkv7", "cuda")
    B, H, N = 4, 3, 64
    x = inputs("wkv7", B, 1, H, N)
    state = state0("wkv7", B, H, N)
    y_ref, s_ref = get_op("wkv7", "ref")(**x, state=state)
    static_state, out = state.clone(), torch.empty_like(x["r"])
    cuda_fn(**x, state=static_state, inplace=True, out=out)  # warm-up (and builds)
    static_state.copy_(state)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        cuda_fn(**x, state=static_state, inplace=True, out=out)
    static_state.copy_(state)
    graph.replay()
    torch.cuda.synchronize()
    assert errors(out, y_ref)["rms_rel"] < 1e-4 and errors(static_state, s_ref)["rms_rel"] < 1e-4


def test_bad_inputs_are_clear():
    cuda_fn = get_op("wkv7", "cuda")
    x = inputs("wkv7", 1, 5, 2, 64)
    with pytest.raises(ValueError, match="shape"):
        cuda_fn(**{**x, "k": x["k"][:, :4]}, state=state0("wkv7", 1, 2, 64))
    with pytest.raises(ValueError, match="dtype"):
        cuda_fn(**{**x, "r": x["r"].half()}, state=state0("wkv7", 1, 2, 64))
    with pytest.raises(ValueError, match="state"):
        cuda_fn(**x, state=state0("wkv7", 1, 2, 64).half())
    with pytest.raises(ValueError, match="head size 48"):
        y = inputs("wkv7", 1, 5, 2, 48)  # head size 48 is not built
        cuda_fn(**y, state=torch.zeros(1, 2, 48, 48, device="cuda"))
