"""The per-chunk algebra of the chunked WKV6 CUDA kernel (kernels/wkv6/cuda/wkv6_chunked.cu),
emulated step by step in PyTorch on the CPU and checked against the one-step reference:
Λ inclusive with y_t reading the state before token t's decay (R̃_t = r_t e^{Λ_{t-1}}), M from
factorised operands around a per-column reference c = Λ_C / 2 with its key reduction split in
four 16-key partials (one per producer warp), the term-by-term slow path for columns decaying
more than e^-SAFE_SPAN in a chunk, the bonus diagonal, and the two state-pass products
Y = [R̃ | M][S_0; V], S_C = D∘S_0 + K̂ᵀV; with the products rounded to tf32 (1 pass, the
fp16/bf16 build) or split 3xTF32 (the fp32 build) as the tensor cores do."""
import pytest
import torch
import torch.nn.functional as F

from archbench.kernels.wkv6.ref import wkv6_ref
from helpers import tf32_mm

C, SAFE_SPAN = 16, 64.0


def kernel_emulation(r, k, v, w, u, state, passes):
    B, T, H, N = r.shape
    n = -(-T // C)
    blocks = lambda x: F.pad(x.float(), (0, 0, 0, 0, 0, n * C - T)).view(B, n, C, H, N).permute(0, 3, 1, 2, 4)  # noqa: E731
    r, k, v, w = (blocks(x) for x in (r, k, v, w))
    uu = u.float().reshape(1, H, 1, N)
    s, ys, zero = state.float().clone(), [], torch.zeros(())
    strict = torch.ones(C, C, dtype=torch.bool).tril(-1)
    for ci in range(n):
        rc, kc, vc, wc = (x[:, :, ci] for x in (r, k, v, w))
        lam = torch.cumsum(wc, -2)               # step 1 (fp32, sequential per column as the kernel)
        lp, lc = lam - wc, lam[..., -1:, :]
        bonus = (rc * uu * kc).sum(-1)
        safe = lc >= -SAFE_SPAN                  # step 2
        emc, ecl = torch.exp(-0.5 * lc), torch.exp(0.5 * lc - lam)
        rf = torch.where(safe, rc * (torch.exp(lp) * emc), zero)
        kf = torch.where(safe, kc * ecl, zero)
        assert torch.isfinite(rf).all() and torch.isfinite(kf).all()
        m = sum(tf32_mm(rf[..., 16 * p:16 * p + 16], kf[..., 16 * p:16 * p + 16].mT, passes) for p in range(N // 16))  # step 3
        if not safe.all():                       # step 4: the slow path, exponents <= 0
            us = (~safe).float()[..., None, :, :]
            e = torch.exp((lp[..., :, None, :] - lam[..., None, :, :]).clamp(max=0)) * us
            m = m + torch.einsum("...ti,...ji,...tji->...tj", rc, kc, e)
        m = torch.where(strict, m, zero) + torch.diag_embed(bonus)
        y = tf32_mm(torch.cat([rc * torch.exp(lp), m], -1), torch.cat([s, vc], -2), passes)
        ys.append(y)
        s = torch.exp(lc[..., 0, :, None]) * s + tf32_mm((kc * torch.exp(lc - lam)).mT, vc, passes)
    return torch.stack(ys, 2).reshape(B, H, n * C, N)[:, :, :T].permute(0, 2, 1, 3), s


def rms_rel(x, ref):
    return ((x - ref).pow(2).mean() / ref.pow(2).mean()).sqrt().item()


@pytest.mark.parametrize("decay", ["rwkv", "none", "strong", "mixed"])
@pytest.mark.parametrize("T", [1, 5, 16, 37])
def test_kernel_algebra_matches_reference(T, decay):
    g = torch.Generator().manual_seed(T)
    B, H, N = 2, 2, 64
    rand = lambda: torch.randn(B, T, H, N, generator=g)  # noqa: E731
    weak = -torch.exp(torch.linspace(-6, 1, N)) * torch.exp(0.3 * rand())
    w = {"rwkv": weak, "none": torch.zeros(B, T, H, N), "strong": -8 * torch.rand(B, T, H, N, generator=g),
         "mixed": torch.where(torch.arange(N) % 3 == 0, -20 * torch.rand(B, T, H, N, generator=g), weak)}[decay]
    x = dict(r=rand(), k=0.5 * rand(), v=rand(), w=w, u=0.5 * torch.randn(H, N, generator=g))
    s0 = 0.3 * torch.randn(B, H, N, N, generator=g)
    y_ref, s_ref = wkv6_ref(**x, state=s0)
    for passes, tol in ((3, 1e-5), (1, 2e-3)):  # fp32 build; fp16/bf16 build (the GPU tests allow 1.5e-3 / 6e-3)
        y, s = kernel_emulation(**x, state=s0, passes=passes)
        assert rms_rel(y, y_ref) < tol and rms_rel(s, s_ref) < tol, (passes, rms_rel(y, y_ref), rms_rel(s, s_ref))
