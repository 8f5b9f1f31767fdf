"""`archbench eval`: lm-eval tasks on any archbench model, results in archbench's format.

    archbench eval --model rwkv7-tiny --tasks archbench_mc,archbench_cloze
    archbench eval --model RWKV-x070-World-2.9B.pth --tasks lambada_openai,hellaswag --device cuda

Four small tasks of our own ship with the package (suites/tasks/*.jsonl, defined here as lm-eval
task configs), one per request type, so everything runs offline:

    archbench_mc       multiple choice (loglikelihood of 4 choices)   acc, acc_norm
    archbench_cloze    loglikelihood of a target word                  acc, perplexity
    archbench_rolling  loglikelihood_rolling over documents            word/byte perplexity
    archbench_gen      generate_until, exact match                     exact_match

Any task of lm-eval's registry works where its data is reachable. The YAML of our tasks is
written, with absolute data paths, to a folder that `local_tasks_dir()` returns: pass it to
lm-eval's own `--include_path` to use them there.
"""
from __future__ import annotations

import difflib
import tempfile
from pathlib import Path

from archbench.harness.errors import ArchbenchError

DATA = Path(__file__).parent / "tasks"
LOCAL_TASKS = {
    "archbench_mc": """output_type: multiple_choice
doc_to_text: "{{question}}"
doc_to_choice: "{{choices}}"
doc_to_target: "{{answer}}"
metric_list:
  - {metric: acc, aggregation: mean, higher_is_better: true}
  - {metric: acc_norm, aggregation: mean, higher_is_better: true}
""",
    "archbench_cloze": """output_type: loglikelihood
doc_to_text: "{{text}}"
doc_to_target: "{{target}}"
metric_list:
  - {metric: acc, aggregation: mean, higher_is_better: true}
  - {metric: perplexity, aggregation: perplexity, higher_is_better: false}
""",
    "archbench_rolling": """output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{text}}"
metric_list:
  - {metric: word_perplexity}
  - {metric: byte_perplexity}
  - {metric: bits_per_byte}
""",
    "archbench_gen": """output_type: generate_until
doc_to_text: "{{question}}"
doc_to_target: "{{answer}}"
generation_kwargs: {until: ["\\n"], max_gen_toks: 8, do_sample: false}
metric_list:
  - {metric: exact_match, aggregation: mean, higher_is_better: true, ignore_case: true, ignore_punctuation: true}
""",
}
DATA_FILE = {"archbench_mc": "mc.jsonl", "archbench_cloze": "cloze.jsonl", "archbench_rolling": "docs.jsonl",
             "archbench_gen": "qa.jsonl"}


def local_tasks_dir() -> Path:
    """A folder with our tasks' YAML (absolute data paths), for lm-eval's include_path."""
    out = Path(tempfile.gettempdir()) / "archbench-lm-eval-tasks"
    out.mkdir(parents=True, exist_ok=True)
    for name, body in LOCAL_TASKS.items():
        head = (f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
                f"    test: {DATA / DATA_FILE[name]}\ntest_split: test\n")
        (out / f"{name}.yaml").write_text(head + body)
    return out


def task_manager():
    from lm_eval.tasks import TaskManager
    return TaskManager(include_path=str(local_tasks_dir()))


def check_tasks(tasks: list[str], manager) -> None:
    """One clear message for names lm-eval does not know, with the closest known ones."""
    known = set(manager.all_tasks)
    unknown = [t for t in tasks if t not in known]
    if unknown:
        hints = {t: difflib.get_close_matches(t, known, n=3) for t in unknown}
        raise ArchbenchError("unknown lm-eval task(s): " + "; ".join(
            f"{t!r}" + (f" (did you mean {', '.join(h)}?)" if h else "") for t, h in hints.items())
            + f". Ours: {', '.join(LOCAL_TASKS)}; `lm_eval ls tasks` lists lm-eval's")


def _unreachable(err: BaseException) -> bool:
    text = f"{type(err).__name__}: {err}".lower()
    return any(s in text for s in ("offline", "couldn't reach", "connection", "dataset", "not found", "no such file",
                                   "cannot find", "doesn't exist", "localentrynotfound"))


def evaluate(model: str, tasks: list[str], impl: str = "auto", dtype: str = "float32", device: str = "cpu",
             limit: int | None = None, reuse_state: bool | str = "auto", max_length: int = 2048, tokenizer: str | None = None,
             manager=None) -> dict:
    """lm-eval's simple_evaluate on an archbench model; returns lm-eval's results dict."""
    import lm_eval

    from archbench.suites.lm_eval_adapter import ArchbenchLM
    manager = manager or task_manager()
    check_tasks(tasks, manager)
    lm = ArchbenchLM(model=model, impl=impl, dtype=dtype, device=device, reuse_state=reuse_state,
                     max_length=max_length, tokenizer=tokenizer)
    try:
        return lm_eval.simple_evaluate(model=lm, tasks=tasks, limit=limit, task_manager=manager)
    except Exception as err:
        if _unreachable(err):
            raise ArchbenchError(
                f"the data of task(s) {', '.join(tasks)} cannot be loaded ({type(err).__name__}: {str(err)[:300]}). "
                "lm-eval downloads each task's dataset from the Hugging Face hub on first use: run once with "
                "internet (or copy ~/.cache/huggingface/datasets over), or use a task with local data such as "
                + ", ".join(LOCAL_TASKS)) from None
        raise


def records(results: dict, model: str, args: dict) -> list[dict]:
    """One record per task and metric, from lm-eval's results dict."""
    out = []
    for task, metrics in results["results"].items():
        for key, value in metrics.items():
            if key in ("alias", "sample_len") or "_stderr" in key or not isinstance(value, (int, float)):
                continue
            metric, _, filt = key.partition(",")
            stderr = metrics.get(f"{metric}_stderr,{filt}")
            out.append(dict(model=model, task=task, metric=metric, filter=filt or None, value=value,
                            stderr=stderr if isinstance(stderr, (int, float)) else None,
                            samples=results.get("n-samples", {}).get(task, {}).get("effective"), **args))
    return out


def table(rows: list[dict]) -> str:
    import pandas as pd
    df = pd.DataFrame(rows)
    return df[["model", "task", "metric", "value", "stderr", "samples"]].to_markdown(index=False, floatfmt=".6g")
