"""The decode step's matrix-vector kernel (kernels/wkv7/cuda/decode7.cu: gemv) and its LoRA
first factors (lora_down) against fp32 PyTorch on awkward shapes: rows that do not fill the last block, vectors per lane at each
unroll width (4 to 16), several warps a row, up to four matrices and four sequences, relu^2,
the residual added, also in place, and RWKV-6's sigmoid gate with it; matrices of different
row counts in one launch (the channel mix's key and receptance). Also RWKV-4's per-channel
time-mix kernel (tmix4) against kernels/wkv4/ref.py. Skipped without a GPU."""
import pytest
import torch

from archbench.harness.testing import assert_close

pytestmark = pytest.mark.gpu
if not torch.cuda.is_available():
    pytest.skip("no GPU", allow_module_level=True)

TOL = {torch.float32: 1e-5, torch.bfloat16: 8e-3, torch.float16: 1e-3}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("rows,cols,n,B,mode", [
    (1001, 72, 1, 1, "add"),       # 1001 rows: the last block has one
    (2560, 2560, 3, 1, ""),        # r / k / v at 2.9B, one launch (10 vectors a lane in bf16)
    (10240, 2560, 1, 1, "relu"),   # the FFN key at 2.9B
    (2560, 10240, 1, 1, "add"),    # the FFN value: 4 warps a row
    (37, 4104, 2, 3, "add"),       # odd rows, two warps a row of 513 vectors (bf16), three sequences
    (300, 3000, 1, 2, ""),         # 375 vectors a row in bf16: 12 a lane
    (5, 8, 1, 4, "inplace"),       # tiny; the residual is the output itself
    (2560, 2560, 4, 1, ""),        # RWKV-6's r / k / v / g at 3B, one launch
    (2560, 8960, 1, 1, "gate"),    # RWKV-6's FFN value at 3B: residual + sigmoid(receptance) * W x, 4 warps a row
    (37, 4104, 1, 2, "gate"),      # odd rows, two sequences
    (2560, 2560, 1, 1, "gate/2"),  # the residual halved after (fp16 rescaling)
])
def test_gemv_matches_torch(rows, cols, n, B, mode, dtype):
    from archbench.kernels.build import extension
    g = torch.Generator(device="cuda").manual_seed(rows + cols + n + B)
    ws = [(torch.randn(rows, cols, device="cuda", generator=g) * cols ** -0.5).to(dtype) for _ in range(n)]
    xs = [torch.randn(B, cols, device="cuda", generator=g).to(dtype) for _ in range(n)]
    adds = [torch.randn(B, rows, device="cuda", generator=g).to(dtype) for _ in range(n)] if mode else []
    gate = torch.randn(B, rows, device="cuda", generator=g).to(dtype)
    ref = [x.float() @ w.float().t() for w, x in zip(ws, xs)]
    if mode == "relu":
        ref, adds = [r.relu().square() for r in ref], []
    elif mode.startswith("gate"):
        post = 0.5 if mode == "gate/2" else 1.0
        ref = [(a.float() + torch.sigmoid(gate.float()) * r) * post for r, a in zip(ref, adds)]
    elif mode:
        ref = [r + a.float() for r, a in zip(ref, adds)]
    ys = [a for a in adds] if mode == "inplace" else [torch.full((B, rows), float("nan"), device="cuda", dtype=dtype)
                                                      for _ in range(n)]
    if mode.startswith("gate"):
        extension().rwkv6_gemv_gated(ws, xs, ys, adds, gate, post)
    else:
        extension().rwkv7_gemv(ws, xs, ys, adds, mode == "relu")
    for y, r in zip(ys, ref):
        assert torch.isfinite(y).all(), "rows left unwritten"
        assert_close(y.float(), r, rms_rel=TOL[dtype], what=f"gemv {rows}x{cols} {dtype}")



@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("C,ranks,B", [(2560, (96, 96, 64, 320), 1), (256, (64, 64, 0, 128), 1),
                                       (520, (8, 16, 24, 40), 3)])
def test_lora_down_matches_torch(C, ranks, B, dtype):
    """The LoRA first factors of the decode step (rwkv7_lora_down: four inputs, row blocks
    writing partial sums) against fp32 PyTorch; a missing group (v on layer 0) stays empty."""
    from archbench.kernels.build import extension
    from archbench.kernels.wkv7.decode import KSPLIT
    g = torch.Generator(device="cuda").manual_seed(C + B)
    rnd = lambda *s: torch.randn(*s, device="cuda", generator=g).to(dtype)  # noqa: E731
    xs = [rnd(B, C) for _ in range(4)]
    ws = [rnd(C, r) * C ** -0.5 if r else torch.empty(0, device="cuda", dtype=dtype) for r in ranks]
    partial = torch.full((KSPLIT, B, sum(ranks)), float("nan"), device="cuda")
    extension().rwkv7_lora_down(xs, ws, partial)
    ref = torch.cat([x.float() @ w.float() for x, w in zip(xs, ws) if w.numel()], -1)
    assert_close(partial.sum(0), ref, rms_rel=1e-5, what="lora_down")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("C,ranks,B", [(2560, (96, 96, 64, 320), 1), (256, (64, 64, 0, 128), 1),
                                       (520, (8, 16, 24, 40), 3)])
def test_rkv_with_lora_equals_the_two_launches(C, ranks, B, dtype):
    """rwkv7_rkv_lora (lora_down's blocks first in the r / k / v projections' launch) gives
    the bits of rwkv7_lora_down then rwkv7_gemv."""
    from archbench.kernels.build import extension
    from archbench.kernels.wkv7.decode import KSPLIT
    ext = extension()
    g = torch.Generator(device="cuda").manual_seed(C + B)
    rnd = lambda *s: torch.randn(*s, device="cuda", generator=g).to(dtype)  # noqa: E731
    ws, xs = [rnd(C, C) * C ** -0.5 for _ in range(3)], [rnd(B, C) for _ in range(3)]
    lxs = [rnd(B, C) for _ in range(4)]
    lws = [rnd(C, r) * C ** -0.5 if r else torch.empty(0, device="cuda", dtype=dtype) for r in ranks]
    partial = [torch.full((KSPLIT, B, sum(ranks)), float("nan"), device="cuda") for _ in range(2)]
    ys = [[torch.full((B, C), float("nan"), device="cuda", dtype=dtype) for _ in range(3)] for _ in range(2)]
    ext.rwkv7_rkv_lora(ws, xs, ys[0], lxs, lws, partial[0])
    ext.rwkv7_lora_down(lxs, lws, partial[1])
    ext.rwkv7_gemv(ws, xs, ys[1], [], False)
    for a, b in zip(ys[0], ys[1]):
        assert torch.equal(a, b)
    assert torch.equal(partial[0], partial[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("C,F_,B,scale", [(2560, 10240, 1, 1.0), (2560, 8960, 2, 0.25), (72, 1000, 3, 0.5),
                                          (4104, 96, 1, 1.0)])
def test_key_receptance_in_one_launch(C, F_, B, scale, dtype):
    """rwkv6_key_receptance: relu(W_k x_k)^2 scale and W_r x_r in one grid of two matrices with
    different row counts (the receptance's blocks past its C rows leave; at 4104 x 96 the key
    is the shorter one)."""
    from archbench.kernels.build import extension
    g = torch.Generator(device="cuda").manual_seed(C + F_ + B)
    rnd = lambda *s: torch.randn(*s, device="cuda", generator=g).to(dtype)  # noqa: E731
    wk, wr = rnd(F_, C) * C ** -0.5, rnd(C, C) * C ** -0.5
    xk, xr = rnd(B, C), rnd(B, C)
    h = torch.full((B, F_), float("nan"), device="cuda", dtype=dtype)
    rr = torch.full((B, C), float("nan"), device="cuda", dtype=dtype)
    extension().rwkv6_key_receptance(wk, wr, xk, xr, h, rr, scale)
    assert_close(h.float(), (xk.float() @ wk.float().t()).relu().square() * scale, rms_rel=TOL[dtype], what="key")
    assert_close(rr.float(), xr.float() @ wr.float().t(), rms_rel=TOL[dtype], what="receptance")


def test_gemv_rejects_mismatched_dtypes():
    from archbench.kernels.build import extension
    w = torch.randn(16, 16, device="cuda", dtype=torch.bfloat16)
    x, y = torch.randn(1, 16, device="cuda"), torch.empty(1, 16, device="cuda", dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="dtype"):
        extension().rwkv7_gemv([w], [x], [y], [], False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("C,B,scale", [(2560, 1, 1.0), (1000, 3, 0.5), (72, 16, 1.0)])
def test_tmix4_matches_the_wkv4_reference(C, B, scale, dtype):
    """rwkv4_tmix_decode, eight steps with the state carried (from "no history": pp = -1e38),
    against wkv4_ref: sigmoid(r) wkv scale, and the state (aa, bb, pp) in place. Keys up to
    about +-8 so the running maximum changes hands."""
    from archbench.kernels.build import extension
    from archbench.kernels.wkv4.ref import wkv4_init_state, wkv4_ref
    g = torch.Generator(device="cuda").manual_seed(C + B)
    rnd = lambda *s: torch.randn(*s, device="cuda", generator=g)  # noqa: E731
    decay = torch.linspace(-5, 1, C, device="cuda") + 0.3 * rnd(C)
    first = 0.3 + 0.7 * torch.rand(C, device="cuda", generator=g)
    state, ref_state = wkv4_init_state(B, C, "cuda"), wkv4_init_state(B, C, "cuda")
    for step in range(8):
        r, k, v = rnd(B, C).to(dtype), (3 * rnd(B, C)).to(dtype), rnd(B, C).to(dtype)
        out = torch.full((B, C), float("nan"), device="cuda", dtype=dtype)
        extension().rwkv4_tmix_decode(r, k, v, decay, first, state, out, scale)
        y, ref_state = wkv4_ref(-torch.exp(decay), first, k[:, None], v[:, None], ref_state)
        ref = torch.sigmoid(r.float()) * y[:, 0] * scale
        assert_close(out.float(), ref, rms_rel=TOL[dtype], what=f"tmix4 step {step}")
        assert_close(state, ref_state, rms_rel=3e-5, what=f"state after step {step}")


def test_tmix6_rejects_decay_of_neither_width():
    """rwkv6_tmix_decode takes time_decay / time_faaaa per channel (C values, RWKV-5.2 / 6) or
    time_decay / time_first per head (H values, RWKV-5.0 / 5.1); anything else is an error, as is
    a gate that is neither empty nor r's shape."""
    from archbench.kernels.build import extension
    B, H, N = 1, 2, 16
    C = H * N
    x = torch.zeros(B, C, device="cuda")
    f32 = lambda n: torch.zeros(n, device="cuda")  # noqa: E731
    state, out = torch.zeros(B, H, N, N, device="cuda"), torch.empty(B, C, device="cuda")
    no_lora, no_w2 = torch.zeros(1, B, 0, device="cuda"), torch.zeros(0, C, device="cuda")
    ext = extension()
    for per in (C, H):  # both widths are taken
        ext.rwkv6_tmix_decode(x, x, x, x, no_lora, no_w2, [f32(per), f32(per), f32(C), f32(C)], 1e-5, state, out, 1.0)
    with pytest.raises(RuntimeError, match="time_decay"):
        ext.rwkv6_tmix_decode(x, x, x, x, no_lora, no_w2, [f32(H + 1), f32(H + 1), f32(C), f32(C)], 1e-5, state,
                              out, 1.0)
    with pytest.raises(RuntimeError, match="g must be"):
        ext.rwkv6_tmix_decode(x, x, x, x[:, :N], no_lora, no_w2, [f32(C), f32(C), f32(C), f32(C)], 1e-5, state,
                              out, 1.0)
