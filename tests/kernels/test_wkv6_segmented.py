"""WKV6 over time segments (kernels/wkv6/segmented.py) equals the one-step reference: any
number of segments against T (more segments than tokens, a remainder past the last whole
segment, one segment), weak / strong / mixed decays, batches, a nonzero initial state,
WKV5's decay per head, the state carried over calls, and the chunked form as the inner op
(what the CUDA chunked kernel computes). The GPU run with the CUDA kernel inside is in
test_wkv6_chunked_cuda.py."""
import pytest
import torch

from archbench.harness.testing import assert_close
from archbench.kernels.wkv6.chunked import wkv6_chunked
from archbench.kernels.wkv6.ref import wkv6_ref
from archbench.kernels.wkv6.segmented import segment_end_states, wkv6_segmented
from test_wkv6_chunked import inputs, state0


def ref_op(r, k, v, w, u, state, inplace=False, out=None):
    return wkv6_ref(r, k, v, w, u, state)


def chunked_op(r, k, v, w, u, state, inplace=False, out=None):
    return wkv6_chunked(r, k, v, w, u, state)


@pytest.mark.parametrize("decay", ["weak", "strong", "mixed", "none"])
@pytest.mark.parametrize("T,segments", [(64, 4), (67, 4), (5, 8), (40, 1), (96, 7), (17, 16)])
def test_segmented_equals_reference(T, segments, decay):
    B, H, N = 2, 3, 16
    x = inputs(B, T, H, N, decay=decay, seed=T + segments)
    s = state0(B, H, N)
    y_ref, s_ref = wkv6_ref(**x, state=s)
    y, s1 = wkv6_segmented(**x, state=s, segments=segments, inner=ref_op)
    assert y.shape == y_ref.shape
    assert_close(y, y_ref, rms_rel=1e-5, what=f"y T={T} S={segments} {decay}")
    assert_close(s1, s_ref, rms_rel=1e-5, what=f"state T={T} S={segments} {decay}")


def test_chunked_form_inside_and_state_carried():
    """The chunked form as the inner op, two calls with the state carried in place, and a
    preallocated output: the same as one reference call."""
    B, T, H, N = 1, 300, 2, 32
    x = inputs(B, T, H, N, decay="mixed", seed=3)
    s = state0(B, H, N)
    y_ref, s_ref = wkv6_ref(**x, state=s)
    state = s.clone()
    first = {n: (t[:, :170] if t.dim() == 4 else t) for n, t in x.items()}
    rest = {n: (t[:, 170:] if t.dim() == 4 else t) for n, t in x.items()}
    y1, st = wkv6_segmented(**first, state=state, segments=8, inner=chunked_op, inplace=True)
    assert st is state
    out = torch.full((B, T - 170, H, N), float("nan"))
    y2, st = wkv6_segmented(**rest, state=state, segments=8, inner=chunked_op, inplace=True, out=out)
    assert y2 is out
    assert_close(torch.cat([y1, y2], 1), y_ref, rms_rel=1e-5, what="y")
    assert_close(state, s_ref, rms_rel=1e-5, what="state")


def test_wkv5_decay_per_head_broadcasts():
    B, T, H, N = 2, 50, 2, 16
    x = inputs(B, T, H, N, seed=4)
    x["w"] = x["w"][0, 0]  # [H, N]: one decay per head and channel
    s = state0(B, H, N)
    y_ref, s_ref = wkv6_ref(**x, state=s)
    y, s1 = wkv6_segmented(**x, state=s, segments=4, inner=ref_op)
    assert_close(y, y_ref, rms_rel=1e-5, what="y")
    assert_close(s1, s_ref, rms_rel=1e-5, what="state")


def test_segment_end_states_are_the_recurrence_from_zero():
    B, S, L, H, N = 1, 3, 20, 2, 8
    x = inputs(B, S * L, H, N, decay="strong", seed=5)
    z, d = segment_end_states(*(x[n].view(B, S, L, H, N) for n in ("k", "v", "w")))
    for j in range(S):
        part = {n: (t[:, j * L:(j + 1) * L] if t.dim() == 4 else t) for n, t in x.items()}
        _, end = wkv6_ref(**part, state=torch.zeros(B, H, N, N))
        assert_close(z[:, j], end, rms_rel=1e-5, what=f"Z_{j}")
        assert torch.allclose(d[:, j], torch.exp(part["w"].float().sum(1)), rtol=1e-4)


def test_bad_segment_count():
    x = inputs(1, 8, 1, 8)
    with pytest.raises(ValueError, match="segments"):
        wkv6_segmented(**x, state=state0(1, 1, 8), segments=0, inner=ref_op)


def test_segments_by_shape():
    """Enough segments that batch x segments x heads reaches SEGMENT_HEADS, none shorter than
    SEGMENT_MIN_T tokens, powers of two; none where the batch fills the GPU already."""
    from archbench.kernels.wkv6.op import SEGMENT_HEADS, SEGMENT_MIN_T, segments_for
    for B, T, H in [(1, 4096, 40), (1, 65536, 40), (1, 16384, 64), (8, 4096, 40), (16, 16384, 40), (1, 1500, 40)]:
        S = segments_for(B, T, H)
        assert S & (S - 1) == 0 and (S == 1 or T // S >= SEGMENT_MIN_T)
        assert B * S * H >= SEGMENT_HEADS or T // (2 * S) < SEGMENT_MIN_T
        assert S == 1 or B * (S // 2) * H < SEGMENT_HEADS
    assert segments_for(16, 16384, 40) == 1 and segments_for(1, 65536, 40) == 16


def test_wkv5_cuda_glue_to_the_chunked_wkv6_kernel(monkeypatch):
    """`wkv5_cuda`'s long-prompt path, on the CPU: with the chunked WKV6 kernel replaced by
    its PyTorch form, the decay per head repeated over the tokens gives WKV5's reference."""
    from archbench.kernels.wkv5 import op as op5
    from archbench.kernels.wkv5.ref import wkv5_ref
    from archbench.kernels.wkv6 import op as op6
    seen = []

    def chunked(r, k, v, w, u, state, inplace=False, out=None):
        seen.append(tuple(w.shape))
        return wkv6_chunked(r, k, v, w, u, state)

    monkeypatch.setattr(op5, "check_inputs", lambda *a: None)
    monkeypatch.setattr(op5, "use_chunked", lambda *a: True)
    monkeypatch.setattr(op6, "wkv6_cuda_chunked", chunked)
    B, T, H, N = 2, 40, 2, 16
    x = inputs(B, T, H, N, seed=6)
    x["w"] = x["w"][0, 0]
    s = state0(B, H, N)
    y, s1 = op5.wkv5_cuda(**x, state=s)
    assert seen == [(B, T, H, N)]
    y_ref, s_ref = wkv5_ref(**x, state=s)
    assert_close(y, y_ref, rms_rel=1e-5, what="y")
    assert_close(s1, s_ref, rms_rel=1e-5, what="state")


@pytest.mark.parametrize("per_head", [False, True])
def test_wkv6_cuda_segmented_glue(monkeypatch, per_head):
    """`wkv6_cuda_segmented` on the CPU with the chunked kernel replaced by its PyTorch form:
    segments by shape (here 4, SEGMENT_MIN_T lowered), a decay per token or per head."""
    from archbench.kernels.wkv6 import op as op6
    calls = []

    def chunked(r, k, v, w, u, state, inplace=False, out=None):
        calls.append(r.shape[0])
        y, s = wkv6_chunked(r, k, v, w, u, state)
        if inplace:
            state.copy_(s)
            s = state
        return y, s

    monkeypatch.setattr(op6, "wkv6_cuda_chunked", chunked)
    monkeypatch.setattr(op6, "SEGMENT_MIN_T", 8)
    monkeypatch.setattr(op6, "SEGMENT_HEADS", 8)
    B, T, H, N = 1, 70, 2, 16
    x = inputs(B, T, H, N, decay="mixed", seed=7)
    if per_head:
        x["w"] = x["w"][0, 0]
    s = state0(B, H, N)
    y, s1 = op6.wkv6_cuda_segmented(**x, state=s)
    assert calls == [4, 1]  # four segments of 17 at once, then the 2 tokens past them
    y_ref, s_ref = wkv6_ref(**x, state=s)
    assert_close(y, y_ref, rms_rel=1e-5, what="y")
    assert_close(s1, s_ref, rms_rel=1e-5, what="state")
