"""The per-chunk algebra of the chunked CUDA kernel (kernels/wkv7/cuda/wkv7_chunked.cu),
emulated step by step in PyTorch on the CPU and checked against the one-step reference:
the C x C matrices from factorised operands around a per-column reference c = Λ_C / 2, the
term-by-term slow path for columns decaying more than e^-SAFE_SPAN in a chunk, the inverse
folded into [A' | W], and the three state-pass products; with the products rounded to tf32
(1 pass, the fp16/bf16 build) or split 3xTF32 (the fp32 build) as the tensor cores do. With
two_kernel, the two-kernel form's state pass instead (kernels/state_tc.cuh): U's products
folded into E, Q, R̂, M̂ by the build (stored rounded to tf32 for the 1-pass build), and one
step S' = d∘S + E S + Q V, Y = R̂ S + M̂ V with d∘S exact."""
import pytest
import torch
import torch.nn.functional as F

from archbench.kernels.wkv7.ref import wkv7_ref
from helpers import tf32, tf32_mm

C, SAFE_SPAN = 16, 64.0


def kernel_emulation(r, w, k, v, a, b, state, passes, two_kernel=False):
    B, T, H, N = r.shape
    n = -(-T // C)
    blocks = lambda x: F.pad(x.float(), (0, 0, 0, 0, 0, n * C - T)).view(B, n, C, H, N).permute(0, 3, 1, 2, 4)  # noqa: E731
    r, w, k, v, a, b = (blocks(x) for x in (r, w, k, v, a, b))
    s, ys, zero = state.float().clone(), [], torch.zeros(())
    for ci in range(n):
        rc, wc, kc, vc, ac, bc = (x[:, :, ci] for x in (r, w, k, v, a, b))
        lam = torch.cumsum(wc, -2)
        lp, lc = lam - wc, lam[..., -1:, :]
        safe = lc >= -SAFE_SPAN
        emc, ecl = torch.exp(-0.5 * lc), torch.exp(0.5 * lc - lam)
        af = torch.where(safe, ac * (torch.exp(lp) * emc), zero)
        rf = torch.where(safe, rc * (torch.exp(lam) * emc), zero)
        bf, kf = torch.where(safe, bc * ecl, zero), torch.where(safe, kc * ecl, zero)
        lab, lak = tf32_mm(af, bf.mT, passes), tf32_mm(af, kf.mT, passes)
        mrb, mrk = tf32_mm(rf, bf.mT, passes), tf32_mm(rf, kf.mT, passes)
        if not safe.all():  # the slow path, exponents <= 0
            us = (~safe).float()[..., None, :, :]
            e_m = torch.exp((lam[..., :, None, :] - lam[..., None, :, :]).clamp(max=0)) * us
            e_l = torch.exp((lp[..., :, None, :] - lam[..., None, :, :]).clamp(max=0)) * us
            pair = lambda x, y, e: torch.einsum("...ti,...ji,...tji->...tj", x, y, e)  # noqa: E731
            mrb, mrk = mrb + pair(rc, bc, e_m), mrk + pair(rc, kc, e_m)
            lab, lak = lab + pair(ac, bc, e_l), lak + pair(ac, kc, e_l)
        lab, lak, mrb, mrk = lab.tril(-1), lak.tril(-1), mrb.tril(), mrk.tril()  # the causal masks
        x = torch.cat([ac * torch.exp(lp), lak], -1)  # forward substitution: [A' | W]
        for j in range(C):
            x[..., j + 1:, :] += lab[..., j + 1:, j, None] * x[..., j:j + 1, :]
        decay_end = torch.exp(lc - lam)
        if two_kernel:
            stored = (lambda m: m) if passes == 3 else tf32                      # the workspace's rounding
            bhat = (bc * decay_end).mT
            eq = tf32_mm(bhat, x, passes)                                         # B̂ᵀ [A' | W]
            e, q = stored(eq[..., :N]), stored(eq[..., N:] + (kc * decay_end).mT)
            rm = torch.cat([rc * torch.exp(lam), mrk], -1) + tf32_mm(mrb, x, passes)  # [R̂ | M̂]
            rh, mh = stored(rm[..., :N]), stored(rm[..., N:])
            ys.append(tf32_mm(rh, s, passes) + tf32_mm(mh, vc, passes))
            s = torch.exp(lc[..., 0, :, None]) * s + tf32_mm(e, s, passes) + tf32_mm(q, vc, passes)
            continue
        sv = torch.cat([s, vc], -2)
        u = tf32_mm(x, sv, passes)
        ys.append(tf32_mm(torch.cat([rc * torch.exp(lam), mrk], -1), sv, passes) + tf32_mm(mrb, u, passes))
        s = (torch.exp(lc[..., 0, :, None]) * s + tf32_mm((bc * decay_end).mT, u, passes)
             + tf32_mm((kc * decay_end).mT, vc, passes))
    return torch.stack(ys, 2).reshape(B, H, n * C, N)[:, :, :T].permute(0, 2, 1, 3), s


def rms_rel(x, ref):
    return ((x - ref).pow(2).mean() / ref.pow(2).mean()).sqrt().item()


@pytest.mark.parametrize("two_kernel", [False, True])
@pytest.mark.parametrize("decay", ["rwkv", "strong", "mixed"])
@pytest.mark.parametrize("T", [5, 16, 37])
def test_kernel_algebra_matches_reference(T, decay, two_kernel):
    g = torch.Generator().manual_seed(T)
    B, H, N = 2, 2, 64
    rand = lambda: torch.randn(B, T, H, N, generator=g)  # noqa: E731
    weak = -0.6065 * torch.sigmoid(rand())
    w = {"rwkv": weak, "strong": -8 * torch.rand(B, T, H, N, generator=g),
         "mixed": torch.where(torch.arange(N) % 3 == 0, -20 * torch.rand(B, T, H, N, generator=g), weak)}[decay]
    kk = F.normalize(rand(), dim=-1)
    x = dict(r=rand(), w=w, k=rand(), v=rand(), a=-kk, b=kk * torch.sigmoid(rand()))
    s0 = 0.3 * torch.randn(B, H, N, N, generator=g)
    y_ref, s_ref = wkv7_ref(**x, state=s0)
    for passes, tol in ((3, 1e-5), (1, 2e-3)):  # fp32 build; fp16/bf16 build (tests allow 1.5e-3 / 6e-3 on the GPU)
        y, s = kernel_emulation(**x, state=s0, passes=passes, two_kernel=two_kernel)
        assert rms_rel(y, y_ref) < tol and rms_rel(s, s_ref) < tol, (passes, rms_rel(y, y_ref), rms_rel(s, s_ref))


def test_two_kernel_form_is_as_accurate_as_one_kernel_over_a_long_prompt():
    """Folding U's products into the operands rounds E, Q, R̂, M̂ to tf32 once more and
    multiplies the whole state by E each chunk; over 64 chunks with no decay at all (nothing
    forgets the rounding errors) the 1-pass emulation stays within twice the one-kernel
    form's error against the fp32 reference."""
    g = torch.Generator().manual_seed(7)
    B, T, H, N = 1, 1024, 2, 64
    rand = lambda: torch.randn(B, T, H, N, generator=g)  # noqa: E731
    kk = F.normalize(rand(), dim=-1)
    x = dict(r=rand(), w=torch.zeros(B, T, H, N), k=0.3 * rand(), v=rand(), a=-kk, b=kk * torch.sigmoid(rand()))
    s0 = 0.3 * torch.randn(B, H, N, N, generator=g)
    y_ref, s_ref = wkv7_ref(**x, state=s0)
    errs = {}
    for two in (False, True):
        y, s = kernel_emulation(**x, state=s0, passes=1, two_kernel=two)
        errs[two] = (rms_rel(y, y_ref), rms_rel(s, s_ref))
    assert errs[True][0] < 2 * errs[False][0] + 1e-4 and errs[True][1] < 2 * errs[False][1] + 1e-4, errs
    assert errs[True][0] < 6e-3 and errs[True][1] < 6e-3, errs  # the GPU tests' bf16 bound
