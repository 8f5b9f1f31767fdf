"""The CUDA ops' input checks (kernels/build.py), on CPU: what reaches the binding is on the
GPU, on one device, with a state of the right shape and dtype on that device."""
import pytest
import torch

from archbench.kernels.build import check_inputs, state_for


def test_inputs_off_the_gpu_are_an_error():
    x = torch.zeros(1, 4, 2, 64)
    with pytest.raises(ValueError, match="needs every input on the GPU"):
        check_inputs("wkv7", dict(r=x, k=x), tuple(x.shape))


def test_state_is_checked_and_moved_to_the_inputs_device():
    shape = (1, 2, 64, 64)
    s = torch.randn(shape)
    on = torch.device("meta")  # stands in for another GPU: a device the state is not on
    moved = state_for("wkv7", s, shape, False, on)
    assert moved.device == on and moved.shape == shape and moved.is_contiguous()
    with pytest.raises(ValueError, match="in-place state must be on the inputs' device"):
        state_for("wkv7", s, shape, True, on)
    same = state_for("wkv7", s, shape, False, s.device)
    assert same.data_ptr() != s.data_ptr() and torch.equal(same, s)  # a copy: the caller's state is kept
    assert state_for("wkv7", s, shape, True, s.device) is s
    with pytest.raises(ValueError, match="state must be float32"):
        state_for("wkv7", s.double(), shape, False, s.device)
    with pytest.raises(ValueError, match="state must be float32"):
        state_for("wkv7", s[:, :1], shape, False, s.device)


def test_chunked_launch_codes():
    """variant 4 (the state pass's keys split) only where the op has it, and only in two kernels."""
    from archbench.kernels.build import chunked_variant
    assert chunked_variant(3, 2, 1) == 123 and chunked_variant(0, 0) == 0
    assert chunked_variant(4, 0, 0, key_split=True) == 204 == chunked_variant(4, 0, 2, key_split=True)
    with pytest.raises(ValueError, match="variant must be one of"):
        chunked_variant(4, 0, 0)  # WKV7: no key split (Eᵀ mixes the keys)
    with pytest.raises(ValueError, match="two-kernel form"):
        chunked_variant(4, 0, 1, key_split=True)
    with pytest.raises(ValueError):
        chunked_variant(5, 0, 0, key_split=True)
