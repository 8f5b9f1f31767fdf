import re
import subprocess
import sys
from pathlib import Path

import pytest

from archbench.harness.cli import main, parser

ROOT = Path(__file__).resolve().parents[2]


def subcommands():
    return list(parser()._subparsers._group_actions[0].choices)


@pytest.mark.parametrize("command", [[]] + [[c] for c in ["list", "info", "sweep", "ppl", "niah", "reproduce", "report"]])
def test_help_on_every_subcommand(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(command + ["--help"])
    assert exit_.value.code == 0
    assert "usage: archbench" in capsys.readouterr().out


def test_every_subcommand_is_tested():
    # eval: tests/suites/test_eval.py
    assert set(subcommands()) == {"list", "info", "sweep", "ppl", "niah", "reproduce", "report", "eval"}


def test_console_script_installed():
    out = subprocess.run([sys.executable, "-m", "archbench.harness.cli", "list"], capture_output=True, text=True)
    assert out.returncode == 0 and "rwkv7-2b9" in out.stdout


def test_info_of_a_preset_and_a_checkpoint(tmp_path, capsys):
    import torch

    import archbench
    assert main(["info", "rwkv7-2b9"]) == 0
    assert "2947" in capsys.readouterr().out.replace(".", "")  # 2947.x M parameters
    torch.save(archbench.build("rwkv6-tiny").state_dict(), tmp_path / "m.pth")
    assert main(["info", str(tmp_path / "m.pth")]) == 0
    assert "version        6" in capsys.readouterr().out


def test_unknown_model_is_one_clear_line(capsys):
    assert main(["info", "rwkv7-2b8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("archbench: error: unknown model 'rwkv7-2b8'") and "did you mean" in err
    assert "Traceback" not in err


def test_readme_quick_start_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Quick start.*?```bash\n(.*?)```", readme, re.S).group(1).strip().splitlines()
    assert len(block) == 2, block
    assert block[0].endswith("archbench sweep")
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci == block[1]


def test_niah_command_and_a_malformed_grid(tmp_path, capsys):
    assert main(["niah", "--model", "rwkv7-tiny", "--contexts", "400", "--depths", "0,100", "--chunk", "100",
                 "--out", str(tmp_path), "--no-progress"]) == 0
    assert (tmp_path / "heatmap_rwkv7-tiny.png").exists() and "accuracy" in capsys.readouterr().out
    assert main(["niah", "--model", "rwkv7-tiny", "--depths", "0,150", "--out", str(tmp_path)]) == 2
    assert "percents" in capsys.readouterr().err


def test_reproduce_from_a_recorded_sweep(tmp_path, capsys):
    from archbench.harness.sweep import SweepSpec, run_sweep
    run_sweep(SweepSpec(models=["rwkv6-tiny"], contexts=[16, 32, 64], decode_tokens=1, repeats=1), tmp_path / "sweep",
              progress=False, isolate=False)
    assert main(["reproduce", "seed", "--results", str(tmp_path / "sweep"), "--out", str(tmp_path / "rep")]) == 0
    report = (tmp_path / "rep" / "seed.md").read_text()
    assert "| rwkv6-tiny | rwkv6 |" in report and "not measured" in report and "no checkpoint" in report


def test_a_told_commit_wins_over_a_stale_git(monkeypatch):
    """The GPU machine's copy may carry an old .git: ARCHBENCH_GIT_SHA says what really ran."""
    from archbench.harness import env
    env.environment.cache_clear()
    monkeypatch.setenv("ARCHBENCH_GIT_SHA", "0123abc")
    try:
        record = env.environment("cpu")
        assert record["git_sha"] == "0123abc" and record["git_dirty"] is False
    finally:
        env.environment.cache_clear()


def test_sweep_options_over_a_preset():
    from archbench.harness.cli import sweep_spec
    spec = sweep_spec(parser().parse_args(["sweep", "--preset", "seed-speed"]))
    assert spec.peers and spec.dtype == "bfloat16" and spec.prefill_chunk == 65536 and spec.cuda_graphs
    spec = sweep_spec(parser().parse_args(["sweep", "--preset", "seed-speed", "--models", "rwkv7-2b9", "--no-peers",
                                           "--no-cuda-graphs"]))
    assert spec.models == ["rwkv7-2b9"] and not spec.peers and not spec.cuda_graphs
    assert spec.contexts[-1] == 524288
    assert sweep_spec(parser().parse_args(["sweep", "--peers"])).peers
