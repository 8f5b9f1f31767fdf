"""The segmented WKV4 (kernels/wkv4/chunked.py, the three-pass form of the time-parallel CUDA
kernel) equals the one-step-at-a-time reference: lengths around and below the segment,
segments of one token and longer than the prompt, initial states with no history, ordinary
ones and a large scale pp, keys up to +-30 and decays from e^-8 to e^2 per token (every
exponent in the segmented form is <= 0, so nothing overflows). The state carried over calls,
and a whole model on it."""
import math

import pytest
import torch

import archbench
from archbench.harness.testing import assert_close, errors
from archbench.kernels.wkv4.chunked import default_segment, wkv4_chunked
from archbench.kernels.wkv4.ref import wkv4_init_state, wkv4_ref


def inputs(B, T, C, k_range, seed=0):
    """w spans -e^-8 .. -e^2 over the channels (log-uniform), u a bonus as models have."""
    g = torch.Generator().manual_seed(seed)
    w = -torch.exp(torch.linspace(-8, 2, C)[torch.randperm(C, generator=g)])
    u = torch.randn(C, generator=g)
    k = k_range * (2 * torch.rand(B, T, C, generator=g) - 1)
    v = torch.randn(B, T, C, generator=g)
    return dict(w=w, u=u, k=k, v=v)


def initial_state(kind, B, C, seed=1):
    g = torch.Generator().manual_seed(seed)
    if kind == "none":  # pp = -1e38: no history
        return wkv4_init_state(B, C)
    s = torch.empty(B, 3, C)
    s[:, 0] = torch.randn(B, C, generator=g)                   # numerator: any sign
    s[:, 1] = 0.5 + torch.rand(B, C, generator=g)              # denominator > 0
    s[:, 2] = torch.randn(B, C, generator=g) * (3 if kind == "random" else 1) + (0 if kind == "random" else 60)
    return s


def wkv4_fp64(w, u, k, v, state):
    """wkv4_ref's loop in float64: the yardstick for the state (see check_state)."""
    w, u, k, v = (t.double() for t in (w, u, k, v))
    aa, bb, pp = state.double().unbind(1)
    for t in range(k.shape[1]):
        kt, vt = k[:, t], v[:, t]
        ww = w + pp
        p = torch.maximum(ww, kt)
        e1, e2 = torch.exp(ww - p), torch.exp(kt - p)
        aa, bb, pp = e1 * aa + e2 * vt, e1 * bb + e2, p
    return torch.stack((aa, bb, pp), dim=1)


def check_state(s, s_ref, s64, what=""):
    """The state (aa, bb, pp) means a numerator e^pp aa and a denominator e^pp bb. pp is
    compared with the fp32 reference to 1e-5 relative; the ratio aa / bb (the history's
    weighted mean of v) and the log of the denominator, pp + log bb, with float64. The fp32
    reference rounds pp = w + pp once a token, so its scale drifts (5e-4 in the log over 300
    tokens at pp = 60 and w = -e^-8), and with keys of +-60 its aa / bb is 1.4e-5 off; the
    segmented form adds n w once a segment and is closer to float64, never further than the
    reference (with segments of one token it is the reference's loop)."""
    assert torch.isfinite(s).all(), f"{what}: non-finite state"
    assert_close(s[:, 2], s_ref[:, 2], rms_rel=1e-5, what=f"{what} state pp")
    ratio_ref = errors(s_ref[:, 0] / s_ref[:, 1], s64[:, 0] / s64[:, 1])["rms_rel"]
    assert_close(s[:, 0] / s[:, 1], s64[:, 0] / s64[:, 1], rms_rel=max(1e-5, ratio_ref + 1e-6),
                 what=f"{what} state aa / bb (fp32 reference {ratio_ref:.1e})")

    def log_den_err(x):  # pp + log bb against float64's
        x = x.double()
        return ((x[:, 2] + torch.log(x[:, 1])) - (s64[:, 2] + torch.log(s64[:, 1]))).abs().max().item()

    err, err_ref = log_den_err(s), log_den_err(s_ref)
    assert err < max(1e-5, err_ref + 1e-5), f"{what}: log denominator off by {err:.2e} (fp32 reference {err_ref:.2e})"


@pytest.mark.parametrize("segment", [1, 4, 16, 64, 1000])
@pytest.mark.parametrize("T", [1, 2, 7, 63, 64, 65, 300])
@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("start", ["none", "random", "large_pp"])
def test_chunked_equals_reference(B, T, segment, start):
    C = 24
    x = inputs(B, T, C, k_range=5, seed=T)
    s0 = initial_state(start, B, C)
    s_before = s0.clone()
    y_ref, s_ref = wkv4_ref(**x, state=s0)
    y, s = wkv4_chunked(**x, state=s0, segment=segment)
    assert torch.equal(s0, s_before)  # the caller's state is not modified
    what = f"B={B} T={T} segment={segment} start={start}"
    assert_close(y, y_ref, rms_rel=1e-5, what=f"y {what}")
    check_state(s, s_ref, wkv4_fp64(**x, state=s0), what)


@pytest.mark.parametrize("k_range", [30, 60])
@pytest.mark.parametrize("segment", [1, 16, 64])
def test_large_keys_do_not_overflow(k_range, segment):
    """Keys up to +-30 (and +-60: e^60 would overflow fp32 outside log space)."""
    B, T, C = 2, 130, 32
    x = inputs(B, T, C, k_range=k_range, seed=k_range)
    s0 = initial_state("random", B, C)
    y_ref, s_ref = wkv4_ref(**x, state=s0)
    y, s = wkv4_chunked(**x, state=s0, segment=segment)
    assert torch.isfinite(y).all() and torch.isfinite(s).all()
    assert_close(y, y_ref, rms_rel=1e-5, what=f"y k_range={k_range}")
    check_state(s, s_ref, wkv4_fp64(**x, state=s0))


def test_strongest_and_weakest_decays():
    """w = -e^3 (a token's history gone in a step) and -e^-8 (kept for thousands of steps)."""
    B, T, C = 2, 200, 2
    g = torch.Generator().manual_seed(3)
    x = dict(w=torch.tensor([-math.exp(3), -math.exp(-8)]), u=torch.tensor([0.5, -0.5]),
             k=10 * torch.randn(B, T, C, generator=g), v=torch.randn(B, T, C, generator=g))
    for start in ("none", "large_pp"):
        s0 = initial_state(start, B, C)
        y_ref, s_ref = wkv4_ref(**x, state=s0)
        y, s = wkv4_chunked(**x, state=s0, segment=16)
        assert_close(y, y_ref, rms_rel=1e-5, what=f"y {start}")
        check_state(s, s_ref, wkv4_fp64(**x, state=s0), start)


def test_state_carried_over_calls():
    """Calls of odd lengths (one of a single token) with the state carried equal one call."""
    B, T, C = 2, 200, 16
    x = inputs(B, T, C, k_range=5)
    s0 = wkv4_init_state(B, C)
    y_ref, s_ref = wkv4_ref(**x, state=s0)
    s, parts = s0, []
    for lo, hi in ((0, 37), (37, 38), (38, 45), (45, 200)):
        y, s = wkv4_chunked(**{n: (t[:, lo:hi] if t.dim() == 3 else t) for n, t in x.items()}, state=s, segment=8)
        parts.append(y)
    assert_close(torch.cat(parts, 1), y_ref, rms_rel=1e-5, what="y")
    check_state(s, s_ref, wkv4_fp64(**x, state=s0))


def test_default_segment_and_empty_prompt():
    assert [default_segment(T) for T in (1, 2, 40, 64, 4096, 16384)] == [1, 1, 8, 8, 64, 128]
    x = inputs(2, 0, 8, k_range=1)
    s0 = initial_state("random", 2, 8)
    y, s = wkv4_chunked(**x, state=s0)
    assert y.shape == (2, 0, 8) and torch.equal(s, s0)
    with pytest.raises(ValueError, match="segment"):
        wkv4_chunked(**x, state=s0, segment=-1)


def test_a_model_on_the_chunked_form_equals_the_reference():
    """impl="chunked" runs RWKV-4 on the segmented form (40 tokens: segments of 8)."""
    ref = archbench.build("rwkv4-tiny", impl="ref")
    chunked = archbench.build("rwkv4-tiny", impl="chunked")
    tokens = torch.randint(0, ref.config.vocab_size, (2, 40), generator=torch.Generator().manual_seed(0))
    a, sa = ref.forward(tokens)
    b, sb = chunked.forward(tokens)
    assert_close(b, a, rms_rel=1e-5, what="logits")
    for i, name in enumerate(("aa", "bb", "pp")):  # 40 tokens: the reference's drift is below 1e-5
        assert_close(sb.wkv[:, :, i], sa.wkv[:, :, i], rms_rel=1e-5, what=f"state {name}")
