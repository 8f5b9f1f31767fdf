"""archbench models inside lm-evaluation-harness.

    from archbench.suites.lm_eval_adapter import ArchbenchLM   # registers "archbench"
    lm = ArchbenchLM(model="RWKV-x070-World-1.5B.pth", dtype="bfloat16", device="cuda")
    lm_eval.simple_evaluate(model=lm, tasks=["lambada_openai"])

Requests are encoded exactly as lm-eval's own HFLM does (trailing context spaces move to
the continuation, an empty context becomes the end-of-text token, inputs are truncated
on the left to max_length), so the same weights give the same numbers. For every model,
the context shared by several continuations (multiple choice) runs once and its state is
reused for each continuation (`reuse_state=False` scores each pair from scratch; the
default "auto" reuses it except where that was measured to be slower, `reuse_pays`).
"""
from __future__ import annotations

import os
import sys
import warnings

import torch
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from tqdm.auto import tqdm

from archbench.harness.errors import ArchbenchError
from archbench.suites.perplexity import rolling_windows


def _errors_in_one_line() -> None:
    """lm-eval's command line lets exceptions out as tracebacks. Ours carry a message meant
    to be read alone (an unknown model, a wrong path, a corrupt checkpoint): under that
    command line, print just that message; every other exception as before."""
    previous = sys.excepthook

    def hook(kind, value, tb):
        if isinstance(value, ArchbenchError):
            print(f"archbench: {value}", file=sys.stderr)
        else:
            previous(kind, value, tb)
    sys.excepthook = hook


_main = sys.argv[0] if sys.argv else ""
if os.path.basename(_main) in ("lm_eval", "lm-eval", "archbench-lm-eval") or \
        _main.endswith(os.path.join("lm_eval", "__main__.py")):
    _errors_in_one_line()


def reuse_pays(batch_size: int, device_type: str, continuations: list[list[int]]) -> bool:
    """Whether reusing a shared context's state is the faster way to score its choices
    (`reuse_state="auto"`). It always does less arithmetic; but with choices of more than
    one token it takes two forward calls (the context, then the choices together), where
    scoring from scratch with batch_size >= the number of choices takes one. On a CPU the
    arithmetic decides (4.3x faster at batch 1, RWKV-7 0.1B); on a GPU a forward call of an
    eager model costs about the same at any length (RWKV-7 2.9B on an H100: 60-75 ms from 2
    to 4 x 518 tokens), so there reuse pays at batch 1 (2.9x) and lost at batch 4 (0.53x,
    results/eval/reuse.jsonl). One-token choices need no second call: reuse always pays."""
    return batch_size == 1 or device_type != "cuda" or all(len(c) == 1 for c in continuations)


@register_model("archbench")
class ArchbenchLM(TemplateLM):
    def __init__(self, model: str = "rwkv7-tiny", impl: str = "auto", dtype: str = "float32", device: str = "cpu",
                 tokenizer: str | None = None, max_length: int = 2048, max_gen_toks: int = 256,
                 reuse_state: bool | str = "auto", batch_size: int = 1, seed: int = 0, **_ignored):
        super().__init__()
        from archbench.harness.registry import build, load
        from archbench.models.tokenizer import load_tokenizer
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            warnings.warn(f"device {device!r} requested (lm-eval's default) but no CUDA GPU is visible: using the CPU")
            device = "cpu"
        from archbench.models.checkpoint import is_checkpoint, local_path
        is_path = is_checkpoint(model)  # a file, a folder or a hub id; else a preset
        self.model = (load if is_path else build)(model, impl=impl, dtype=dtype, device=device)
        # random-weight presets have no tokenizer of their own: bytes fit every vocabulary
        self.tokenizer = load_tokenizer(tokenizer or (local_path(model) if is_path else "bytes"))
        self.max_length = int(max_length)
        self.max_gen_toks = int(max_gen_toks)
        self.reuse_state = "auto" if str(reuse_state).lower() == "auto" else \
            str(reuse_state).lower() not in ("false", "0", "no")
        self.seed = int(seed)
        self.batch_size = max(1, int(batch_size)) if str(batch_size).isdigit() else 1  # lm-eval may pass "auto"

    # ---- what TemplateLM needs ------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        eos = self.tokenizer.eos_token_id
        return 0 if eos is None else eos

    def tok_encode(self, string: str, left_truncate_len: int | None = None, **kwargs) -> list[int]:
        ids = self.tokenizer.encode(string)
        return ids[-left_truncate_len:] if left_truncate_len else ids

    def tok_decode(self, ids) -> str:
        return self.tokenizer.decode(ids)

    @torch.no_grad()
    def _forward(self, tokens: list[int], state=None):
        return self.model.forward(torch.tensor([tokens], device=self.model.device), state)

    @staticmethod
    def _score(logits: torch.Tensor, continuation: list[int]) -> tuple[float, bool]:
        target = torch.tensor(continuation, device=logits.device)
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        return (logprobs.gather(-1, target[:, None]).sum().item(),
                bool((logits.argmax(-1) == target).all().item()))

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """requests: ((context, continuation), context_enc, continuation_enc) as TemplateLM
        encodes them. Up to batch_size sequences go through the model at once, right-padded
        (a causal model's logits at a position do not depend on what follows it)."""
        results: list = [None] * len(requests)
        by_context: dict[tuple, list[int]] = {}
        for i, (_, ctx, _) in enumerate(requests):
            by_context.setdefault(tuple(ctx), []).append(i)
        fresh = []  # (index, inputs, continuation): scored from scratch
        for ctx, idxs in tqdm(by_context.items(), desc="loglikelihood", disable=disable_tqdm):
            ctx = list(ctx)
            conts = [requests[i][2] for i in idxs]
            fits = all(len(ctx) + len(c) <= self.max_length + 1 for c in conts)
            reuse = self.reuse_state if self.reuse_state != "auto" else \
                reuse_pays(self.batch_size, self.model.device.type, conts)
            if reuse and fits and len(idxs) > 1:
                self._score_shared(ctx, list(zip(idxs, conts)), results)
            else:
                fresh += [(i, (ctx + c)[-(self.max_length + 1):][:-1], c) for i, c in zip(idxs, conts)]
        for lo in range(0, len(fresh), self.batch_size):
            self._score_batch(fresh[lo:lo + self.batch_size], results)
        return results

    @torch.no_grad()
    def _score_shared(self, ctx: list[int], pairs: list[tuple[int, list[int]]], results) -> None:
        """Continuations of one context: the context runs once (its last logits score every
        continuation's first token), then the continuations' remaining tokens go through
        together, each row from its own copy of the context's state. One-token answers need
        no second pass."""
        last, shared = self.model.forward(torch.tensor([ctx], device=self.model.device), last_only=True)
        first = torch.log_softmax(last[0, -1].float(), dim=-1)
        greedy_first = int(last[0, -1].argmax())
        rest = [(i, c) for i, c in pairs if len(c) > 1]
        tails: dict[int, tuple[float, bool]] = {}
        for lo in range(0, len(rest), self.CONTINUATION_BATCH):
            part = rest[lo:lo + self.CONTINUATION_BATCH]
            state = shared.repeat_batch(len(part))  # each row continues its own copy
            self._score_batch([(i, c[:-1], c[1:]) for i, c in part], tails, state)
        for i, c in pairs:
            lp, greedy = tails.get(i, (0.0, True))
            results[i] = (first[c[0]].item() + lp, greedy and greedy_first == c[0])

    CONTINUATION_BATCH = 64  # rows of continuations of one context scored at once (short rows)

    @torch.no_grad()
    def _score_batch(self, rows, results, state=None) -> None:
        """rows: (request index, inputs, continuation); the continuation is the inputs' last
        len(continuation) predictions."""
        width = max(len(inputs) for _, inputs, _ in rows)
        batch = torch.zeros((len(rows), width), dtype=torch.long)
        for b, (_, inputs, _) in enumerate(rows):
            batch[b, :len(inputs)] = torch.tensor(inputs)
        logits, _ = self.model.forward(batch.to(self.model.device), state)
        for b, (i, inputs, cont) in enumerate(rows):
            results[i] = self._score(logits[b, len(inputs) - len(cont):len(inputs)], cont)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """lm-eval's rolling windows (context length 1, as HFLM), the windows of every
        document scored batch_size at a time, longest first (less padding)."""
        rows = []  # (document, inputs, targets): each window predicts the last len(targets) of its inputs
        for d, (string,) in enumerate(r.args for r in requests):
            tokens = self.tok_encode(string)
            full = [self.prefix_token_id] + tokens
            for s, e in rolling_windows(len(tokens), self.max_length):
                lo = max(0, e - self.max_length)
                rows.append((d, full[lo:e], tokens[s:e]))
        order = sorted(range(len(rows)), key=lambda k: -len(rows[k][1]))
        scores: list = [None] * len(rows)
        for lo in tqdm(range(0, len(order), self.batch_size), desc="loglikelihood_rolling", disable=disable_tqdm):
            self._score_batch([(k, rows[k][1], rows[k][2]) for k in order[lo:lo + self.batch_size]], scores)
        totals = [0.0] * len(requests)
        for (d, _, _), (logprob, _) in zip(rows, scores):
            totals[d] += logprob
        return totals

    @torch.no_grad()
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy or sampled, until a stop string, the end-of-text token or max_gen_toks.
        Recurrent models decode batch_size requests at once (their states batched after
        each context's own prefill); a KV cache's rows share one position, so a Transformer
        decodes one request at a time. Sampled text depends on the batch size (one
        generator, drawn row by row); greedy text does not."""
        gen = torch.Generator(device=self.model.device).manual_seed(self.seed)
        jobs = [self._generation_job(context, kwargs) for context, kwargs in (r.args for r in requests)]
        batch = 1 if type(self.model.init_state(1)).rows_share_position else self.batch_size
        out: list = [None] * len(jobs)
        for lo in tqdm(range(0, len(jobs), batch), desc="generate_until", disable=disable_tqdm):
            out[lo:lo + batch] = self._generate(jobs[lo:lo + batch], gen)
        return out

    def _generation_job(self, context: str, kwargs: dict | None) -> dict:
        kwargs = dict(kwargs or {})
        until = kwargs.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        eos_text = self.tok_decode([self.eot_token_id])
        if eos_text and eos_text not in until:
            until.append(eos_text)
        max_new = int(kwargs.get("max_gen_toks", self.max_gen_toks))
        temperature = float(kwargs.get("temperature", 0.0))
        ctx = self.tok_encode(context, left_truncate_len=self.max_length - max_new) or [self.prefix_token_id]
        return dict(ctx=ctx, until=until, max_new=max_new, temperature=temperature,
                    sample=bool(kwargs.get("do_sample", False)) and temperature > 0)

    def _generate(self, jobs: list[dict], gen: torch.Generator) -> list[str]:
        states, logits = [], []
        for job in jobs:  # each context on its own (no padding inside a recurrent state)
            lg, st = self._forward(job["ctx"])
            logits.append(lg[0, -1])
            states.append(st)
        state = states[0] if len(states) == 1 else type(states[0]).cat(states)
        logits = torch.stack(logits)
        generated = [[] for _ in jobs]
        done = [job["max_new"] <= 0 for job in jobs]
        while not all(done):
            tokens = []
            for i, job in enumerate(jobs):
                nxt = self.eot_token_id
                if not done[i]:
                    if job["sample"]:
                        probs = torch.softmax(logits[i].float() / job["temperature"], dim=-1)
                        nxt = int(torch.multinomial(probs, 1, generator=gen).item())
                    else:
                        nxt = int(logits[i].argmax().item())
                    if nxt == self.eot_token_id:
                        done[i] = True
                    else:
                        generated[i].append(nxt)
                        text = self.tok_decode(generated[i])
                        done[i] = any(u in text for u in job["until"]) or len(generated[i]) >= job["max_new"]
                tokens.append(nxt)
            if all(done):
                break
            logits, state = self.model.step(torch.tensor(tokens, device=self.model.device), state)
        texts = []
        for job, ids in zip(jobs, generated):
            text = self.tok_decode(ids)
            for u in job["until"]:
                text = text.split(u)[0]
            texts.append(text)
        return texts


def cli() -> None:
    """`archbench-lm-eval`: lm-eval's own command line with this module imported first, so
    "archbench" is registered even where the start-up hook (suites/lm_eval_hook.py) is not
    installed; plain `lm_eval --model archbench` works where it is."""
    from lm_eval.__main__ import cli_evaluate
    cli_evaluate()


if __name__ == "__main__":
    cli()
