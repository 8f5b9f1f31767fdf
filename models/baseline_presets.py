"""Presets of the baselines: Pythia and Llama-shaped Transformers, Mamba-1 and Mamba-2, at
their published shapes (random weights), and tiny ones for tests. Merged into
`archbench.models.presets.PRESETS`; each entry: name -> (family, config keyword arguments).
"""
from __future__ import annotations

PYTHIA_VOCAB = 50304  # GPT-NeoX tokenizer, padded to a multiple of 128 (6.9B: 50432)


def _pythia(n_layer, n_embd, n_head, vocab=PYTHIA_VOCAB):
    return ("transformer", dict(arch="gpt_neox", vocab_size=vocab, n_layer=n_layer, n_embd=n_embd, n_head=n_head))


def _llama(n_layer, n_embd, n_head, n_kv_head, dim_ffn, vocab, rope_theta=10000.0, tie=False, max_position=4096):
    return ("transformer", dict(arch="llama", vocab_size=vocab, n_layer=n_layer, n_embd=n_embd, n_head=n_head,
                                n_kv_head=n_kv_head, dim_ffn=dim_ffn, rope_theta=rope_theta, norm_eps=1e-5,
                                tie_embeddings=tie, max_position=max_position))


def _mamba(n_layer, n_embd, vocab=50280, **kw):  # state-spaces mamba-*: 50277 padded to a multiple of 8
    return ("mamba1", dict(version=1, vocab_size=vocab, n_layer=n_layer, n_embd=n_embd, **kw))


def _mamba2(n_layer, n_embd, vocab=50288, **kw):  # state-spaces mamba2-*: padded to a multiple of 16
    return ("mamba2", dict(version=2, vocab_size=vocab, n_layer=n_layer, n_embd=n_embd, **kw))


BASELINE_PRESETS: dict[str, tuple[str, dict]] = {
    # Pythia (GPT-NeoX), EleutherAI
    "pythia-160m": _pythia(12, 768, 12), "pythia-410m": _pythia(24, 1024, 16), "pythia-1b": _pythia(16, 2048, 8),
    "pythia-1.4b": _pythia(24, 2048, 16), "pythia-2.8b": _pythia(32, 2560, 32),
    "pythia-6.9b": _pythia(32, 4096, 32, vocab=50432),
    # Llama-shaped: Llama-3.2-3B (grouped-query attention, tied embeddings) and Llama-2-7B
    "llama3.2-3b": _llama(28, 3072, 24, 8, 8192, vocab=128256, rope_theta=500000.0, tie=True, max_position=131072),
    "llama2-7b": _llama(32, 4096, 32, 32, 11008, vocab=32000),
    # Mamba-1 and Mamba-2, state-spaces
    "mamba-130m": _mamba(24, 768), "mamba-370m": _mamba(48, 1024), "mamba-790m": _mamba(48, 1536),
    "mamba-1.4b": _mamba(48, 2048), "mamba-2.8b": _mamba(64, 2560),
    "mamba2-130m": _mamba2(24, 768), "mamba2-370m": _mamba2(48, 1024), "mamba2-780m": _mamba2(48, 1536),
    "mamba2-1.3b": _mamba2(48, 2048), "mamba2-2.7b": _mamba2(64, 2560),
    # tiny shapes for tests
    "pythia-tiny": _pythia(2, 64, 4, vocab=512),
    "llama-tiny": _llama(2, 64, 4, 2, 128, vocab=512, max_position=2048),
    "mamba-tiny": _mamba(2, 64, vocab=512),
    "mamba2-tiny": _mamba2(2, 64, vocab=512, d_state=16, headdim=16, chunk_size=16),
}
