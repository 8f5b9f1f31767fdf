"""Named model shapes: the published sizes of each family, and tiny ones for tests.

A preset builds a random-weight model of exactly that shape (enough for speed and
memory). Each entry: name -> (family, config keyword arguments).
"""
from __future__ import annotations

from archbench.models.rwkv7 import lora_widths

WORLD_VOCAB = 65536
PILE_VOCAB = 50277


def _rwkv4(n_layer, n_embd, vocab=PILE_VOCAB):
    return ("rwkv4", dict(version="4", vocab_size=vocab, n_layer=n_layer, n_embd=n_embd))


def _rwkv5(n_layer, n_embd, version="5.2", head_size=64, vocab=WORLD_VOCAB):
    return ("rwkv5", dict(version=version, vocab_size=vocab, n_layer=n_layer, n_embd=n_embd, head_size=head_size))


def _rwkv6(n_layer, n_embd, head_size=64, vocab=WORLD_VOCAB, mix_lora=None, decay_lora=None):
    big = n_embd >= 4096  # BlinkDL doubles both LoRAs for the 7B and 14B shapes
    return ("rwkv6", dict(version="6", vocab_size=vocab, n_layer=n_layer, n_embd=n_embd, head_size=head_size,
                          mix_lora=mix_lora or (64 if big else 32), decay_lora=decay_lora or (128 if big else 64)))


def _rwkv7(n_layer, n_embd, head_size=64, vocab=WORLD_VOCAB, **lora):
    return ("rwkv7", dict(version="7", vocab_size=vocab, n_layer=n_layer, n_embd=n_embd, head_size=head_size,
                          **{**lora_widths(n_embd), **lora}))


PRESETS: dict[str, tuple[str, dict]] = {
    # RWKV-4 Pile
    "rwkv4-169m": _rwkv4(12, 768), "rwkv4-430m": _rwkv4(24, 1024), "rwkv4-1b5": _rwkv4(24, 2048),
    "rwkv4-3b": _rwkv4(32, 2560), "rwkv4-7b": _rwkv4(32, 4096), "rwkv4-14b": _rwkv4(40, 5120),
    # RWKV-5 Eagle (World)
    "rwkv5-0b4": _rwkv5(24, 1024), "rwkv5-1b5": _rwkv5(24, 2048), "rwkv5-3b": _rwkv5(32, 2560),
    "rwkv5-7b": _rwkv5(32, 4096),
    # RWKV-6 Finch (World)
    "rwkv6-1b6": _rwkv6(24, 2048), "rwkv6-3b": _rwkv6(32, 2560), "rwkv6-7b": _rwkv6(32, 4096),
    "rwkv6-14b": _rwkv6(61, 4096),
    # RWKV-7 Goose (World)
    "rwkv7-0b1": _rwkv7(12, 768), "rwkv7-0b4": _rwkv7(24, 1024), "rwkv7-1b5": _rwkv7(24, 2048),
    "rwkv7-2b9": _rwkv7(32, 2560), "rwkv7-7b2": _rwkv7(32, 4096),
    # tiny shapes for tests and the CPU quick start
    "rwkv4-tiny": _rwkv4(2, 64, vocab=512),
    "rwkv5.0-tiny": _rwkv5(2, 64, version="5.0", head_size=16, vocab=512),
    "rwkv5.1-tiny": _rwkv5(2, 64, version="5.1", head_size=16, vocab=512),
    "rwkv5-tiny": _rwkv5(2, 64, head_size=16, vocab=512),
    "rwkv6-tiny": _rwkv6(2, 64, head_size=16, vocab=512, mix_lora=8, decay_lora=16),
    "rwkv7-tiny": _rwkv7(2, 64, head_size=16, vocab=512, decay_lora=16, aaa_lora=16, mv_lora=8, gate_lora=32),
}

from archbench.models.baseline_presets import BASELINE_PRESETS  # noqa: E402  Transformer and Mamba shapes
PRESETS.update(BASELINE_PRESETS)
