"""Prefill and decode throughput and peak memory of one cell (model x context x batch).

    metrics = measure(model, batch=1, context=4096, decode_tokens=32)

Prefill: the whole prompt (or pieces of prefill_chunk tokens with the state carried, for a
model whose forward continues a state in parallel: RWKV), keeping only the last position's
logits. Decode: greedy steps from the prompt's state, each one replay of a CUDA graph on a
GPU (cuda_graphs=False: eager steps).

The library's own decode path on the same weights and prompt (suites/peers.py) is a second,
separate step, so that a peer that fails or kills the process costs no number of ours:

    keep = {}
    metrics = measure(model, 1, 4096, keep=keep)
    peer = measure_peer(model, keep, decode_tokens=32, decode_tps=metrics["decode_tokens_per_s"])
"""
from __future__ import annotations

import torch

from archbench.harness.interface import decode_read_nbytes
from archbench.harness.timing import time_fn


WARMUP_UP_TO = 32768


def measure(model, batch: int, context: int, decode_tokens: int = 16, repeats: int = 3, seed: int = 0,
            prefill_chunk: int | None = None, cuda_graphs: bool = True, keep: dict | None = None,
            max_prefill_s: float = 30.0) -> dict:
    """max_prefill_s: after the warm-up prefill, time only as many repeats (at least one) as
    fit in this many seconds (a 512K-token prompt takes seconds per pass). keep: receives the
    prompt and our logits for the first new token, for measure_peer."""
    device = model.device
    on_gpu = device.type == "cuda"
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, model.config.vocab_size, (batch, context), generator=gen).to(device)
    if on_gpu:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    box = {}
    max_len = context + decode_tokens + 3  # a KV cache sized once (3: the graph's warm-up steps)
    chunk = prefill_chunk if prefill_chunk and getattr(model, "chunked_prefill", False) else None

    def fresh_state():  # the last call's state goes first: a long KV cache fits once, not twice
        box.clear()
        box["state"] = model.init_state(batch, max_len=max_len)

    def prefill():
        step = chunk or context
        for start in range(0, context, step):
            box["logits"], box["state"] = model.forward(tokens[:, start:start + step], box["state"], last_only=True)

    # a long prompt is not warmed up whole (a 512K-token pass takes seconds to a minute): one
    # piece of it compiles and autotunes the kernels, which a sweep resumed in a fresh process
    # (its shorter contexts done before) would otherwise time
    warmup = 1 if context <= WARMUP_UP_TO else 0
    if not warmup:
        fresh_state()
        model.forward(tokens[:, :chunk or WARMUP_UP_TO], box["state"], last_only=True)
    prefill_t = time_fn(prefill, device, warmup=warmup, repeats=repeats, setup=fresh_state, max_total_s=max_prefill_s)
    ours_first = box["logits"][:, -1]
    first = ours_first.argmax(-1)
    state = box["state"]
    prompt_state = state.checkpoint()
    graphed = None
    if on_gpu and cuda_graphs:
        from archbench.harness.graphs import GraphedStep
        graphed = GraphedStep(model, state, first, greedy=True)

    def decode():
        if graphed is not None:
            graphed(first)
            for _ in range(decode_tokens - 1):
                graphed()
            return
        nxt = first
        for _ in range(decode_tokens):
            logits, _ = model.step(nxt, state)
            nxt = logits.argmax(-1)

    # outside the timing: back to the prompt's state (states are updated in place)
    decode_t = time_fn(decode, device, warmup=1, repeats=repeats, setup=lambda: state.restore(prompt_state))
    weight_nbytes = decode_read_nbytes(model)  # since 2026-11-28: the input embedding table left out
    decode_tps = batch * decode_tokens / decode_t["median_s"]
    out = {
        "prefill_chunk_used": chunk, "cuda_graphs_used": graphed is not None,
        "prefill_s": prefill_t["median_s"], "prefill_min_s": prefill_t["min_s"], "prefill_max_s": prefill_t["max_s"],
        "prefill_repeats": prefill_t["repeats"],
        "prefill_tokens_per_s": batch * context / prefill_t["median_s"],
        "decode_s_per_token": decode_t["median_s"] / decode_tokens,
        "decode_tokens_per_s": decode_tps,
        "decode_min_s": decode_t["min_s"], "decode_max_s": decode_t["max_s"],
        "state_nbytes": model.state_nbytes(batch, context),
        "weight_nbytes": weight_nbytes,
        # every parameter held in memory (the input embedding too): what peak memory holds beyond the state
        "param_nbytes": sum(p.numel() * p.element_size() for p in model.parameters()),
        # every weight read once per step (the batch shares it): bytes/s the decode achieved
        "decode_weight_bytes_per_s": weight_nbytes * decode_tps / batch,
    }
    if on_gpu:
        out["peak_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
        out["peak_reserved_bytes"] = torch.cuda.max_memory_reserved(device)
    if keep is not None:
        keep.update(tokens=tokens, first_logits=ours_first)
    return out


def measure_peer(model, keep: dict, decode_tokens: int, repeats: int = 3, decode_tps: float | None = None) -> dict:
    """The library's own decode after the prompt that measure() read (keep), with its first
    logits against ours and decode_vs_peer = decode_tps / the peer's; {} off the GPU or for a
    family without a peer. Call it after measure() has returned: our cache, state and graph
    pool are freed by then, and the peer allocates its own."""
    if model.device.type != "cuda":
        return {}
    from archbench.suites.peers import peer_decode
    tokens = keep["tokens"]
    torch.cuda.empty_cache()
    peer = peer_decode(model, tokens, decode_tokens, repeats=1 if tokens.shape[1] > 32768 else repeats,
                       ours=keep["first_logits"])
    if peer.get("peer_status") == "ok" and decode_tps:
        peer["decode_vs_peer"] = decode_tps / peer["peer_decode_tokens_per_s"]
    return peer
