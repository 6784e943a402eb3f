"""Small constants made on their device (pure torch, fast): the values of ``torch.tensor``, without host data."""

from __future__ import annotations

import pytest
import torch

from server.neural_body.device_values import device_values
from server.neural_body.launch_count import count_launches


@pytest.mark.parametrize(("values", "dtype"), [
    ([0, 7, 123456789], torch.int32),
    ([[1.0, 2.5, -3.0], [4.0, 5.0, 6.0]], torch.float32),
    ([], torch.int64),
])
def test_device_values_are_torch_tensor_without_host_tensors(values, dtype):
    made, count = count_launches(lambda: device_values(values, dtype=dtype, device="cpu"))
    expected = torch.tensor(values, dtype=dtype)
    assert made.dtype == dtype and made.shape == expected.shape and torch.equal(made, expected)
    assert count.host_tensors == 0 and count.syncs == 0
