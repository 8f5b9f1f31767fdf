"""The protocol's promises that every family keeps, on tiny CPU models: `last_only` gives
the last position of the full logits, states are updated in place (so a decode step can be
captured in a graph), and checkpoint/restore brings a state back for a repeated decode."""
import pytest
import torch

import archbench
from archbench.harness.testing import assert_close
from archbench.harness.timing import time_fn

TINY = ["rwkv4-tiny", "rwkv5-tiny", "rwkv6-tiny", "rwkv7-tiny", "pythia-tiny", "mamba-tiny", "mamba2-tiny"]


@pytest.fixture(scope="module", params=TINY)
def model(request):
    return archbench.build(request.param)


def tokens(model, b=2, t=21, seed=0):
    return torch.randint(0, model.config.vocab_size, (b, t), generator=torch.Generator().manual_seed(seed))


def test_last_only_is_the_last_position(model):
    x = tokens(model)
    full, _ = model.forward(x, model.init_state(2, max_len=32))
    last, _ = model.forward(x, model.init_state(2, max_len=32), last_only=True)
    assert last.shape == (2, 1, model.config.vocab_size)
    assert_close(last, full[:, -1:], rms_rel=1e-5, what="last_only")


def test_step_updates_the_state_in_place(model):
    x = tokens(model)
    state = model.init_state(2, max_len=32)
    _, state = model.forward(x, state)
    before = {name: (t.data_ptr(), t.clone()) for name, t in state.tensors().items()}
    _, after = model.step(x[:, 0], state)
    assert after is state
    changed = False
    for name, t in state.tensors().items():
        assert t.data_ptr() == before[name][0], f"{name} was reallocated"
        changed |= not torch.equal(t, before[name][1])
    assert changed, "a step changed no state tensor"


def test_checkpoint_restore_repeats_a_decode(model):
    x = tokens(model)
    state = model.init_state(2, max_len=40)
    _, state = model.forward(x, state)
    saved = state.checkpoint()
    runs = []
    for _ in range(2):
        out, tok = [], x[:, -1]
        for _ in range(5):
            logits, _ = model.step(tok, state)
            out.append(logits)
            tok = logits.argmax(-1)
        runs.append(torch.stack(out))
        state.restore(saved)
    assert torch.equal(runs[0], runs[1])


def test_time_fn_cuts_repeats_to_the_budget():
    calls = []

    def slow():
        calls.append(1)
        import time
        time.sleep(0.05)

    row = time_fn(slow, "cpu", warmup=1, repeats=10, max_total_s=0.12)
    assert row["repeats"] == len(calls) - 1 == 2
    calls.clear()
    row = time_fn(slow, "cpu", warmup=0, repeats=10, max_total_s=0.12)
    assert row["repeats"] == len(calls) == 2


def test_decode_read_bytes_leave_out_an_untied_input_table(model):
    """decode_read_nbytes: every weight once, but not the input embedding table unless it is
    also the output head's weight (tied)."""
    from archbench.harness.interface import decode_read_nbytes
    if model.family.startswith("rwkv"):
        emb, head = model.emb.weight, model.head.weight
    elif model.family == "transformer":
        emb, head = model.lm.get_input_embeddings().weight, model.lm.get_output_embeddings().weight
    else:  # mamba, mamba2
        emb, head = model.embedding.weight, model.lm.lm_head.weight
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    expected = total if emb is head else total - emb.numel() * emb.element_size()
    assert decode_read_nbytes(model) == expected
    if emb is not head:
        assert decode_read_nbytes(model) < total
