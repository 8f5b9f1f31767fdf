"""Perplexity: windowed equals a direct computation from the model's logits, streaming in
chunks of any size equals one pass, bits per byte counts the text's UTF-8 bytes."""
import json
import math

import pytest
import torch

import archbench
from archbench.harness.cli import main
from archbench.harness.errors import ArchbenchError
from archbench.models.tokenizer import load_tokenizer
from archbench.suites.perplexity import evaluate, load_documents, token_logprobs
from helpers import tiny_neox_folder

TEXT = "Perplexity is how people compare language models: ünïcödé bytes count too. " * 3


@pytest.fixture(scope="module")
def model():
    return archbench.build("rwkv7-tiny", seed=1)


def direct_windowed(model, tokens, prefix, L):
    """Each token scored from its own forward pass over its lm-eval window."""
    full, n, out = [prefix] + tokens, len(tokens), []
    for i in range(n):
        e = min((i // L + 1) * L, n)
        lo = max(0, e - L)
        logits, _ = model.forward(torch.tensor([full[lo:e]]))
        out.append(torch.log_softmax(logits[0, i - lo], -1)[tokens[i]].item())
    return torch.tensor(out)


def test_windowed_equals_direct_computation(model):
    tokens = load_tokenizer("bytes").encode(TEXT)[:70]
    lp = token_logprobs(model, tokens, 0, "windowed", max_length=16)
    torch.testing.assert_close(lp, direct_windowed(model, tokens, 0, 16), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_streaming_in_chunks_equals_one_pass(model, chunk):
    tokens = load_tokenizer("bytes").encode(TEXT)
    one = token_logprobs(model, tokens, 0, "streaming")
    torch.testing.assert_close(token_logprobs(model, tokens, 0, "streaming", chunk=chunk), one, rtol=1e-5, atol=1e-5)


def test_one_window_equals_streaming_and_short_documents_work(model):
    tokens = load_tokenizer("bytes").encode("short")
    a = token_logprobs(model, tokens, 0, "windowed", max_length=1024)
    b = token_logprobs(model, tokens, 0, "sliding", max_length=1024, stride=100)
    c = token_logprobs(model, tokens, 0, "streaming")
    torch.testing.assert_close(a, c)
    torch.testing.assert_close(b, c)
    assert len(a) == 5


def test_sliding_scores_every_token_once_with_more_context(model):
    tokens = load_tokenizer("bytes").encode(TEXT)[:60]
    lp = token_logprobs(model, tokens, 0, "sliding", max_length=20, stride=5)
    assert lp.shape == (60,)
    # token 25 is scored in the window ending at 25 + (5 - 25 % 5) with 20 tokens of input
    full = [0] + tokens
    logits, _ = model.forward(torch.tensor([full[10:30]]))
    assert lp[25].item() == pytest.approx(torch.log_softmax(logits[0, 15], -1)[tokens[25]].item(), abs=1e-5)


def test_bits_per_byte_and_word_perplexity(model):
    tok = load_tokenizer("bytes")
    result = evaluate(model, tok, [TEXT, "zwei Wörter"], mode="windowed", max_length=32)
    assert result.bytes == len(TEXT.encode()) + len("zwei Wörter".encode()) > len(TEXT) + 11
    assert result.words == len(TEXT.split()) + 2
    assert result.bits_per_byte == pytest.approx(result.nll / math.log(2) / result.bytes)
    assert result.token_perplexity == pytest.approx(math.exp(result.nll / result.tokens))
    buckets = result.loss_by_position()
    assert list(buckets)[:4] == [0, 1, 2, 4] and sum(c for _, c in result.position_nll.values()) == result.tokens


def test_bad_inputs_are_clear(tmp_path):
    (tmp_path / "empty.txt").write_text("  \n")
    (tmp_path / "rows.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ArchbenchError, match="empty"):
        load_documents(tmp_path / "empty.txt")
    with pytest.raises(ArchbenchError, match="no field 'text'.*body"):
        load_documents(tmp_path / "rows.jsonl")
    with pytest.raises(ArchbenchError, match="not UTF-8"):
        load_documents(tmp_path / "latin1.txt")
    with pytest.raises(ArchbenchError, match="no such file"):
        load_documents(tmp_path / "missing.txt")


def test_unreachable_dataset_is_one_clear_error(monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ArchbenchError, match="could not load dataset 'no-such-org/no-such-set'"):
        load_documents("hf:no-such-org/no-such-set")


def test_cli_appends_a_record(tmp_path, capsys):
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in (TEXT, "another document")))
    assert main(["ppl", "--model", "rwkv6-tiny", "--data", str(data), "--mode", "streaming", "--chunk", "16",
                 "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    record = json.loads((tmp_path / "run" / "ppl.jsonl").read_text())
    assert record["documents"] == 2 and record["tokens"] == len(TEXT.encode()) + 16
    assert "bits/byte" in capsys.readouterr().out
    assert (tmp_path / "run" / "loss_by_position.png").read_bytes()[:4] == b"\x89PNG"


def test_windowed_equals_lm_eval_loglikelihood_rolling(tmp_path):
    """The same tiny GPT-NeoX weights and tokenizer, the same text: our windowed log-likelihood
    equals lm-eval's HFLM.loglikelihood_rolling."""
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    folder = tiny_neox_folder(tmp_path / "tiny-neox", TEXT)
    texts = [TEXT, "a document shorter than one window"]
    hflm = HFLM(pretrained=str(folder), device="cpu", max_length=32, batch_size=1, dtype="float32")
    theirs = hflm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (t,), i) for i, t in enumerate(texts)],
                                        disable_tqdm=True)
    ours = [-evaluate(archbench.load(folder), load_tokenizer(folder), [t], mode="windowed", max_length=32).nll
            for t in texts]
    assert len(load_tokenizer(folder).encode(TEXT)) > 3 * 32  # several windows
    for a, b in zip(ours, theirs):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-6)


class RunsOutOfMemory:
    """A Transformer whose cache cannot hold more than `limit` tokens: forward raises CUDA's
    out-of-memory error past it, as a growing KV cache does on a GPU."""

    def __init__(self, limit: int):
        self.inner, self.limit = archbench.build("pythia-tiny", seed=1), limit
        self.device, self.config = self.inner.device, self.inner.config

    def forward(self, tokens, state=None, **kw):
        held = 0 if state is None else state.length
        if held + tokens.shape[1] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.inner.forward(tokens, state, **kw)


def test_streaming_a_transformer_stops_at_oom_and_keeps_what_it_scored():
    tok = load_tokenizer("bytes")
    docs = [TEXT, TEXT[:20]]
    model = RunsOutOfMemory(limit=100)
    result = evaluate(model, tok, docs, mode="streaming", chunk=32)
    # document 0: three chunks of 32 fit (96 tokens), the fourth would pass 100; document 1 fits
    assert result.stopped == [dict(document=0, tokens_scored=96, tokens=len(tok.encode(TEXT)),
                                   error=result.stopped[0]["error"])]
    assert "out of memory" in result.stopped[0]["error"] and result.summary()["status"] == "OOM"
    expected = evaluate(model.inner, tok, [tok.decode(tok.encode(TEXT)[:96]), TEXT[:20]], mode="streaming", chunk=32)
    assert result.tokens == expected.tokens == 96 + 20 and result.bytes == expected.bytes
    assert result.token_perplexity == pytest.approx(expected.token_perplexity, rel=1e-9)
