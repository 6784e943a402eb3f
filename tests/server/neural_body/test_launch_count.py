"""The dispatch-mode counter of tensor operations, host read-backs and host-made tensors."""

from __future__ import annotations

import numpy as np
import torch

from server.neural_body.launch_count import count_launches


def test_counts_operations_read_backs_and_host_tensors():
    x = torch.arange(10.0)

    def work() -> float:
        y = x * 2 + 1  # two operations, no read-back
        picked = y[y > 5]  # a boolean-mask index: its size is read back
        kept = torch.nonzero(y > 7)  # a read-back
        index = torch.tensor([1, 2])  # made from host data
        table = torch.from_numpy(np.ones(3))  # made from host data
        chosen = y.index_select(0, index)  # an index tensor: no read-back
        return float(picked.sum() + kept.numel() + chosen.sum() + table.sum())  # .item(): a read-back

    value, count = count_launches(work)
    assert value == (7 + 9 + 11 + 13 + 15 + 17 + 19) + 6 + (3 + 5) + 3  # the work is unchanged by counting
    assert count.syncs == 3  # the mask index, nonzero, float()
    assert count.host_tensors == 2
    assert count.by_op["aten::mul"] == 1 and count.by_op["aten::index_select"] == 1
    assert count.ops == sum(n for name, n in count.by_op.items() if name != "aten::lift_fresh")
    assert count.as_dict() == {"ops": count.ops, "syncs": 3, "host_tensors": 2}
