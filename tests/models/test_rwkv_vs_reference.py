"""Our RWKV v4-v7, loaded from BlinkDL-format .pth files, against BlinkDL's own `rwkv`
package (0.8.32, strategy "cpu fp32") on the same random weights: logits of a whole
sequence, logits token by token, and the state after the prompt."""
from pathlib import Path

import pytest
import torch

import archbench
from archbench.harness.registry import family_class
from archbench.harness.testing import assert_close
from archbench.models.rwkv_common import RWKVConfig
from helpers import run_rwkv_oracle

pytest.importorskip("rwkv")

T = 23
TOL = dict(rms_rel=1e-4, max_rel=1e-4)
CASES = {
    "v4-L6-C96": dict(version="4", vocab_size=300, n_embd=96, n_layer=6),
    "v4-L7-C64-V257": dict(version="4", vocab_size=257, n_embd=64, n_layer=7),
    "v5.0-L6-C128-N32": dict(version="5.0", vocab_size=300, n_embd=128, n_layer=6, head_size=32),
    "v5.1-L6-C96-N16": dict(version="5.1", vocab_size=300, n_embd=96, n_layer=6, head_size=16),
    "v5.2-L6-C128-N32": dict(version="5.2", vocab_size=300, n_embd=128, n_layer=6, head_size=32),
    "v5.2-L6-C96-N16-state": dict(version="5.2", vocab_size=300, n_embd=96, n_layer=6, head_size=16, time_state=True),
    "v6-L6-C128-N32-lora16x40": dict(version="6", vocab_size=300, n_embd=128, n_layer=6, head_size=32,
                                     mix_lora=16, decay_lora=40),
    "v6-L6-C96-N16-lora8x24-state": dict(version="6", vocab_size=300, n_embd=96, n_layer=6, head_size=16,
                                         mix_lora=8, decay_lora=24, time_state=True),
    "v7-L6-C128-N32-lora48x24x16x40": dict(version="7", vocab_size=300, n_embd=128, n_layer=6, head_size=32,
                                          decay_lora=48, aaa_lora=24, mv_lora=16, gate_lora=40),
    "v7-L7-C96-N16-layer0v": dict(version="7", vocab_size=300, n_embd=96, n_layer=7, head_size=16,
                                  decay_lora=32, aaa_lora=16, mv_lora=24, gate_lora=56, layer0_v_lora=True),
}


def write_checkpoint(cfg: RWKVConfig, path: Path, seed: int) -> None:
    model = family_class(cfg.family)(cfg).init_random_(seed)
    gen = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("time_state"):
            p.data = 0.3 * torch.randn(p.shape, generator=gen)
    torch.save(model.state_dict(), path)


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    """Writes every case's checkpoint, runs the reference once per interpreter kind."""
    root = tmp_path_factory.mktemp("oracle")
    jobs = {"v7": [], "v4-6": []}
    for i, (case, kw) in enumerate(CASES.items()):
        cfg = RWKVConfig(**kw)
        ckpt = root / f"{case}.pth"
        write_checkpoint(cfg, ckpt, seed=i)
        tokens = torch.randint(0, cfg.vocab_size, (T,), generator=torch.Generator().manual_seed(100 + i)).tolist()
        jobs["v7" if cfg.version == "7" else "v4-6"].append(dict(ckpt=str(ckpt), tokens=tokens, out=str(root / f"{case}.out.pt")))
    for kind, job_list in jobs.items():
        run_rwkv_oracle(job_list, root, v7=(kind == "v7"))
    return {case: (root / f"{case}.pth",
                   next(j["tokens"] for js in jobs.values() for j in js if j["ckpt"].endswith(f"/{case}.pth")),
                   torch.load(root / f"{case}.out.pt"))
            for case in CASES}


@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_reference(oracle, case):
    ckpt, tokens, ref = oracle[case]
    model = archbench.load(ckpt)
    assert model.config.version == CASES[case]["version"]
    tokens = torch.tensor([tokens])
    logits, _ = model.forward(tokens)
    assert_close(logits[0], ref["seq"], what=f"{case} whole sequence", **TOL)
    state, steps = model.init_state(1), []
    for t in range(T):
        out, state = model.step(tokens[:, t], state)
        steps.append(out[0])
    assert_close(torch.stack(steps), ref["steps"], what=f"{case} token by token", **TOL)


@pytest.mark.parametrize("case", list(CASES))
def test_state_after_prompt_matches_reference(oracle, case):
    ckpt, tokens, ref = oracle[case]
    model = archbench.load(ckpt)
    _, state = model.forward(torch.tensor([tokens]))
    theirs = ref["state"]
    version = CASES[case]["version"]
    per_layer = 5 if version == "4" else 3
    for i in range(model.config.n_layer):
        layer = theirs[i * per_layer:(i + 1) * per_layer]
        assert_close(state.att_shift[i, 0], layer[0], what=f"layer {i} att shift", **TOL)
        assert_close(state.ffn_shift[i, 0], layer[-1], what=f"layer {i} ffn shift", **TOL)
        if version == "4":
            for j, name in enumerate(("aa", "bb", "pp")):
                assert_close(state.wkv[i, 0, j], layer[1 + j], what=f"layer {i} {name}", **TOL)
        else:
            kv = state.wkv[i, 0]
            if version == "7":  # the reference keeps RWKV-7's state as [H, V, K]
                kv = kv.transpose(-1, -2)
            assert_close(kv, layer[1], what=f"layer {i} wkv state", **TOL)
