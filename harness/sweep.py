"""A sweep: models x context lengths x batch sizes, one record per cell in a JSON-lines
file. A cell that runs out of memory or fails is recorded as such and the sweep goes on;
a rerun skips the cells already recorded.

    run_sweep(SweepSpec(models=["rwkv7-tiny"], contexts=[128, 512]), out_dir="runs/x")
"""
from __future__ import annotations

import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from archbench.harness.env import environment
from archbench.harness.results import ResultsStore

CELL_KEYS = ["model", "impl", "dtype", "device", "context", "batch", "decode_tokens"]


@dataclass
class SweepSpec:
    models: list[str]
    contexts: list[int]
    batches: list[int] = field(default_factory=lambda: [1])
    impl: str = "ref"
    dtype: str = "float32"
    device: str = "cpu"
    decode_tokens: int = 16
    repeats: int = 3

    def cells(self) -> list[dict]:
        return [dict(model=m, impl=self.impl, dtype=self.dtype, device=self.device, context=c, batch=b,
                     decode_tokens=self.decode_tokens)
                for m in self.models for c in self.contexts for b in self.batches]


# the embedded default: a tiny model of every family, about a minute on a 2-core CPU
DEFAULT = SweepSpec(models=["rwkv4-tiny", "rwkv5-tiny", "rwkv6-tiny", "rwkv7-tiny", "pythia-tiny", "mamba-tiny",
                            "mamba2-tiny"], contexts=[64, 256, 1024])


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


def run_sweep(spec: SweepSpec, out_dir, progress: bool = True) -> ResultsStore:
    from archbench.harness.registry import build, load
    from archbench.suites.throughput import measure

    store = ResultsStore(Path(out_dir) / "results.jsonl")
    done = store.done(CELL_KEYS)
    todo = [c for c in spec.cells() if ResultsStore.key({k: c[k] for k in CELL_KEYS}) not in done]
    env = environment(spec.device)
    models: dict[str, object] = {}
    bar = tqdm(todo, desc="sweep", unit="cell", disable=not progress)
    for cell in bar:
        bar.set_postfix_str(f"{cell['model']} ctx={cell['context']} B={cell['batch']}")
        record = dict(cell, status="ok", env=env)
        try:
            if cell["model"] not in models:
                models.clear()
                name = cell["model"]
                make = load if Path(name).exists() else build
                models[name] = make(name, impl=spec.impl, dtype=spec.dtype, device=spec.device)
            model = models[cell["model"]]
            record.update(family=model.family, params=model.num_params())
            record.update(measure(model, cell["batch"], cell["context"], spec.decode_tokens, spec.repeats))
        except Exception as err:  # one failed cell never ends the sweep
            record["status"] = "OOM" if _is_oom(err) else "error"
            record["error"] = f"{type(err).__name__}: {err}"[:500]
            if record["status"] == "error":
                record["traceback"] = traceback.format_exc()[-2000:]
            if spec.device.startswith("cuda"):
                torch.cuda.empty_cache()
        store.append(record)
    return store


def spec_to_dict(spec: SweepSpec) -> dict:
    return asdict(spec)
