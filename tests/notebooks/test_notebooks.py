"""The notebook runs on the committed results, without a GPU or a Jupyter kernel: its code
cells are executed in order in one namespace."""
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_results_notebook_draws_the_committed_results(tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHBENCH_NOTEBOOK_OUT", str(tmp_path))
    monkeypatch.chdir(ROOT / "notebooks")
    nb = json.loads((ROOT / "notebooks" / "results.ipynb").read_text())
    namespace: dict = {}
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), "results.ipynb", "exec"), namespace)
    assert (tmp_path / "wkv_kernels.png").stat().st_size > 20_000
    assert len(namespace["kernels"]) > 0
