"""archbench inside lm-eval: the same numbers as lm-eval's own HFLM on the same weights,
for the three request types; state reuse changes nothing but the work done."""
import pytest
import torch

pytest.importorskip("lm_eval")
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402

from archbench.suites.lm_eval_adapter import ArchbenchLM  # noqa: E402
from helpers import tiny_neox_folder  # noqa: E402

TEXT = "The quick brown fox jumps over the lazy dog. Then it sleeps, and the dog barks twice.\n" * 4
CHOICES = [("The quick brown fox", " jumps"), ("The quick brown fox", " sleeps"), ("The quick brown fox ", "barks"),
           ("", "The dog"), ("Then it", " sleeps, and the dog barks twice.")]


def requests(kind, args):
    return [Instance(kind, {}, a, i) for i, a in enumerate(args)]


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    folder = tiny_neox_folder(tmp_path_factory.mktemp("m") / "tiny-neox", TEXT)
    theirs = HFLM(pretrained=str(folder), device="cpu", max_length=24, batch_size=1, dtype="float32")
    ours = ArchbenchLM(model=str(folder), max_length=24)
    return ours, theirs


def test_loglikelihood_equals_hflm(both):
    ours, theirs = both
    a = ours.loglikelihood(requests("loglikelihood", CHOICES), disable_tqdm=True)
    b = theirs.loglikelihood(requests("loglikelihood", CHOICES), disable_tqdm=True)
    for (la, ga), (lb, gb) in zip(a, b):
        assert la == pytest.approx(lb, rel=1e-6, abs=1e-6) and ga == gb


def test_loglikelihood_rolling_equals_hflm(both):
    ours, theirs = both
    docs = [(TEXT,), ("short one",), (TEXT[:50],)]
    expected = theirs.loglikelihood_rolling(requests("loglikelihood_rolling", docs), disable_tqdm=True)
    for batch_size in (1, 3):  # windows of several documents in one right-padded batch
        ours.batch_size = batch_size
        got = ours.loglikelihood_rolling(requests("loglikelihood_rolling", docs), disable_tqdm=True)
        assert got == pytest.approx(expected, rel=1e-6, abs=1e-6)
    ours.batch_size = 1


def test_generate_until_equals_hflm_greedy(both):
    ours, theirs = both
    args = [("The quick brown", {"until": ["\n"], "max_gen_toks": 12, "do_sample": False}),
            ("Then it sleeps", {"until": ["dog", "."], "max_gen_toks": 8})]
    assert ours.generate_until(requests("generate_until", args), disable_tqdm=True) == \
        theirs.generate_until(requests("generate_until", args), disable_tqdm=True)


@pytest.mark.parametrize("model", ["rwkv7-tiny", "mamba-tiny"])
def test_state_reuse_gives_identical_results(model):
    """Four continuations of one long context: scored with the context's state reused, and
    each pair from scratch."""
    context = "Question: which animal sleeps after jumping over the dog? Answer:"
    answers = (" the fox", " the dog", " a cat", " nobody", "!")  # "!": one token, scored by the context's pass
    choices = requests("loglikelihood", [(context, c) for c in answers])
    reuse = ArchbenchLM(model=model, reuse_state=True).loglikelihood(choices, disable_tqdm=True)
    fresh = ArchbenchLM(model=model, reuse_state=False).loglikelihood(choices, disable_tqdm=True)
    for (a, ga), (b, gb) in zip(reuse, fresh):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-5) and ga == gb
    assert len({round(a, 4) for a, _ in reuse}) == len(answers)  # the choices really differ


@pytest.mark.parametrize("batch_size", [2, 3])
@pytest.mark.parametrize("model", ["rwkv7-tiny", "mamba-tiny", "mamba2-tiny", "pythia-tiny"])
def test_batched_scoring_gives_identical_results(model, batch_size):
    """Right-padded batches, with and without the shared context's state (repeated per row),
    score exactly what one request at a time scores."""
    context = "Question: which animal sleeps after jumping over the dog? Answer:"
    pairs = [(context, c) for c in (" the fox", " the dog", " a cat", " nobody at all")] + \
        [("The lazy", " dog"), ("", "A whole sentence on its own."), ("Then it", " sleeps")]
    args = requests("loglikelihood", pairs)
    one = ArchbenchLM(model=model, batch_size=1).loglikelihood(args, disable_tqdm=True)
    for reuse in (True, False):
        many = ArchbenchLM(model=model, batch_size=batch_size, reuse_state=reuse).loglikelihood(args, disable_tqdm=True)
        for (a, ga), (b, gb) in zip(many, one):
            assert a == pytest.approx(b, rel=1e-5, abs=1e-5) and ga == gb


def test_sampling_is_seeded():
    lm = ArchbenchLM(model="rwkv6-tiny", seed=3)
    args = requests("generate_until", [("abc", {"until": ["zzz"], "max_gen_toks": 6, "do_sample": True,
                                                 "temperature": 1.0})])
    torch.manual_seed(0)
    assert lm.generate_until(args, disable_tqdm=True) == ArchbenchLM(model="rwkv6-tiny", seed=3).generate_until(
        args, disable_tqdm=True)


def test_lm_eval_command_line_runs_a_local_task(tmp_path):
    """lm-eval's own command line, with archbench registered, on one of our shipped tasks
    (YAML over local JSON lines: nothing downloaded)."""
    import os
    import subprocess
    import sys

    from archbench.suites.eval import local_tasks_dir
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
    for command in (["-m", "lm_eval"], ["-m", "archbench.suites.lm_eval_adapter"]):  # lm_eval itself, our alias
        done = subprocess.run([sys.executable, *command, "--model", "archbench", "--model_args", "model=rwkv7-tiny",
                               "--tasks", "archbench_mc", "--include_path", str(local_tasks_dir()),
                               "--output_path", str(tmp_path / "out")],
                              capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "archbench_mc" in done.stdout and "acc" in done.stdout
    # a model that does not exist: one line, no traceback
    done = subprocess.run([sys.executable, "-m", "lm_eval", "--model", "archbench", "--model_args", "model=nosuch",
                           "--tasks", "archbench_mc", "--include_path", str(local_tasks_dir())],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "archbench: unknown model 'nosuch'" in done.stderr


def test_start_up_hook_registers_lazily_and_only_once():
    """The hook the install puts in site-packages (setup.py, archbench-lm-eval.pth): a fresh
    interpreter imports neither archbench nor torch at start-up, and "archbench" appears in
    lm-eval's registry as a lazy target once lm_eval.models is imported, next to lm-eval's own."""
    import subprocess
    import sys
    code = ("import sys; assert 'torch' not in sys.modules and 'archbench' not in sys.modules\n"
            "import lm_eval.models\n"
            "from lm_eval.api.registry import model_registry as r\n"
            "assert isinstance(r._objs['archbench'], str) and 'hf' in r and 'torch' not in sys.modules\n"
            "from archbench.suites.lm_eval_adapter import ArchbenchLM\n"
            "assert r.get('archbench') is ArchbenchLM\n"
            "print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


@pytest.mark.parametrize("model", ["rwkv7-tiny", "mamba2-tiny"])
def test_batched_rolling_gives_identical_results(model):
    docs = requests("loglikelihood_rolling", [(TEXT,), ("short one",), (TEXT[:70],)])
    one = ArchbenchLM(model=model, max_length=32, batch_size=1).loglikelihood_rolling(docs, disable_tqdm=True)
    many = ArchbenchLM(model=model, max_length=32, batch_size=4).loglikelihood_rolling(docs, disable_tqdm=True)
    assert many == pytest.approx(one, rel=1e-5, abs=1e-5)
    assert len(set(round(x, 3) for x in one)) == 3


@pytest.mark.parametrize("model", ["rwkv7-tiny", "mamba-tiny", "pythia-tiny"])
def test_batched_generation_gives_identical_greedy_text(model):
    """Recurrent states from separate prefills batched for decoding (a Transformer decodes
    one request at a time): the same greedy text as one request at a time."""
    args = requests("generate_until", [("The quick brown", {"until": ["\n"], "max_gen_toks": 9}),
                                       ("Then it sleeps and", {"until": ["zzz"], "max_gen_toks": 5}),
                                       ("A", {"until": ["e"], "max_gen_toks": 12}),
                                       ("Question: which animal sleeps?", {"max_gen_toks": 0})])
    one = ArchbenchLM(model=model, batch_size=1).generate_until(args, disable_tqdm=True)
    many = ArchbenchLM(model=model, batch_size=3).generate_until(args, disable_tqdm=True)
    assert many == one
    assert len(one[0]) > 0 and one[3] == ""


def test_state_cat_refuses_a_kv_cache():
    lm = ArchbenchLM(model="pythia-tiny")
    a, b = lm.model.init_state(1, max_len=8), lm.model.init_state(1, max_len=8)
    with pytest.raises(ValueError, match="share one position"):
        type(a).cat([a, b])


def test_reuse_auto_follows_the_measurements():
    """reuse_state="auto": on a CPU and at batch 1 always; on a GPU at batch > 1 only when
    the choices are single tokens (then reuse is one forward call against one or more)."""
    from archbench.suites.lm_eval_adapter import reuse_pays
    many, single = [[5, 6], [7]], [[5], [7]]
    assert reuse_pays(1, "cuda", many) and reuse_pays(4, "cpu", many) and reuse_pays(4, "cuda", single)
    assert not reuse_pays(4, "cuda", many)
    assert ArchbenchLM(model="rwkv7-tiny").reuse_state == "auto"
    assert ArchbenchLM(model="rwkv7-tiny", reuse_state="False").reuse_state is False
