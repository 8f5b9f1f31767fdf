"""The Transformer (Pythia / Llama through transformers) behind the common interface, on a
CPU: parallel equals step-by-step equals chunked, equals transformers' own forward on the
same weights; the cache is the size state_nbytes says; folders load; the presets have
the published parameter counts."""
import pytest
import torch

import archbench
from archbench.harness.errors import CheckpointError, MissingDependencyError
from archbench.harness.registry import config_for, make
from archbench.harness.testing import assert_close
from archbench.models import transformer as tf
from helpers import B, SPLITS, T, chunks_match_whole, steps_match_whole, tokens_for

TINY = ["pythia-tiny", "llama-tiny"]


def reference_forward(model, tokens):
    """transformers' own model (eager attention, no cache) on the same weights."""
    from transformers import AutoModelForCausalLM
    ref = AutoModelForCausalLM.from_config(model.lm.config, attn_implementation="eager")
    ref.load_state_dict(model.lm.state_dict())
    return ref(tokens).logits.float()


@pytest.mark.parametrize("name", TINY)
def test_parallel_equals_transformers(name):
    model = archbench.build(name)
    tokens = tokens_for(model)
    assert_close(model.forward(tokens)[0], reference_forward(model, tokens), what=f"{name} vs transformers")


@pytest.mark.parametrize("name", TINY)
def test_parallel_equals_recurrent(name):
    model = archbench.build(name)
    _, state, full_state = steps_match_whole(model, model.init_state(B))  # room for 256: no growth
    assert state.length == T and state.pos.item() == T
    assert_close(state.k[:, :, :, :T], full_state.k[:, :, :, :T], what="keys")


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("splits", SPLITS)
def test_parallel_equals_chunked(name, splits):
    model = archbench.build(name)
    tokens, state, _ = chunks_match_whole(model, splits, model.init_state(B, max_len=splits[0]))  # grows on the way
    logits, state = model.step(tokens[:, 0], state)  # and a step after the chunks
    assert_close(logits, model.forward(torch.cat([tokens, tokens[:, :1]], 1))[0][:, -1], what="step after chunks")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("name", TINY)
def test_state_nbytes_is_what_the_cache_holds(name, dtype):
    model = archbench.build(name, dtype=dtype)
    cfg = model.config
    per_token = 2 * cfg.n_layer * cfg.n_kv_head * cfg.head_dim * model.dtype.itemsize
    assert model.state_nbytes(2, 1000) == 2 * 1000 * per_token + tf.POS_NBYTES
    state = model.init_state(2, max_len=40)
    assert state.nbytes() == model.state_nbytes(2, 40)
    _, state = model.forward(tokens_for(model, b=2, t=40), state)  # exactly full: no growth
    assert state.nbytes() == model.state_nbytes(2, 40) and state.capacity == 40
    _, state = model.step(tokens_for(model, b=2, t=1)[:, 0], state)  # grows by KV_RESERVE slots
    assert state.nbytes() == model.state_nbytes(2, 41 + tf.KV_RESERVE)


def test_state_clone_is_independent():
    model = archbench.build("pythia-tiny")
    tokens = tokens_for(model)
    _, state = model.forward(tokens[:, :20])
    saved = state.clone()
    a, _ = model.step(tokens[:, 20], state)
    b, _ = model.step(tokens[:, 20], saved)
    assert_close(a, b, what="step from a clone")


def test_bfloat16_close_to_float32():
    model = archbench.build("llama-tiny")
    tokens = tokens_for(model, b=2, t=20)
    ref, _ = model.forward(tokens)
    out, state = model.cast("bfloat16").forward(tokens)
    assert state.k.dtype == torch.bfloat16
    assert_close(out, ref, dtype=torch.bfloat16, what="bf16 vs fp32", rms_rel=0.05)


@pytest.mark.parametrize("arch", ["gpt_neox", "llama"])
def test_loads_a_hugging_face_folder(tmp_path, arch):
    from transformers import AutoModelForCausalLM
    name = {"gpt_neox": "pythia-tiny", "llama": "llama-tiny"}[arch]
    hf = AutoModelForCausalLM.from_config(config_for(name)[1].to_hf(), attn_implementation="eager").eval()
    hf.save_pretrained(tmp_path)
    model = archbench.load(tmp_path)
    assert model.family == "transformer" and model.config == config_for(name)[1]
    tokens = tokens_for(model)
    assert_close(model.forward(tokens)[0], hf(tokens).logits, what=f"{arch} folder")
    assert archbench.load(tmp_path, dtype="bfloat16").dtype == torch.bfloat16


def test_a_bad_folder_is_one_clear_error(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama", "hidden_size": 64}')
    with pytest.raises(CheckpointError, match=str(tmp_path)):
        archbench.load(tmp_path)


def test_missing_flash_attn_says_what_to_do(monkeypatch):
    monkeypatch.setattr(tf, "flash_attn_available", lambda: False)
    with pytest.raises(MissingDependencyError, match="pip install flash-attn.*impl 'sdpa'"):
        archbench.build("pythia-tiny", impl="flash_attn")
    assert tf.resolve_impl("auto", "cuda") == "sdpa"
    assert tf.resolve_impl("ref") == "sdpa"


PUBLISHED = {  # total / without embeddings (Pythia paper, Table 1; Llama cards)
    "pythia-160m": (162_322_944, 85_056_000), "pythia-2.8b": (2_775_208_960, 2_517_652_480),
    "pythia-6.9b": (6_857_302_016, 6_444_163_072), "llama2-7b": (6_738_415_616, None),
}


@pytest.mark.parametrize("name", PUBLISHED)
def test_presets_have_published_sizes(name):
    family, config = config_for(name)
    model = make(family, config, device="meta")
    total, non_embedding = PUBLISHED[name]
    assert model.num_params() == total
    assert non_embedding is None or model.num_params(non_embedding=True) == non_embedding
