"""The time-parallel WKV4 kernel (kernels/wkv4/cuda/wkv4_parallel.cu, `wkv4_cuda_parallel`,
opt-in) against the fp32 one-step reference, on the GPU: lengths around the segment and past
a few thousand tokens, batches 1 to 16, each dtype with the sequential kernel's tolerances
(tests/kernels/test_wkv_cuda.py), NaN-prefilled outputs, initial states with no history and
with a history, every explicit segment length (and lengths of 1 and longer than T), the state
carried over calls, in place and in a CUDA graph. Skipped without a GPU, except the
segment-length choice (plain Python)."""
import pytest
import torch

from archbench.harness.testing import errors
from archbench.kernels.wkv4.op import (PARALLEL_MAX_CHANNELS, PARALLEL_MIN_T, PARALLEL_SEGMENTS, parallel_segment,
                                      use_parallel, wkv4_cuda, wkv4_cuda_parallel)
from archbench.kernels.wkv4.ref import wkv4_init_state, wkv4_ref
from helpers import spy_kernel_calls

gpu = pytest.mark.gpu

TS = [1, 2, 63, 64, 65, 1000, 4097]
BS = [1, 3, 16]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TOL = {"fp32": 1e-4, "bf16": 6e-3, "fp16": 1.5e-3}  # as tests/kernels/test_wkv_cuda.py
C = 192  # not a multiple of the 128 threads of a block: a row's last block is partly idle


def inputs(B, T, C, seed=0):
    """As test_wkv_cuda.py's wkv4 inputs: decays e^-5 .. e^1 over the channels."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    return dict(w=-torch.exp(torch.linspace(-5, 1, C, device="cuda")),
                u=0.3 + 0.7 * torch.rand(C, generator=g, device="cuda"),
                k=2 * torch.randn(B, T, C, generator=g, device="cuda"), v=torch.randn(B, T, C, generator=g, device="cuda"))


def state0(B, C, history: bool, seed=1):
    if not history:
        return wkv4_init_state(B, C, device="cuda")
    g = torch.Generator(device="cuda").manual_seed(seed)
    s = torch.empty(B, 3, C, device="cuda")
    s[:, 0] = torch.randn(B, C, generator=g, device="cuda")
    s[:, 1] = 0.5 + torch.rand(B, C, generator=g, device="cuda")
    s[:, 2] = 3 * torch.randn(B, C, generator=g, device="cuda")
    return s


def cast(x, dtype):
    return {n: (t.to(DTYPES[dtype]) if n in ("k", "v") else t) for n, t in x.items()}


def check(y, s, y_ref, s_ref, tol, what):
    assert torch.isfinite(y).all(), f"{what}: NaN left in the output"
    assert torch.isfinite(s).all(), f"{what}: non-finite state"
    e_y, e_s = errors(y.float(), y_ref), errors(s, s_ref)
    assert e_y["rms_rel"] < tol, f"{what} y {e_y}"
    assert e_s["rms_rel"] < tol, f"{what} state {e_s}"
    return e_y


@gpu
@pytest.mark.parametrize("history", [False, True])
@pytest.mark.parametrize("B", BS)
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_parallel_matches_reference(dtype, B, history):
    worst = {}
    for T in TS:
        x = cast(inputs(B, T, C, seed=T), dtype)
        s = state0(B, C, history)
        s_before = s.clone()
        y_ref, s_ref = wkv4_ref(**{n: t.float() for n, t in x.items()}, state=s)
        out = torch.full_like(x["k"], float("nan"))
        y, s_new = wkv4_cuda_parallel(**x, state=s, out=out)
        assert y.data_ptr() == out.data_ptr() and y.dtype == DTYPES[dtype]
        assert torch.equal(s, s_before)  # the caller's state is not modified
        e = check(y, s_new, y_ref, s_ref, TOL[dtype], f"{dtype} B={B} T={T}")
        worst = max(worst, e, key=lambda e: e.get("rms_rel", 0))
    print(f"wkv4 parallel {dtype} B={B} history={history}: worst y rms_rel {worst['rms_rel']:.2e}")


@gpu
@pytest.mark.parametrize("segment", [1, 2, 7, 32, 64, 128, 256, 512, 5000])
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_every_segment_length_agrees(segment, dtype):
    """Explicit segments: of one token (the scan does all the work), odd, each by-shape choice,
    longer than the prompt (one segment: the sequential kernel in three launches)."""
    B, T = 2, 1000
    x = cast(inputs(B, T, C, seed=segment), dtype)
    s = state0(B, C, history=True)
    y_ref, s_ref = wkv4_ref(**{n: t.float() for n, t in x.items()}, state=s)
    out = torch.full_like(x["k"], float("nan"))
    y, s1 = wkv4_cuda_parallel(**x, state=s, out=out, segment=segment)
    check(y, s1, y_ref, s_ref, TOL[dtype], f"segment={segment} {dtype}")


@gpu
def test_agrees_with_the_sequential_kernel():
    """Same inputs (fp32, a shape like RWKV-4 3B's at B=1) through both kernels: the same
    maths up to fp32 rounding (the state looser: the sequential kernel rounds pp = w + pp once
    a token, the parallel one adds L w once a segment, and aa, bb follow their pp)."""
    B, T, Cm = 1, 3000, 2560
    x = inputs(B, T, Cm, seed=5)
    s = state0(B, Cm, history=True)
    y_seq, s_seq = wkv4_cuda(**x, state=s, parallel=False)
    y_par, s_par = wkv4_cuda_parallel(**x, state=s)
    e_y, e_s = errors(y_par, y_seq), errors(s_par, s_seq)
    print(f"parallel vs sequential fp32 B=1 T=3000 C=2560: y {e_y['rms_rel']:.1e}, state {e_s['rms_rel']:.1e}")
    assert e_y["rms_rel"] < 2e-5 and e_s["rms_rel"] < 1e-4


@gpu
@pytest.mark.parametrize("segment", [0, 16])
def test_state_carried_over_calls(segment):
    """Calls of odd lengths (one of a single token, one shorter than a segment) with the state
    carried equal one call."""
    B, T = 2, 200
    x = inputs(B, T, C)
    s = state0(B, C, history=False)
    y_ref, s_ref = wkv4_ref(**x, state=s)
    pieces, state = [], s
    for lo, hi in ((0, 37), (37, 38), (38, 45), (45, 200)):
        part = {n: (t[:, lo:hi] if t.dim() == 3 else t) for n, t in x.items()}
        y, state = wkv4_cuda_parallel(**part, state=state, segment=segment)
        pieces.append(y)
    assert errors(torch.cat(pieces, 1), y_ref)["rms_rel"] < 1e-4
    assert errors(state, s_ref)["rms_rel"] < 1e-4


@gpu
def test_large_keys_and_decays_stay_finite():
    """Keys up to +-60 and decays from e^-8 to e^3 a token: every exponent is <= 0."""
    B, T, Cm = 2, 700, 256
    g = torch.Generator(device="cuda").manual_seed(7)
    x = dict(w=-torch.exp(torch.linspace(-8, 3, Cm, device="cuda")), u=torch.randn(Cm, generator=g, device="cuda"),
             k=60 * (2 * torch.rand(B, T, Cm, generator=g, device="cuda") - 1),
             v=torch.randn(B, T, Cm, generator=g, device="cuda"))
    s = state0(B, Cm, history=True)
    y_ref, s_ref = wkv4_ref(**x, state=s)
    for segment in (0, 1, 64):
        y, s1 = wkv4_cuda_parallel(**x, state=s, segment=segment)
        check(y, s1, y_ref, s_ref, 1e-4, f"segment={segment}")


@gpu
@pytest.mark.parametrize("segment", [0, 64])
def test_inplace_state_and_graph_capture(segment):
    """The state updated in place, the call (workspace allocation included) captured in a
    CUDA graph and replayed."""
    B, T = 2, 300
    x = cast(inputs(B, T, C), "bf16")
    state = state0(B, C, history=True)
    y_ref, s_ref = wkv4_ref(**{n: t.float() for n, t in x.items()}, state=state)
    static_state, out = state.clone(), torch.empty_like(x["k"])
    wkv4_cuda_parallel(**x, state=static_state, inplace=True, out=out, segment=segment)  # warm-up (and builds)
    check(out, static_state, y_ref, s_ref, TOL["bf16"], "eager")
    static_state.copy_(state)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        wkv4_cuda_parallel(**x, state=static_state, inplace=True, out=out, segment=segment)
    static_state.copy_(state)
    out.fill_(float("nan"))
    graph.replay()
    torch.cuda.synchronize()
    check(out, static_state, y_ref, s_ref, TOL["bf16"], "graph replay")


@gpu
def test_empty_prompt_and_bad_segment():
    x = inputs(2, 0, C)
    s = state0(2, C, history=True)
    y, s1 = wkv4_cuda_parallel(**x, state=s)
    assert y.shape == (2, 0, C) and torch.equal(s1, s)
    with pytest.raises(ValueError, match="segment"):
        wkv4_cuda_parallel(**inputs(1, 5, C), state=state0(1, C, False), segment=-1)


def test_parallel_by_shape():
    """The time-parallel kernel from PARALLEL_MIN_T tokens on, unless the batch's channels
    fill the GPU alone (the bench shapes: 2.9B and 7B, B = 1, 8, 16); plain Python."""
    assert use_parallel(1, 4096, 2560) and use_parallel(16, 16384, 2560) and use_parallel(8, 4096, 4096)
    assert not use_parallel(16, 16384, 4096)  # B x C = 65536: the sequential kernel wins there
    assert not use_parallel(1, PARALLEL_MIN_T - 1, 2560) and use_parallel(1, PARALLEL_MIN_T, 2560)
    assert use_parallel(1, 10**6, PARALLEL_MAX_CHANNELS - 1) and not use_parallel(2, 10**6, PARALLEL_MAX_CHANNELS // 2)


def test_segment_by_shape():
    """The longest segment that still fills the GPU twice over with (b, segment, channel)
    threads (132 SMs x 2048), else the shortest; plain Python, runs without a GPU."""
    want = 2 * 132 * 2048
    assert parallel_segment(16, 16384, 2560, 132) == 512             # 1.3 M threads at 512
    assert parallel_segment(8, 4096, 2560, 132) == 128
    assert parallel_segment(1, 65536, 2560, 132) == 256
    assert parallel_segment(1, 16384, 2560, 132) == 64
    assert parallel_segment(1, 4096, 2560, 132) == PARALLEL_SEGMENTS[-1]  # too few even at the shortest
    for B, T, Cm in ((1, 4096, 2560), (3, 1000, 4096), (16, 16384, 2560), (1, 1, 768)):
        L = parallel_segment(B, T, Cm, 132)
        assert L in PARALLEL_SEGMENTS
        if L != PARALLEL_SEGMENTS[-1]:
            assert B * -(-T // L) * Cm >= want
        if L != PARALLEL_SEGMENTS[0]:  # the next longer one would not have filled it
            longer = PARALLEL_SEGMENTS[PARALLEL_SEGMENTS.index(L) - 1]
            assert B * -(-T // longer) * Cm < want


@gpu
@pytest.mark.parametrize("T,want", [(PARALLEL_MIN_T, "wkv4_parallel"), (PARALLEL_MIN_T - 1, "wkv4")])
def test_wkv4_cuda_dispatches_by_length(monkeypatch, T, want):
    """`wkv4_cuda` takes the time-parallel kernel from PARALLEL_MIN_T tokens on, the
    sequential one below, and both give the reference."""
    from archbench.kernels.wkv4 import op
    calls = spy_kernel_calls(monkeypatch, op)
    x = inputs(1, T, 96, seed=9)
    s = state0(1, 96, history=True)
    y, s1 = wkv4_cuda(**x, state=s)
    assert calls == [want]
    y_ref, s_ref = wkv4_ref(**{n: t.float() for n, t in x.items()}, state=s)
    check(y, s1, y_ref, s_ref, TOL["fp32"], f"dispatch T={T}")
