"""The Transformer and Mamba on a GPU: mamba_ssm equals transformers on the same weights
(both checkpoint formats, both directions), cached decode equals the full forward, and a
step replayed from a CUDA graph equals the eager step. Skipped without a GPU; the
mamba_ssm tests skip without mamba_ssm (scripts/build_mamba.sh builds it)."""
import json

import pytest
import torch

from archbench.harness.registry import make
from archbench.harness.testing import assert_close
from archbench.models import mamba as mb
from archbench.models import transformer as tf
from archbench.harness.graphs import GraphedStep

pytestmark = pytest.mark.gpu
BF16 = torch.bfloat16
DECODE_TOL = 0.05  # rms_rel after many bf16 steps: the state or cache is rounded to bf16 at each one

MAMBA = {"mamba1": mb.MambaConfig(version=1, vocab_size=1000, n_embd=256, n_layer=4),
         "mamba2": mb.MambaConfig(version=2, vocab_size=1000, n_embd=256, n_layer=4, d_state=64, chunk_size=64)}
TRANSFORMER = {
    "gpt_neox": tf.TransformerConfig(arch="gpt_neox", vocab_size=1000, n_embd=512, n_layer=4, n_head=8),
    "llama-gqa": tf.TransformerConfig(arch="llama", vocab_size=1000, n_embd=512, n_layer=4, n_head=8, n_kv_head=2,
                                      dim_ffn=1024),
}


def needs_mamba_ssm():
    why = mb.mamba_ssm_import_error()
    if why is not None:
        pytest.skip(f"mamba_ssm cannot be imported ({why}); scripts/build_mamba.sh builds it")


def centred(x):
    return x - x.mean(-1, keepdim=True)


def tokens(vocab, b=2, t=300, seed=0):
    return torch.randint(0, vocab, (b, t), generator=torch.Generator().manual_seed(seed)).cuda()


def mamba_pair(cfg):
    """The same bf16 weights on mamba_ssm and on transformers."""
    fast = make(cfg.family, cfg, impl="mamba_ssm", dtype="bfloat16", device="cuda").init_random_(0)
    ref = make(cfg.family, cfg, impl="hf", dtype="bfloat16", device="cuda")
    ref.load_weights(fast.lm.state_dict(), "mamba_ssm weights")
    return fast, ref


@pytest.mark.parametrize("family", MAMBA)
def test_mamba_ssm_equals_transformers(family):
    needs_mamba_ssm()
    fast, ref = mamba_pair(MAMBA[family])
    x = tokens(1000)
    a, sa = fast.forward(x[:, :280])
    b, sb = ref.forward(x[:, :280])
    assert_close(centred(a), centred(b), dtype=BF16, what=f"{family} prefill, mamba_ssm vs transformers")
    assert_close(sa.ssm, sb.ssm, dtype=BF16, rms_rel=0.05, what="SSM state")
    for t in range(280, 300):
        a, _ = fast.step(x[:, t], sa)
        b, _ = ref.step(x[:, t], sb)
        assert_close(centred(a), centred(b), rms_rel=DECODE_TOL, what=f"{family} step {t}")


@pytest.mark.parametrize("family", MAMBA)
def test_mamba_ssm_decode_equals_its_full_forward(family):
    needs_mamba_ssm()
    fast, _ = mamba_pair(MAMBA[family])
    x = tokens(1000)
    full, _ = fast.forward(x)
    logits, state = fast.forward(x[:, :250])
    parts = [logits]
    parts += [fast.forward(x[:, 250:260], state)[0]]  # a chunk after the first: from the carried state
    parts += [fast.step(x[:, t], state)[0][:, None] for t in range(260, 300)]
    assert_close(centred(torch.cat(parts, 1)), centred(full), rms_rel=DECODE_TOL, what=f"{family} prefill + decode")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("family", MAMBA)
def test_mamba_ssm_chunked_prefill_equals_one_pass(family, dtype):
    """A prompt in pieces through mamba_ssm's kernels from the carried state (Mamba-1 by its
    virtual tokens) gives the logits and states of one pass, pieces shorter than the
    convolution and than a Mamba-2 scan chunk included."""
    needs_mamba_ssm()
    model = make(family, MAMBA[family], impl="mamba_ssm", dtype=dtype, device="cuda").init_random_(0)
    assert model.chunked_prefill
    x = tokens(1000)
    full, full_state = model.forward(x)
    state, pieces, start = None, [], 0
    for n in (100, 2, 67, 131):
        logits, state = model.forward(x[:, start:start + n], state)
        pieces.append(logits)
        start += n
    # fp32: Mamba-2's Triton scan multiplies in TF32 (tl.dot's default), about 1e-4 apart
    # between two ways of cutting the same sequence (1.7e-4 measured on the SSM state)
    tol = dict(rms_rel=1e-3) if dtype == "float32" else dict(rms_rel=DECODE_TOL)
    assert_close(centred(torch.cat(pieces, 1)), centred(full), what=f"{family} {dtype} chunked vs one pass", **tol)
    assert_close(state.ssm.float(), full_state.ssm.float(), what="SSM state", **tol)
    assert_close(state.conv.float(), full_state.conv.float(), what="conv state", **tol)
    _, head_state = model.forward(x[:, :50])
    tail, _ = model.forward(x[:, 50:], head_state, last_only=True)
    assert tail.shape == (2, 1, full.shape[-1])
    assert_close(centred(tail[:, 0]), centred(full[:, -1]), what="last_only", **tol)


@pytest.mark.parametrize("family", MAMBA)
def test_both_checkpoint_formats_load_into_both_paths(tmp_path, family):
    needs_mamba_ssm()
    cfg = MAMBA[family]
    source = make(cfg.family, cfg, impl="hf").init_random_(1)  # fp32 on the CPU
    source.lm.save_pretrained(tmp_path / "hf")
    spaces = tmp_path / "state-spaces"
    spaces.mkdir()
    (spaces / "config.json").write_text(json.dumps(cfg.to_state_spaces()))
    torch.save(mb.hf_to_state_spaces(source.lm.state_dict()), spaces / "pytorch_model.bin")
    import archbench
    x = tokens(1000, t=64)
    outs = {(folder.name, impl): archbench.load(folder, impl=impl, dtype="bfloat16", device="cuda").forward(x)[0]
            for folder in (tmp_path / "hf", spaces) for impl in ("mamba_ssm", "hf")}
    first = outs[("hf", "hf")]
    for key, out in outs.items():
        assert_close(centred(out), centred(first), dtype=BF16, what=f"{family} {key}")


@pytest.mark.parametrize("family", MAMBA)
def test_mamba_graphed_step_equals_eager(family):
    needs_mamba_ssm()
    fast, _ = mamba_pair(MAMBA[family])
    x = tokens(1000, b=1)
    _, state = fast.forward(x[:, :100])
    saved = state.clone()
    graphed = GraphedStep(fast, state, x[:, 100])
    eager = [fast.step(x[:, t], saved)[0] for t in range(100, 120)]
    replayed = [graphed(x[:, t]).clone() for t in range(100, 120)]
    assert_close(torch.stack(replayed), torch.stack(eager), dtype=BF16, what="graph vs eager")
    assert state.length == saved.length == 120


@pytest.mark.parametrize("name", TRANSFORMER)
def test_transformer_cached_decode_equals_full_forward(name):
    cfg = TRANSFORMER[name]
    model = make("transformer", cfg, impl="sdpa", dtype="bfloat16", device="cuda").init_random_(0)
    x = tokens(1000)
    full, _ = model.forward(x)
    state = model.init_state(2, max_len=300)
    logits, state = model.forward(x[:, :200], state)
    parts = [logits, model.forward(x[:, 200:240], state)[0]]
    parts += [model.step(x[:, t], state)[0][:, None] for t in range(240, 300)]
    assert_close(torch.cat(parts, 1), full, rms_rel=DECODE_TOL, what=f"{name} prefill + chunk + steps vs full")
    model.lm.set_attn_implementation("sdpa")  # transformers' own attention, no cache
    assert_close(model.lm(x).logits.float(), full, dtype=BF16, what=f"{name} vs transformers sdpa")


@pytest.mark.parametrize("name", TRANSFORMER)
def test_transformer_graphed_step_equals_eager(name):
    cfg = TRANSFORMER[name]
    model = make("transformer", cfg, impl="sdpa", dtype="bfloat16", device="cuda").init_random_(0)
    x = tokens(1000, b=1)
    state = model.init_state(1, max_len=130)
    _, state = model.forward(x[:, :100], state)
    saved = state.clone()
    graphed = GraphedStep(model, state, x[:, 100])
    eager = [model.step(x[:, t], saved)[0] for t in range(100, 120)]
    replayed = [graphed(x[:, t]).clone() for t in range(100, 120)]
    assert_close(torch.stack(replayed), torch.stack(eager), dtype=BF16, what="graph vs eager")
    assert state.length == 120 and state.pos.item() == 120
    state.restore(saved)
    assert state.length == 120


def test_flash_attn_equals_sdpa():
    if not tf.flash_attn_available():
        pytest.skip("flash-attn is not installed")
    cfg = TRANSFORMER["llama-gqa"]
    sdpa = make("transformer", cfg, impl="sdpa", dtype="bfloat16", device="cuda").init_random_(0)
    flash = make("transformer", cfg, impl="flash_attn", dtype="bfloat16", device="cuda")
    flash.load_state_dict(sdpa.state_dict())
    x = tokens(1000)
    out = {}
    for model in (sdpa, flash):
        state = model.init_state(2, max_len=300)
        a, state = model.forward(x[:, :250], state)
        b = torch.stack([model.step(x[:, t], state)[0] for t in range(250, 300)], 1)
        out[model.impl] = torch.cat([a, b], 1)
    assert_close(out["flash_attn"], out["sdpa"], dtype=BF16, what="flash_attn vs sdpa")
