"""Mamba-1 and Mamba-2 on transformers' path (impl "hf"), on a CPU: parallel equals
step-by-step equals chunked; the state is the size state_nbytes says; both checkpoint
formats (state-spaces and *-hf) load, and their keys convert both ways; a missing
mamba-ssm gets a clear message. tests/models/test_baselines_gpu.py checks mamba_ssm."""
import json
import warnings

import pytest
import torch

import archbench
from archbench.harness.errors import MissingDependencyError
from archbench.harness.registry import config_for, make
from archbench.harness.testing import assert_close
from archbench.models import mamba as mb
from helpers import SPLITS, chunks_match_whole, steps_match_whole, tokens_for

TINY = ["mamba-tiny", "mamba2-tiny"]


@pytest.mark.parametrize("name", TINY)
def test_parallel_equals_recurrent(name):
    model = archbench.build(name)
    tokens, state, full_state = steps_match_whole(model)
    assert_close(model.forward(tokens)[0], model.lm(tokens, use_cache=False).logits,
                 what="vs transformers without a cache")
    assert_close(state.ssm, full_state.ssm, what="final SSM state")
    assert_close(state.conv, full_state.conv, what="final conv state")


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("splits", SPLITS)
def test_parallel_equals_chunked(name, splits):
    _, state, full_state = chunks_match_whole(archbench.build(name), splits)
    assert_close(state.ssm, full_state.ssm, what="final SSM state")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("name", TINY)
def test_state_nbytes_is_what_the_model_holds(name, dtype):
    model = archbench.build(name, dtype=dtype)
    _, state = model.forward(tokens_for(model, b=2, t=5))
    assert model.state_nbytes(2, context_len=5) == state.nbytes() == model.init_state(2).nbytes()
    assert model.state_nbytes(2, context_len=100_000) == state.nbytes()  # constant in context
    assert state.ssm.dtype == model.dtype


def test_key_conversion_round_trips():
    sd = archbench.build("mamba2-tiny").lm.state_dict()
    ssm = mb.hf_to_state_spaces(dict(sd))
    assert "backbone.embedding.weight" in ssm and "backbone.embeddings.weight" not in ssm
    back = mb.state_spaces_to_hf(ssm)
    assert back.keys() == sd.keys() and all(back[k] is sd[k] for k in sd)
    no_head = {k: v for k, v in ssm.items() if k != "lm_head.weight"}  # tied weights stored once
    assert mb.state_spaces_to_hf(no_head)["lm_head.weight"] is sd["backbone.embeddings.weight"]


@pytest.mark.parametrize("name", TINY)
def test_both_checkpoint_formats_load(tmp_path, name):
    source = archbench.build(name, seed=3)
    tokens = tokens_for(source)
    expected, _ = source.forward(tokens)
    source.lm.save_pretrained(tmp_path / "hf")  # transformers' *-hf layout (safetensors)
    spaces = tmp_path / "state-spaces"  # mamba_ssm's layout: config.json + pytorch_model.bin
    spaces.mkdir()
    (spaces / "config.json").write_text(json.dumps(source.config.to_state_spaces()))
    torch.save(mb.hf_to_state_spaces(source.lm.state_dict()), spaces / "pytorch_model.bin")
    for folder in (tmp_path / "hf", spaces):
        model = archbench.load(folder)
        assert model.family == source.family and model.config == source.config
        assert_close(model.forward(tokens)[0], expected, what=f"{name} from {folder.name}")


def test_state_spaces_config_pads_the_vocabulary():
    cfg = mb.MambaConfig.from_state_spaces({"d_model": 768, "n_layer": 24, "vocab_size": 50277, "ssm_cfg": {},
                                            "pad_vocab_size_multiple": 8})
    assert cfg == config_for("mamba-130m")[1]
    cfg = mb.MambaConfig.from_state_spaces({"d_model": 768, "n_layer": 24, "vocab_size": 50277,
                                            "ssm_cfg": {"layer": "Mamba2"}, "pad_vocab_size_multiple": 16})
    assert cfg == config_for("mamba2-130m")[1]


def test_missing_mamba_ssm_says_what_to_do(monkeypatch):
    monkeypatch.setattr(mb, "mamba_ssm_import_error", lambda: "ModuleNotFoundError: No module named 'mamba_ssm'")
    with pytest.raises(MissingDependencyError, match="pip install archbench\\[gpu\\].*build_mamba.sh.*impl 'hf'"):
        archbench.build("mamba-tiny", impl="mamba_ssm")
    with pytest.warns(UserWarning, match="transformers' path \\(impl 'hf'\\)"):
        assert mb.resolve_impl("auto", "cuda") == "hf"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert mb.resolve_impl("auto", "cpu") == "hf"  # nothing to say on a CPU: mamba_ssm needs CUDA


NOMINAL = {"mamba-130m": 130e6, "mamba-370m": 370e6, "mamba-790m": 790e6, "mamba-1.4b": 1.4e9, "mamba-2.8b": 2.8e9,
           "mamba2-130m": 130e6, "mamba2-370m": 370e6, "mamba2-780m": 780e6, "mamba2-1.3b": 1.3e9,
           "mamba2-2.7b": 2.7e9}


@pytest.mark.parametrize("name", NOMINAL)
def test_presets_have_their_nominal_sizes(name):
    family, config = config_for(name)
    n = make(family, config, device="meta").num_params()
    assert abs(n / NOMINAL[name] - 1) < 0.05, n  # names are rounded: mamba2-1.3b has 1.34B


def scan(u, delta, A, B, h):
    """Mamba-1's selective scan, token by token (delta already through softplus): the
    recurrence mamba_ssm's CUDA kernel runs, here in fp32 on the CPU."""
    for t in range(u.shape[-1]):
        h = torch.exp(delta[..., t, None] * A) * h + delta[..., t, None] * B[:, None, :, t] * u[..., t, None]
    return h


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("a_scale", [1.0, 300.0])  # A as initialised (-1..-16), and far larger
def test_state_prefix_writes_the_state(dtype, a_scale):
    """The virtual tokens that give mamba_ssm's scan (which starts from zero) a carried state
    take h from 0 to h0, within one rounding of u to the model's dtype, whatever A is."""
    g = torch.Generator().manual_seed(0)
    batch, d, n = 3, 24, 16
    A = -torch.arange(1, n + 1).float().expand(d, n) * (1 + torch.rand(d, 1, generator=g)) * a_scale
    bias = torch.randn(d, generator=g) - 4
    h0 = torch.randn(batch, d, n, generator=g).to(dtype)
    u, raw, B = mb.state_prefix(h0, A, bias, dtype)
    assert u.dtype == raw.dtype == B.dtype == dtype and u.shape == raw.shape == (batch, d, n) and B.shape == (batch, n, n)
    delta = torch.nn.functional.softplus(raw.float() + bias[:, None])
    h = scan(u.float(), delta, A, B.float(), torch.zeros(batch, d, n))
    assert_close(h, h0.float(), rms_rel=1e-6 if dtype == torch.float32 else 5e-3, what="state after the prefix")
    # then the real tokens continue from it: the prefix followed by x is the scan of x from h0
    x, dx, Bx = torch.randn(batch, d, 7, generator=g), torch.rand(batch, d, 7, generator=g), torch.randn(batch, n, 7, generator=g)
    both = scan(torch.cat([u.float(), x], -1), torch.cat([delta, dx], -1), A, torch.cat([B.float(), Bx], -1),
                torch.zeros(batch, d, n))
    assert_close(both, scan(x, dx, A, Bx, h0.float()), rms_rel=1e-5 if dtype == torch.float32 else 5e-3,
                 what="prefix + tokens vs tokens from h0")
