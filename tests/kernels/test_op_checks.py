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
