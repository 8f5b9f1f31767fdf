"""Parallel equals recurrent equals chunked, for every RWKV version; lower precisions
stay within their tolerance of fp32; the state is the size the model says it is."""
import pytest
import torch

import archbench
from archbench.harness.registry import family_class
from archbench.harness.testing import assert_close, errors
from archbench.models.rwkv_common import RWKVConfig
from helpers import B, SPLITS, chunks_match_whole, run_rwkv_oracle, steps_match_whole, tokens_for

TINY = ["rwkv4-tiny", "rwkv5.0-tiny", "rwkv5.1-tiny", "rwkv5-tiny", "rwkv6-tiny", "rwkv7-tiny"]


@pytest.mark.parametrize("name", TINY)
def test_parallel_equals_recurrent(name):
    _, state, full_state = steps_match_whole(archbench.build(name))
    for a, b in zip(state.tensors().values(), full_state.tensors().values()):
        assert_close(a, b, what="final state")


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("splits", SPLITS)
def test_parallel_equals_chunked(name, splits):
    _, state, full_state = chunks_match_whole(archbench.build(name), splits)
    assert_close(state.wkv, full_state.wkv, what="final wkv state")


@pytest.mark.parametrize("name", TINY)
def test_batch_rows_are_independent(name):
    model = archbench.build(name)
    tokens = tokens_for(model)
    full, _ = model.forward(tokens)
    for b in range(B):
        alone, _ = model.forward(tokens[b:b + 1])
        assert_close(alone[0], full[b], what=f"row {b}")


def deep_model(version: str):
    extra = {"6": dict(mix_lora=8, decay_lora=16), "7": dict(decay_lora=16, aaa_lora=16, mv_lora=16, gate_lora=32)}
    cfg = RWKVConfig(version=version, vocab_size=256, n_embd=64, n_layer=13, head_size=16, **extra.get(version, {}))
    return family_class(cfg.family)(cfg).init_random_(0).eval()


@pytest.mark.parametrize("version", ["4", "5.0", "5.1", "5.2", "6", "7"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_close_to_fp32(version, dtype):
    model = deep_model(version)
    tokens = tokens_for(model, b=2, t=20)
    ref, _ = model.forward(tokens)
    out, state = model.cast(dtype).forward(tokens)
    assert model.dtype == dtype and torch.isfinite(state.wkv).all()
    # the logits of a random model are nearly flat: compare them around their mean
    assert_close(out - out.mean(-1, keepdim=True), ref - ref.mean(-1, keepdim=True), dtype=dtype,
                 what=f"v{version} {dtype}", rms_rel={torch.bfloat16: 0.15, torch.float16: 0.05}[dtype])


def residual_max(model, tokens) -> float:
    seen = []
    handle = model.blocks[-1].register_forward_hook(lambda m, i, out: seen.append(out[0].abs().max().item()))
    model.forward(tokens)
    handle.remove()
    return seen[0]


def overflowing_model(version: str):
    """A 13-layer fp32 model whose residual stream reaches 1.5x the fp16 maximum over its 12
    tokens (the residual grows with depth, as in trained models); (model, tokens)."""
    model = deep_model(version)
    tokens = tokens_for(model, b=1, t=12)
    for i, block in enumerate(model.blocks):
        block.ffn.value.weight.data *= 2 ** (i // 6)
        block.att.output.weight.data *= 2 ** (i // 6)
    gain = 1.5 * torch.finfo(torch.float16).max / residual_max(model, tokens)
    for block in model.blocks:
        block.ffn.value.weight.data *= gain
        block.att.output.weight.data *= gain
    assert residual_max(model, tokens) > torch.finfo(torch.float16).max
    return model, tokens


def test_fp16_rescale_prevents_overflow_like_the_reference(tmp_path):
    """13-layer models whose residual stream reaches 1.5x the fp16 maximum: our fp16 with the
    reference's rescaling stays finite and about as close to fp32 as the reference's own
    fp16 ("cpu fp16"); without the rescaling it overflows."""
    pytest.importorskip("rwkv")
    cases = {}
    for version in ("4", "5.2", "6"):
        model, tokens = overflowing_model(version)
        torch.save(model.state_dict(), tmp_path / f"v{version}.pth")
        cases[version] = (model, tokens)
    run_rwkv_oracle([dict(ckpt=str(tmp_path / f"v{v}.pth"), tokens=t[0].tolist(), out=str(tmp_path / f"v{v}.pt"),
                          strategy="cpu fp16") for v, (_, t) in cases.items()], tmp_path)

    def centred(x):
        return x - x.mean(-1, keepdim=True)

    for version, (model, tokens) in cases.items():
        ref, _ = model.forward(tokens)
        theirs = torch.load(tmp_path / f"v{version}.pt")["seq"]
        their_err = errors(centred(theirs), centred(ref[0]))["rms_rel"]
        model.cast(torch.float16)
        out, _ = model.forward(tokens)
        assert_close(centred(out[0]), centred(ref[0]), dtype=torch.float16, what=f"v{version} fp16, rescaled",
                     rms_rel=max(2.5 * their_err, 0.03))
        model.fp16_rescale_every = 0
        out, _ = model.forward(tokens)
        assert not torch.isfinite(out).all()


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_state_nbytes_is_what_the_model_holds(name, dtype):
    model = archbench.build(name, dtype=dtype)
    _, state = model.forward(tokens_for(model, b=2, t=5))
    assert model.state_nbytes(2, context_len=5) == state.nbytes() == model.init_state(2).nbytes()
    assert model.state_nbytes(2, context_len=100_000) == state.nbytes()  # constant in context


def test_decay_and_bonus_stay_fp32_in_bf16():
    model = archbench.build("rwkv6-tiny", dtype="bfloat16")
    params = dict(model.named_parameters())
    assert params["blocks.0.att.time_decay"].dtype == torch.float32
    assert params["blocks.0.att.time_faaaa"].dtype == torch.float32
    assert params["blocks.0.att.key.weight"].dtype == torch.bfloat16
