"""Helpers shared by the tests."""
import json
import subprocess
import sys
from pathlib import Path

ORACLE = Path(__file__).with_name("oracle_rwkv.py")


def run_rwkv_oracle(jobs: list[dict], workdir: Path, v7: bool = False) -> None:
    """Runs BlinkDL's rwkv package on each job in a fresh interpreter (see oracle_rwkv.py)."""
    spec = Path(workdir) / ("jobs-v7.json" if v7 else "jobs.json")
    spec.write_text(json.dumps(jobs))
    done = subprocess.run([sys.executable, str(ORACLE), str(spec)] + (["--v7"] if v7 else []),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


def tiny_neox_folder(folder: Path, text: str) -> Path:
    """A Hugging Face folder with tiny random GPT-NeoX weights (archbench's pythia-tiny) and
    a byte-level BPE trained on text: what lm-eval's HFLM and archbench both load."""
    import archbench
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator([text] * 4, trainers.BpeTrainer(vocab_size=300, special_tokens=["<eos>", "<unk>"],
                                                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>", unk_token="<unk>").save_pretrained(folder)
    archbench.build("pythia-tiny", seed=2).lm.save_pretrained(folder)
    return folder


# ---- the models' three modes (tests/models/test_rwkv_modes.py, test_mamba.py, test_transformer.py) ----
B, T = 3, 37
SPLITS = [(1, 36), (5, 5, 27), (16, 1, 20), (36, 1)]  # the T tokens in chunks: single tokens, a long tail


def tokens_for(model, b=B, t=T, seed=0):
    import torch
    return torch.randint(0, model.config.vocab_size, (b, t), generator=torch.Generator().manual_seed(seed))


def steps_match_whole(model, state=None):
    """model.step over tokens_for(model) one position at a time, from state (else
    init_state), gives the logits of one forward over them: (tokens, the final state, the
    forward's state)."""
    import torch
    from archbench.harness.testing import assert_close
    tokens = tokens_for(model)
    full, full_state = model.forward(tokens)
    state, steps = (model.init_state(tokens.shape[0]) if state is None else state), []
    for t in range(tokens.shape[1]):
        logits, state = model.step(tokens[:, t], state)
        steps.append(logits)
    assert_close(torch.stack(steps, dim=1), full, what="steps vs parallel")
    return tokens, state, full_state


def chunks_match_whole(model, splits, state=None):
    """model.forward over tokens_for(model) cut into chunks of the lengths in splits, the
    state carried from state (else none), gives the logits of one forward over them: (tokens,
    the final state, the forward's state)."""
    import torch
    from archbench.harness.testing import assert_close
    tokens = tokens_for(model)
    full, full_state = model.forward(tokens)
    pieces, start = [], 0
    for n in splits:
        logits, state = model.forward(tokens[:, start:start + n], state)
        pieces.append(logits)
        start += n
    assert_close(torch.cat(pieces, dim=1), full, what=f"chunks {splits}")
    return tokens, state, full_state


# ---- the chunked tensor-core WKV kernels' tests (tests/kernels/test_wkv*_chunked*.py) ----
def random_state(B: int, H: int, N: int, seed: int = 1, device: str = "cpu"):
    """A nonzero initial WKV state [B, H, N, N] of about the scale models carry."""
    import torch
    g = torch.Generator(device=device).manual_seed(seed)
    return 0.3 * torch.randn(B, H, N, N, generator=g, device=device)


def tf32(x):
    """x rounded to nearest tf32 (10 mantissa bits), as the kernels' __float_to_tf32."""
    import torch
    return ((x.float().contiguous().view(torch.int32) + 0x1000) & ~0x1FFF).view(torch.float32)


def tf32_mm(a, b, passes: int):
    """a @ b as the tensor cores do it: 1 tf32 product (fp16/bf16 builds) or 3xTF32 (fp32)."""
    ah, bh = tf32(a), tf32(b)
    out = ah @ bh
    return out + tf32(a - ah) @ bh + ah @ tf32(b - bh) if passes == 3 else out


def spy_kernel_calls(monkeypatch, *op_modules) -> list[str]:
    """Which kernels of the CUDA extension the ops of `op_modules` (e.g. kernels.wkv6.op)
    call: each module's `extension()` is wrapped, and the names of the `wkv*` entry points it
    looks up are appended to the returned list, in order."""
    from archbench.kernels.build import extension
    ext, calls = extension(), []

    class Spy:
        def __getattr__(self, name):
            if name.startswith("wkv"):
                calls.append(name)
            return getattr(ext, name)

    for module in op_modules:
        monkeypatch.setattr(module, "extension", lambda: Spy())
    return calls


def check_in_place_and_in_a_graph(run, state, out, y_ref, s_ref, tol: float = 1e-4) -> None:
    """run(state, out) writes y into out and updates state in place: checked once eagerly (the
    warm-up, which also builds), then captured in a CUDA graph and replayed from the initial
    state over a NaN-filled out."""
    import torch

    from archbench.harness.testing import errors
    static_state = state.clone()
    run(static_state, out)
    assert errors(out, y_ref)["rms_rel"] < tol and errors(static_state, s_ref)["rms_rel"] < tol
    static_state.copy_(state)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run(static_state, out)
    static_state.copy_(state)
    out.fill_(float("nan"))
    graph.replay()
    torch.cuda.synchronize()
    assert errors(out, y_ref)["rms_rel"] < tol and errors(static_state, s_ref)["rms_rel"] < tol


def graphed_and_eager_steps(name: str, dtype: str, device: str, steps: int = 10):
    """Decode steps of preset `name` on `device` after a 30-token prefill, two sequences fed from
    a token array: eager (model.step) and replayed from a CUDA graph (harness/graphs.py) from
    the same state. Returns (graphed, eager), each [steps, 2, vocab] on the device."""
    import torch

    import archbench
    from archbench.harness.graphs import GraphedStep
    model = archbench.build(name, dtype=dtype, device=device)
    tokens = torch.randint(0, model.config.vocab_size, (2, 30 + steps), generator=torch.Generator().manual_seed(0))
    tokens = tokens.to(device)
    _, state = model.forward(tokens[:, :30])
    saved = state.checkpoint()
    eager = [model.step(tokens[:, t], state)[0].clone() for t in range(30, 30 + steps)]
    state.restore(saved)
    step = GraphedStep(model, state, tokens[:, 30])
    graphed = [step(tokens[:, t]).clone() for t in range(30, 30 + steps)]
    return torch.stack(graphed), torch.stack(eager)
