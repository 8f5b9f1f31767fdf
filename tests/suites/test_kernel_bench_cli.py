"""The kernel benchmark's command line, without a GPU: shapes and backends it does not know
are refused with the ones it does, before anything runs; the table of recorded runs."""
import json

import pytest

from archbench.suites import kernel_bench


def _refusal(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        kernel_bench.main(argv)
    assert e.value.code == 2
    return capsys.readouterr().err


def test_unknown_shape_is_refused_with_the_known_ones(capsys):
    err = _refusal(["--ops", "wkv6", "--shapes", "7b", "--bxt", "1x4096", "2x999"], capsys)
    assert "2x999" in err and "1x16384" in err and "1x4096:" not in err


def test_a_shape_of_the_other_head_count_is_refused(capsys):
    err = _refusal(["--ops", "wkv6", "--shapes", "7b", "--bxt", "1x65536"], capsys)  # H=40 only
    assert "--bxt 1x65536" in err


def test_unknown_backend_is_refused_with_the_known_ones(capsys):
    err = _refusal(["--ops", "wkv6", "--only", "ours", "cuda-pieces-8-j9"], capsys)
    assert "cuda-pieces-8-j9" in err and "cuda-pieces-8" in err


def test_summarize_reads_recorded_runs(tmp_path, capsys):
    rows = [dict(op="wkv6", backend=b, B=1, T=4096, H=40, N=64, mtok_s=m, floor_fraction=0.1)
            for b, m in (("ours", 18.0), ("fla-chunk", 12.0))]
    f = tmp_path / "run.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    kernel_bench.main(["--summarize", str(f)])
    out = capsys.readouterr().out
    assert "H=40 1x4096" in out and "1.5" in out  # ours / best peer
