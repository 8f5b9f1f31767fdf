"""Reading checkpoints: BlinkDL `.pth` files of every RWKV version, Hugging Face
`RwkvForCausalLM` (RWKV-4) folders and fla-format RWKV-6/RWKV-7 folders. Transformer
(gpt_neox, llama) and Mamba (mamba, mamba2, state-spaces) folders, or hub ids of them when
online, go to their family's own loader (`Transformer.load`, `MambaBase.load`).

Everything is converted to BlinkDL's key layout, the version is read from the keys and
every size from tensor shapes. Loading never runs code (`weights_only=True`), and a bad
file raises one `CheckpointError` that names the file and the problem.

    model = load_model("RWKV-x070-World-2.9B.pth", dtype="bfloat16", device="cuda")
"""
from __future__ import annotations

import json
import pickle
import re
import zipfile
from pathlib import Path

import torch

from archbench.harness.errors import CheckpointError
from archbench.models.rwkv_common import RWKVConfig

FILE_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
_BLOCK = re.compile(r"^blocks\.(\d+)\.")


# ---- raw tensors --------------------------------------------------------------------
def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A flat {name: tensor} from a .pth/.pt/.bin or .safetensors file."""
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    head = path.open("rb").read(8)
    if not head:
        raise CheckpointError(path, "is empty (0 bytes)")
    try:  # mmap keeps a 14B checkpoint out of RAM; only the zip format supports it
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=head.startswith(b"PK"))
    except pickle.UnpicklingError as e:
        if "Weights only load failed" in str(e):
            found = re.search(r"GLOBAL ([\w.]+)", str(e))
            what = f" (it references {found.group(1)})" if found else ""
            raise CheckpointError(path, "contains pickled objects other than tensors" + what + "; archbench "
                                  "loads with weights_only=True and never runs code from a checkpoint") from None
        raise CheckpointError(path, _not_a_checkpoint(path, head, e)) from None
    except Exception as e:  # torch raises RuntimeError, KeyError, EOFError... on damaged files
        raise CheckpointError(path, _not_a_checkpoint(path, head, e)) from None
    return _as_state_dict(path, obj)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error type for every bad header
        raise CheckpointError(path, f"is not a readable safetensors file ({e})") from None


def _not_a_checkpoint(path: Path, head: bytes, err: Exception) -> str:
    if head.startswith(b"PK\x03\x04"):
        complete = zipfile.is_zipfile(path)
        return ("is a zip archive that torch cannot read as a checkpoint" if complete else
                "is truncated or corrupt: the zip archive of this PyTorch checkpoint ends early "
                "(its central directory is missing)") + f" [{type(err).__name__}: {str(err)[:120]}]"
    if head[:1] == b"\x80":
        return f"is truncated or corrupt: its pickle data could not be read ({type(err).__name__}: {str(err)[:120]})"
    return f"is not a PyTorch checkpoint (it starts with {head!r})"


def _as_state_dict(path: Path, obj) -> dict[str, torch.Tensor]:
    # Lightning and DeepSpeed wrap the weights one level down.
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "module"):
            if isinstance(obj.get(key), dict) and obj[key] and all(isinstance(v, torch.Tensor) for v in obj[key].values()):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise CheckpointError(path, f"holds a {type(obj).__name__}, not a dictionary of named tensors")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(path, f"has entries that are not tensors: {bad[:5]}")
    return obj


# ---- what the keys say ------------------------------------------------------------------
def detect_version(sd: dict[str, torch.Tensor], path: Path) -> str:
    keys = sd.keys()
    has = lambda suffix: any(k.endswith(suffix) for k in keys)  # noqa: E731
    if "emb.weight" not in sd or not any(_BLOCK.match(k) for k in keys):
        sample = ", ".join(list(keys)[:4])
        raise CheckpointError(path, "is not an RWKV checkpoint of a known architecture: it has no 'emb.weight' "
                              f"and 'blocks.N.*' keys (first keys: {sample})")
    if has("att.k_k") or has("att.r_k"):
        return "7"
    if has("att.time_maa_x"):
        return "6"
    decay = sd.get("blocks.0.att.time_decay")
    if has("att.time_faaaa") or (decay is not None and decay.dim() >= 2 and decay.shape[-1] > 1 and has("att.ln_x.weight")):
        return "5.2"
    if has("att.gate.weight"):
        return "5.1"
    if has("att.ln_x.weight"):
        return "5.0"
    if has("att.time_first") and has("att.time_mix_k"):
        return "4"
    raise CheckpointError(path, "has RWKV-like keys but matches no RWKV version (v4: time_first/time_mix_k, "
                          "v5: ln_x, v6: time_maa_x, v7: k_k/r_k)")


def _shape(sd, key, path) -> tuple[int, ...]:
    if key not in sd:
        raise CheckpointError(path, f"is missing {key!r}, which every checkpoint of this version has")
    return tuple(sd[key].shape)


def config_from_state_dict(sd: dict[str, torch.Tensor], path: Path) -> RWKVConfig:
    version = detect_version(sd, path)
    vocab, C = _shape(sd, "emb.weight", path)
    layers = sorted({int(m.group(1)) for k in sd if (m := _BLOCK.match(k))})
    n_layer = layers[-1] + 1
    if layers != list(range(n_layer)):
        missing = sorted(set(range(n_layer)) - set(layers))
        raise CheckpointError(path, f"has blocks up to {n_layer - 1} but none for layers {missing[:8]}: truncated or edited?")
    kw: dict = dict(version=version, vocab_size=vocab, n_embd=C, n_layer=n_layer,
                    dim_ffn=_shape(sd, "blocks.0.ffn.key.weight", path)[0],
                    time_state=any(k.endswith("att.time_state") for k in sd))
    if version != "7":
        kw["dim_att"] = _shape(sd, "blocks.0.att.key.weight", path)[0]
    if version == "5.2":
        kw["head_size"] = int(sd["blocks.0.att.time_decay"].shape[-1])
    elif version in ("5.0", "5.1"):
        kw["head_size"] = kw["dim_att"] // sd["blocks.0.att.time_decay"].numel()
    elif version == "6":
        kw["head_size"] = _shape(sd, "blocks.0.att.time_faaaa", path)[-1]
        kw["mix_lora"] = _shape(sd, "blocks.0.att.time_maa_w1", path)[1] // 5
        kw["decay_lora"] = _shape(sd, "blocks.0.att.time_decay_w1", path)[1]
    elif version == "7":
        kw["head_size"] = _shape(sd, "blocks.0.att.r_k", path)[-1]
        kw["decay_lora"] = _shape(sd, "blocks.0.att.w1", path)[1]
        kw["aaa_lora"] = _shape(sd, "blocks.0.att.a1", path)[1]
        kw["gate_lora"] = _shape(sd, "blocks.0.att.g1", path)[1]
        v1 = "blocks.1.att.v1" if n_layer > 1 else "blocks.0.att.v1"
        kw["mv_lora"] = _shape(sd, v1, path)[1] if v1 in sd else 0
        kw["layer0_v_lora"] = "blocks.0.att.v1" in sd
    if kw.get("dim_att", C) % kw.get("head_size", 1):
        raise CheckpointError(path, f"attention width {kw.get('dim_att', C)} is not a multiple of the head size "
                              f"{kw['head_size']} read from its decay/bonus tensors")
    return RWKVConfig(**kw)


def match_shapes(sd: dict[str, torch.Tensor], expected: dict[str, torch.Size], path: Path, what: str) -> dict:
    """Checks keys and shapes against the model's parameters; tensors that differ only by
    size-1 axes ([C] vs [1, 1, C]) are reshaped. Any other difference is an error."""
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    if missing:
        raise CheckpointError(path, f"is missing {len(missing)} tensor(s) that a {what} needs, "
                              f"e.g. {missing[:5]}: truncated, or a different architecture?")
    if unexpected:
        raise CheckpointError(path, f"has {len(unexpected)} tensor(s) that a {what} does not use, "
                              f"e.g. {unexpected[:5]}")
    out = {}
    for k, want in expected.items():
        t = sd[k]
        if t.shape != want:
            if [d for d in t.shape if d != 1] != [d for d in want if d != 1]:
                raise CheckpointError(path, f"tensor {k!r} has shape {tuple(t.shape)}, but the other tensors "
                                      f"imply {tuple(want)} for a {what}: the shapes contradict each other")
            t = t.reshape(want)
        out[k] = t
    return out


# ---- folders ------------------------------------------------------------------------
def _read_folder(path: Path) -> dict[str, torch.Tensor]:
    """A Hugging Face folder (config.json + weights) converted to BlinkDL's layout, or a
    folder holding a single BlinkDL .pth."""
    config_file = path / "config.json"
    if not config_file.exists():
        pths = sorted(path.glob("*.pth"))
        if len(pths) == 1:
            return read_tensors(pths[0])
        raise CheckpointError(path, "is a folder without config.json" +
                              (f" and with {len(pths)} .pth files: name one" if pths else " or a .pth file"))
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(config_file, f"is not valid JSON ({e})") from None
    from archbench.models import hf_formats
    try:
        fmt = hf_formats.detect_hf_format(config)
    except ValueError as e:
        raise CheckpointError(path, str(e)) from None
    sd: dict[str, torch.Tensor] = {}
    files = sorted(path.glob("*.safetensors")) or sorted(path.glob("pytorch_model*.bin")) or sorted(path.glob("*.pth"))
    if not files:
        raise CheckpointError(path, "has a config.json but no weights (*.safetensors, pytorch_model*.bin)")
    for f in files:
        sd.update(read_tensors(f))
    convert = {"hf-rwkv4": hf_formats.hf_rwkv4_to_blink, "fla-rwkv6": hf_formats.fla_rwkv6_to_blink,
               "fla-rwkv7": hf_formats.fla_rwkv7_to_blink}[fmt]
    try:
        # Weights convert exactly; what fla's config cannot say (one norm eps for the layer
        # norms and ln_x) does not matter here, as archbench runs BlinkDL's maths.
        return convert(sd, config, allow_inexact=True)
    except KeyError as e:
        raise CheckpointError(path, f"is a {fmt} folder but lacks the tensor {e}") from None
    except ValueError as e:
        raise CheckpointError(path, str(e)) from None


def read_checkpoint(path) -> tuple[RWKVConfig, dict[str, torch.Tensor]]:
    """(config, state dict) from a file or folder: BlinkDL's layout for RWKV, the folder's
    own for a Transformer or Mamba."""
    path = local_path(path)
    if (family := baseline_family(path)) is not None:
        from archbench.harness.registry import family_class
        files = sorted(path.glob("*.safetensors")) or sorted(path.glob("pytorch_model*.bin"))
        return family_class(family).read_config(path), {k: v for f in files for k, v in read_tensors(f).items()}
    if not path.exists():
        raise CheckpointError(path, "no such file or directory")
    sd = _read_folder(path) if path.is_dir() else read_tensors(path)
    return config_from_state_dict(sd, path), sd


# ---- Transformer and Mamba folders ----------------------------------------------------
BASELINE_MODEL_TYPES = {"gpt_neox": "transformer", "llama": "transformer", "mamba": "mamba1", "mamba2": "mamba2"}
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def baseline_family(path: Path) -> str | None:
    """"transformer", "mamba1" or "mamba2" for a Hugging Face folder of those model types or
    a state-spaces Mamba folder (config.json with d_model, n_layer and ssm_cfg); else None."""
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):  # no folder, no config.json, or not JSON: the RWKV path says which
        return None
    if not isinstance(config, dict):
        return None
    if config.get("model_type") in BASELINE_MODEL_TYPES:
        return BASELINE_MODEL_TYPES[config["model_type"]]
    if {"d_model", "n_layer", "ssm_cfg"} <= config.keys():
        return "mamba2" if (config["ssm_cfg"] or {}).get("layer") == "Mamba2" else "mamba1"
    return None


def is_checkpoint(name) -> bool:
    """A checkpoint (a local file or folder, or a Hugging Face hub id 'owner/name') rather
    than a preset name (presets have no '/')."""
    return Path(name).expanduser().exists() or bool(_HUB_ID.match(str(name)))


def local_path(path) -> Path:
    """A local path, or the downloaded snapshot of a Hugging Face hub id such as
    'EleutherAI/pythia-160m' (only for a name that is no local path or checkpoint file)."""
    local = Path(path).expanduser()
    if local.exists() or not _HUB_ID.match(str(path)) or local.suffix in FILE_SUFFIXES:
        return local
    try:
        from huggingface_hub import list_repo_files, snapshot_download
        weights = "*.safetensors" if any(f.endswith(".safetensors") for f in list_repo_files(str(path))) else "*.bin"
        return Path(snapshot_download(str(path), allow_patterns=["*.json", weights]))
    except Exception as e:  # offline, unknown repo, gated repo: all mean "not loadable from here"
        raise CheckpointError(path, f"no such file or directory, and not a Hugging Face hub id that can be "
                              f"downloaded here ({type(e).__name__}: {str(e)[:200]})") from None


def load_model(path, impl: str = "auto", dtype="float32", device="cpu"):
    from archbench.harness.registry import family_class, make
    if (family := baseline_family(local := local_path(path))) is not None:
        return family_class(family).load(local, impl=impl, dtype=dtype, device=device)
    config, sd = read_checkpoint(local)
    model = make(config.family, config, impl=impl, dtype=dtype, device=device)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    sd = match_shapes(sd, expected, Path(path), f"RWKV-{config.version} model")
    model.load_state_dict(sd)
    model.source = str(path)
    return model
