"""A decode step captured once in a CUDA graph, replayed on the same state tensors.

    step = GraphedStep(model, state, tokens)    # tokens (B,) on the GPU
    logits = step(tokens)                       # (B, V), overwritten by the next call
    step = GraphedStep(model, state, tokens, greedy=True)
    step(first); step(); step()                 # step.tokens: the latest greedy token

Every family updates its state in place (harness/interface.py), so one replay is one step.
The state must have room for every replay (init_state(max_len=...) for attention).
"""
from __future__ import annotations

from dataclasses import fields

import torch


def _host_fields(state) -> dict[str, int]:
    return {f.name: getattr(state, f.name) for f in fields(state) if isinstance(getattr(state, f.name), int)}


class GraphedStep:
    """`model.step` captured in a CUDA graph; each call replays it, and the state's host-side
    counters advance as one eager step advances them. With greedy=True the graph also feeds
    its argmax back as the next input, so a greedy decode step is one replay."""

    def __init__(self, model, state, tokens: torch.Tensor, greedy: bool = False, warmup: int = 2):
        with torch.cuda.device(tokens.device):  # the model's GPU, whichever is current
            self._capture(model, state, tokens, greedy, warmup)

    def _capture(self, model, state, tokens, greedy, warmup):
        self.state = state
        self.tokens = tokens.clone()
        saved = state.checkpoint()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # first launches compile Triton kernels, allocate workspaces
            for _ in range(warmup):
                model.step(self.tokens, state)
        torch.cuda.current_stream().wait_stream(stream)
        before = _host_fields(state)
        self.graph = torch.cuda.CUDAGraph()
        # a capture stream of this GPU: torch.cuda.graph's default one is made once per process,
        # on whichever GPU was current at the first capture
        with torch.cuda.graph(self.graph, stream=torch.cuda.Stream(device=tokens.device)):
            self.logits, _ = model.step(self.tokens, state)
            if greedy:
                self.tokens.copy_(self.logits.argmax(-1))
        self.host_step = {k: v - before[k] for k, v in _host_fields(state).items()}
        state.restore(saved)

    def __call__(self, tokens: torch.Tensor | None = None) -> torch.Tensor:
        if tokens is not None:
            self.tokens.copy_(tokens)
        with torch.cuda.device(self.tokens.device):
            self.graph.replay()
        for name, delta in self.host_step.items():
            setattr(self.state, name, getattr(self.state, name) + delta)
        return self.logits
