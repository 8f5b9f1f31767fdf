"""Checkpoint loading: versions and sizes read from the file, round trips, and one clear
error per kind of bad input."""
import os

import pytest
import torch

import archbench
from archbench.harness.errors import CheckpointError
from archbench.models.checkpoint import read_checkpoint

TINY = {"rwkv4-tiny": "4", "rwkv5.0-tiny": "5.0", "rwkv5.1-tiny": "5.1", "rwkv5-tiny": "5.2",
        "rwkv6-tiny": "6", "rwkv7-tiny": "7"}


@pytest.mark.parametrize("name", TINY)
def test_round_trip_reads_version_and_shapes(tmp_path, name):
    model = archbench.build(name, seed=7)
    path = tmp_path / "model.pth"
    torch.save({k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}, path)
    loaded = archbench.load(path)
    assert loaded.config.version == TINY[name]
    assert loaded.config == model.config
    for p in model.parameters():  # what the bf16 file holds
        p.data = p.data.to(torch.bfloat16).float()
    tokens = torch.randint(0, 512, (2, 9))
    torch.testing.assert_close(loaded.forward(tokens)[0], model.forward(tokens)[0])
    bf16 = archbench.load(path, dtype="bfloat16")
    assert bf16.dtype == torch.bfloat16
    for k, v in bf16.state_dict().items():
        assert torch.equal(v.float(), loaded.state_dict()[k]), k


def test_sizes_come_from_shapes_not_presets(tmp_path):
    from archbench.harness.registry import family_class
    from archbench.models.rwkv_common import RWKVConfig
    cfg = RWKVConfig(version="7", vocab_size=77, n_embd=48, n_layer=3, head_size=12, decay_lora=20,
                     aaa_lora=12, mv_lora=28, gate_lora=36, dim_ffn=100)
    torch.save(family_class("rwkv7")(cfg).init_random_(0).state_dict(), tmp_path / "odd.pth")
    assert read_checkpoint(tmp_path / "odd.pth")[0] == cfg


def test_state_tuned_checkpoint_starts_from_time_state(tmp_path):
    model = archbench.build("rwkv6-tiny")
    sd = model.state_dict()
    H, N = model.config.n_head, model.config.head_size
    for i in range(model.config.n_layer):
        sd[f"blocks.{i}.att.time_state"] = torch.randn(H, N, N)
    torch.save(sd, tmp_path / "tuned.pth")
    tuned = archbench.load(tmp_path / "tuned.pth")
    assert tuned.config.time_state
    state = tuned.init_state(2)
    torch.testing.assert_close(state.wkv[1, 1], sd["blocks.1.att.time_state"].transpose(-1, -2))
    tokens = torch.randint(0, 512, (1, 5))
    assert not torch.allclose(tuned.forward(tokens)[0], model.forward(tokens)[0])


def test_wrapped_and_squeezed_checkpoints_load(tmp_path):
    """Lightning-style {"state_dict": ...} files, and [C] where BlinkDL has [1, 1, C]."""
    model = archbench.build("rwkv4-tiny")
    sd = {k: (v.squeeze() if "time_mix" in k else v) for k, v in model.state_dict().items()}
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "wrapped.ckpt")
    tokens = torch.randint(0, 512, (1, 6))
    torch.testing.assert_close(archbench.load(tmp_path / "wrapped.ckpt").forward(tokens)[0], model.forward(tokens)[0])


def test_folder_with_one_pth(tmp_path):
    torch.save(archbench.build("rwkv5-tiny").state_dict(), tmp_path / "x.pth")
    assert archbench.load(tmp_path).config.version == "5.2"


# ---- bad input -------------------------------------------------------------------------
class RunsCode:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))


def bad_files(tmp_path):
    good = tmp_path / "good.pth"
    torch.save(archbench.build("rwkv7-tiny").state_dict(), good)
    data = good.read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    (tmp_path / "notes.pth").write_text("these are my notes, not weights\n")
    (tmp_path / "empty.pth").write_bytes(b"")
    torch.save({"emb.weight": torch.zeros(2, 2), "payload": RunsCode()}, tmp_path / "evil.pth")
    torch.save({"transformer.h.0.attn.c_attn.weight": torch.zeros(3, 3)}, tmp_path / "gpt2.pth")
    sd = archbench.build("rwkv7-tiny").state_dict()
    sd["blocks.1.att.key.weight"] = torch.zeros(32, 32)
    torch.save(sd, tmp_path / "contradicting.pth")
    sd = archbench.build("rwkv7-tiny").state_dict()
    del sd["blocks.1.ffn.value.weight"]
    torch.save(sd, tmp_path / "missing-tensor.pth")
    torch.save([torch.zeros(3)], tmp_path / "a-list.pth")
    (tmp_path / "folder").mkdir()
    return {
        "does-not-exist.pth": "no such file",
        "truncated.pth": "truncated",
        "notes.pth": "not a PyTorch checkpoint",
        "empty.pth": "empty",
        "evil.pth": "never runs code",
        "gpt2.pth": "not an RWKV checkpoint",
        "contradicting.pth": "contradict",
        "missing-tensor.pth": "missing",
        "a-list.pth": "not a dictionary",
        "folder": "without config.json",
    }


def test_bad_input_gets_one_clear_error(tmp_path, capfd):
    for name, expected in bad_files(tmp_path).items():
        with pytest.raises(CheckpointError) as info:
            archbench.load(tmp_path / name)
        message = str(info.value)
        assert str(tmp_path / name) in message, message
        assert expected in message, message
        assert info.value.__cause__ is None and info.value.__suppress_context__ or info.value.__context__ is None
    assert "must never run" not in capfd.readouterr().out


def test_unknown_hf_model_type(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(CheckpointError, match="bert"):
        archbench.load(tmp_path)


# ---- Hugging Face and fla folders ------------------------------------------------------
def write_folder(path, sd, config):
    import json

    from safetensors.torch import save_file
    path.mkdir()
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.mark.parametrize("name,convert", [("rwkv4-tiny", "blink_to_hf_rwkv4"), ("rwkv6-tiny", "blink_to_fla_rwkv6"),
                                          ("rwkv7-tiny", "blink_to_fla_rwkv7")])
def test_hf_and_fla_folders_load_to_the_same_model(tmp_path, name, convert):
    from archbench.models import hf_formats
    model = archbench.build(name, seed=5)
    kwargs = {} if convert == "blink_to_hf_rwkv4" else {"allow_inexact": True}  # fla eps: see hf_formats
    sd, config = getattr(hf_formats, convert)(model.state_dict(), **kwargs)
    folder = write_folder(tmp_path / "hf", sd, config)
    loaded = archbench.load(folder)
    assert loaded.config == model.config
    tokens = torch.randint(0, 512, (2, 11))
    torch.testing.assert_close(loaded.forward(tokens)[0], model.forward(tokens)[0], rtol=0, atol=0)


def test_v4_matches_transformers_rwkv(tmp_path):
    """Our RWKV-4 and transformers' RwkvForCausalLM on the same weights (a folder that
    transformers itself wrote), 6 layers, whole sequence."""
    from transformers import RwkvConfig, RwkvForCausalLM

    from archbench.harness.registry import family_class
    from archbench.harness.testing import assert_close
    from archbench.models import hf_formats
    from archbench.models.rwkv_common import RWKVConfig
    ours = family_class("rwkv4")(RWKVConfig(version="4", vocab_size=300, n_embd=96, n_layer=7)).init_random_(3).eval()
    sd, cfg = hf_formats.blink_to_hf_rwkv4(ours.state_dict())
    hf = RwkvForCausalLM(RwkvConfig(**cfg)).eval()
    hf.load_state_dict(sd)
    hf.save_pretrained(tmp_path / "hf")
    tokens = torch.randint(0, 300, (2, 19))
    with torch.no_grad():
        theirs = hf(tokens).logits
    assert_close(archbench.load(tmp_path / "hf").forward(tokens)[0], theirs, rms_rel=1e-4, max_rel=1e-4,
                 what="archbench vs transformers RwkvForCausalLM")
