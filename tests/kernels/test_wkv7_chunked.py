"""The chunked WKV7 (kernels/wkv7/chunked.py, the form a tensor-core kernel takes) equals
the one-step-at-a-time reference: awkward lengths, chunk sizes around T, the state carried
over several calls, decays from real RWKV-7's range down to much stronger ones (every
exponent in the chunked form is <= 0, so nothing overflows). And a whole model on it."""
import pytest
import torch
import torch.nn.functional as F

import archbench
from archbench.harness.testing import assert_close
from archbench.kernels.wkv7.chunked import wkv7_chunked
from archbench.kernels.wkv7.ref import wkv7_ref


def inputs(B, T, H, N, w_low, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (B, T, H, N)
    kk = F.normalize(torch.randn(shape, generator=g), dim=-1)
    return dict(r=torch.randn(shape, generator=g), w=w_low * torch.rand(shape, generator=g),
                k=torch.randn(shape, generator=g), v=torch.randn(shape, generator=g), a=-kk,
                b=kk * torch.rand(shape, generator=g))


@pytest.mark.parametrize("chunk", [1, 16, 64])
@pytest.mark.parametrize("T", [1, 2, 15, 16, 17, 63, 65])
@pytest.mark.parametrize("w_low", [-0.6065, -8.0])  # RWKV-7's decay range, and far stronger decays
def test_chunked_equals_reference(T, chunk, w_low):
    x = inputs(3, T, 2, 16, w_low, seed=T)
    s0 = 0.3 * torch.randn(3, 2, 16, 16, generator=torch.Generator().manual_seed(1))
    y_ref, s_ref = wkv7_ref(**x, state=s0)
    y, s = wkv7_chunked(**x, state=s0, chunk=chunk, group=2)
    assert_close(y, y_ref, what=f"y T={T} chunk={chunk}", rms_rel=1e-5)
    assert_close(s, s_ref, what="state", rms_rel=1e-5)


def test_state_carried_over_calls_head_size_64():
    x = inputs(1, 90, 2, 64, -0.6065)
    y_ref, s_ref = wkv7_ref(**x, state=torch.zeros(1, 2, 64, 64))
    s, parts = torch.zeros(1, 2, 64, 64), []
    for lo, hi in ((0, 7), (7, 40), (40, 90)):
        y, s = wkv7_chunked(**{n: t[:, lo:hi] for n, t in x.items()}, state=s)
        parts.append(y)
    assert_close(torch.cat(parts, 1), y_ref, rms_rel=1e-5, what="y")
    assert_close(s, s_ref, rms_rel=1e-5, what="state")


@pytest.mark.parametrize("name", ["rwkv7-tiny", "rwkv6-tiny"])
def test_a_model_on_the_chunked_form_equals_the_reference(name):
    """impl="chunked" runs a model on the PyTorch chunked form (kernels/wkv7/chunked.py,
    kernels/wkv6/chunked.py)."""
    ref = archbench.build(name, impl="ref")
    chunked = archbench.build(name, impl="chunked")
    tokens = torch.randint(0, ref.config.vocab_size, (2, 40), generator=torch.Generator().manual_seed(0))
    a, sa = ref.forward(tokens)
    b, sb = chunked.forward(tokens)
    assert_close(b, a, rms_rel=1e-5, what="logits")
    assert_close(sb.wkv, sa.wkv, rms_rel=1e-5, what="state")
