"""The chunked WKV6 (kernels/wkv6/chunked.py, the form the tensor-core kernel takes) equals
the one-step reference: lengths around and below the chunk, several chunk sizes, batches,
nonzero initial states, weak / strong / mixed decays (every exponent of the chunked form is
<= 0, so nothing overflows), fp32 and bf16 inputs, and the state carried over calls."""
import pytest
import torch

from archbench.harness.testing import assert_close
from archbench.kernels.wkv6.chunked import wkv6_chunked
from archbench.kernels.wkv6.ref import wkv6_ref
from helpers import random_state


def inputs(B, T, H, N, decay="weak", seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    shape = (B, T, H, N)
    rand = lambda: torch.randn(shape, generator=g)  # noqa: E731
    weak = -torch.exp(torch.linspace(-6, 1, N)) * torch.exp(0.3 * rand())  # as the benchmark's RWKV-6 decays
    if decay == "weak":
        w = weak
    elif decay == "none":
        w = torch.zeros(shape)
    elif decay == "strong":  # up to e^-8 a token: a chunk of 16 can decay by e^-128
        w = -8 * torch.rand(shape, generator=g)
    else:                    # every third key column up to e^-20 a token, the rest weak
        w = torch.where(torch.arange(N) % 3 == 0, -20 * torch.rand(shape, generator=g), weak)
    x = dict(r=rand(), k=0.5 * rand(), v=rand(), w=w)
    x = {n: t.to(dtype) for n, t in x.items()}
    x["u"] = 0.5 * torch.randn(H, N, generator=g)
    return x


def state0(B, H, N, seed=1):
    return random_state(B, H, N, seed)


@pytest.mark.parametrize("decay", ["weak", "none", "strong", "mixed"])
@pytest.mark.parametrize("chunk", [1, 16, 64])
@pytest.mark.parametrize("T", [1, 2, 15, 16, 17, 63, 65])
def test_chunked_equals_reference(T, chunk, decay):
    x = inputs(3, T, 2, 16, decay, seed=T)
    s0 = state0(3, 2, 16)
    y_ref, s_ref = wkv6_ref(**x, state=s0)
    y, s = wkv6_chunked(**x, state=s0, chunk=chunk, group=2)
    assert y.dtype == torch.float32 and y.shape == y_ref.shape
    assert_close(y, y_ref, what=f"y T={T} chunk={chunk} {decay}", rms_rel=1e-5)
    assert_close(s, s_ref, what="state", rms_rel=1e-5)


@pytest.mark.parametrize("decay", ["weak", "mixed"])
def test_bf16_inputs_head_size_64(decay):
    x = inputs(2, 40, 2, 64, decay, dtype=torch.bfloat16)
    s0 = state0(2, 2, 64)
    y_ref, s_ref = wkv6_ref(**x, state=s0)  # both widen the same bf16 values to fp32
    y, s = wkv6_chunked(**x, state=s0)
    assert_close(y, y_ref, what="y", rms_rel=1e-5)
    assert_close(s, s_ref, what="state", rms_rel=1e-5)


def test_state_carried_over_calls():
    x = inputs(1, 90, 2, 64)
    s0 = state0(1, 2, 64)
    y_ref, s_ref = wkv6_ref(**x, state=s0)
    s, parts = s0, []
    for lo, hi in ((0, 7), (7, 40), (40, 41), (41, 90)):
        y, s = wkv6_chunked(**{n: (t[:, lo:hi] if n != "u" else t) for n, t in x.items()}, state=s)
        parts.append(y)
    assert_close(torch.cat(parts, 1), y_ref, what="y", rms_rel=1e-5)
    assert_close(s, s_ref, what="state", rms_rel=1e-5)


def test_fixed_decay_broadcasts_like_the_reference():
    """w of shape [H, N] (WKV5's fixed decay) broadcasts as in wkv6_ref."""
    x = inputs(2, 20, 2, 16)
    x["w"] = x["w"][0, 0]
    s0 = state0(2, 2, 16)
    y_ref, s_ref = wkv6_ref(**x, state=s0)
    y, s = wkv6_chunked(**x, state=s0)
    assert_close(y, y_ref, what="y", rms_rel=1e-5)
    assert_close(s, s_ref, what="state", rms_rel=1e-5)


def test_wkv5_cuda_glue_to_the_chunked_wkv6_kernel(monkeypatch):
    """`wkv5_cuda`'s long-prompt path, on the CPU: with the chunked WKV6 kernel replaced by
    its PyTorch form, the decay passed once per head ([H, N], read so by the kernel) gives
    WKV5's reference."""
    from archbench.kernels.wkv5 import op as op5
    from archbench.kernels.wkv5.ref import wkv5_ref
    from archbench.kernels.wkv6 import op as op6
    seen = []

    def chunked(r, k, v, w, u, state, inplace=False, out=None):
        seen.append(tuple(w.shape))
        return wkv6_chunked(r, k, v, w.expand(r.shape), u, state)

    monkeypatch.setattr(op5, "check_inputs", lambda *a: None)
    monkeypatch.setattr(op5, "use_chunked", lambda *a: True)
    monkeypatch.setattr(op6, "wkv6_cuda_chunked", chunked)
    B, T, H, N = 2, 40, 2, 16
    x = inputs(B, T, H, N, seed=6)
    x["w"] = x["w"][0, 0]
    s = state0(B, H, N)
    y, s1 = op5.wkv5_cuda(**x, state=s)
    assert seen == [(H, N)]
    y_ref, s_ref = wkv5_ref(**x, state=s)
    assert_close(y, y_ref, rms_rel=1e-5, what="y")
    assert_close(s1, s_ref, rms_rel=1e-5, what="state")

