"""The sweep's worker process: measures a list of cells of one model and appends each
record to the results file as soon as it has it.

Before a cell starts, the worker writes it to a marker file, so that when the process dies
(a kernel fault, the OOM killer) or hangs, the parent knows which cell to record as
"crash" or "timeout" and starts a new worker for the cells after it. An out-of-memory error
that torch raises is caught here and recorded as "OOM".

With peers on, the library's own decode path runs after the cell's record is written, as a
second phase of the cell (the marker says "phase": "peer"); its numbers are appended as an
update of that record ({"update_of": cell, "peer_status": ...}, folded in by
ResultsStore.records()), and a peer that kills the process or hangs becomes peer_status
"crash" or "timeout" of a cell whose own numbers are kept.

    python -m archbench.harness.worker JOB.json
    JOB.json: {"spec": {...SweepSpec...}, "cells": [...], "results": path, "marker": path}
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

# Fault injection for the runner's own tests: "crash|hang:<model>:<context>" makes that cell
# kill or hang its process, as a kernel fault or a deadlock would; "peer-crash|peer-hang:..."
# does so in the cell's peer phase.
FAULT_ENV = "ARCHBENCH_INJECT_FAULT"


def _inject_fault(cell: dict, phase: str = "cell") -> None:
    fault = os.environ.get(FAULT_ENV, "")
    if not fault:
        return
    kind, model, context = fault.split(":")
    if phase == "peer":
        if not kind.startswith("peer-"):
            return
        kind = kind[len("peer-"):]
    elif kind.startswith("peer-"):
        return
    if cell["model"] == model and str(cell["context"]) == context:
        if kind == "crash":
            os._exit(139)
        if kind == "hang":
            time.sleep(3600)


def is_oom(err: BaseException) -> bool:
    import torch
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


def measure_cell(cell: dict, spec: dict, models: dict, keep: dict | None = None) -> dict:
    """One record: the cell, its status, and its metrics or its error (keep: see
    throughput.measure)."""
    import torch

    from archbench.harness.env import environment
    from archbench.harness.registry import build, load
    from archbench.models.checkpoint import is_checkpoint
    from archbench.suites import throughput

    record = dict(cell, status="ok", env=environment(spec["device"]),
                  measured_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    try:
        name = cell["model"]
        if name not in models:
            models.clear()
            make = load if is_checkpoint(name) else build
            models[name] = make(name, impl=spec["impl"], dtype=spec["dtype"], device=spec["device"])
        model = models[name]
        record.update(family=model.family, params=model.num_params(), impl_used=getattr(model, "impl", spec["impl"]))
        _inject_fault(cell)
        record.update(throughput.measure(model, cell["batch"], cell["context"], spec["decode_tokens"], spec["repeats"],
                                         prefill_chunk=cell.get("prefill_chunk"),
                                         cuda_graphs=cell.get("cuda_graphs", True), keep=keep))
    except Exception as err:  # one failed cell never ends the sweep
        record["status"] = "OOM" if is_oom(err) else "error"
        record["error"] = f"{type(err).__name__}: {err}"[:500]
        if record["status"] == "error":
            record["traceback"] = traceback.format_exc()[-2000:]
        if str(spec["device"]).startswith("cuda"):
            torch.cuda.empty_cache()
    return record


def measure_peer_phase(cell: dict, spec: dict, record: dict, models: dict, keep: dict) -> dict:
    """The library's own decode for a measured cell ({} where there is none); a failure it
    raises is its peer_status, never the cell's."""
    from archbench.suites import throughput
    _inject_fault(cell, phase="peer")
    try:
        return throughput.measure_peer(models[cell["model"]], keep, spec["decode_tokens"], spec["repeats"],
                                       decode_tps=record["decode_tokens_per_s"])
    except Exception as err:
        return {"peer_status": "OOM" if is_oom(err) else "error", "peer_error": f"{type(err).__name__}: {err}"[:500]}


def run_cells(cells: list[dict], spec: dict, store, marker: Path | None = None, on_record=None) -> None:
    models: dict = {}

    def mark(cell, phase="cell"):
        if marker is not None:
            marker.write_text(json.dumps({"cell": cell, "phase": phase, "started": time.time()}))

    for cell in cells:
        mark(cell)
        keep: dict = {}
        record = measure_cell(cell, spec, models, keep)
        store.append(record)
        if spec.get("peers") and record["status"] == "ok":
            mark(cell, "peer")
            peer = measure_peer_phase(cell, spec, record, models, keep)
            if peer:
                store.append({"update_of": cell, **peer})
        keep.clear()
        if on_record:
            on_record(record)
    if marker is not None:
        marker.write_text("")


def main() -> int:
    from archbench.harness.results import ResultsStore
    job = json.loads(Path(sys.argv[1]).read_text())
    run_cells(job["cells"], job["spec"], ResultsStore(job["results"]), Path(job["marker"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
