"""Kernels and whole models on the second GPU while the first is the current device: every
launch must run on its tensors' GPU (the binding's device guard), the chunked kernels' side
stream and events included. Results equal the same call on the first GPU. Needs two GPUs
(skipped otherwise)."""
import pytest
import torch

import archbench
from archbench.kernels.wkv4.op import wkv4_cuda
from archbench.kernels.wkv6.op import wkv6_cuda
from archbench.kernels.wkv7.op import wkv7_cuda
from archbench.kernels.wkv7.ref import wkv7_ref

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")]


def inputs(op, B, T, H, N, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    rand = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    shape = (B, T, H, N)
    if op == "wkv4":
        C = H * N
        x = dict(w=-torch.exp(torch.linspace(-5, 1, C)), u=torch.rand(C, generator=g), k=rand(B, T, C), v=rand(B, T, C))
    elif op == "wkv6":
        x = dict(r=rand(*shape), k=0.5 * rand(*shape), v=rand(*shape), w=-torch.exp(-2 + 0.5 * rand(*shape)),
                 u=0.5 * rand(H, N))
    else:
        kk = torch.nn.functional.normalize(rand(*shape), dim=-1)
        x = dict(r=rand(*shape), w=-0.6065 * torch.sigmoid(rand(*shape)), k=rand(*shape), v=rand(*shape), a=-kk,
                 b=kk * torch.sigmoid(rand(*shape)))
    return {n: t.to(device) for n, t in x.items()}


OPS = {"wkv4": (wkv4_cuda, lambda B, H, N: torch.zeros(B, 3, H * N)), "wkv6": (wkv6_cuda, lambda B, H, N: torch.zeros(B, H, N, N)),
       "wkv7": (wkv7_cuda, lambda B, H, N: torch.zeros(B, H, N, N))}


@pytest.mark.parametrize("op", list(OPS))
# 3100: the chunked kernels, in segments (on one stream on sm_90+); 4100: WKV6 in 8 pieces (its offsets on
# the second stream) and 4 tokens left over, WKV7's first segment by the fused kernel
@pytest.mark.parametrize("T", [40, 3100, 4100])
def test_kernel_on_second_gpu_equals_first(op, T):
    fn, state = OPS[op]
    B, H, N = 2, 3, 64
    torch.cuda.set_device(0)
    y0, s0 = fn(**inputs(op, B, T, H, N, "cuda:0"), state=state(B, H, N).cuda(0))
    y1, s1 = fn(**inputs(op, B, T, H, N, "cuda:1"), state=state(B, H, N).cuda(1))
    torch.cuda.synchronize(1)
    assert y1.device == torch.device("cuda:1") and s1.device == torch.device("cuda:1")
    assert torch.allclose(y1.cpu(), y0.cpu(), rtol=1e-6, atol=1e-6)
    assert torch.allclose(s1.cpu(), s0.cpu(), rtol=1e-6, atol=1e-6)


def test_wkv7_on_second_gpu_against_reference():
    B, T, H, N = 1, 3100, 2, 64
    torch.cuda.set_device(0)
    x = inputs("wkv7", B, T, H, N, "cuda:1")
    y, s = wkv7_cuda(**x, state=torch.zeros(B, H, N, N, device="cuda:1"))
    y_ref, s_ref = wkv7_ref(**{n: t.cpu().double() for n, t in x.items()}, state=torch.zeros(B, H, N, N).double())
    assert (y.cpu().double() - y_ref).norm() / y_ref.norm() < 1e-4
    assert (s.cpu().double() - s_ref).norm() / s_ref.norm() < 1e-4


def test_inputs_on_two_gpus_are_an_error():
    x = inputs("wkv7", 1, 20, 2, 64, "cuda:0")
    x["v"] = x["v"].to("cuda:1")
    with pytest.raises(ValueError, match="one GPU"):
        wkv7_cuda(**x, state=torch.zeros(1, 2, 64, 64, device="cuda:0"))
    x["v"] = x["v"].to("cuda:0")
    with pytest.raises(ValueError, match="in-place state must be on"):
        wkv7_cuda(**x, state=torch.zeros(1, 2, 64, 64, device="cuda:1"), inplace=True)


@pytest.mark.parametrize("name", ["rwkv7-tiny", "rwkv6-tiny", "rwkv4-tiny"])
def test_model_on_second_gpu_equals_first(name):
    """Prefill and a few decode steps (RWKV-7: the fused decode kernels) on cuda:1."""
    torch.cuda.set_device(0)
    logits = []
    for dev in ("cuda:0", "cuda:1"):
        model = archbench.build(name, dtype="float32", device=dev)
        tokens = torch.randint(0, model.config.vocab_size, (1, 1100), generator=torch.Generator().manual_seed(0)).to(dev)
        out, state = model.forward(tokens[:, :1090])
        steps = [model.step(tokens[:, t], state)[0] for t in range(1090, 1100)]
        logits.append(torch.cat([out[:, -1:].reshape(1, -1), *[s.reshape(1, -1) for s in steps]]).cpu())
    assert torch.allclose(logits[1], logits[0], rtol=1e-5, atol=1e-5)


def test_graphed_decode_on_second_gpu():
    """A decode step captured in a CUDA graph on cuda:1 (harness/graphs.py) replays the eager steps."""
    from helpers import graphed_and_eager_steps
    torch.cuda.set_device(0)
    graphed, eager = graphed_and_eager_steps("rwkv7-tiny", "float32", "cuda:1")
    assert torch.allclose(graphed.cpu(), eager.cpu(), rtol=1e-5, atol=1e-5)
