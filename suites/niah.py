"""Needle in a haystack and passkey retrieval over context length and depth.

Prompts are built in token space, so each is exactly the requested length for the model's
own tokenizer: instruction + haystack with the needle(s) at the requested depth + question,
plus the answer budget. RNN/SSM models read the prompt in chunks through their state (flat
memory); a Transformer until it runs out of memory, which is recorded, not a crash.

    cells = grid([1024, 4096], depths=range(0, 101, 10), trials=2)
    run_grid(model, tokenizer, cells, out_dir="runs/niah", model_name="rwkv7-2b9")
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from archbench.harness.errors import ArchbenchError
from archbench.harness.results import ResultsStore

TASKS = ("passkey", "needle", "multi-query")
ANSWER_BUDGET = 16  # tokens left for the answer inside the requested length
_SUBJECTS = ["The river", "A quiet town", "The old library", "Every winter", "The market square", "A tired engineer",
             "The northern road", "Our neighbour", "The museum guide", "A small boat"]
_VERBS = ["remembers", "described", "was known for", "quietly kept", "often mentioned", "rebuilt", "painted",
          "counted", "forgot about", "praised"]
_OBJECTS = ["the colour of the evening sky", "a recipe for bread", "seven wooden chairs", "the sound of rain",
            "an unfinished letter", "the price of apples", "a map of the coast", "two silver keys",
            "the first train of the day", "a song about the sea"]


def haystack_sentences(n: int, seed: int) -> list[str]:
    """Varied sentences (so the needle is not the only odd line), reproducible from seed."""
    rng = random.Random(seed)
    return [f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}." for _ in range(n)]


NEEDLES, QUERIES = 4, {"needle": 1, "multi-query": 2}  # defaults: key-value needles hidden, keys asked
_KEY_WORDS = (["amber", "silent", "copper", "north", "paper", "iron", "velvet", "hollow"],
              ["owl", "fox", "lake", "wind", "moon", "gate", "stone", "bell"])


@dataclass(frozen=True)
class Cell:
    task: str
    context: int      # tokens, prompt + answer budget
    depth: int        # percent of the haystack before the (first) needle
    trial: int
    needles: int = NEEDLES    # key-value needles hidden (needle, multi-query); the ones not asked are distractors
    queries: int | None = None  # keys asked (None: 1 for needle, 2 for multi-query)

    @property
    def asked(self) -> int:
        return self.queries or QUERIES.get(self.task, 1)

    def key(self) -> dict:
        """What identifies the cell in its records (the needle counts only where not the default,
        so grids recorded before they could be chosen still resume)."""
        key = {"task": self.task, "context": self.context, "depth": self.depth, "trial": self.trial}
        if self.task != "passkey" and (self.needles, self.asked) != (NEEDLES, QUERIES[self.task]):
            key.update(needles=self.needles, queries=self.asked)
        return key


def grid(contexts, depths=range(0, 101, 10), trials: int = 1, task: str = "passkey", needles: int = NEEDLES,
         queries: int | None = None) -> list[Cell]:
    if task not in TASKS:
        raise ArchbenchError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    limit = len(_KEY_WORDS[0]) * len(_KEY_WORDS[1])
    if not 1 <= needles <= limit:
        raise ArchbenchError(f"needles must be from 1 to {limit}, got {needles}")
    if queries is not None and not 1 <= queries <= needles:
        raise ArchbenchError(f"queries must be from 1 to the number of needles ({needles}), got {queries}")
    contexts, depths = list(contexts), list(depths)
    bad = [d for d in depths if not 0 <= d <= 100]
    if bad or not depths:
        raise ArchbenchError(f"depths are percents from 0 to 100, got {bad or depths}")
    if not contexts or min(contexts) < 128:
        raise ArchbenchError(f"context lengths must be at least 128 tokens, got {contexts}")
    if trials < 1:
        raise ArchbenchError(f"trials must be at least 1, got {trials}")
    return [Cell(task, c, d, t, needles, queries) for c in contexts for d in depths for t in range(trials)]


def _needles(cell: Cell, rng: random.Random) -> tuple[list[str], list[str], list[str]]:
    """(needle sentences, question keys, expected answers) for a cell."""
    if cell.task == "passkey":
        key = str(rng.randint(10000, 99999))
        return [f"The pass key is {key}. Remember it. {key} is the pass key."], ["pass key"], [key]
    pool = [f"{a}-{b}" for a in _KEY_WORDS[0] for b in _KEY_WORDS[1]]
    keys = rng.sample(pool, cell.needles)
    values = rng.sample(range(1000000, 10000000), cell.needles)  # distinct, so a distractor's is never right
    needles = [f"One of the special magic numbers for {k} is: {v}." for k, v in zip(keys, values)]
    return needles, keys[:cell.asked], [str(v) for v in values[:cell.asked]]  # the others are distractors


def build_prompt(tokenizer, cell: Cell, seed: int = 0, haystack: list[str] | None = None) -> dict:
    """Token ids of the prompt (exactly cell.context - ANSWER_BUDGET of them), the token
    index where the first needle starts, and the expected answers."""
    rng = random.Random(f"{seed}-{cell.task}-{cell.context}-{cell.depth}-{cell.trial}")
    needles, keys, answers = _needles(cell, rng)
    intro = tokenizer.encode("There is important information hidden in the text below. Find it and remember it.\n")
    if cell.task == "passkey":
        question = "\nWhat is the pass key? The pass key is"
    else:
        question = "\nWhat are the special magic numbers for " + " and ".join(keys) + "? The numbers are:"
    question = tokenizer.encode(question)
    needle_ids = [tokenizer.encode(" " + n + " ") for n in needles]
    room = cell.context - ANSWER_BUDGET - len(intro) - len(question) - sum(map(len, needle_ids))
    if room < 8:
        raise ArchbenchError(f"context {cell.context} is too short for the instructions and needles of {cell.task}")
    hay: list[int] = []
    sentences = haystack or haystack_sentences(64, seed)
    i = 0
    while len(hay) < room:
        hay += tokenizer.encode(" " + sentences[i % len(sentences)])
        i += 1
    hay = hay[:room]
    at = round(cell.depth / 100 * room)
    # the first needle at the requested depth, any others (distractors or keys) spread after it
    spots = [at] + sorted(rng.randint(at, room) for _ in needle_ids[1:])
    body, last = [], 0
    for spot, ids in zip(spots, needle_ids):
        body += hay[last:spot] + ids
        last = spot
    body += hay[last:]
    tokens = intro + body + question
    assert len(tokens) == cell.context - ANSWER_BUDGET
    return {"tokens": tokens, "needle_at": len(intro) + at, "needle_tokens": needle_ids[0], "answers": answers,
            "haystack_tokens": room}


def score(output: str, answers: list[str]) -> bool:
    """Every expected number appears in the output as a whole number (12345 is not 1234)."""
    found = set(re.findall(r"\d+", output))
    return all(a in found for a in answers)


@torch.no_grad()
def generate(model, tokens: list[int], max_new: int, chunk: int | None, eos: int | None) -> list[int]:
    state, logits = None, None
    step = chunk if chunk and getattr(model, "chunked_prefill", False) else len(tokens)
    for start in range(0, len(tokens), step):
        logits, state = model.forward(torch.tensor([tokens[start:start + step]], device=model.device), state,
                                      last_only=True)
    nxt, out = int(logits[0, -1].argmax()), []
    for _ in range(max_new):
        if nxt == eos:
            break
        out.append(nxt)
        logits, state = model.step(torch.tensor([nxt], device=model.device), state)
        nxt = int(logits[0].argmax())
    return out


def run_grid(model, tokenizer, cells: list[Cell], out_dir, model_name: str, chunk: int | None = None,
             seed: int = 0, haystack: list[str] | None = None, progress: bool = True) -> ResultsStore:
    """Each cell once: a rerun skips the cells already recorded under out_dir."""
    import time

    from tqdm.auto import tqdm

    from archbench.harness.env import environment
    store = ResultsStore(Path(out_dir) / "niah.jsonl")
    fields = ("task", "context", "depth", "trial", "needles", "queries")
    done = {ResultsStore.key(dict(model=r["model"], **{k: r[k] for k in fields if k in r})) for r in store.records()}
    todo = [c for c in cells if ResultsStore.key(dict(model=model_name, **c.key())) not in done]
    for cell in tqdm(todo, desc="niah", unit="cell", disable=not progress):
        prompt = build_prompt(tokenizer, cell, seed, haystack)
        record = dict(model=model_name, **cell.key(), answers=prompt["answers"],
                      chunk=chunk if getattr(model, "chunked_prefill", False) else None,
                      env=environment(str(model.device)))
        t0 = time.perf_counter()
        try:
            if model.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(model.device)
            ids = generate(model, prompt["tokens"], ANSWER_BUDGET, chunk, tokenizer.eos_token_id)
            output = tokenizer.decode(ids)
            record.update(status="ok", output=output, correct=score(output, prompt["answers"]))
            if model.device.type == "cuda":
                record["peak_allocated_bytes"] = torch.cuda.max_memory_allocated(model.device)
        except torch.cuda.OutOfMemoryError as e:
            record.update(status="OOM", error=str(e)[:300], correct=None)
            torch.cuda.empty_cache()
        record["seconds"] = time.perf_counter() - t0
        store.append(record)
    return store


def plot_heatmap(records: list[dict], path, model: str | None = None, task: str | None = None) -> Path:
    """Depth x context accuracy for one model and task (the first in the records if not
    named); OOM cells are marked with an x."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.DataFrame(records)
    model = model or df["model"].iloc[0]
    df = df[df["model"] == model]
    task = task or df["task"].iloc[0]
    df = df[df["task"] == task]
    acc = df.assign(correct=df["correct"].astype(float)).pivot_table(index="depth", columns="context",
                                                                      values="correct", aggfunc="mean")
    # a context or depth where every cell ran out of memory has no accuracy: keep it, blank
    acc = acc.reindex(index=sorted(df["depth"].unique()), columns=sorted(df["context"].unique()))
    fig, ax = plt.subplots(figsize=(1.2 + 0.8 * acc.shape[1], 1 + 0.35 * acc.shape[0]))
    im = ax.imshow(acc.values, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
    ax.set_xticks(range(acc.shape[1]), [f"{c // 1024}K" if c >= 1024 else str(c) for c in acc.columns])
    ax.set_yticks(range(acc.shape[0]), [f"{d}%" for d in acc.index])
    for (d, c), g in df[df["status"] == "OOM"].groupby(["depth", "context"]):
        ax.text(list(acc.columns).index(c), list(acc.index).index(d), "x", ha="center", va="center")
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("needle depth")
    ax.set_title(f"{model}: {task} retrieval accuracy")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def summary(records: list[dict]):
    """One row per model and context: accuracy over the cells that ran, how many cells and
    how many ran out of memory, median seconds per cell and the peak memory."""
    import pandas as pd
    df = pd.DataFrame(records)
    if "peak_allocated_bytes" not in df:
        df["peak_allocated_bytes"] = float("nan")
    df["correct"] = df["correct"].astype(float)
    df["peak_gib"] = df["peak_allocated_bytes"].astype(float) / 2**30
    return df.groupby(["model", "task", "context"]).agg(
        accuracy=("correct", "mean"), cells=("status", "size"), oom=("status", lambda s: int((s == "OOM").sum())),
        seconds_per_cell=("seconds", "median"), peak_gib=("peak_gib", "max")).round(3)


def plot_accuracy(records: list[dict], path) -> Path:
    """Accuracy against context length, one line per model (log axis); a context where a
    model ran out of memory is marked with an x at zero."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = summary(records).reset_index()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    several = table["task"].nunique() > 1
    for (model, task), g in table.groupby(["model", "task"]):
        ran = g[g["oom"] < g["cells"]]
        line, = ax.plot(ran["context"], ran["accuracy"], marker="o", label=f"{model}, {task}" if several else model)
        oom = g[g["oom"] > 0]
        ax.plot(oom["context"], [0] * len(oom), "x", color=line.get_color(), markersize=10)
    ax.set_xscale("log", base=2)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("retrieval accuracy")
    ax.set_title("accuracy against context length (x: out of memory)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def read_haystack(path) -> list[str]:
    """A user's text file as haystack sentences."""
    path = Path(path)
    if not path.exists():
        raise ArchbenchError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ArchbenchError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]
    if len(sentences) < 2:
        raise ArchbenchError(f"{path}: too little text for a haystack (need at least two sentences)")
    return sentences
