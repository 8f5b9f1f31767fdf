"""The decode step's matrix-vector kernel (kernels/wkv7/cuda/decode7.cu: gemv) and its LoRA
first factors (lora_down) against fp32 PyTorch on awkward shapes: rows that do not fill the last block, vectors per lane at each
unroll width (4 to 16), several warps a row, up to four matrices and four sequences, relu^2,
the residual added, also in place, and RWKV-6's sigmoid gate with it. Skipped without a GPU."""
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
    elif mode == "gate":
        ref = [a.float() + torch.sigmoid(gate.float()) * r for r, a in zip(ref, adds)]
    elif mode:
        ref = [r + a.float() for r, a in zip(ref, adds)]
    ys = [a for a in adds] if mode == "inplace" else [torch.full((B, rows), float("nan"), device="cuda", dtype=dtype)
                                                      for _ in range(n)]
    if mode == "gate":
        extension().rwkv6_gemv_gated(ws, xs, ys, adds, gate)
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
