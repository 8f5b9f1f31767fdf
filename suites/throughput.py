"""Prefill and decode throughput and peak memory of one cell (model x context x batch).

    metrics = measure(model, batch=1, context=4096, decode_tokens=32)
"""
from __future__ import annotations

import torch

from archbench.harness.timing import time_fn


def measure(model, batch: int, context: int, decode_tokens: int = 16, repeats: int = 3, seed: int = 0,
            prefill_chunk: int | None = None) -> dict:
    """prefill_chunk: feed the prompt in pieces of this many tokens with the state carried
    (for an RNN or SSM, memory then stays flat in the context length)."""
    device = model.device
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, model.config.vocab_size, (batch, context), generator=gen).to(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    box = {}
    max_len = context + decode_tokens  # a KV cache sized once, so decode never regrows it

    def fresh_state():
        box["state"] = model.init_state(batch, max_len=max_len)

    def prefill():
        step = prefill_chunk or context
        for start in range(0, context, step):
            box["logits"], box["state"] = model.forward(tokens[:, start:start + step], box["state"])

    prefill_t = time_fn(prefill, device, warmup=1, repeats=repeats, setup=fresh_state)
    first = box["logits"][:, -1].argmax(-1)
    prompt_state = box["state"]

    def copy_prompt_state():  # outside the timing: states may be updated in place
        box["state"] = prompt_state.clone()

    def decode():
        state, nxt = box["state"], first
        for _ in range(decode_tokens):
            logits, state = model.step(nxt, state)
            nxt = logits.argmax(-1)

    decode_t = time_fn(decode, device, warmup=1, repeats=repeats, setup=copy_prompt_state)
    out = {
        "prefill_chunk": prefill_chunk,
        "prefill_s": prefill_t["median_s"], "prefill_min_s": prefill_t["min_s"], "prefill_max_s": prefill_t["max_s"],
        "prefill_tokens_per_s": batch * context / prefill_t["median_s"],
        "decode_s_per_token": decode_t["median_s"] / decode_tokens,
        "decode_tokens_per_s": batch * decode_tokens / decode_t["median_s"],
        "decode_min_s": decode_t["min_s"], "decode_max_s": decode_t["max_s"],
        "state_nbytes": model.state_nbytes(batch, context),
        "weight_nbytes": sum(p.numel() * p.element_size() for p in model.parameters()),
    }
    if device.type == "cuda":
        out["peak_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
        out["peak_reserved_bytes"] = torch.cuda.max_memory_reserved(device)
    return out
