"""The prompt cut into pieces that run as a batch and are joined after (kernels/wkv6/pieces.py),
on the CPU: with the fp32 reference as the batch op and the PyTorch join, the pieces give the
reference over the whole prompt (lengths that leave tokens over, batches, a decay per token or
per head as WKV5's, a nonzero initial state), and the policy's bounds. The CUDA join is tested
against the reference in tests/kernels/test_wkv6_chunked_cuda.py."""
import pytest
import torch

from archbench.harness.testing import errors
from archbench.kernels.wkv6 import pieces as pc
from archbench.kernels.wkv6.ref import wkv6_ref
from helpers import random_state


def ref_base(r, k, v, w, u, state, inplace, out, tail=False):
    y, s = wkv6_ref(r, k, v, w, u, state)
    if out is not None:
        out.copy_(y)
        y = out
    state.copy_(s)
    return y, state


def inputs(B, T, H, N, per_head, seed=0):
    g = torch.Generator().manual_seed(seed)
    rand = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    shape = (B, T, H, N)
    w = -torch.exp(torch.linspace(-6, 1, N)) * torch.exp(0.3 * rand(*((H, N) if per_head else shape)))
    return dict(r=rand(*shape), k=0.5 * rand(*shape), v=rand(*shape), w=w), 0.5 * rand(H, N)


@pytest.mark.parametrize("per_head", [False, True])
@pytest.mark.parametrize("B,T,H,P", [(1, 64, 2, 2), (1, 203, 2, 3), (3, 101, 2, 4), (2, 300, 1, 8), (1, 9, 2, 9)])
def test_pieces_give_the_reference(B, T, H, P, per_head):
    N = 16
    x, u = inputs(B, T, H, N, per_head, seed=T)
    s = random_state(B, H, N, 1, "cpu")
    y_ref, s_ref = wkv6_ref(**x, u=u, state=s)
    state = s.clone()
    out = torch.full_like(x["r"], float("nan"))
    y, s_new = pc.run_in_pieces(ref_base, **x, u=u, state=state, pieces=P, join="torch", out=out)
    assert y.data_ptr() == out.data_ptr() and s_new.data_ptr() == state.data_ptr()
    assert torch.isfinite(y).all()
    assert errors(y, y_ref)["rms_rel"] < 1e-5, errors(y, y_ref)
    assert errors(s_new, s_ref)["rms_rel"] < 1e-5, errors(s_new, s_ref)


def test_pieces_differ_without_the_join(monkeypatch):
    """The join is what makes the pieces right: left out, pieces 1.. have lost the state."""
    B, T, H, N, P = 1, 128, 2, 16, 4
    x, u = inputs(B, T, H, N, False)
    s = random_state(B, H, N, 1, "cpu")
    y_ref, _ = wkv6_ref(**x, u=u, state=s)
    joins = []
    monkeypatch.setattr(pc, "join_ref", lambda *a, **k: joins.append(1))
    y, _ = pc.run_in_pieces(ref_base, **x, u=u, state=s.clone(), pieces=P, join="torch")
    assert joins == [1]
    assert errors(y[:, : T // P], y_ref[:, : T // P])["rms_rel"] < 1e-5   # piece 0 ran from the true state
    assert errors(y[:, T // P:], y_ref[:, T // P:])["rms_rel"] > 1e-2


@pytest.mark.parametrize("per_head", [False, True])
@pytest.mark.parametrize("B,T,P", [(1, 128, 2), (2, 403, 3), (1, 64 * 5 * 4, 4), (1, 30, 2)])
def test_tile_offsets_are_the_sums_before_each_tile(B, T, P, per_head):
    H, N = 3, 8
    x, _ = inputs(B, T, H, N, per_head)
    w = x["w"]
    Ts = T // P
    offset, dsum = pc.tile_offsets(w, B, P, Ts)
    nt = -(-Ts // pc.TILE)
    assert offset.shape == (B * P, nt, H, N) and dsum.shape == (B * P, H, N)
    wp = (w.expand(B, T, H, N) if per_head else w)[:, :P * Ts].reshape(B * P, Ts, H, N).double()
    excl = torch.cumsum(wp, 1) - wp
    assert torch.allclose(offset.double(), excl[:, ::pc.TILE], rtol=1e-5, atol=1e-4)
    assert torch.allclose(dsum.double(), wp.sum(1), rtol=1e-5, atol=1e-4)


def test_bad_pieces_are_refused():
    x, u = inputs(1, 4, 1, 16, False)
    s = torch.zeros(1, 1, 16, 16)
    with pytest.raises(ValueError, match="pieces"):
        pc.run_in_pieces(ref_base, **x, u=u, state=s, pieces=5, join="torch")
    with pytest.raises(ValueError, match="join"):
        pc.run_in_pieces(ref_base, **x, u=u, state=s, pieces=2, join="triton")
    with pytest.raises(ValueError, match="16-bit"):  # the second tile kernel is for bf16 / fp16 only
        pc.run_in_pieces(ref_base, **x, u=u, state=s, pieces=2, join="cuda2")


@pytest.mark.parametrize("B", [1, 2, 4, 16, 64])
@pytest.mark.parametrize("T", [1, 1000, 4096, 16384, 65536, 1 << 20])
@pytest.mark.parametrize("H", [1, 40, 64])
def test_policy_bounds(B, T, H):
    P = pc.pieces_for(B, T, H)
    assert P >= 1
    if P > 1:
        assert B * H <= pc.MAX_HEADS and T >= pc.MIN_T and B * P * H <= pc.PIECE_HEADS and T // P >= pc.MIN_PIECE
        assert P <= pc.MAX_PIECES
    else:
        assert B * H > pc.MAX_HEADS or T < pc.MIN_T or 2 * B * H > pc.PIECE_HEADS
    if (B, H) == (1, 40) and T >= 4096:
        assert P == 8  # the measured best at 2.9B's heads
