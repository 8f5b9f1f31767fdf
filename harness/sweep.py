"""A sweep: models x context lengths x batch sizes, one record per cell in a JSON-lines
file. A cell that runs out of memory, fails, crashes its process or hangs is recorded as
such and the sweep goes on; a rerun skips the cells already recorded.

    run_sweep(SweepSpec(models=["rwkv7-tiny"], contexts=[128, 512]), out_dir="runs/x")
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from archbench.harness.env import environment
from archbench.harness.results import ResultsStore

CELL_KEYS = ["model", "impl", "dtype", "device", "context", "batch", "decode_tokens", "prefill_chunk", "cuda_graphs"]


@dataclass
class SweepSpec:
    models: list[str]
    contexts: list[int]
    batches: list[int] = field(default_factory=lambda: [1])
    impl: str = "auto"
    dtype: str = "float32"
    device: str = "cpu"
    decode_tokens: int = 16
    repeats: int = 3
    prefill_chunk: int | None = None  # feed the prompt in pieces, state carried (models that can: RWKV, Mamba)
    cuda_graphs: bool = True  # decode steps replayed from a CUDA graph (on a GPU)
    peers: bool = False  # also time the library's own decode path on the same weights, per cell

    def cells(self) -> list[dict]:
        return [dict(model=m, impl=self.impl, dtype=self.dtype, device=self.device, context=c, batch=b,
                     decode_tokens=self.decode_tokens, prefill_chunk=self.prefill_chunk, cuda_graphs=self.cuda_graphs)
                for m in self.models for c in self.contexts for b in self.batches]


SEED_MODELS = ["rwkv6-3b", "rwkv7-2b9", "pythia-2.8b", "mamba-2.8b", "mamba2-2.7b"]
# named sweeps: the article's speed table (512 ... 512K) and memory table (1K ... 1M), with
# the peers' own decode paths timed in the same cells; RWKV reads prompts in 64K pieces
PRESETS = {
    "seed-speed": SweepSpec(models=SEED_MODELS, contexts=[512, 2048, 8192, 32768, 131072, 524288], dtype="bfloat16",
                            device="cuda", decode_tokens=64, prefill_chunk=65536, peers=True),
    "seed-memory": SweepSpec(models=SEED_MODELS, contexts=[1024, 8192, 131072, 1048576], dtype="bfloat16",
                             device="cuda", decode_tokens=16, repeats=1, prefill_chunk=65536),
}

# the embedded default: a tiny model of every family, about a minute on a 2-core CPU
DEFAULT = SweepSpec(models=["rwkv4-tiny", "rwkv5-tiny", "rwkv6-tiny", "rwkv7-tiny", "pythia-tiny", "mamba-tiny",
                            "mamba2-tiny"], contexts=[64, 256, 1024])


def run_sweep(spec: SweepSpec, out_dir, progress: bool = True, isolate: bool = True,
              cell_timeout: float = 1800) -> ResultsStore:
    """Measures every cell not yet in out_dir/results.jsonl. isolate: cells run in worker
    processes (one per model, restarted after a crash), so a kernel fault, a hang past
    cell_timeout seconds or the OOM killer becomes that cell's record; else in this process."""
    from archbench.harness.worker import run_cells

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    store = ResultsStore(out_dir / "results.jsonl")
    done = store.done(CELL_KEYS)
    todo = [c for c in spec.cells() if ResultsStore.key({k: c[k] for k in CELL_KEYS}) not in done]
    bar = tqdm(total=len(todo), desc="sweep", unit="cell", disable=not progress)
    try:
        if not isolate:
            run_cells(todo, asdict(spec), store, on_record=lambda r: bar.update(1))
        else:
            for model in dict.fromkeys(c["model"] for c in todo):
                bar.set_postfix_str(model)
                _run_isolated([c for c in todo if c["model"] == model], spec, store, out_dir, cell_timeout, bar)
    finally:
        bar.close()
    return store


def _key(cell: dict) -> str:
    return ResultsStore.key({k: cell[k] for k in CELL_KEYS})


def _spawn(args: list[str], log) -> subprocess.Popen:
    """A worker in a process group of its own (POSIX), so that stopping it stops what it
    started too: a kernel build's ninja and nvcc would otherwise build on, orphaned, beside
    the next worker's build of the same extension."""
    return subprocess.Popen(args, stdout=log, stderr=log, start_new_session=os.name == "posix")


def _stop(proc: subprocess.Popen) -> None:
    """Kills the worker and every process of its group, and reaps it."""
    if os.name == "posix":
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # already gone, group and all
            pass
    else:
        proc.kill()
    proc.wait()


def _run_isolated(cells: list[dict], spec: SweepSpec, store: ResultsStore, out_dir: Path, timeout: float, bar) -> None:
    job, marker, log = out_dir / ".worker-job.json", out_dir / ".worker-cell.json", out_dir / "worker.log"
    remaining = cells
    while remaining:
        job.write_text(json.dumps({"spec": asdict(spec), "cells": remaining, "results": str(store.path),
                                   "marker": str(marker)}))
        marker.write_text("")
        with log.open("a") as err:
            proc = _spawn([sys.executable, "-m", "archbench.harness.worker", str(job)], err)
            status, seen = None, 0
            try:
                while proc.poll() is None:
                    time.sleep(0.2)
                    seen = _advance(bar, store, remaining, seen)
                    current = _current(marker)
                    if current and time.time() - current["started"] > timeout:
                        _stop(proc)
                        status = "timeout"
            except BaseException:  # Ctrl-C: stop the worker too, keep what is recorded
                _stop(proc)
                raise
        _advance(bar, store, remaining, seen)
        done = store.done(CELL_KEYS)
        left = [c for c in remaining if _key(c) not in done]
        if status is None and proc.returncode != 0:
            status = "crash"
        if status:
            why = f"ran past {timeout:g} s" if status == "timeout" else f"died with exit code {proc.returncode}"
            error = f"the worker process {why}; its log ends: {_tail(log)}"
            mark = _current(marker) or {}
            current = mark.get("cell")
            if mark.get("phase") == "peer" and current is not None:  # the cell's own numbers are on disk
                store.append({"update_of": current, "peer_status": status, "peer_error": error[-500:]})
            elif left:
                if current is None or _key(current) in done:  # died between two cells
                    current = left[0]
                store.append(dict(current, status=status, env=environment(spec.device), error=error,
                                  measured_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())))
                bar.update(1)
                left = [c for c in left if _key(c) != _key(current)]
        remaining = left if status else []
    for f in (job, marker):
        f.unlink(missing_ok=True)


def _current(marker: Path) -> dict | None:
    try:
        text = marker.read_text()
        return json.loads(text) if text else None
    except (OSError, json.JSONDecodeError):  # being written right now
        return None


def _advance(bar, store: ResultsStore, cells: list[dict], seen: int) -> int:
    done = store.done(CELL_KEYS)
    now = sum(_key(c) in done for c in cells)
    bar.update(now - seen)
    return now


def _tail(log: Path, n: int = 400) -> str:
    try:
        return log.read_text()[-n:].strip().replace("\n", " | ")
    except OSError:
        return ""
