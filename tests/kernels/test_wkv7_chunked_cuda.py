"""The chunked tensor-core WKV7 kernel (kernels/wkv7/cuda/wkv7_chunked.cu) against the
fp32 one-step reference, on the GPU: lengths around and below the chunk of 16, batches,
nonzero initial states, decays from none through RWKV-7's range to far stronger ones (the
kernel's slow path for columns it cannot factorise), every block width, the state carried
over calls, in place and in a CUDA graph. Skipped without a GPU (the dispatch-rule test
runs anywhere)."""
import pytest
import torch
import torch.nn.functional as F

from archbench.harness.testing import errors
from archbench.kernels import build
from archbench.kernels.build import use_chunked
from archbench.kernels.wkv7.op import wkv7_cuda, wkv7_cuda_chunked
from archbench.kernels.wkv7.ref import wkv7_ref
from helpers import check_in_place_and_in_a_graph, random_state

gpu = pytest.mark.gpu

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TOL = {"fp32": 1e-4, "bf16": 6e-3, "fp16": 1.5e-3}  # as tests/kernels/test_wkv_cuda.py
SHAPES = [(1, 1, 2), (1, 15, 3), (2, 16, 2), (3, 17, 2), (1, 100, 3), (16, 33, 2), (2, 1000, 2), (1, 4097, 2)]  # B, T, H
DECAYS = ["rwkv", "none", "strong", "mixed"]
FORMS = [1, 2, 3]  # one kernel; two (build into a workspace, then the state pass); fused (registers)


def inputs(B, T, H, N, decay="rwkv", seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    rand = lambda *s: torch.randn(*s, generator=g, device="cuda")  # noqa: E731
    shape = (B, T, H, N)
    if decay == "rwkv":      # RWKV-7's range: w in [-0.6065, 0]
        w = -0.6065 * torch.sigmoid(rand(*shape))
    elif decay == "none":    # w = 0: no decay at all
        w = torch.zeros(shape, device="cuda")
    elif decay == "strong":  # up to e^-8 a token: chunks of 16 past the factorisable span, some not
        w = -8 * torch.rand(shape, generator=g, device="cuda")
    else:                    # every third key column decays up to e^-20 a token, the rest as RWKV-7
        strong = (torch.arange(N, device="cuda") % 3 == 0)
        w = torch.where(strong, -20 * torch.rand(shape, generator=g, device="cuda"), -0.6065 * torch.sigmoid(rand(*shape)))
    kk = F.normalize(rand(*shape), dim=-1)
    return dict(r=rand(*shape), w=w, k=rand(*shape), v=rand(*shape), a=-kk, b=kk * torch.sigmoid(rand(*shape)))


def state0(B, H, N, seed=1):
    return random_state(B, H, N, seed, "cuda")


@gpu
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("decay", DECAYS)
@pytest.mark.parametrize("B,T,H", SHAPES)
def test_chunked_matches_reference(B, T, H, decay, dtype, form):
    N = 64
    x = {n: t.to(DTYPES[dtype]) for n, t in inputs(B, T, H, N, decay, seed=T).items()}
    s = state0(B, H, N)
    s_before = s.clone()
    y_ref, s_ref = wkv7_ref(**{n: t.float() for n, t in x.items()}, state=s)
    out = torch.full_like(x["r"], float("nan"))
    y, s_new = wkv7_cuda_chunked(**x, state=s, out=out, form=form)
    assert y.data_ptr() == out.data_ptr() and y.dtype == DTYPES[dtype]
    assert torch.equal(s, s_before)  # the caller's state is not modified
    assert torch.isfinite(y).all(), "NaN left in the output"
    e_y, e_s = errors(y.float(), y_ref), errors(s_new, s_ref)
    print(f"form {form} {dtype} {decay} B={B} T={T}: y rms_rel {e_y['rms_rel']:.2e}, state rms_rel {e_s['rms_rel']:.2e}")
    assert e_y["rms_rel"] < TOL[dtype], f"y {e_y}"
    assert e_s["rms_rel"] < TOL[dtype], f"state {e_s}"


@gpu
@pytest.mark.parametrize("form,variant", [(f, v) for f in (0, 1, 2) for v in (0, 1, 2, 3)] + [(3, 0), (3, 3)])
@pytest.mark.parametrize("decay", ["rwkv", "strong"])
def test_every_block_width_agrees(variant, decay, form):
    """16, 32 and 64 state columns per block (and the shape's choice) give the reference; the
    fused form takes 64."""
    B, T, H, N = 2, 77, 3, 64
    x = inputs(B, T, H, N, decay)
    s = state0(B, H, N)
    y_ref, s_ref = wkv7_ref(**x, state=s)
    y, s1 = wkv7_cuda_chunked(**x, state=s, variant=variant, form=form)
    assert errors(y, y_ref)["rms_rel"] < 1e-4 and errors(s1, s_ref)["rms_rel"] < 1e-4


@gpu
@pytest.mark.parametrize("variant,groups,form", [(2, 1, 1), (2, 2, 1), (2, 3, 1), (3, 1, 1), (3, 2, 1), (3, 3, 1), (1, 3, 1),
                                                 (0, 0, 0), (1, 0, 2), (2, 0, 2), (3, 0, 2), (0, 0, 3), (3, 1, 3), (3, 2, 3), (0, 3, 3)])
@pytest.mark.parametrize("T", [1, 17, 40, 64, 65, 300])
def test_every_producer_group_count_agrees(variant, groups, form, T):
    """1-3 producer groups filling the ring of chunk slots, at lengths below, at and past
    groups x 16 tokens (groups left without a chunk, a ring that wraps several times), bf16,
    with the state carried into a second call."""
    B, H, N = 2, 3, 64
    x = {n: t.bfloat16() for n, t in inputs(B, T, H, N, "mixed", seed=T).items()}
    s = state0(B, H, N)
    y_ref, s_ref = wkv7_ref(**{n: t.float() for n, t in x.items()}, state=s)
    y2_ref, s2_ref = wkv7_ref(**{n: t.float() for n, t in x.items()}, state=s_ref)
    y, s1 = wkv7_cuda_chunked(**x, state=s, variant=variant, groups=groups, form=form)
    y2, s2 = wkv7_cuda_chunked(**x, state=s1, variant=variant, groups=groups, form=form)
    for got, ref in ((y.float(), y_ref), (s1, s_ref), (y2.float(), y2_ref), (s2, s2_ref)):
        assert errors(got, ref)["rms_rel"] < TOL["bf16"], errors(got, ref)


@gpu
@pytest.mark.parametrize("fused_first", ["1", "0"])
@pytest.mark.parametrize("B,T,H", [(1, 1000, 3), (1, 4097, 5)])
def test_chunks_per_build_block_give_the_same_bits(B, T, H, fused_first, monkeypatch):
    """The build blocks' chunk counts (chunked_tc.cuh: build_cpb) only share the chunks out:
    any count, alone (one segment) or beside a state pass (several), gives the same bits (bf16;
    with and without the fused first segment)."""
    monkeypatch.setenv("ARCHBENCH_FUSED_FIRST", fused_first)
    x = {n: t.bfloat16() for n, t in inputs(B, T, H, 64, "mixed").items()}
    y0, s0 = wkv7_cuda_chunked(**x, state=state0(B, H, 64), form=2)
    for cpb in ("1", "3", "13"):
        monkeypatch.setenv("ARCHBENCH_BUILD_CPB", cpb)
        monkeypatch.setenv("ARCHBENCH_BUILD_CPB_ALONE", cpb)
        y1, s1 = wkv7_cuda_chunked(**x, state=state0(B, H, 64), form=2)
        assert torch.equal(y0, y1) and torch.equal(s0, s1), cpb


@gpu
def test_state_carried_over_calls():
    """Calls of odd lengths (one shorter than a chunk) with the state carried equal one call,
    and agree with the sequential kernel."""
    B, H, N, T = 2, 2, 64, 200
    x = inputs(B, T, H, N)
    s = state0(B, H, N)
    y_ref, s_ref = wkv7_ref(**x, state=s)
    pieces, state = [], s
    for lo, hi in ((0, 37), (37, 38), (38, 45), (45, 200)):
        y, state = wkv7_cuda_chunked(**{n: t[:, lo:hi] for n, t in x.items()}, state=state)
        pieces.append(y)
    assert errors(torch.cat(pieces, 1), y_ref)["rms_rel"] < 1e-4
    assert errors(state, s_ref)["rms_rel"] < 1e-4
    y_seq, s_seq = wkv7_cuda(**x, state=s, chunked=False)
    assert errors(y_seq, y_ref)["rms_rel"] < 1e-4 and errors(s_seq, s_ref)["rms_rel"] < 1e-4


@gpu
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("B,T,H", [(1, 16384, 8), (1, 20000, 40)])
def test_long_bf16_prompt_against_fp32_kernel(B, T, H, form):
    """Benchmark-like shapes, bf16, against our fp32 sequential kernel. At 1 x 20000 x 40 heads
    (1250 chunks of 16 tokens, 25.9 KB a chunk and head) the two-kernel form runs
    19 segments of 64 chunks and one of 34 through two workspace buffers."""
    N = 64
    x = {n: t.bfloat16() for n, t in inputs(B, T, H, N, seed=3).items()}
    s = torch.zeros(B, H, N, N, device="cuda")
    y_ref, s_ref = wkv7_cuda(**{n: t.float() for n, t in x.items()}, state=s, chunked=False)
    y, s1 = wkv7_cuda_chunked(**x, state=s, form=form)
    e_y, e_s = errors(y.float(), y_ref), errors(s1, s_ref)
    print(f"form {form} bf16 B={B} T={T} H={H}: y rms_rel {e_y['rms_rel']:.2e}, state {e_s['rms_rel']:.2e}")
    assert e_y["rms_rel"] < TOL["bf16"] and e_s["rms_rel"] < TOL["bf16"]


@gpu
@pytest.mark.parametrize("T", [50, 3100])
@pytest.mark.parametrize("streams", ["", "0"])
def test_inplace_state_and_graph_capture(T, streams, monkeypatch):
    """In place and in a CUDA graph. 3100 tokens are 194 chunks: in the two-kernel form (6
    heads) three segments of 64 and one of 2, each built beside the previous state pass,
    through two workspace buffers: on one stream (the default on sm_90+) or on a second one
    (ARCHBENCH_TWO_KERNEL_PDL=0), which the graph captures too."""
    monkeypatch.setenv("ARCHBENCH_TWO_KERNEL_PDL", streams)
    B, H, N = 2, 3, 64
    x = inputs(B, T, H, N)
    state = state0(B, H, N)
    y_ref, s_ref = wkv7_ref(**x, state=state)
    check_in_place_and_in_a_graph(lambda s, out: wkv7_cuda_chunked(**x, state=s, inplace=True, out=out),
                                  state, torch.empty_like(x["r"]), y_ref, s_ref)


@gpu
@pytest.mark.parametrize("op", ["wkv7", "wkv6"])
@pytest.mark.parametrize("schedule", ["16,64,8", "150", "1"])
def test_uneven_segments_give_the_same_bits(op, schedule, monkeypatch):
    """The two-kernel form's segments with lengths from ARCHBENCH_SEG_SCHEDULE (chunked_tc.cuh,
    for measuring): 3100 tokens (194 chunks) in segments of 16, 64, then 8 (the last repeated),
    or 150 and 44, or one chunk each, give the bits of the default segments (the state passes
    carry an fp32 state between them; nothing else depends on where a segment ends)."""
    from archbench.kernels.wkv6.op import wkv6_cuda_chunked
    B, T, H, N = 2, 3100, 3, 64
    x = inputs(B, T, H, N)
    if op == "wkv6":
        x = dict(r=x["r"], k=x["k"], v=x["v"], w=x["w"], u=torch.randn(H, N, device="cuda"))
    x = {k: v.to(torch.bfloat16) if k != "u" else v for k, v in x.items()}
    run = (lambda s: wkv7_cuda_chunked(**x, state=s, form=2)) if op == "wkv7" else (
        lambda s: wkv6_cuda_chunked(**x, state=s, form=2, pieces=1))
    monkeypatch.setenv("ARCHBENCH_FUSED_FIRST", "0")  # WKV7's first segment built like the rest
    y0, s0 = run(state0(B, H, N))
    monkeypatch.setenv("ARCHBENCH_SEG_SCHEDULE", schedule)
    y1, s1 = run(state0(B, H, N))
    assert torch.equal(y0, y1) and torch.equal(s0, s1)


@gpu
@pytest.mark.parametrize("op", ["wkv7", "wkv7-built-first", "wkv6"])
@pytest.mark.parametrize("schedule", ["", "16,64,8", "1"])
def test_two_kernel_form_on_one_stream(op, schedule, monkeypatch):
    """The two-kernel form on one stream (chunked_tc.cuh, the default on sm_90+: each build
    launched with programmatic dependent launch beside the state pass ahead of it, one of its
    blocks waiting for that pass before it exits) gives the bits of the two-stream order
    (ARCHBENCH_TWO_KERNEL_PDL=0): the same kernels on the same data, only launched differently. 3100 tokens at 6
    heads in several segments (default lengths, 16 / 64 / 8, one chunk each), WKV7 with its
    first segment fused or built, WKV6; eagerly and replayed from a CUDA graph."""
    from archbench.kernels.wkv6.op import wkv6_cuda_chunked
    B, T, H, N = 2, 3100, 3, 64
    x = inputs(B, T, H, N, "mixed", seed=7)
    if op == "wkv6":
        x = dict(r=x["r"], k=x["k"], v=x["v"], w=x["w"], u=torch.randn(H, N, device="cuda"))
    x = {k: v.to(torch.bfloat16) if k != "u" else v for k, v in x.items()}

    def run(s, out=None):
        if op == "wkv6":
            return wkv6_cuda_chunked(**x, state=s, inplace=True, out=out, form=2, pieces=1)
        return wkv7_cuda_chunked(**x, state=s, inplace=True, out=out, form=2)
    if op == "wkv7-built-first":
        monkeypatch.setenv("ARCHBENCH_FUSED_FIRST", "0")
    monkeypatch.setenv("ARCHBENCH_SEG_SCHEDULE", schedule)
    monkeypatch.setenv("ARCHBENCH_TWO_KERNEL_PDL", "0")
    y_two, s_two = run(state0(B, H, N))
    monkeypatch.delenv("ARCHBENCH_TWO_KERNEL_PDL")
    y_one, s_one = run(state0(B, H, N))
    assert torch.equal(y_one, y_two) and torch.equal(s_one, s_two)
    check_in_place_and_in_a_graph(lambda s, out: run(s, out), state0(B, H, N), torch.empty_like(x["r"]),
                                  y_two.float(), s_two, tol=1e-6)


@gpu
@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
@pytest.mark.parametrize("schedule", ["", "16,64", "1,64", "150"])
def test_first_segment_by_the_fused_kernel(dtype, schedule, monkeypatch):
    """The two-kernel form runs its first segment with the fused kernel (tokens up to the
    segment's end, the state left for the state pass of segment 1) while segment 1 is built
    beside it: at first-segment lengths of 64 (default), 16, 1 and 150 chunks it gives the
    reference, and the same as the first segment built like the rest within the dtype's
    tolerance (the fused kernel does U's products itself, so not the same bits)."""
    B, T, H, N = 2, 3100, 3, 64
    x = {n: t.to(DTYPES[dtype]) for n, t in inputs(B, T, H, N, "mixed", seed=5).items()}
    s = state0(B, H, N)
    y_ref, s_ref = wkv7_ref(**{n: t.float() for n, t in x.items()}, state=s)
    monkeypatch.setenv("ARCHBENCH_SEG_SCHEDULE", schedule)
    y, s1 = wkv7_cuda_chunked(**x, state=s, form=2)
    monkeypatch.setenv("ARCHBENCH_FUSED_FIRST", "0")
    y0, s0 = wkv7_cuda_chunked(**x, state=s, form=2)
    for got, ref in ((y.float(), y_ref), (s1, s_ref), (y.float(), y0.float()), (s1, s0)):
        assert errors(got, ref)["rms_rel"] < TOL[dtype], errors(got, ref)


@gpu
@pytest.mark.parametrize("N", [16, 32, 128])
def test_other_head_sizes_take_the_sequential_kernel(N):
    x = inputs(1, 40, 2, N)
    s = state0(1, 2, N)
    y_ref, s_ref = wkv7_ref(**x, state=s)
    y, s1 = wkv7_cuda_chunked(**x, state=s)
    assert errors(y, y_ref)["rms_rel"] < 1e-4 and errors(s1, s_ref)["rms_rel"] < 1e-4


@gpu
def test_dispatch_through_wkv7_cuda(monkeypatch):
    monkeypatch.setattr(build, "CHUNKED_MIN_T", 64)
    x = inputs(1, 100, 2, 64)
    s = state0(1, 2, 64)
    y_ref, s_ref = wkv7_ref(**x, state=s)
    y, s1 = wkv7_cuda(**x, state=s)
    assert errors(y, y_ref)["rms_rel"] < 1e-4 and errors(s1, s_ref)["rms_rel"] < 1e-4


def test_fused_form_refuses_what_it_does_not_build():
    """The fused form (3) is 64 columns, WKV7 only: anything else is a clear error before a
    launch (no GPU needed)."""
    from archbench.kernels.build import chunked_variant
    from archbench.kernels.wkv6.op import wkv6_cuda_chunked
    assert chunked_variant(0, 0, 3) == 300 and chunked_variant(3, 2, 3) == 323
    for variant, groups in ((1, 0), (2, 1), (1, 3)):
        with pytest.raises(ValueError, match="fused form"):
            chunked_variant(variant, groups, 3)
    x = torch.zeros(1, 4, 1, 64)
    with pytest.raises(ValueError, match="fused form"):
        wkv6_cuda_chunked(x, x, x, x, torch.zeros(1, 64), None, form=3)


def test_dispatch_rule():
    """The chunked kernels (WKV6 and WKV7) for long prompts at any batch (measured at B x H =
    40, 320, 640)."""
    assert use_chunked(1, 16384, 40, 64) and use_chunked(1, 1024, 64, 64)
    assert use_chunked(16, 16384, 40, 64) and use_chunked(2, 16384, 40, 64)
    assert not use_chunked(1, 1023, 40, 64)
    assert not use_chunked(1, 16384, 40, 128)  # head size 64 only
