"""Small constant tensors made on their device, without a copy from the host.

On a GPU, ``torch.tensor(values, device="cuda")`` copies from pageable host memory, which waits until every kernel
queued before it has run: a read-back in all but name, and the host stops queueing the next work meanwhile. A
handful of values (strides, sizes, offsets) is cheaper written in place, one fill kernel each, queued like any other.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def device_values(values: Sequence[float] | Sequence[Sequence[float]], *, dtype: torch.dtype,
                  device: torch.device | str) -> torch.Tensor:
    """``torch.tensor(values, dtype=dtype, device=device)`` made by one fill per value on the device (meant for a few
    dozen values at most)."""
    array = np.asarray(values)
    out = torch.empty(array.shape, dtype=dtype, device=device)
    for index, value in np.ndenumerate(array):
        out[index].fill_(value.item())  # a Python number: an argument of the fill, not a host tensor
    return out
