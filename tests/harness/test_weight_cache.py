"""build() with ARCHBENCH_WEIGHT_CACHE: the second build loads the weights the first drew."""
import pytest
import torch

import archbench
from archbench.harness import registry


@pytest.mark.parametrize("name", ["rwkv7-tiny", "pythia-tiny", "mamba2-tiny"])
def test_cached_build_equals_fresh_build(name, tmp_path, monkeypatch):
    fresh = archbench.build(name, dtype="bfloat16")
    monkeypatch.setenv(registry.WEIGHT_CACHE_ENV, str(tmp_path))
    first = archbench.build(name, dtype="bfloat16")
    assert len(list(tmp_path.glob("*.pt"))) == 1
    again = archbench.build(name, dtype="bfloat16")
    x = torch.randint(0, fresh.config.vocab_size, (1, 9))
    outs = [m.forward(x, m.init_state(1, max_len=16))[0] for m in (fresh, first, again)]
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])
