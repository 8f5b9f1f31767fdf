"""Helpers shared by the tests."""
import json
import subprocess
import sys
from pathlib import Path

ORACLE = Path(__file__).with_name("oracle_rwkv.py")


def run_rwkv_oracle(jobs: list[dict], workdir: Path, v7: bool = False) -> None:
    """Runs BlinkDL's rwkv package on each job in a fresh interpreter (see oracle_rwkv.py)."""
    spec = Path(workdir) / ("jobs-v7.json" if v7 else "jobs.json")
    spec.write_text(json.dumps(jobs))
    done = subprocess.run([sys.executable, str(ORACLE), str(spec)] + (["--v7"] if v7 else []),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
