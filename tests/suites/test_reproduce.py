"""The article's tables rebuilt from records: every article row appears, missing
measurements and checkpoints are said per row, and slopes are right on synthetic timings."""
import pytest

from archbench.suites.reproduce import (ARTICLE_QUALITY, build_report, fit_slopes, loglog_slope)
from archbench.suites.seed_article import ARTICLE_DECODE_TOKENS_PER_S, ARTICLE_MEMORY_GB


def synthetic(model, family, prefill_exp, decode_exp, memory_exp, contexts=(4096, 16384, 65536, 262144)):
    return [dict(model=model, family=family, context=c, batch=1, status="ok", prefill_s=1e-6 * c ** prefill_exp,
                 decode_s_per_token=1e-3 * c ** decode_exp, decode_tokens_per_s=1 / (1e-3 * c ** decode_exp),
                 peak_allocated_bytes=5e9 + 1e3 * c ** memory_exp, weight_nbytes=5e9, param_nbytes=5e9,
                 state_nbytes=1e3 * c ** memory_exp, env={"gpu": "Test GPU"}) for c in contexts]


def test_slopes_recover_known_exponents():
    assert loglog_slope([1, 10, 100], [3, 30, 300]) == pytest.approx(1)
    records = synthetic("rnn", "rwkv7", 1, 0, 0) + synthetic("attn", "transformer", 2, 1, 1)
    slopes = fit_slopes(records)
    assert slopes["rnn"]["prefill_time"] == pytest.approx(1) and slopes["rnn"]["decode_time_per_token"] == pytest.approx(0)
    assert slopes["rnn"]["memory"] == pytest.approx(0, abs=1e-9)
    assert slopes["attn"]["prefill_time"] == pytest.approx(2) and slopes["attn"]["memory"] == pytest.approx(1)


def test_memory_beyond_the_weights_takes_every_parameter_held():
    """The peak holds every parameter (param_nbytes); weight_nbytes, the bytes a decode step
    reads, leaves an untied input embedding out. A KV cache growing linearly beside a 2 GB
    embedding keeps its slope of 1 (had weight_nbytes been subtracted, the embedding's 2 GB
    would flatten it); records from before param_nbytes, whose weight_nbytes counted every
    parameter, still give 1."""
    records = synthetic("attn", "transformer", 2, 1, 1)
    for r in records:
        r.update(param_nbytes=r["weight_nbytes"] + 2e9, peak_allocated_bytes=r["peak_allocated_bytes"] + 2e9)
    assert fit_slopes(records)["attn"]["memory"] == pytest.approx(1)
    older = [{k: v for k, v in r.items() if k != "param_nbytes"} for r in synthetic("attn", "transformer", 2, 1, 1)]
    assert fit_slopes(older)["attn"]["memory"] == pytest.approx(1)


def test_report_has_every_article_row_and_says_what_is_missing():
    records = synthetic("rwkv6-3b", "rwkv6", 1, 0, 0, contexts=(512, 2048, 8192))
    records.append(dict(model="pythia-2.8b", family="transformer", context=131072, batch=1, status="OOM"))
    report = build_report(records, checkpoints={"RWKV-7 Goose": "x.pth"}, ppl={"RWKV-7 Goose": 9.9})
    for model, figures in ARTICLE_DECODE_TOKENS_PER_S.items():
        for ctx in figures:
            assert f"| {model} | {ctx:,} |" in report
    for model in ARTICLE_MEMORY_GB:
        assert model in report
    for model in ARTICLE_QUALITY:
        assert f"| {model} |" in report
    assert report.count("no checkpoint: pass") == len(ARTICLE_QUALITY) - 1
    assert "| 9.90 |" in report and "| OOM |" in report and "Test GPU" in report
    assert "not measured: `archbench sweep --preset seed-speed` (mamba2-2.7b)" in report


def test_each_row_names_the_code_it_was_measured_with():
    """Rows from runs at different commits (kernels change between them) say which: the short
    git commit, +dirty for uncommitted changes, - for records without one."""
    records = synthetic("rwkv6-3b", "rwkv6", 1, 0, 0, contexts=(512, 2048))
    records[0]["env"] = {"gpu": "Test GPU", "git_sha": "0123456789abcdef", "git_dirty": False}
    records[1]["env"] = {"gpu": "Test GPU", "git_sha": "fedcba9876543210", "git_dirty": True}
    report = build_report(records, only={"speed"})
    assert "| rwkv6-3b | 512 | 2400 | 1,000.0 | 0.42 | Test GPU | 0123456 |" in report
    assert "| Test GPU | fedcba9+dirty |" in report
    assert "| rwkv6-3b | 8,192 | 2300 | not measured: `archbench sweep --preset seed-speed` (rwkv6-3b) | - | - | - |" \
        in report


def test_decode_floor_counts_the_bytes_a_step_reads():
    """The weight-read floor of the claims: records before param_nbytes counted every
    parameter in weight_nbytes, so a preset's model is counted again without its input
    embedding (RWKV-6 3B: 6.20 GB held, 5.86 read; Mamba ties it to the head: the same);
    newer records say it themselves; a model that is no preset keeps its figure."""
    from archbench.harness.interface import recorded_read_nbytes as decode_read_nbytes_of
    old = dict(model="rwkv6-3b", dtype="bfloat16", weight_nbytes=6_200_381_440)
    assert decode_read_nbytes_of(old) == pytest.approx(5.865e9, rel=1e-3)
    assert decode_read_nbytes_of(dict(old, model="mamba-2.8b", weight_nbytes=5_536_691_200)) == 5_536_691_200
    assert decode_read_nbytes_of(dict(old, param_nbytes=7e9, weight_nbytes=123)) == 123
    assert decode_read_nbytes_of(dict(old, model="./my-checkpoint.pth")) == 6_200_381_440


def test_claims_follow_the_measurements():
    from archbench.suites.reproduce import claims_section
    flat = synthetic("rwkv6-3b", "rwkv6", 1, 0, 0)
    slowing = synthetic("pythia-2.8b", "transformer", 2, 1, 1, contexts=(512, 32768))
    fits = [dict(model="pythia-2.8b", family="transformer", context=131072, batch=1, status="ok",
                 decode_tokens_per_s=10.0, peak_allocated_bytes=60 * 2**30, weight_nbytes=5e9, param_nbytes=5e9,
                 env={"gpu": "G"})]
    text = "\n".join(claims_section(flat + slowing + fits, copy_rate=3e12))
    assert "(rwkv6-3b): supports it" in text and "spread 1.000x" in text
    assert "(pythia-2.8b): supports it" in text
    assert "out of memory at 131,072 tokens* (article, A100 80GB): contradicts it: ran with 60.0 GiB" in text
    assert "out of memory at 524,288 tokens* (article, A100 80GB): cannot say yet" in text
    # 3e12 B/s over 5e9 B of weights: 600 tok/s at most at batch 1, under 2,200
    assert "bounds batch-1 decode at 600 tok/s" in text and "batch of at least 3.7" in text
    wobbly = [dict(r, decode_tokens_per_s=100.0 * (1 + i)) for i, r in enumerate(flat)]
    assert "(rwkv6-3b): contradicts it" in "\n".join(claims_section(wobbly))


def test_quality_rows_fill_from_recorded_ppl_and_eval_runs(tmp_path, capsys):
    """A checkpoint's row takes the windowed perplexity of `archbench ppl` and the LAMBADA /
    HellaSwag accuracies of `archbench eval` recorded for that path; what is missing says
    which command records it."""
    import json

    from archbench.harness.cli import main
    ckpt, other = "/ckpt/rwkv7.pth", "/ckpt/mamba"
    (tmp_path / "ppl").mkdir()
    (tmp_path / "ppl" / "ppl.jsonl").write_text(json.dumps(dict(model=ckpt, mode="windowed", token_perplexity=9.87)) + "\n")
    (tmp_path / "ev").mkdir()
    rows = [dict(model=ckpt, task="lambada_openai", metric="acc", value=0.6543),
            dict(model=ckpt, task="hellaswag", metric="acc_norm", value=0.5012),
            dict(model=ckpt, task="hellaswag", metric="acc", value=0.4)]
    (tmp_path / "ev" / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "sw").mkdir()
    (tmp_path / "sw" / "results.jsonl").write_text("")
    assert main(["reproduce", "seed", "--only", "quality", "--results", str(tmp_path / "sw"),
                 "--checkpoint", f"RWKV-7 Goose={ckpt}", "--checkpoint", f"Mamba={other}",
                 "--ppl", str(tmp_path / "ppl"), "--eval", str(tmp_path / "ev"), "--out", str(tmp_path / "out")]) == 0
    report = (tmp_path / "out" / "seed.md").read_text()
    assert "| RWKV-7 Goose | 2.9B | 9.6 | 9.87 | 65.8 | 65.43 | 51.0 | 50.12 |" in report
    assert f"run `archbench eval --model {other} --tasks lambada_openai,hellaswag`" in report
    assert f"run `archbench ppl --model {other}" in report


def test_reproduce_writes_plots_and_never_mixes_machines(tmp_path):
    """Records of two GPUs: the report and its plots take the machine most records come
    from, and say how many of the others they left out."""
    import json

    from archbench.harness.cli import main
    main_gpu = synthetic("rwkv6-3b", "rwkv6", 1, 0, 0, contexts=(512, 2048, 8192))
    other = [dict(r, decode_tokens_per_s=9999.0, env={"gpu": "Other GPU"}) for r in main_gpu[:2]]
    (tmp_path / "sw").mkdir()
    (tmp_path / "sw" / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in other + main_gpu))
    assert main(["reproduce", "seed", "--results", str(tmp_path / "sw"), "--out", str(tmp_path / "out")]) == 0
    report = (tmp_path / "out" / "seed.md").read_text()
    assert "2 records of other machines (Other GPU) are left out" in report
    assert "9999" not in report and "Other GPU |" not in report
    for name in ("reproduce-speed.png", "reproduce-memory.png"):
        assert (tmp_path / "out" / name).stat().st_size > 10_000 and f"]({name})" in report


def test_run_quality_fills_a_row_from_a_checkpoint_offline(tmp_path):
    """`--run-quality`: perplexity and the two tasks run now for a checkpoint (a tiny HF
    folder; local stand-in tasks for LAMBADA and HellaSwag), and the row is filled; a
    checkpoint that does not exist leaves its row saying what is missing."""
    pytest.importorskip("lm_eval")
    from archbench.harness.cli import main
    from helpers import tiny_neox_folder
    text = "The quick brown fox jumps over the lazy dog. Then it sleeps, and the dog barks twice.\n" * 4
    folder = tiny_neox_folder(tmp_path / "tiny", text)
    (tmp_path / "val.txt").write_text(text)
    (tmp_path / "sw").mkdir()
    (tmp_path / "sw" / "results.jsonl").write_text("")
    assert main(["reproduce", "seed", "--only", "quality", "--results", str(tmp_path / "sw"),
                 "--checkpoint", f"Pythia (Transformer)={folder}", "--checkpoint", f"Mamba={tmp_path / 'nowhere'}",
                 "--run-quality", "--ppl-data", str(tmp_path / "val.txt"), "--limit", "4",
                 "--quality-tasks", "lambada=archbench_cloze,hellaswag=archbench_mc",
                 "--out", str(tmp_path / "out")]) == 0
    report = (tmp_path / "out" / "seed.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| Pythia (Transformer) |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert float(cells[3]) > 1, row  # perplexity of a random tiny model: large, but measured
    assert all(0 <= float(cells[i]) <= 100 for i in (5, 7)), row  # LAMBADA %, HellaSwag % (4 examples each)
    mamba = next(line for line in report.splitlines() if line.startswith("| Mamba |"))
    assert "archbench" in mamba  # says which command records what is missing
    assert (tmp_path / "out" / "quality-runs" / "eval" / "eval.jsonl").exists()


def test_one_setting_never_mixes_prompt_settings():
    """Mamba measured in one pass (to 512K) and later in pieces (to 1M): fits and claims take
    the setting that reached further, one record per context (the later one)."""
    from archbench.suites.reproduce import one_setting
    one_pass = [dict(model="m", context=c, prefill_chunk_used=None, peak=1) for c in (512, 8192, 524288)]
    pieces = [dict(model="m", context=c, prefill_chunk_used=65536, peak=v) for c, v in
              ((1024, 2), (131072, 3), (1048576, 4), (131072, 5))]
    got = one_setting(one_pass + pieces)
    assert [r["context"] for r in got] == [1024, 131072, 1048576] and [r["peak"] for r in got] == [2, 5, 4]
    assert [r["context"] for r in one_setting(one_pass + pieces[:1])] == [512, 8192, 524288]


def test_one_setting_takes_one_run_never_two():
    """RWKV-7's decode was rerun after a kernel change: a claim over both runs would read the
    change as a dependence on context. Speed takes the run with the most contexts (the later
    on a tie), memory the run that reached the longest context."""
    from archbench.suites.reproduce import claims_section, one_setting
    def run(name, contexts, tps):
        return [dict(model="rwkv7-2b9", family="rwkv7", _run=name, context=c, status="ok", batch=1, prefill_chunk_used=65536,
                     decode_tokens_per_s=tps, state_nbytes=1, peak_allocated_bytes=c) for c in contexts]
    speed = [512, 2048, 8192, 32768, 131072, 524288]
    old, memory, new = run("a-speed", speed, 233.0), run("b-memory", [1024, 1048576], 232.0), run("c-new", speed, 340.0)
    records = old + memory + new
    assert {r["_run"] for r in one_setting(records, prefer="most")} == {"c-new"}
    assert {r["_run"] for r in one_setting(records, prefer="longest")} == {"b-memory"}
    text = "\n".join(claims_section(records))
    assert "(rwkv7-2b9): supports it: 340.0-340.0 tok/s from 512 to 524,288 tokens (6 contexts)" in text
    assert "from 1,024 to 1,048,576 tokens" in text
    with pytest.raises(ValueError):
        one_setting(records, prefer="newest")


def test_memory_slope_of_a_prompt_in_pieces_is_fitted_past_the_piece_size():
    """Read in 64K pieces, activations grow up to 64K tokens and then stop: the memory fit
    takes the contexts past the piece (slope 0), not 8K..1M (which would read as growth)."""
    peaks = {1024: 5.7e9, 8192: 6.7e9, 131072: 13.9e9, 1048576: 13.9e9}
    records = [dict(model="r", family="rwkv7", context=c, batch=1, status="ok", prefill_s=1e-6 * c,
                    decode_s_per_token=3e-3, peak_allocated_bytes=p, weight_nbytes=5.4e9, prefill_chunk_used=65536)
               for c, p in peaks.items()]
    assert fit_slopes(records)["r"]["memory"] == pytest.approx(0, abs=1e-9)
    one_pass = [dict(r, prefill_chunk_used=None) for r in records]
    assert fit_slopes(one_pass)["r"]["memory"] > 0.2


def test_a_tie_between_runs_goes_to_the_later_measurement():
    """Two runs with the same contexts: the one measured later wins, whatever the order of
    the folders; without `measured_at` (older records) the later folder."""
    from archbench.suites.reproduce import _cell, one_setting
    def run(name, tps, when=None):
        return [dict(model="m", _run=name, context=c, status="ok", batch=1, decode_tokens_per_s=tps,
                     **({"measured_at": when} if when else {})) for c in (512, 2048)]
    records = run("a-new", 340.0, "2026-11-28T04:10:00Z") + run("b-old", 233.0, "2026-11-27T20:00:00Z")
    assert {r["_run"] for r in one_setting(records, prefer="most")} == {"a-new"}
    assert _cell(records, "m", 512, {512: 1, 2048: 1})["_run"] == "a-new"
    plain = run("a", 1.0) + run("b", 2.0)
    assert {r["_run"] for r in one_setting(plain, prefer="most")} == {"b"}
    assert _cell(plain, "m", 2048, {512: 1, 2048: 1})["_run"] == "b"
