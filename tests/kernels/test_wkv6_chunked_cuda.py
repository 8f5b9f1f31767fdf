"""The chunked tensor-core WKV6 kernel (kernels/wkv6/cuda/wkv6_chunked.cu, which `wkv6_cuda`
takes for long prompts) against the fp32 one-step reference, on the GPU: lengths around and below
the chunk of 16, batches, nonzero initial states, decays from none through RWKV-6's range to
far stronger ones (the kernel's slow path for columns it cannot factorise), every block width,
the state carried over calls, in place and in a CUDA graph, NaN-prefilled outputs, and other
head sizes falling back to the sequential kernel. Skipped without a GPU."""
import pytest
import torch

from archbench.harness.testing import errors
from archbench.kernels.wkv6.op import wkv6_cuda, wkv6_cuda_chunked
from archbench.kernels.wkv6.ref import wkv6_ref
from helpers import check_in_place_and_in_a_graph, random_state, spy_kernel_calls

gpu = pytest.mark.gpu

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TOL = {"fp32": 1e-4, "bf16": 6e-3, "fp16": 1.5e-3}  # as tests/kernels/test_wkv7_chunked_cuda.py
SHAPES = [(1, 1, 2), (1, 15, 3), (3, 16, 2), (1, 17, 2), (3, 100, 2), (16, 33, 2), (1, 1000, 3), (3, 1000, 2),
          (16, 100, 1), (1, 4097, 2)]  # B, T, H
DECAYS = ["rwkv", "none", "strong", "mixed"]
FORMS = [1, 2]  # one kernel; two (build into a workspace, then the state pass)


def inputs(B, T, H, N, decay="rwkv", seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    rand = lambda *s: torch.randn(*s, generator=g, device="cuda")  # noqa: E731
    shape = (B, T, H, N)
    rwkv = -torch.exp(torch.linspace(-6, 1, N, device="cuda")) * torch.exp(0.3 * rand(*shape))  # as kernel_bench
    if decay == "rwkv":
        w = rwkv
    elif decay == "none":    # w = 0: no decay at all
        w = torch.zeros(shape, device="cuda")
    elif decay == "strong":  # up to e^-8 a token: chunks of 16 past the factorisable span, some not
        w = -8 * torch.rand(shape, generator=g, device="cuda")
    else:                    # every third key column decays up to e^-20 a token, the rest as RWKV-6
        strong = torch.arange(N, device="cuda") % 3 == 0
        w = torch.where(strong, -20 * torch.rand(shape, generator=g, device="cuda"), rwkv)
    return dict(r=rand(*shape), k=0.5 * rand(*shape), v=rand(*shape), w=w), 0.5 * rand(H, N)


def state0(B, H, N, seed=1):
    return random_state(B, H, N, seed, "cuda")


@gpu
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("decay", DECAYS)
@pytest.mark.parametrize("B,T,H", SHAPES)
def test_chunked_matches_reference(B, T, H, decay, dtype, form):
    N = 64
    x, u = inputs(B, T, H, N, decay, seed=T)
    x = {n: t.to(DTYPES[dtype]) for n, t in x.items()}
    s = state0(B, H, N)
    s_before = s.clone()
    y_ref, s_ref = wkv6_ref(**{n: t.float() for n, t in x.items()}, u=u, state=s)
    out = torch.full_like(x["r"], float("nan"))
    y, s_new = wkv6_cuda_chunked(**x, u=u, state=s, out=out, form=form)
    assert y.data_ptr() == out.data_ptr() and y.dtype == DTYPES[dtype]
    assert torch.equal(s, s_before)  # the caller's state is not modified
    assert torch.isfinite(y).all(), "NaN left in the output"
    assert torch.isfinite(s_new).all()
    e_y, e_s = errors(y.float(), y_ref), errors(s_new, s_ref)
    print(f"form {form} {dtype} {decay} B={B} T={T}: y rms_rel {e_y['rms_rel']:.2e}, state rms_rel {e_s['rms_rel']:.2e}")
    assert e_y["rms_rel"] < TOL[dtype], f"y {e_y}"
    assert e_s["rms_rel"] < TOL[dtype], f"state {e_s}"


@gpu
@pytest.mark.parametrize("form", [0, 1, 2])
@pytest.mark.parametrize("variant", [0, 1, 2, 3])
@pytest.mark.parametrize("decay", ["rwkv", "strong", "mixed"])
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_every_block_width_agrees(variant, decay, dtype, form):
    """16, 32 and 64 state columns per block (and the shape's choice) give the reference."""
    B, T, H, N = 2, 77, 3, 64
    x, u = inputs(B, T, H, N, decay)
    x = {n: t.to(DTYPES[dtype]) for n, t in x.items()}
    s = state0(B, H, N)
    y_ref, s_ref = wkv6_ref(**{n: t.float() for n, t in x.items()}, u=u, state=s)
    y, s1 = wkv6_cuda_chunked(**x, u=u, state=s, variant=variant, form=form)
    assert errors(y.float(), y_ref)["rms_rel"] < TOL[dtype] and errors(s1, s_ref)["rms_rel"] < TOL[dtype]


@gpu
@pytest.mark.parametrize("variant,groups,form", [(2, 1, 1), (2, 2, 1), (2, 3, 1), (3, 1, 1), (3, 2, 1), (3, 3, 1), (1, 3, 1),
                                                 (0, 0, 0), (1, 0, 2), (2, 0, 2), (3, 0, 2)])
@pytest.mark.parametrize("T", [1, 17, 40, 64, 65, 300])
def test_every_producer_group_count_agrees(variant, groups, form, T):
    """1-3 producer groups filling the ring of chunk slots, at lengths below, at and past
    groups x 16 tokens, bf16, with the state carried into a second call."""
    B, H, N = 2, 3, 64
    x, u = inputs(B, T, H, N, "mixed", seed=T)
    x = {n: t.bfloat16() for n, t in x.items()}
    s = state0(B, H, N)
    y_ref, s_ref = wkv6_ref(**{n: t.float() for n, t in x.items()}, u=u, state=s)
    y2_ref, s2_ref = wkv6_ref(**{n: t.float() for n, t in x.items()}, u=u, state=s_ref)
    y, s1 = wkv6_cuda_chunked(**x, u=u, state=s, variant=variant, groups=groups, form=form)
    y2, s2 = wkv6_cuda_chunked(**x, u=u, state=s1, variant=variant, groups=groups, form=form)
    for got, ref in ((y.float(), y_ref), (s1, s_ref), (y2.float(), y2_ref), (s2, s2_ref)):
        assert errors(got, ref)["rms_rel"] < TOL["bf16"], errors(got, ref)


@gpu
def test_later_segments_at_64_heads_give_the_same_bits(monkeypatch):
    """At 64 heads the two-kernel form takes segments of 128 chunks then 192 (chunked_tc.cuh:
    later_segments): 6400 tokens (400 chunks) as 128 + 192 + 80 give the bits of even segments
    of 128 (ARCHBENCH_SEG_CHUNKS), and match the reference."""
    B, T, H, N = 1, 6400, 64, 64
    x, u = inputs(B, T, H, N)
    x = {k: v.to(torch.bfloat16) for k, v in x.items()}
    y0, s0 = wkv6_cuda_chunked(**x, u=u, state=state0(B, H, N), form=2, pieces=1)
    monkeypatch.setenv("ARCHBENCH_SEG_CHUNKS", "128")
    y1, s1 = wkv6_cuda_chunked(**x, u=u, state=state0(B, H, N), form=2, pieces=1)
    assert torch.equal(y0, y1) and torch.equal(s0, s1)
    y_ref, s_ref = wkv6_cuda(**{k: v.float() for k, v in x.items()}, u=u, state=state0(B, H, N))  # fp32 sequential
    assert errors(y0.float(), y_ref)["rms_rel"] < TOL["bf16"] and errors(s0, s_ref)["rms_rel"] < TOL["bf16"]


@gpu
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("B,T,H", [(1, 1000, 3), (2, 4097, 5), (1, 6400, 64)])
def test_chunks_per_build_block_give_the_same_bits(B, T, H, dtype, monkeypatch):
    """The build blocks' chunk counts (chunked_tc.cuh: build_cpb; a build alone takes the wide
    instance at 16 bits, wkv6_chunked.cu) only share the chunks out: any count, alone (one
    segment) or beside a state pass (T = 6400 at 64 heads: three segments), gives the same bits."""
    x, u = inputs(B, T, H, 64)
    x = {k: v.to(DTYPES[dtype]) for k, v in x.items()}
    y0, s0 = wkv6_cuda_chunked(**x, u=u, state=state0(B, H, 64), form=2, pieces=1)
    for cpb in ("1", "3", "8", "13"):
        monkeypatch.setenv("ARCHBENCH_BUILD_CPB", cpb)
        monkeypatch.setenv("ARCHBENCH_BUILD_CPB_ALONE", cpb)
        y1, s1 = wkv6_cuda_chunked(**x, u=u, state=state0(B, H, 64), form=2, pieces=1)
        assert torch.equal(y0, y1) and torch.equal(s0, s1), cpb


@gpu
def test_state_carried_over_calls():
    """Calls of odd lengths (one shorter than a chunk, one of a single token) with the state
    carried equal one call, and agree with the sequential kernel."""
    B, H, N, T = 2, 2, 64, 200
    x, u = inputs(B, T, H, N)
    s = state0(B, H, N)
    y_ref, s_ref = wkv6_ref(**x, u=u, state=s)
    pieces, state = [], s
    for lo, hi in ((0, 37), (37, 38), (38, 45), (45, 200)):
        y, state = wkv6_cuda_chunked(**{n: t[:, lo:hi] for n, t in x.items()}, u=u, state=state)
        pieces.append(y)
    assert errors(torch.cat(pieces, 1), y_ref)["rms_rel"] < 1e-4
    assert errors(state, s_ref)["rms_rel"] < 1e-4
    y_seq, s_seq = wkv6_cuda(**x, u=u, state=s)
    assert errors(y_seq, y_ref)["rms_rel"] < 1e-4 and errors(s_seq, s_ref)["rms_rel"] < 1e-4


@gpu
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("B,T,H", [(1, 16384, 8), (1, 20000, 40)])
def test_long_bf16_prompt_against_fp32_kernel(B, T, H, form):
    """Benchmark-like shapes, bf16, against our fp32 sequential kernel. At 1 x 20000 x 40 heads
    (1250 chunks of 16 tokens, 9.5 KB a chunk and head) the two-kernel form runs
    13 segments of 96 chunks and one of 2 through two workspace buffers."""
    N = 64
    x, u = inputs(B, T, H, N, seed=3)
    x = {n: t.bfloat16() for n, t in x.items()}
    s = torch.zeros(B, H, N, N, device="cuda")
    y_ref, s_ref = wkv6_cuda(**{n: t.float() for n, t in x.items()}, u=u, state=s)
    y, s1 = wkv6_cuda_chunked(**x, u=u, state=s, form=form)
    e_y, e_s = errors(y.float(), y_ref), errors(s1, s_ref)
    print(f"form {form} bf16 B={B} T={T} H={H}: y rms_rel {e_y['rms_rel']:.2e}, state {e_s['rms_rel']:.2e}")
    assert e_y["rms_rel"] < TOL["bf16"] and e_s["rms_rel"] < TOL["bf16"]


@gpu
@pytest.mark.parametrize("T,B,pieces,join", [(50, 2, 0, "cuda"), (3100, 2, 0, "cuda"), (3100, 1, 3, "cuda"),
                                             (3100, 1, 3, "cuda2")])
@pytest.mark.parametrize("streams", ["", "0"])
def test_inplace_state_and_graph_capture(T, B, pieces, join, streams, monkeypatch):
    """In place and in a CUDA graph. 3100 tokens are 194 chunks: in the two-kernel form (6
    heads) two segments of 96 and one of 2, each built beside the previous state pass, through
    two workspace buffers: on one stream (the default on sm_90+) or on a second one
    (ARCHBENCH_TWO_KERNEL_PDL=0), which the graph captures too. Also in 3
    pieces (one token left over), joined after by either tile kernel (the second takes 16-bit
    inputs: bf16 there, against the reference on the same rounded inputs)."""
    monkeypatch.setenv("ARCHBENCH_TWO_KERNEL_PDL", streams)
    H, N = 3, 64
    x, u = inputs(B, T, H, N)
    dtype = "bf16" if join == "cuda2" else "fp32"
    x = {n: t.to(DTYPES[dtype]) for n, t in x.items()}
    state = state0(B, H, N)
    y_ref, s_ref = wkv6_ref(**{n: t.float() for n, t in x.items()}, u=u, state=state)
    check_in_place_and_in_a_graph(
        lambda s, out: wkv6_cuda_chunked(**x, u=u, state=s, inplace=True, out=out, pieces=pieces, join=join),
        state, torch.empty_like(x["r"]), y_ref, s_ref, tol=TOL[dtype])


@gpu
@pytest.mark.parametrize("join", ["cuda", "auto"])
@pytest.mark.parametrize("per_head", [False, True])
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("decay", ["rwkv", "mixed"])
@pytest.mark.parametrize("B,T,H,P", [(1, 1000, 3, 2), (1, 4097, 2, 8), (3, 1000, 2, 3), (1, 130, 2, 4), (2, 5000, 1, 5)])
def test_pieces_match_reference(B, T, H, P, decay, dtype, per_head, join):
    """The prompt cut into P pieces run as a batch and joined by a CUDA join
    (cuda/wkv6_pieces.cu: "cuda" the first tile kernel, "auto" the second for 16-bit inputs
    and the first for fp32): the
    reference over the whole prompt, tokens left over included (4097 = 8 x 512 + 1), a decay
    per head (WKV5's) too; and the PyTorch join on the same batch run agrees."""
    from archbench.kernels.wkv6 import pieces as pc
    N = 64
    x, u = inputs(B, T, H, N, decay, seed=T + P)
    if per_head:
        x["w"] = x["w"][0, 0]
    x = {n: t.to(DTYPES[dtype]) for n, t in x.items()}
    s = state0(B, H, N)
    s_before = s.clone()
    y_ref, s_ref = wkv6_ref(**{n: t.float() for n, t in x.items()}, u=u, state=s)
    out = torch.full_like(x["r"], float("nan"))
    y, s_new = wkv6_cuda_chunked(**x, u=u, state=s, out=out, pieces=P, join=join)
    assert y.data_ptr() == out.data_ptr() and torch.equal(s, s_before)
    assert torch.isfinite(y).all(), "NaN left in the output"
    e_y, e_s = errors(y.float(), y_ref), errors(s_new, s_ref)
    print(f"pieces {P} {dtype} {decay} per_head={per_head} B={B} T={T}: y rms_rel {e_y['rms_rel']:.2e}, "
          f"state {e_s['rms_rel']:.2e}")
    assert e_y["rms_rel"] < TOL[dtype], f"y {e_y}"
    assert e_s["rms_rel"] < TOL[dtype], f"state {e_s}"

    def batch_op(r, k, v, w, u, state, inplace, out, tail=False):  # as the op's own, the join aside
        if tail:
            return wkv6_cuda(r, k, v, w if w.dim() == 4 else w.expand(r.shape), u, state, inplace=inplace, out=out)
        return wkv6_cuda_chunked(r, k, v, w, u, state, inplace=inplace, out=out, pieces=1)
    y_t, s_t = pc.run_in_pieces(batch_op, *(x[n] for n in "rkvw"), u, s.clone(), pieces=P, join="torch")
    assert errors(y_t.float(), y.float())["rms_rel"] < TOL[dtype] / 4
    assert errors(s_t, s_new)["rms_rel"] < 1e-5


@gpu
@pytest.mark.parametrize("N", [16, 32, 128])
def test_other_head_sizes_take_the_sequential_kernel(N):
    x, u = inputs(1, 40, 2, N)
    s = state0(1, 2, N)
    y_ref, s_ref = wkv6_ref(**x, u=u, state=s)
    y, s1 = wkv6_cuda_chunked(**x, u=u, state=s)
    assert errors(y, y_ref)["rms_rel"] < 1e-4 and errors(s1, s_ref)["rms_rel"] < 1e-4


@gpu
@pytest.mark.parametrize("T,want", [(4096, ["wkv6_pieces_workspace", "wkv6_pieces"]), (4097, ["wkv6_pieces_workspace", "wkv6_pieces", "wkv6"]),
                                    (1000, ["wkv6"])])
def test_wkv6_cuda_dispatches_by_length(monkeypatch, T, want):
    """`wkv6_cuda` takes the chunked kernel from CHUNKED_MIN_T tokens on (here, at 2 heads, in
    two pieces joined after, the token left over by the sequential kernel), the sequential one
    below, and both give the reference."""
    from archbench.kernels.wkv6 import op, pieces
    calls = spy_kernel_calls(monkeypatch, op, pieces)
    x, u = inputs(1, T, 2, 64)
    s = state0(1, 2, 64)
    y, s1 = wkv6_cuda(**x, u=u, state=s)
    assert calls == want
    y_ref, s_ref = wkv6_ref(**x, u=u, state=s)
    assert errors(y, y_ref)["rms_rel"] < 1e-4 and errors(s1, s_ref)["rms_rel"] < 1e-4


@gpu
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 6e-3)])
@pytest.mark.parametrize("T,want", [(4096, ["wkv6_pieces_workspace", "wkv6_pieces"]),
                                    (4103, ["wkv6_pieces_workspace", "wkv6_pieces", "wkv6"]), (1000, ["wkv6"])])
def test_wkv5_cuda_takes_the_chunked_wkv6_kernel_for_long_prompts(monkeypatch, T, want, dtype, tol):
    """`wkv5_cuda` (a decay per head) runs the chunked WKV6 kernel from CHUNKED_MIN_T tokens
    on (at 2 x 3 heads in two pieces, joined after; the tokens left over by the sequential
    kernel), the decay read once per head, and gives the reference on fp32 inputs (the decay
    rounded to the inputs' dtype in bf16, as WKV6's own) and what the kernel gives with the
    decay repeated over the tokens (bit for bit without pieces; with them, the pieces' summed
    decays are a product against a sum)."""
    from archbench.kernels.wkv5 import op
    from archbench.kernels.wkv5.ref import wkv5_ref
    from archbench.kernels.wkv6 import op as op6, pieces
    calls = spy_kernel_calls(monkeypatch, op, op6, pieces)
    x, u = inputs(2, T, 3, 64)
    w = x.pop("w")[0, 0]   # one decay per head and channel, as RWKV-5's
    x = {n: t.to(dtype) for n, t in x.items()}
    s = state0(2, 3, 64)
    y, s1 = op.wkv5_cuda(**x, w=w, u=u, state=s)
    assert calls == want
    y_ref, s_ref = wkv5_ref(**{n: t.float() for n, t in x.items()}, w=w, u=u, state=s)
    assert errors(y.float(), y_ref)["rms_rel"] < tol and errors(s1, s_ref)["rms_rel"] < tol
    if "wkv6_pieces" in want:
        y_rep, s_rep = op6.wkv6_cuda_chunked(**x, w=w.to(dtype).expand(x["r"].shape), u=u, state=s)
        assert errors(y.float(), y_rep.float())["rms_rel"] < 1e-4 and errors(s1, s_rep)["rms_rel"] < 1e-5


@gpu
@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("decay", ["rwkv", "mixed"])
@pytest.mark.parametrize("form,variant,groups", [(1, 1, 1), (1, 2, 2), (1, 3, 3), (1, 2, 3), (2, 1, 0), (2, 3, 0)])
def test_a_decay_per_head_is_the_decay_repeated_over_the_tokens(form, variant, groups, decay, dtype):
    """WKV5's decay, one row per head (read by the chunk builds from that row instead of staged
    per token), gives what the same kernel gives with the row repeated over the tokens, bit for
    bit: every form (one kernel at each block width and group count, two kernels), every dtype,
    decays that take the slow path for some columns ("mixed"); 2 x 3 heads, 1000 tokens, an
    initial state."""
    x, u = inputs(2, 1000, 3, 64, decay)
    w = x.pop("w")[0, 0]
    x = {n: t.to(DTYPES[dtype]) for n, t in x.items()}
    s = state0(2, 3, 64)
    kw = dict(u=u, state=s, variant=variant, groups=groups, form=form, pieces=1)
    y1, s1 = wkv6_cuda_chunked(**x, w=w.to(DTYPES[dtype]), **kw)
    y_rep, s_rep = wkv6_cuda_chunked(**x, w=w.to(DTYPES[dtype]).expand(x["r"].shape).contiguous(), **kw)
    assert torch.equal(y1, y_rep) and torch.equal(s1, s_rep)
