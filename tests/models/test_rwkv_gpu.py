"""The reference models on a GPU: fp32 equals the CPU, bf16 and fp16 stay within their
tolerance, chunked equals parallel. Skipped without a GPU."""
import importlib

import pytest
import torch

import archbench
from archbench.harness.registry import family_class
from archbench.harness.testing import assert_close
from archbench.models.rwkv_common import RWKVConfig

pytestmark = pytest.mark.gpu

TINY = ["rwkv4-tiny", "rwkv5.0-tiny", "rwkv5.1-tiny", "rwkv5-tiny", "rwkv6-tiny", "rwkv7-tiny"]
TOL = {"float32": 1e-4, "bfloat16": 0.05, "float16": 0.02}


def centred(x):
    return x - x.mean(-1, keepdim=True)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("name", TINY)
def test_gpu_matches_cpu(name, dtype):
    cpu = archbench.build(name)
    gpu = archbench.build(name, dtype=dtype, device="cuda")
    tokens = torch.randint(0, cpu.config.vocab_size, (3, 65))
    ref, ref_state = cpu.forward(tokens)
    out, state = gpu.forward(tokens.cuda())
    assert_close(centred(out.cpu()), centred(ref), rms_rel=TOL[dtype], what=f"{name} {dtype} logits")
    assert_close(state.wkv.cpu(), ref_state.wkv, rms_rel=TOL[dtype] * 2, what=f"{name} {dtype} state")
    assert gpu.state_nbytes(3, 65) == state.nbytes()


@pytest.mark.parametrize("version", ["4", "5.2", "6", "7"])
def test_gpu_chunked_equals_parallel_bf16(version):
    extra = {"6": dict(mix_lora=32, decay_lora=64), "7": dict(decay_lora=64, aaa_lora=64, mv_lora=32, gate_lora=128)}
    cfg = RWKVConfig(version=version, vocab_size=1000, n_embd=256, n_layer=4, head_size=64, **extra.get(version, {}))
    model = family_class(cfg.family)(cfg).init_random_(0).cuda().cast("bfloat16").eval()
    tokens = torch.randint(0, 1000, (2, 300), device="cuda")
    full, full_state = model.forward(tokens)
    a, s = model.forward(tokens[:, :123])
    b, s = model.forward(tokens[:, 123:], s)
    assert_close(torch.cat([a, b], 1), full, dtype=torch.bfloat16, what="chunked vs parallel")
    assert_close(s.wkv, full_state.wkv, dtype=torch.bfloat16, what="state")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("name", TINY)
def test_cuda_impl_matches_ref_impl(name, dtype):
    ref = archbench.build(name, dtype=dtype, device="cuda", impl="ref")
    fast = archbench.build(name, dtype=dtype, device="cuda", impl="cuda")
    assert fast.impl == "cuda"
    tokens = torch.randint(0, ref.config.vocab_size, (3, 130), device="cuda")
    a, sa = ref.forward(tokens)
    b, sb = fast.forward(tokens)
    assert_close(b, a, rms_rel={"float32": 1e-4, "bfloat16": 2e-2, "float16": 5e-3}[dtype], what=f"{name} {dtype}")
    steps, s = [], fast.init_state(3)
    for t in range(5):
        out, s = fast.step(tokens[:, t], s)
        steps.append(out)
    assert_close(torch.stack(steps, 1), b[:, :5], rms_rel={"float32": 1e-4, "bfloat16": 2e-2, "float16": 5e-3}[dtype])


@pytest.mark.parametrize("version", ["4", "5.0", "5.1", "5.2", "6", "7"])
def test_cuda_impl_on_a_long_prompt_matches_ref_impl(version):
    """A prompt past 1024 tokens at head size 64, where the CUDA ops switch kernels (RWKV-4
    time-parallel, RWKV-5 to 7 chunked on tensor cores; RWKV-5.0 / 5.1 with one decay row per
    head; 1100 tokens end in a part-filled chunk): whole-model logits and state against
    impl='ref' on the same weights."""
    extra = {"6": dict(mix_lora=32, decay_lora=64), "7": dict(decay_lora=64, aaa_lora=64, mv_lora=32, gate_lora=128)}
    cfg = RWKVConfig(version=version, vocab_size=1000, n_embd=256, n_layer=2, head_size=64, **extra.get(version, {}))
    ref, fast = (family_class(cfg.family)(cfg, impl=impl).init_random_(0).cuda().cast("bfloat16").eval()
                 for impl in ("ref", "cuda"))
    tokens = torch.randint(0, 1000, (1, 1100), device="cuda")
    a, sa = ref.forward(tokens)
    b, sb = fast.forward(tokens)
    assert_close(b, a, rms_rel=2e-2, what=f"RWKV-{version} long prompt logits")
    assert_close(sb.wkv, sa.wkv, rms_rel=4e-2, what=f"RWKV-{version} long prompt state")


def test_auto_impl_is_cuda_on_gpu():
    assert archbench.build("rwkv7-tiny", device="cuda", impl="auto").impl == "cuda"
    assert archbench.build("rwkv7-tiny", device="cpu", impl="auto").impl == "ref"


def check_fused_decode(cfg, dtype, batch):
    """The model's fused step (its `decode_kernels`) against its own step on the unfused ops,
    after a prefill, over several tokens of a batch: logits and every part of the state."""
    model = family_class(cfg.family)(cfg, impl="cuda").init_random_(0).cuda().cast(dtype).eval()
    tokens = torch.randint(0, 1000, (batch, 40), device="cuda")
    _, state = model.forward(tokens[:, :30])
    saved = state.checkpoint()
    fused, unfused = [], []
    for t in range(30, 40):
        fused.append(model.step(tokens[:, t], state)[0].clone())
    fused_state = state.checkpoint()
    state.restore(saved)
    model.fused_decode = False
    for t in range(30, 40):
        unfused.append(model.step(tokens[:, t], state)[0].clone())
    tol = {"float32": 1e-4, "bfloat16": 2e-2, "float16": 5e-3}[dtype]
    err = assert_close(torch.stack(fused), torch.stack(unfused), rms_rel=tol, what=f"fused decode {dtype} logits")
    print(f"RWKV-{cfg.version} fused vs unfused decode, {dtype}, N={cfg.head_size}, B={batch}: "
          f"logits rms_rel {err['rms_rel']:.2e}")
    for name in ("att_shift", "ffn_shift", "wkv"):
        assert_close(getattr(fused_state, name), getattr(state, name), rms_rel=2 * tol, what=f"{dtype} state.{name}")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("head_size,layer0_v_lora,batch", [(64, False, 1), (64, True, 2), (32, True, 3),
                                                           (16, False, 1), (128, False, 6)])
def test_rwkv7_fused_decode_equals_unfused_step(dtype, head_size, layer0_v_lora, batch):
    """kernels/wkv7/decode.py. At batch 1 and 2 the projections run on our GEMV, at 3 and 6
    (> GEMV_MAX_B) on cuBLAS; at N = 128 in fp32 the head kernel stages only part of the
    LoRA second factors in shared memory."""
    check_fused_decode(RWKVConfig(version="7", vocab_size=1000, n_embd=256, n_layer=3, head_size=head_size,
                                  decay_lora=64, aaa_lora=64, mv_lora=32, gate_lora=128,
                                  layer0_v_lora=layer0_v_lora), dtype, batch)


def rescaled_layers(dtype: str) -> int:
    """Layers enough, in fp16, for the model's rescaling to act (the residual halved after
    layer 5, the projections' inputs scaled from layer 6: `fp16_scales`); 3 otherwise."""
    return 7 if dtype == "float16" else 3


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("head_size,batch,loras", [(64, 1, (32, 64)), (64, 2, (64, 128)), (32, 3, (32, 64)),
                                                   (16, 1, (8, 16)), (128, 6, (32, 64))])
def test_rwkv6_fused_decode_equals_unfused_step(dtype, head_size, batch, loras):
    """kernels/wkv6/decode.py (GEMV at batch 1 and 2, cuBLAS at 3 and 6; the LoRA ranks of the
    3B shape, of the 7B shape (the largest the kernels take) and of the tiny preset)."""
    from archbench.kernels.wkv6 import decode
    mix, decay = loras
    cfg = RWKVConfig(version="6", vocab_size=1000, n_embd=256, n_layer=rescaled_layers(dtype), head_size=head_size,
                     mix_lora=mix, decay_lora=decay)
    assert decode.can_fuse(family_class(cfg.family)(cfg, impl="cuda").cuda().cast(dtype))  # else this proves nothing
    check_fused_decode(cfg, dtype, batch)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("version,head_size,batch", [("5.2", 64, 1), ("5.2", 64, 2), ("5.2", 32, 3), ("5.2", 16, 1),
                                                     ("5.2", 128, 6), ("5.1", 64, 1), ("5.1", 32, 3),
                                                     ("5.0", 64, 2), ("5.0", 128, 6)])
def test_rwkv5_fused_decode_equals_unfused_step(dtype, version, head_size, batch):
    """kernels/wkv5/decode.py (GEMV at batch 1 and 2, cuBLAS at 3 and 6; 5.0 / 5.1: decay and
    bonus per head, 5.0 without the gate)."""
    from archbench.kernels.wkv5 import decode
    cfg = RWKVConfig(version=version, vocab_size=1000, n_embd=256, n_layer=rescaled_layers(dtype), head_size=head_size)
    assert decode.can_fuse(family_class(cfg.family)(cfg, impl="cuda").cuda().cast(dtype))  # else this proves nothing
    check_fused_decode(cfg, dtype, batch)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("n_embd,batch", [(256, 1), (256, 2), (200, 3), (512, 6)])
def test_rwkv4_fused_decode_equals_unfused_step(dtype, n_embd, batch):
    """kernels/wkv4/decode.py (GEMV at batch 1 and 2, cuBLAS at 3 and 6; 200 channels leave
    the per-channel kernel's last block part-empty)."""
    from archbench.kernels.wkv4 import decode
    cfg = RWKVConfig(version="4", vocab_size=1000, n_embd=n_embd, n_layer=rescaled_layers(dtype))
    assert decode.can_fuse(family_class(cfg.family)(cfg, impl="cuda").cuda().cast(dtype))  # else this proves nothing
    check_fused_decode(cfg, dtype, batch)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("version,kernels", [("4", ["tmix4_decode_kernel"]), ("5.0", ["tmix6_decode_kernel"]),
                                             ("5.1", ["tmix6_decode_kernel"]), ("5.2", ["tmix6_decode_kernel"]),
                                             ("6", ["tmix6_decode_kernel", "mix6_kernel"])])
def test_fused_decode_is_the_default_step(version, kernels, dtype):
    """RWKV-4, 5 and 6 on CUDA decode on the fused kernels unless told not to (fp16 too: the
    kernels apply the model's rescaling)."""
    cfg = RWKVConfig(version=version, vocab_size=1000, n_embd=128, n_layer=2, head_size=32, mix_lora=32,
                     decay_lora=64)
    model = family_class(cfg.family)(cfg, impl="cuda").init_random_(0).cuda().cast(dtype).eval()
    assert importlib.import_module(model.decode_kernels).can_fuse(model) and model.fused_decode
    tokens = torch.randint(0, 1000, (1, 8), device="cuda")
    _, state = model.forward(tokens)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        model.step(tokens[:, -1], state)
        torch.cuda.synchronize()
    names = " ".join(e.name for e in prof.events())
    assert all(k in names for k in kernels), names


@pytest.mark.parametrize("version", ["4", "5.1", "5.2", "6"])
def test_fused_fp16_step_is_as_close_to_fp32_as_the_unfused(version):
    """In fp16 the fused step (fp32 inside, the model's rescaling folded in) is no further from
    the fp32 model than the model's own fp16 ops are: after 4 steps of a 7-layer model (the
    rescaling acting from layer 5). Until the decode kernels took their own tanh
    (decode7.cu: tanh_), RWKV-6's fused fp16 logits were 3.4x further than the unfused at the
    3B width with 4 layers (results/decode/fused-v4-fp16)."""
    from archbench.harness.testing import errors
    cfg = RWKVConfig(version=version, vocab_size=1000, n_embd=512, n_layer=7, head_size=64, mix_lora=32,
                     decay_lora=64)
    model = family_class(cfg.family)(cfg, impl="cuda").init_random_(0).cuda().eval()
    tokens = torch.randint(0, 1000, (1, 4), generator=torch.Generator().manual_seed(0)).cuda()

    def logits(fused):
        model.fused_decode = fused
        state = model.init_state(1)
        for t in range(tokens.shape[1]):
            out = model.step(tokens[:, t], state)[0].float()
        return out

    ref = logits(False)
    model.cast("float16")
    unfused, fused = errors(logits(False), ref)["rms_rel"], errors(logits(True), ref)["rms_rel"]
    print(f"RWKV-{version} fp16 against fp32, 7 layers: unfused {unfused:.3e}, fused {fused:.3e}")
    assert fused <= 1.25 * unfused + 1e-4
