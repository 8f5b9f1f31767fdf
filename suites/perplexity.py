"""Perplexity three ways, with bits per byte and loss by position.

- windowed: disjoint windows of max_length, each from a fresh state, every token predicted
  once: exactly lm-eval's `loglikelihood_rolling` (its rolling windows with context 1);
- sliding: windows of max_length moved by stride, scoring only the tokens a window adds
  (each sees up to max_length - stride tokens of context): for fixed-context Transformers;
- streaming: the whole document through the model's state in chunks (RNN/SSM to 512K
  tokens and beyond with flat memory; a Transformer until its KV cache runs out).

    result = evaluate(model, tokenizer, documents, mode="streaming", chunk=4096)
    result.token_perplexity, result.bits_per_byte, result.word_perplexity
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from archbench.harness.errors import ArchbenchError

MODES = ("windowed", "sliding", "streaming")


# ---- inputs ---------------------------------------------------------------------------
def load_documents(path, field_name: str = "text") -> list[str]:
    """Documents from a .txt file (one document), a .jsonl file or a .parquet file (one
    document per row, in `field_name`), or a Hugging Face dataset written
    "hf:NAME[:CONFIG[:SPLIT]]" (e.g. hf:wikitext:wikitext-2-raw-v1:test) where reachable."""
    if str(path).startswith("hf:"):
        return _hf_dataset(str(path)[3:], field_name)
    path = Path(path)
    if not path.exists():
        raise ArchbenchError(f"{path}: no such file")
    try:
        if path.suffix == ".parquet":
            import pandas as pd
            frame = pd.read_parquet(path)
            if field_name not in frame:
                raise ArchbenchError(f"{path}: no column {field_name!r} (columns: {', '.join(map(str, frame.columns))})")
            docs = [str(x) for x in frame[field_name]]
        elif path.suffix in (".jsonl", ".json"):
            docs = []
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                row = json.loads(line)
                if not isinstance(row, dict) or field_name not in row:
                    keys = ", ".join(row) if isinstance(row, dict) else type(row).__name__
                    raise ArchbenchError(f"{path}:{n}: no field {field_name!r} (has: {keys}); choose one with --field")
                docs.append(str(row[field_name]))
        else:
            docs = [path.read_text(encoding="utf-8")]
    except UnicodeDecodeError as e:
        raise ArchbenchError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise ArchbenchError(f"{path}: line {e.lineno} is not JSON ({e.msg})") from None
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise ArchbenchError(f"{path}: no text to score (the file or field is empty)")
    return docs


def _hf_dataset(spec: str, field_name: str) -> list[str]:
    name, config, split = (spec.split(":") + [None, None])[:3]
    try:
        import datasets
        data = datasets.load_dataset(name, config, split=split or "test")
    except ImportError:
        raise ArchbenchError("hf: datasets need the `datasets` package (pip install datasets)") from None
    except Exception as e:  # offline, unknown name or config: one line, not a traceback
        raise ArchbenchError(f"could not load dataset {spec!r}: {type(e).__name__}: {str(e)[:300]}") from None
    if field_name not in data.column_names:
        raise ArchbenchError(f"dataset {spec!r} has no column {field_name!r} (columns: {', '.join(data.column_names)})")
    docs = [d for d in data[field_name] if d.strip()]
    if not docs:
        raise ArchbenchError(f"dataset {spec!r}: no text in {field_name!r}")
    return docs


# ---- scoring ----------------------------------------------------------------------------
class StoppedByOOM(Exception):
    """Streaming ran out of memory (a Transformer's KV cache): what was scored before it."""

    def __init__(self, logprobs: torch.Tensor, error: BaseException):
        super().__init__(str(error))
        self.logprobs, self.error = logprobs, error


@torch.no_grad()
def _logprobs(model, inputs: list[int], targets: list[int], state=None, chunk: int | None = None,
              stop_on_oom: bool = False):
    """Log-probabilities of targets[i] after inputs[: i + 1], fed in chunks through the state.
    stop_on_oom: an out-of-memory error raises StoppedByOOM with the chunks scored so far."""
    from archbench.harness.worker import is_oom
    out = []
    step = chunk or len(inputs)
    for start in range(0, len(inputs), step):
        x = torch.tensor([inputs[start:start + step]], device=model.device)
        try:
            logits, state = model.forward(x, state)
        except Exception as err:
            if not (stop_on_oom and is_oom(err)):
                raise
            if model.device.type == "cuda":
                torch.cuda.empty_cache()
            raise StoppedByOOM(torch.cat(out) if out else torch.zeros(0), err) from None
        y = torch.tensor(targets[start:start + step], device=model.device)
        out.append(torch.log_softmax(logits[0].float(), dim=-1).gather(-1, y[:, None])[:, 0].cpu())
    return torch.cat(out), state


def rolling_windows(n: int, max_length: int) -> list[tuple[int, int]]:
    """lm-eval's rolling windows with context length 1, as (start, end) of the targets:
    the window's inputs are the max_length tokens before each target (the first window
    starts from the end-of-text token)."""
    return [(s, min(s + max_length, n)) for s in range(0, n, max_length)]


def token_logprobs(model, tokens: list[int], prefix: int, mode: str, max_length: int = 2048,
                   stride: int | None = None, chunk: int | None = None) -> torch.Tensor:
    """Log-probability of every token of one document, each predicted once."""
    full = [prefix] + tokens
    if mode == "streaming":  # until memory runs out (StoppedByOOM), for a growing KV cache
        return _logprobs(model, full[:-1], tokens, chunk=chunk, stop_on_oom=True)[0]
    if mode == "windowed":
        parts = []
        for s, e in rolling_windows(len(tokens), max_length):
            lo = max(0, e - max_length)  # inputs full[lo : e] predict tokens[lo : e]
            lp, _ = _logprobs(model, full[lo:e], tokens[lo:e])
            parts.append(lp[s - lo:])
        return torch.cat(parts)
    if mode == "sliding":
        stride = stride or max_length // 2
        if not 0 < stride <= max_length:
            raise ArchbenchError(f"stride must be in 1..max_length ({max_length}), got {stride}")
        parts, done = [], 0
        while done < len(tokens):
            e = min(done + stride, len(tokens)) if done else min(max_length, len(tokens))
            lo = max(0, e - max_length)
            lp, _ = _logprobs(model, full[lo:e], tokens[lo:e])
            parts.append(lp[done - lo:])
            done = e
        return torch.cat(parts)
    raise ArchbenchError(f"unknown perplexity mode {mode!r}; choose one of {', '.join(MODES)}")


@dataclass
class PerplexityResult:
    mode: str
    tokens: int = 0
    bytes: int = 0
    words: int = 0
    nll: float = 0.0                         # summed, natural log
    position_nll: dict = field(default_factory=dict)   # bucket start -> [sum, count]
    stopped: list = field(default_factory=list)  # streaming: documents cut short by OOM, with tokens scored

    @property
    def token_perplexity(self) -> float:
        return math.exp(self.nll / self.tokens)

    @property
    def bits_per_byte(self) -> float:
        return self.nll / math.log(2) / self.bytes

    @property
    def word_perplexity(self) -> float:
        return math.exp(self.nll / self.words)

    def loss_by_position(self) -> dict[int, float]:
        return {b: s / c for b, (s, c) in sorted(self.position_nll.items())}

    def summary(self) -> dict:
        return dict(mode=self.mode, tokens=self.tokens, bytes=self.bytes, words=self.words, nll=self.nll,
                    token_perplexity=self.token_perplexity, bits_per_byte=self.bits_per_byte,
                    word_perplexity=self.word_perplexity,
                    loss_by_position={str(k): v for k, v in self.loss_by_position().items()},
                    status="OOM" if self.stopped else "ok", stopped_by_oom=self.stopped)


def position_bucket(pos: int) -> int:
    """Log-spaced buckets: 0, 1, 2-3, 4-7, ... labelled by their first position."""
    return 0 if pos == 0 else 1 << (pos.bit_length() - 1)


def evaluate(model, tokenizer, documents: list[str], mode: str = "windowed", max_length: int = 2048,
             stride: int | None = None, chunk: int | None = None, progress: bool = False) -> PerplexityResult:
    from tqdm.auto import tqdm
    result = PerplexityResult(mode)
    prefix = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    for index, doc in enumerate(tqdm(documents, desc=f"ppl {mode}", unit="doc", disable=not progress)):
        tokens = tokenizer.encode(doc)
        if not tokens:
            continue
        try:
            lp = token_logprobs(model, tokens, prefix, mode, max_length, stride, chunk)
        except StoppedByOOM as stop:  # count what was scored; the record says where it stopped
            lp = stop.logprobs
            result.stopped.append(dict(document=index, tokens_scored=len(lp), tokens=len(tokens),
                                       error=f"{type(stop.error).__name__}: {stop.error}"[:300]))
            if len(lp) == 0:
                continue
            doc = tokenizer.decode(tokens[:len(lp)])
        nll = -lp.double()
        result.nll += nll.sum().item()
        result.tokens += len(lp)
        result.bytes += len(doc.encode("utf-8"))
        result.words += len(re.split(r"\s+", doc.strip()))
        buckets = torch.tensor([position_bucket(i) for i in range(len(lp))])
        for b in buckets.unique().tolist():
            sel = nll[buckets == b]
            acc = result.position_nll.setdefault(b, [0.0, 0])
            acc[0] += sel.sum().item()
            acc[1] += sel.numel()
    if result.tokens == 0:
        if result.stopped:
            raise ArchbenchError(f"out of memory before the first chunk was scored: {result.stopped[0]['error']}")
        raise ArchbenchError("the documents produced no tokens")
    return result
