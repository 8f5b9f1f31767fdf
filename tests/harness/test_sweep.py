"""The sweep records every cell, survives failures and interruptions, and its tables and
plots come from recorded results only."""
import json
import os
import sys
import time
from pathlib import Path

import pytest
import torch

from archbench.harness import sweep as sweep_mod
from archbench.harness.report import throughput_table, write_report
from archbench.harness.results import ResultsStore
from archbench.harness.sweep import SweepSpec, run_sweep

SPEC = SweepSpec(models=["rwkv4-tiny", "rwkv7-tiny"], contexts=[8, 16], batches=[1, 2], decode_tokens=2, repeats=1)


def test_sweep_records_every_cell(tmp_path):
    records = run_sweep(SPEC, tmp_path, progress=False, isolate=False).records()
    assert len(records) == 8 and all(r["status"] == "ok" for r in records)
    r = records[0]
    assert r["prefill_tokens_per_s"] > 0 and r["decode_tokens_per_s"] > 0
    assert r["env"]["torch"] == torch.__version__ and "git_sha" in r["env"]
    # every parameter held, and the bytes a decode step reads: the untied input embedding apart
    import archbench
    m = archbench.build(r["model"], device="cpu")
    emb = m.emb.weight.numel() * m.emb.weight.element_size()
    assert r["param_nbytes"] == sum(p.numel() * p.element_size() for p in m.parameters())
    assert r["param_nbytes"] - r["weight_nbytes"] == emb


def test_oom_cell_is_recorded_and_sweep_goes_on(tmp_path, monkeypatch):
    from archbench.suites import throughput
    real = throughput.measure

    def measure(model, batch, context, *a, **k):
        if context == 16 and batch == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")
        return real(model, batch, context, *a, **k)

    monkeypatch.setattr(throughput, "measure", measure)
    records = run_sweep(SPEC, tmp_path, progress=False, isolate=False).records()
    status = {(r["model"], r["context"], r["batch"]): r["status"] for r in records}
    assert status[("rwkv7-tiny", 16, 2)] == "OOM" and status[("rwkv4-tiny", 16, 2)] == "OOM"
    assert sum(s == "ok" for s in status.values()) == 6
    table = throughput_table(records)
    assert (table["status"] == "OOM").sum() == 2


def test_interrupted_sweep_resumes_without_repeats(tmp_path, monkeypatch):
    from archbench.suites import throughput
    real, calls = throughput.measure, []

    def measure(model, batch, context, *a, **k):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append((model.family, batch, context))
        return real(model, batch, context, *a, **k)

    monkeypatch.setattr(throughput, "measure", measure)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(SPEC, tmp_path, progress=False, isolate=False)
    first = ResultsStore(tmp_path / "results.jsonl").records()
    assert len(first) == 3
    calls.clear()
    monkeypatch.setattr(throughput, "measure", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    records = run_sweep(SPEC, tmp_path, progress=False, isolate=False).records()
    assert len(calls) == 5 and len(records) == 8
    keys = [ResultsStore.key({k: r[k] for k in sweep_mod.CELL_KEYS}) for r in records]
    assert len(set(keys)) == 8


def test_worker_crash_and_hang_are_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    """In worker processes: a cell that kills its process (as a kernel fault would) and a
    cell that hangs are recorded as crash and timeout; every other cell is measured once."""
    from archbench.harness.worker import FAULT_ENV
    spec = SweepSpec(models=["rwkv4-tiny", "rwkv7-tiny"], contexts=[8, 16, 24], decode_tokens=2, repeats=1)
    monkeypatch.setenv(FAULT_ENV, "crash:rwkv4-tiny:16")
    run_sweep(spec, tmp_path / "new" / "run", progress=False, cell_timeout=60)  # folders made as needed
    (tmp_path / "new" / "run" / "results.jsonl").rename(tmp_path / "results.jsonl")
    monkeypatch.setenv(FAULT_ENV, "hang:rwkv7-tiny:24")
    (tmp_path / "results.jsonl").write_text("".join(  # forget rwkv7's cells, keep rwkv4's
        json.dumps(r) + "\n" for r in ResultsStore(tmp_path / "results.jsonl").records() if r["model"] == "rwkv4-tiny"))
    records = run_sweep(spec, tmp_path, progress=False, cell_timeout=8).records()
    status = {(r["model"], r["context"]): r["status"] for r in records}
    assert len(records) == 6 == len(status)
    assert status.pop(("rwkv4-tiny", 16)) == "crash" and status.pop(("rwkv7-tiny", 24)) == "timeout"
    assert set(status.values()) == {"ok"}
    crash = next(r for r in records if r["status"] == "crash")
    assert "exit code 139" in crash["error"]
    assert all(r["measured_at"].endswith("Z") for r in records)  # measured cells and recorded failures alike


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan's parent may never reap it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(os.name != "posix", reason="process groups are POSIX")
def test_stopping_a_worker_stops_what_it_started(tmp_path):
    """A worker killed at its cell's timeout takes its children with it: a kernel build's
    ninja and nvcc must not build on beside the next worker's build."""
    pidfile = tmp_path / "child.pid"
    code = ("import subprocess, sys, time; "
            "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
            f"open({str(pidfile)!r}, 'w').write(str(c.pid)); time.sleep(600)")
    with open(tmp_path / "log", "w") as log:
        proc = sweep_mod._spawn([sys.executable, "-c", code], log)
        for _ in range(200):
            if pidfile.exists() and pidfile.read_text():
                break
            time.sleep(0.05)
        child = int(pidfile.read_text())
        assert _alive(child)
        sweep_mod._stop(proc)
    assert proc.returncode is not None
    for _ in range(100):
        if not _alive(child):
            break
        time.sleep(0.05)
    survived = _alive(child)
    if survived:  # do not leave it behind
        os.kill(child, 9)
    assert not survived


def test_a_peer_that_kills_the_worker_keeps_the_cells_own_numbers(tmp_path, monkeypatch):
    """The peer phase runs after the cell's record is on disk: a fault there becomes that
    cell's peer_status, its own numbers stay, and the cells after it are measured."""
    from archbench.harness.worker import FAULT_ENV
    spec = SweepSpec(models=["rwkv4-tiny"], contexts=[8, 16, 24], decode_tokens=2, repeats=1, peers=True)
    monkeypatch.setenv(FAULT_ENV, "peer-crash:rwkv4-tiny:16")
    records = run_sweep(spec, tmp_path, progress=False, cell_timeout=60).records()
    assert [(r["context"], r["status"]) for r in records] == [(8, "ok"), (16, "ok"), (24, "ok")]
    assert all(r["decode_tokens_per_s"] > 0 for r in records)
    by_context = {r["context"]: r for r in records}
    assert by_context[16]["peer_status"] == "crash" and "exit code 139" in by_context[16]["peer_error"]
    assert "peer_status" not in by_context[8] and "peer_status" not in by_context[24]  # no peer on a CPU
    # the update sits on its own line; a rerun sees every cell done
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 4
    assert len(run_sweep(spec, tmp_path, progress=False).records()) == 3


def test_an_update_folds_into_the_latest_matching_record(tmp_path):
    store = ResultsStore(tmp_path / "r.jsonl")
    for record in ({"model": "a", "context": 1, "x": 1}, {"model": "a", "context": 2, "x": 2},
                   {"update_of": {"model": "a", "context": 1}, "peer_status": "ok"},
                   {"model": "a", "context": 1, "x": 3},
                   {"update_of": {"model": "a", "context": 1}, "peer_status": "crash"},
                   {"update_of": {"model": "b", "context": 1}, "peer_status": "lost"}):
        store.append(record)
    assert store.records() == [{"model": "a", "context": 1, "x": 1, "peer_status": "ok"},
                               {"model": "a", "context": 2, "x": 2},
                               {"model": "a", "context": 1, "x": 3, "peer_status": "crash"}]


def test_torn_last_line_is_ignored(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps({"model": "a", "status": "ok"}) + "\n" + '{"model": "b", "sta')
    assert [r["model"] for r in ResultsStore(path).records()] == ["a"]


def test_decode_bandwidth_counts_the_bytes_a_step_reads():
    """The table's decode weights TB/s: bytes a step reads x steps per second. Records from
    before param_nbytes counted the input embedding in weight_nbytes (RWKV-6 3B: 6.20 GB held,
    5.86 read), so a preset is counted again; newer records carry the read bytes; a model
    that is no preset keeps its recorded figure."""
    cell = dict(dtype="bfloat16", device="cuda", batch=2, context=512, status="ok", decode_tokens_per_s=200.0)
    records = [dict(cell, model="rwkv6-3b", weight_nbytes=6.2e9, decode_weight_bytes_per_s=6.2e11),
               dict(cell, model="rwkv7-2b9", context=1024, weight_nbytes=5.0e9, param_nbytes=5.3e9,
                    decode_weight_bytes_per_s=5e11),
               dict(cell, model="./mine.pth", weight_nbytes=4.0e9, decode_weight_bytes_per_s=4e11)]
    col = dict(zip(throughput_table(records)["model"], throughput_table(records)["decode weights TB/s"]))
    assert col == {"rwkv6-3b": "0.59", "rwkv7-2b9": "0.50", "./mine.pth": "0.40"}


def test_report_from_records_only(tmp_path):
    records = [dict(model="m1", dtype="float32", device="cpu", batch=1, context=c, status="ok",
                    prefill_tokens_per_s=1000.0 * c, decode_tokens_per_s=50.0, state_nbytes=1024)
               for c in (64, 128)]
    records.append(dict(model="m1", dtype="float32", device="cpu", batch=1, context=256, status="OOM"))
    paths = write_report(records, tmp_path)
    md = paths["markdown"].read_text()
    assert "128,000" in md and "OOM" in md
    assert paths["plot"].stat().st_size > 10_000
    assert paths["plot"].read_bytes()[:4] == b"\x89PNG"


def test_rerun_with_auto_impl_skips_finished_cells(tmp_path):
    spec = SweepSpec(models=["rwkv4-tiny"], contexts=[8], decode_tokens=1, repeats=1, impl="auto")
    run_sweep(spec, tmp_path, progress=False, isolate=False)
    run_sweep(spec, tmp_path, progress=False, isolate=False)
    records = ResultsStore(tmp_path / "results.jsonl").records()
    assert len(records) == 1 and records[0]["impl_used"] == "ref"


def test_compare_two_runs_gives_ratios():
    from archbench.harness.report import compare_runs
    base = [dict(model="m", dtype="bf16", batch=1, context=c, status="ok", prefill_tokens_per_s=100.0,
                 decode_tokens_per_s=10.0) for c in (512, 1024)]
    new = [dict(r, prefill_tokens_per_s=150.0, decode_tokens_per_s=5.0) for r in base[:1]]
    new.append(dict(base[1], status="OOM"))
    table = compare_runs(base, new)
    assert len(table) == 1
    assert table.loc[0, "prefill tok/s ratio"] == 1.5 and table.loc[0, "decode tok/s ratio"] == 0.5


def test_article_column_beside_ours():
    records = [dict(model="rwkv6-3b", dtype="bfloat16", device="cuda", batch=1, context=8192, status="ok",
                    prefill_tokens_per_s=1.0, decode_tokens_per_s=2.0, state_nbytes=1)]
    assert throughput_table(records).loc[0, "article A100 decode tok/s"] == 2300


def test_chunked_prefill_is_recorded_as_its_own_cell(tmp_path):
    for chunk in (None, 5):
        spec = SweepSpec(models=["rwkv7-tiny"], contexts=[12], decode_tokens=1, repeats=1, prefill_chunk=chunk)
        run_sweep(spec, tmp_path, progress=False, isolate=False)
    records = ResultsStore(tmp_path / "results.jsonl").records()
    assert sorted(r["prefill_chunk"] or 0 for r in records) == [0, 5]
    assert all(r["status"] == "ok" for r in records)


@pytest.mark.parametrize("chunk", [None, 8])
def test_a_long_prompt_is_warmed_up_on_one_piece_before_it_is_timed(monkeypatch, chunk):
    """A context above WARMUP_UP_TO is not warmed up whole; one piece of it (a prefill
    chunk, or WARMUP_UP_TO tokens) runs before the clock, so that a sweep resumed in a fresh
    process does not time kernel compilation."""
    import archbench
    from archbench.harness import timing
    from archbench.suites import throughput
    monkeypatch.setattr(throughput, "WARMUP_UP_TO", 16)
    model = archbench.build("rwkv7-tiny", impl="ref", dtype="float32", device="cpu")
    lengths, real_forward, real_time = [], model.forward, timing.time_fn
    timed = {}
    monkeypatch.setattr(model, "forward", lambda t, s, **k: (lengths.append(t.shape[1]), real_forward(t, s, **k))[1])
    monkeypatch.setattr(throughput, "time_fn", lambda fn, *a, **k: (timed.setdefault("at", len(lengths)),
                                                                     real_time(fn, *a, **k))[1])
    throughput.measure(model, batch=1, context=40, decode_tokens=1, repeats=1, prefill_chunk=chunk)
    before = lengths[:timed["at"]]
    assert before == [chunk or 16]
    assert 40 not in before
