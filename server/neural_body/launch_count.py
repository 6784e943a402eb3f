"""How many tensor operations a piece of work dispatches, and how many of them wait for the device: counted on any
device (a CPU included) by a dispatch mode.

On a GPU each operation is at least one kernel launch, and a frame that launches thousands of small kernels or reads
results back hundreds of times is bound by the host, not by the GPU's arithmetic (measured on an H200: a 512² fast
frame kept the GPU busy 36 ms of 250 ms). The counts are the same on every device, so they can be measured, and held
down by tests, on a machine without one.

``count_launches(fn)`` → ``(fn's result, LaunchCount)``:

- ``ops``: dispatched aten operations (kernel launches on a GPU, before fusion);
- ``syncs``: operations whose result size or value the host must read before going on (``nonzero``, ``.item()``,
  ``bool(tensor)``, boolean-mask indexing, ``unique``, ...): each stalls the launch queue on a GPU;
- ``host_tensors``: tensors made from host data (``torch.tensor``, ``as_tensor``, ``from_numpy``): a host-to-device
  copy each when they go to a GPU.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch.utils._python_dispatch import TorchDispatchMode

T = TypeVar("T")

# Operations that read a device result back to the host (their output size or a value depends on data).
_SYNC_OPS = frozenset({
    "aten::nonzero", "aten::_local_scalar_dense", "aten::is_nonzero", "aten::equal", "aten::masked_select",
    "aten::masked_scatter", "aten::masked_scatter_", "aten::unique_consecutive", "aten::_unique", "aten::_unique2",
    "aten::unique_dim", "aten::nonzero_static", "aten::repeat_interleave",
})
_MASK_INDEX_OPS = frozenset({"aten::index", "aten::index_put", "aten::index_put_", "aten::_index_put_impl_"})


@dataclass
class LaunchCount:
    ops: int = 0
    syncs: int = 0
    host_tensors: int = 0
    by_op: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {"ops": self.ops, "syncs": self.syncs, "host_tensors": self.host_tensors}


def _bool_index(args: tuple[Any, ...]) -> bool:
    indices = args[1] if len(args) > 1 else None
    return isinstance(indices, (list, tuple)) and any(
        isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices)


class _Counter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = LaunchCount()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        name = func._schema.name
        count = self.count
        count.by_op[name] += 1
        if name == "aten::lift_fresh":
            count.host_tensors += 1
        else:
            count.ops += 1
            if name in _SYNC_OPS or (name in _MASK_INDEX_OPS and _bool_index(args)):
                count.syncs += 1
        return func(*args, **(kwargs or {}))


def count_launches(fn: Callable[[], T]) -> tuple[T, LaunchCount]:
    """Run ``fn()`` counting the tensor operations it dispatches (see the module doc)."""
    counter = _Counter()
    with counter:
        result = fn()
    return result, counter.count
