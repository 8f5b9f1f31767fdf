"""`archbench eval` and our local lm-eval tasks: they run offline for every request type,
give the same metrics as lm-eval's own HFLM on the same tiny transformers model, write
archbench records, and bad names or unreachable data get one clear message."""
import json
import math
import os

import pytest

pytest.importorskip("lm_eval")
from archbench.harness.cli import main  # noqa: E402
from archbench.harness.errors import ArchbenchError  # noqa: E402
from archbench.suites import eval as ev  # noqa: E402
from helpers import tiny_neox_folder  # noqa: E402

TEXT = "The sun rises in the east. Bees make honey. A week has seven days. The capital of France is Paris.\n" * 3


@pytest.fixture(scope="module")
def manager():
    return ev.task_manager()


def test_local_tasks_equal_hflm(manager, tmp_path):
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    from archbench.suites.lm_eval_adapter import ArchbenchLM
    folder = tiny_neox_folder(tmp_path / "tiny-neox", TEXT)
    tasks = list(ev.LOCAL_TASKS)
    out = {}
    for name, lm in (("hflm", HFLM(pretrained=str(folder), device="cpu", max_length=64, batch_size=1,
                                   dtype="float32")),
                     ("ours", ArchbenchLM(model=str(folder), max_length=64))):
        out[name] = lm_eval.simple_evaluate(model=lm, tasks=tasks, task_manager=manager, bootstrap_iters=0)["results"]
    for task in tasks:
        theirs, ours = out["hflm"][task], out["ours"][task]
        metrics = [k for k, v in theirs.items() if isinstance(v, float) and "stderr" not in k]
        assert metrics, task
        for k in metrics:
            assert math.isclose(ours[k], theirs[k], rel_tol=1e-6, abs_tol=1e-9), (task, k, ours[k], theirs[k])


def test_archbench_eval_writes_records(tmp_path):
    assert main(["eval", "--model", "rwkv7-tiny", "--tasks", ",".join(ev.LOCAL_TASKS), "--limit", "2",
                 "--out", str(tmp_path)]) == 0
    rows = [json.loads(line) for line in (tmp_path / "eval.jsonl").read_text().splitlines()]
    assert {r["task"] for r in rows} == set(ev.LOCAL_TASKS)
    assert {"acc", "bits_per_byte", "exact_match"} <= {r["metric"] for r in rows}
    assert all(r["env"]["torch"] and r["samples"] == 2 for r in rows)


def test_unknown_task_is_one_message(manager):
    with pytest.raises(ArchbenchError, match=r"unknown lm-eval task.*'archbench_mcq'.*did you mean archbench_mc"):
        ev.check_tasks(["archbench_mc", "archbench_mcq"], manager)


def test_unknown_model_is_one_message(tmp_path, capsys):
    assert main(["eval", "--model", "rwkv7-tinyy", "--tasks", "archbench_mc", "--out", str(tmp_path)]) != 0
    err = capsys.readouterr().err
    assert "unknown model 'rwkv7-tinyy' (did you mean rwkv7-tiny" in err and "Traceback" not in err


def test_unreachable_dataset_is_one_message(manager, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ArchbenchError, match="lambada_openai cannot be loaded.*local data"):
        ev.evaluate("rwkv7-tiny", ["lambada_openai"], limit=2, manager=manager)
    assert os.environ["HF_DATASETS_OFFLINE"] == "1"


def test_a_hub_id_is_a_checkpoint(tmp_path, monkeypatch):
    """'owner/name' is a Hugging Face hub id: downloaded (here: a stand-in for the hub that
    hands back a local folder), its own tokenizer used, and the record keeps the id."""
    import json

    import huggingface_hub

    from archbench.harness.cli import main
    from archbench.models.checkpoint import is_checkpoint
    from helpers import tiny_neox_folder
    folder = tiny_neox_folder(tmp_path / "snapshot", "The quick brown fox jumps over the lazy dog. " * 8)
    calls = []
    monkeypatch.setattr(huggingface_hub, "list_repo_files", lambda repo: [p.name for p in folder.iterdir()])
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda repo, allow_patterns=None: calls.append(repo) or str(folder))
    assert is_checkpoint("someone/tiny-neox") and not is_checkpoint("pythia-tiny")
    assert main(["eval", "--model", "someone/tiny-neox", "--tasks", "archbench_mc", "--limit", "2",
                 "--out", str(tmp_path / "ev")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "ev" / "eval.jsonl").read_text().splitlines()]
    assert rows and all(r["model"] == "someone/tiny-neox" for r in rows)
    assert calls and set(calls) == {"someone/tiny-neox"}
