"""Needle in a haystack: exact prompt lengths per tokenizer, needles at the requested
depth, strict scoring, resumable grids and heatmaps from recorded results."""
import pytest

import archbench
from archbench.harness.errors import ArchbenchError
from archbench.harness.results import ResultsStore
from archbench.models.tokenizer import load_tokenizer
from archbench.suites.niah import (ANSWER_BUDGET, Cell, build_prompt, grid, plot_accuracy, plot_heatmap, read_haystack,
                                   run_grid, score, summary)
from helpers import tiny_neox_folder


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    folder = tiny_neox_folder(tmp_path_factory.mktemp("t") / "neox", "The pass key is 12345. " * 20)
    toks = {"bytes": load_tokenizer("bytes"), "hf-bpe": load_tokenizer(folder)}
    try:
        toks["rwkv-world"] = load_tokenizer("rwkv-world")
    except ArchbenchError:
        pass
    return toks


@pytest.mark.parametrize("task", ["passkey", "needle", "multi-query"])
@pytest.mark.parametrize("context", [600, 1000, 2048])
@pytest.mark.parametrize("depth", [0, 37, 100])
def test_prompt_length_and_needle_depth_in_tokens(tokenizers, task, context, depth):
    intro_text = "There is important information hidden in the text below. Find it and remember it.\n"
    for name, tok in tokenizers.items():
        prompt = build_prompt(tok, Cell(task, context, depth, trial=1))
        tokens, at = prompt["tokens"], prompt["needle_at"]
        assert len(tokens) + ANSWER_BUDGET == context, name
        needle = prompt["needle_tokens"]
        assert tokens[at:at + len(needle)] == needle, name
        assert tok.decode(needle).strip().startswith("The pass key is" if task == "passkey" else "One of the special")
        # the depth is the fraction of the haystack's tokens before the needle
        frac = (at - len(tok.encode(intro_text))) / prompt["haystack_tokens"]
        assert abs(frac - depth / 100) <= 1 / prompt["haystack_tokens"], (name, frac)


def test_answers_differ_by_trial_and_are_in_the_prompt(tokenizers):
    tok = tokenizers["bytes"]
    a = build_prompt(tok, Cell("multi-query", 1000, 50, trial=0))
    b = build_prompt(tok, Cell("multi-query", 1000, 50, trial=1))
    assert a["answers"] != b["answers"] and len(a["answers"]) == 2
    text = tok.decode(a["tokens"])
    assert all(v in text for v in a["answers"]) and text.count("special magic numbers for") == 5  # 4 + question


def test_scoring_accepts_the_answer_and_rejects_near_misses():
    assert score(" 12345.", ["12345"]) and score("it is 12345 and 777", ["777", "12345"])
    assert not score(" 1234", ["12345"]) and not score("123456", ["12345"]) and not score("12345", ["12345", "9"])


def test_grid_resumes_without_repeating_cells_and_draws_a_heatmap(tmp_path):
    model, tok = archbench.build("rwkv7-tiny"), load_tokenizer("bytes")
    cells = grid([400, 600], depths=[0, 50, 100], trials=1)
    run_grid(model, tok, cells[:4], tmp_path, "rwkv7-tiny", chunk=64, progress=False)
    run_grid(model, tok, cells, tmp_path, "rwkv7-tiny", chunk=64, progress=False)
    records = ResultsStore(tmp_path / "niah.jsonl").records()
    assert len(records) == 6 and {(r["context"], r["depth"]) for r in records} == {(c.context, c.depth) for c in cells}
    assert all(r["status"] == "ok" and isinstance(r["correct"], bool) for r in records)
    png = plot_heatmap(records, tmp_path / "heat.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    # a context where every cell ran out of memory (a Transformer at 512K) is drawn, marked
    oom = [dict(r, context=2048, status="OOM", correct=None) for r in records if r["context"] == 600]
    assert plot_heatmap(records + oom, tmp_path / "oom.png").read_bytes()[:4] == b"\x89PNG"
    other = [dict(r, model="other") for r in records]
    assert plot_accuracy(records + oom + other, tmp_path / "acc.png").read_bytes()[:4] == b"\x89PNG"
    table = summary(records + oom + other)
    assert list(table.index.get_level_values("model").unique()) == ["other", "rwkv7-tiny"]
    assert table.loc[("rwkv7-tiny", "passkey", 2048), "oom"] == 3
    assert table.loc[("rwkv7-tiny", "passkey", 400), "cells"] == 3
    assert table.loc[("other", "passkey", 400), "accuracy"] == \
        sum(r["correct"] for r in records if r["context"] == 400) / 3
    needle = [dict(r, task="needle", correct=True) for r in records]  # another task in the same folder: its own row
    both = summary(records + needle)
    assert both.loc[("rwkv7-tiny", "needle", 400), "accuracy"] == 1.0 and len(both) == 2 * len(summary(records))
    assert plot_heatmap(records + needle, tmp_path / "needle.png", task="needle").exists()


def test_chunked_reading_gives_the_same_answer():
    from archbench.suites.niah import generate
    model, tok = archbench.build("rwkv6-tiny"), load_tokenizer("bytes")
    tokens = build_prompt(tok, Cell("passkey", 400, 50, 0))["tokens"]
    assert generate(model, tokens, 8, None, 0) == generate(model, tokens, 8, 37, 0)


@pytest.mark.parametrize("task, needles, queries", [("needle", 1, None), ("needle", 7, 1), ("multi-query", 6, 3)])
def test_needle_and_query_counts(tokenizers, task, needles, queries):
    """One or several needles, some asked and the others distractors, with distinct values;
    the depth and exact length hold for each tokenizer."""
    for name, tok in tokenizers.items():
        cell = grid([1500], depths=[40], task=task, needles=needles, queries=queries)[0]
        prompt = build_prompt(tok, cell)
        text = tok.decode(prompt["tokens"])
        asked = queries or (1 if task == "needle" else 2)
        assert len(prompt["tokens"]) + ANSWER_BUDGET == 1500, name
        assert text.count("One of the special magic numbers for") == needles, name
        assert len(prompt["answers"]) == asked and all(f"is: {v}." in text for v in prompt["answers"]), name
        assert text.count("?") == 1 and text.count(" and ") >= asked - 1, name
    assert cell.key()["needles"] == needles if (needles, asked) != (4, {"needle": 1, "multi-query": 2}[task]) \
        else "needles" not in cell.key()


def test_a_grid_with_other_needle_counts_is_its_own(tmp_path):
    """Records of the default needle counts (and of grids recorded before the counts could be
    chosen) resume; a grid with other counts runs its own cells."""
    model, tok = archbench.build("rwkv7-tiny"), load_tokenizer("bytes")
    run_grid(model, tok, grid([900], depths=[50], task="needle"), tmp_path, "m", progress=False)
    run_grid(model, tok, grid([900], depths=[50], task="needle", needles=4, queries=1), tmp_path, "m", progress=False)
    assert len(ResultsStore(tmp_path / "niah.jsonl").records()) == 1
    run_grid(model, tok, grid([900], depths=[50], task="needle", needles=2), tmp_path, "m", progress=False)
    records = ResultsStore(tmp_path / "niah.jsonl").records()
    assert len(records) == 2 and records[-1]["needles"] == 2


def test_bad_grids_and_haystacks_are_clear(tmp_path):
    with pytest.raises(ArchbenchError, match="needles must be"):
        grid([1024], task="needle", needles=0)
    with pytest.raises(ArchbenchError, match="queries must be"):
        grid([1024], task="multi-query", needles=2, queries=3)
    with pytest.raises(ArchbenchError, match="percents"):
        grid([1024], depths=[0, 120])
    with pytest.raises(ArchbenchError, match="at least 128"):
        grid([64])
    with pytest.raises(ArchbenchError, match="unknown task"):
        grid([1024], task="haystack")
    with pytest.raises(ArchbenchError, match="too short"):
        build_prompt(load_tokenizer("bytes"), Cell("multi-query", 200, 0, 0))
    (tmp_path / "one.txt").write_text("Only one sentence")
    with pytest.raises(ArchbenchError, match="too little text"):
        read_haystack(tmp_path / "one.txt")
    with pytest.raises(ArchbenchError, match="no such file"):
        read_haystack(tmp_path / "none.txt")
    (tmp_path / "story.txt").write_text("It was late. The lamp was lit! Who knocked? Nobody answered.")
    hay = read_haystack(tmp_path / "story.txt")
    prompt = build_prompt(load_tokenizer("bytes"), Cell("passkey", 600, 20, 0), haystack=hay)
    assert "The lamp was lit!" in load_tokenizer("bytes").decode(prompt["tokens"])
