"""The fused decode steps' Python side (kernels/wkv4/decode.py ... wkv7: which kernel gets
which tensors, the fp16 rescaling factors, the GEMV and cuBLAS branches) on the CPU, with
PyTorch stand-ins for the CUDA kernels written from their documented contracts (binding.cpp,
decode7.h). The kernels themselves are held to those contracts by the GPU tests
(tests/kernels/test_decode7_gemv.py, tests/models/test_rwkv_gpu.py); here the step built on
the stand-ins must equal the model's own step, so CI checks the wiring without a GPU."""
import pytest
import torch
import torch.nn.functional as F

from archbench.harness.registry import family_class
from archbench.harness.testing import assert_close
from archbench.kernels.wkv4.ref import wkv4_ref
from archbench.kernels.wkv6.ref import wkv6_ref
from archbench.kernels.wkv7.ref import wkv7_ref
from archbench.models.rwkv7 import DECAY_SCALE
from archbench.models.rwkv_common import RWKVConfig


def _put(out, value):
    out.copy_(value.to(out.dtype))


class StandIns:
    """The extension's decode ops in fp32 PyTorch, one rounding on the way out."""

    @staticmethod
    def rwkv7_norm_mix(x, ln_w, ln_b, prev, maa, out, eps, x_weighted):
        xn = F.layer_norm(x.float(), (x.shape[1],), ln_w.float(), ln_b.float(), eps).to(x.dtype)
        xf, p = xn.float(), prev.float()
        for m, mix in enumerate(maa):
            mix = mix.float().view(-1)
            _put(out[m], p + (xf - p) * mix if x_weighted else xf + (p - xf) * mix)
        prev.copy_(xn)

    @staticmethod
    def rwkv7_gemv(ws, xs, ys, adds, relu_sq):
        for m, (w, x, y) in enumerate(zip(ws, xs, ys)):
            t = x.float() @ w.float().t()
            t = t.relu().square() if relu_sq else t + (adds[m].float() if adds else 0)
            _put(y, t)

    @staticmethod
    def rwkv6_key_receptance(w_k, w_r, x_k, x_r, h, rr, scale):
        _put(h, (x_k.float() @ w_k.float().t()).relu().square() * scale)
        _put(rr, x_r.float() @ w_r.float().t())

    @staticmethod
    def rwkv6_gemv_gated(ws, xs, ys, adds, gate, post):
        _put(ys[0], (adds[0].float() + torch.sigmoid(gate.float()) * (xs[0].float() @ ws[0].float().t())) * post)

    @staticmethod
    def rwkv7_lora_down(xs, ws, partial):
        partial.zero_()
        partial[0] = torch.cat([x.float() @ w.float() for x, w in zip(xs, ws) if w.numel()], -1)

    @classmethod
    def rwkv7_rkv_lora(cls, ws, xs, ys, lora_xs, lora_ws, partial):
        cls.rwkv7_lora_down(lora_xs, lora_ws, partial)
        cls.rwkv7_gemv(ws, xs, ys, [], False)

    @staticmethod
    def rwkv6_mix(xn, xp, partial, w2, maa, out):
        hid, D = torch.tanh(partial.sum(0)), w2.shape[1]
        xf, dx = xn.float(), xp.float() - xn.float()
        for m in range(5):
            _put(out[m], xf + dx * (maa[m].float().view(-1) + hid[:, m * D:(m + 1) * D] @ w2[m].float()))

    @staticmethod
    def rwkv4_tmix_decode(r, k, v, decay, first, state, out, scale):
        y, new = wkv4_ref(-torch.exp(decay.float()), first.float(), k[:, None], v[:, None], state)
        state.copy_(new)
        _put(out, torch.sigmoid(r.float()) * y[:, 0] * scale)

    @staticmethod
    def rwkv6_tmix_decode(r, k, v, g, partial, w2, params, eps, state, out, scale):
        time_decay, u, lnx_w, lnx_b = params
        B, H, N, _ = state.shape
        if time_decay.numel() == H:  # RWKV-5.0 / 5.1: time_decay and time_first per head
            time_decay, u = time_decay.repeat_interleave(N), torch.exp(u).repeat_interleave(N)
        ww = time_decay.float() + (torch.tanh(partial.sum(0)) @ w2.float() if w2.numel() else 0)
        heads = lambda t: t.float().view(B, 1, H, N)  # noqa: E731
        y, new = wkv6_ref(heads(r), heads(k), heads(v), heads(-torch.exp(ww).expand(B, -1)), u.float().view(H, N), state)
        state.copy_(new)
        y = F.group_norm(y.view(B, H * N), H, lnx_w.float(), lnx_b.float(), eps)
        _put(out, y * (F.silu(g.float()) if g.numel() else 1) * scale)

    @staticmethod
    def rwkv7_tmix_decode(r, k, v, partial, w2s, params, eps, v_first, first_layer, state, out):
        w0, a0, v0, k_k, k_a, r_k, lnx_w, lnx_b = (t.float() for t in params)
        B, H, N, _ = state.shape
        hid = partial.sum(0).split([w2.shape[0] if w2.numel() else 0 for w2 in w2s], -1)
        w2, a2, v2, g2 = (t.float() for t in w2s)
        r, k, v = r.float(), k.float(), v.float()
        w = torch.tanh(hid[0]) @ w2
        a = torch.sigmoid(a0.view(-1) + hid[1] @ a2)
        g = torch.sigmoid(hid[3]) @ g2
        heads = lambda t: t.view(B, 1, H, N)  # noqa: E731
        kk = F.normalize(heads(k * k_k.view(-1)), dim=-1)
        k = k * (1 + (a - 1) * k_a.view(-1))
        if first_layer:
            _put(v_first, v)
        else:
            v = v + (v_first.float() - v) * torch.sigmoid(v0.view(-1) + hid[2] @ v2)
        log_w = -DECAY_SCALE * torch.sigmoid(w0.view(-1) + w)
        y, new = wkv7_ref(heads(r), heads(log_w), heads(k), heads(v), -kk, kk * heads(a), state)
        state.copy_(new)
        y = F.group_norm(y.view(B, H * N), H, lnx_w, lnx_b, eps)
        bonus = (heads(r) * heads(k) * r_k).sum(-1, keepdim=True) * heads(v)
        _put(out, (y + bonus.view(B, H * N)) * g)


CONFIGS = {
    "4": dict(version="4"),
    "5.0": dict(version="5.0", head_size=32),
    "5.1": dict(version="5.1", head_size=32),
    "5.2": dict(version="5.2", head_size=32),
    "6": dict(version="6", head_size=32, mix_lora=16, decay_lora=32),
    "7": dict(version="7", head_size=32, decay_lora=16, aaa_lora=16, mv_lora=8, gate_lora=32),
    "7-layer0-v-lora": dict(version="7", head_size=32, decay_lora=16, aaa_lora=16, mv_lora=8, gate_lora=32,
                            layer0_v_lora=True),
}


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("version", CONFIGS)
def test_fused_step_on_stand_ins_equals_the_model_step(version, batch, dtype, monkeypatch):
    """Batch 1 takes our GEMV's branch, 3 cuBLAS's; fp16 has 7 layers, so RWKV-4-6 halve the
    residual after layer 5 and scale layer 6's projections (fp16_scales)."""
    import importlib

    from archbench.kernels.wkv7 import decode as decode7
    monkeypatch.setattr(decode7, "extension", lambda: StandIns)
    cfg = RWKVConfig(vocab_size=300, n_embd=128, n_layer=7 if dtype == "float16" else 2, **CONFIGS[version])
    model = family_class(cfg.family)(cfg, impl="ref").init_random_(0).cast(dtype).eval()
    fused = importlib.import_module(model.decode_kernels)
    tokens = torch.randint(0, 300, (batch, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        _, state = model.forward(tokens[:, :8])
        saved = state.checkpoint()
        want = [model.step(tokens[:, t], state)[0] for t in range(8, 12)]
        want_state = state.checkpoint()
        state.restore(saved)
        got = [fused.decode_step(model, tokens[:, t], state) for t in range(8, 12)]
    tol = {"float32": 1e-4, "float16": 5e-3}[dtype]
    assert_close(torch.stack(got), torch.stack(want), rms_rel=tol, what=f"RWKV-{version} {dtype} logits")
    for name in ("att_shift", "ffn_shift", "wkv"):
        assert_close(getattr(state, name).float(), getattr(want_state, name).float(), rms_rel=2 * tol,
                     what=f"RWKV-{version} {dtype} state.{name}")


def test_the_rescaling_factors_must_agree(monkeypatch):
    """The rescaling is exact in powers of two and the final layer norm removes it, so the fp16
    check above tests that the factors are applied consistently: with the residual's halving
    left out (post = 1) and the projections still scaled, the 7-layer fp16 RWKV-4 step departs
    from the model's."""
    from archbench.kernels.wkv4 import decode as decode4
    from archbench.kernels.wkv7 import decode as decode7
    monkeypatch.setattr(decode7, "extension", lambda: StandIns)
    cfg = RWKVConfig(version="4", vocab_size=300, n_embd=128, n_layer=7)
    model = family_class(cfg.family)(cfg, impl="ref").init_random_(0).cast("float16").eval()
    tokens = torch.randint(0, 300, (1, 4), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model.step(tokens[:, 0], model.init_state(1))[0]
        real = decode4.fp16_scales
        monkeypatch.setattr(decode4, "fp16_scales", lambda m, i: (real(m, i)[0], 1.0))
        got = decode4.decode_step(model, tokens[:, 0], model.init_state(1))
    with pytest.raises(AssertionError):
        assert_close(got, want, rms_rel=5e-3)


@pytest.mark.parametrize("version", ["4", "5.0", "5.1", "5.2", "6"])
def test_fused_fp16_step_rescales_where_fp16_would_overflow(version, monkeypatch):
    """tests/models/test_rwkv_modes.py's 13-layer models whose residual reaches 1.5x the fp16
    maximum, stepped token by token: the fused fp16 step stays finite and as close to the fp32
    step as the model's own fp16 step (logits around their mean); without the rescaling it
    overflows."""
    import importlib

    from archbench.harness.testing import errors
    from archbench.kernels.wkv7 import decode as decode7
    from test_rwkv_modes import overflowing_model
    monkeypatch.setattr(decode7, "extension", lambda: StandIns)
    model, tokens = overflowing_model(version)
    fused = importlib.import_module(model.decode_kernels)

    def steps(step):
        state = model.init_state(1)
        with torch.no_grad():
            out = torch.stack([step(tokens[:, t], state) for t in range(tokens.shape[1])])
        return out - out.mean(-1, keepdim=True)

    ref = steps(lambda tok, st: model.step(tok, st)[0])
    model.cast(torch.float16)
    own = errors(steps(lambda tok, st: model.step(tok, st)[0]).float(), ref)["rms_rel"]
    got = steps(lambda tok, st: fused.decode_step(model, tok, st)).float()
    err = assert_close(got, ref, rms_rel=max(1.5 * own, 0.02), what=f"RWKV-{version} fused fp16 step")
    print(f"RWKV-{version} fp16 steps against fp32, logits around their mean: the model's {own:.2e}, fused {err['rms_rel']:.2e}")
    model.fp16_rescale_every = 0
    assert not torch.isfinite(steps(lambda tok, st: fused.decode_step(model, tok, st))).all()
