"""The peers' own decode paths, on our model's weights: transformers `generate` (SDPA, its
default cache) for the Transformer, mamba_ssm `generate(cg=True)` for Mamba-1 and Mamba-2,
and fla's `RWKV7ForCausalLM.generate` for RWKV-7 (our weights converted to fla's layout).

    row = peer_decode(model, tokens, new=64)   # {} for a family without a peer here

Decode speed is read from the library's own loop: a streamer records a CUDA event as each
token comes out, and the time from the first new token to the last, over new - 1 tokens,
excludes the prompt. (A streamer makes both loops copy each token to the host, which they
do anyway for stopping, except mamba_ssm's: there it adds about 10 us to a step of ms.)
Beside the speed, the library's logits for the first new token against ours.
"""
from __future__ import annotations

import statistics

import torch

PATHS = {"transformer": "transformers generate (SDPA, default cache)",
         "mamba1": "mamba_ssm generate(cg=True)", "mamba2": "mamba_ssm generate(cg=True)",
         "rwkv7": "fla RWKV7ForCausalLM generate"}


class StepClock:
    """A generate streamer that records a CUDA event per put (the prompt, then each token)."""

    def __init__(self):
        self.events: list[torch.cuda.Event] = []

    def put(self, value) -> None:
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        self.events.append(event)

    def end(self) -> None:
        pass

    def seconds_per_token(self) -> float:
        torch.cuda.synchronize()
        new = self.events[1:]  # the first put is the prompt
        if len(new) < 2:
            raise ValueError("need at least two new tokens to time a decode step")
        return new[0].elapsed_time(new[-1]) / 1e3 / (len(new) - 1)


def fla_rwkv7(model):
    """fla's RWKV7ForCausalLM holding our RWKV-7's weights (same device and dtype)."""
    from fla.models import RWKV7Config, RWKV7ForCausalLM

    from archbench.models.hf_formats import blink_to_fla_rwkv7
    sd, kwargs = blink_to_fla_rwkv7(model.state_dict())
    # fla decodes (T <= 64) with its fused_recurrent kernels whatever attn_mode says; reading
    # the prompt with them too spares compiling the chunk kernels (minutes on a bare machine)
    with torch.device("meta"):
        lm = RWKV7ForCausalLM(RWKV7Config(**{**kwargs, "attn_mode": "fused_recurrent"}))
    lm.load_state_dict({k: v.to(model.dtype) for k, v in sd.items()}, assign=True)
    return lm.to(model.device).eval()


def library_forward(model, tokens: torch.Tensor) -> torch.Tensor:
    """The library's own full forward, no cache, on our weights: (B, T, V) fp32."""
    family = model.family
    if family == "rwkv7":
        lm = _fla_lm(model)
    elif family in ("transformer", "mamba1", "mamba2"):
        lm = model.lm
    else:
        raise ValueError(f"no library forward for family {family!r}")
    if family == "transformer":
        lm.set_attn_implementation("sdpa")
    try:
        with torch.no_grad():
            return lm(tokens).logits.float()
    finally:
        if family == "transformer":
            model.use_own_attention()


def _fla_lm(model):
    """Kept in the model's __dict__, not as a submodule: our parameters and state_dict stay ours."""
    if "_fla_peer" not in model.__dict__:
        model.__dict__["_fla_peer"] = fla_rwkv7(model)
    return model.__dict__["_fla_peer"]


def _generate(model):
    """generate(tokens, n, streamer) -> (first new token's logits (B, V) fp32) with the
    library's loop, greedy, exactly n new tokens."""
    family = model.family
    if family == "transformer":
        lm = model.lm

        def run(tokens, n, streamer):
            lm.set_attn_implementation("sdpa")
            try:
                out = lm.generate(input_ids=tokens, attention_mask=torch.ones_like(tokens), max_new_tokens=n,
                                  min_new_tokens=n, do_sample=False, pad_token_id=0, streamer=streamer,
                                  output_logits=True, return_dict_in_generate=True)
            finally:
                model.use_own_attention()
            return out.logits[0].float()
        return run
    if family in ("mamba1", "mamba2"):
        if model.impl != "mamba_ssm":
            raise ValueError(f"the mamba_ssm peer needs impl 'mamba_ssm', the model has {model.impl!r}")

        def run(tokens, n, streamer):
            out = model.lm.generate(tokens, max_length=tokens.shape[1] + n, cg=True, top_k=1, streamer=streamer,
                                    output_scores=True, return_dict_in_generate=True)
            return out.scores[0].float()
        return run
    if family == "rwkv7":
        lm = _fla_lm(model)

        def run(tokens, n, streamer):
            out = lm.generate(input_ids=tokens, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0,
                              streamer=streamer, output_logits=True, return_dict_in_generate=True, use_cache=True)
            return out.logits[0].float()
        return run
    return None


def peer_decode(model, tokens: torch.Tensor, new: int, repeats: int = 1, ours: torch.Tensor | None = None) -> dict:
    """The peer's decode tokens/s after the prompt `tokens` (B, T) on the GPU, median over
    repeats; `ours`: our logits for the first new token, compared with the library's. An
    out-of-memory error becomes peer_status "OOM", any other failure "error" with its message."""
    from archbench.harness.testing import errors
    from archbench.harness.worker import is_oom

    if model.family not in PATHS:
        return {}
    row = {"peer_path": PATHS[model.family]}
    try:
        run = _generate(model)
        if not getattr(model, "_peer_warm", False):  # compiles kernels, captures graphs
            run(tokens[:, :16], 4, None)
            model._peer_warm = True
        times, first = [], None
        for _ in range(repeats):
            clock = StepClock()
            first = run(tokens, new, clock)
            times.append(clock.seconds_per_token())
        med = statistics.median(times)
        row.update(peer_status="ok", peer_decode_tokens_per_s=tokens.shape[0] / med,
                   peer_decode_tokens_per_s_min=tokens.shape[0] / max(times),
                   peer_decode_tokens_per_s_max=tokens.shape[0] / min(times), peer_repeats=repeats)
        if ours is not None:
            row["peer_first_logits_rms_rel"] = errors(ours, first)["rms_rel"]
    except Exception as err:  # the cell keeps our own numbers whatever the peer does
        row.update(peer_status="OOM" if is_oom(err) else "error", peer_error=f"{type(err).__name__}: {err}"[:500])
    finally:
        torch.cuda.empty_cache()
    return row
