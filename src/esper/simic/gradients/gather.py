"""Collect the gradients of named parameter groups into foreach-ready buckets.

``torch._foreach_*`` kernels need tensor lists of one device and dtype, and they do not
accept sparse tensors, so the gradients are bucketed once per step the way
``torch.nn.utils.clip_grad_norm_`` does (``_group_tensors_by_device_and_dtype``), sparse
gradients are set aside for a per-tensor fallback, and a ``GradLayout`` records where each
group's tensors land in the per-tensor norm vector, so that group norms can later be read off
that vector instead of re-norming the gradients.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from operator import attrgetter

import torch

# ``grad/global_norm`` is the all-group norm, so a group may not be called "global".
RESERVED_GROUP_NAME = "global"

_is_sparse = attrgetter("is_sparse")
_grad = attrgetter("grad")


@dataclass(frozen=True, slots=True)
class GradLayout:
    """Static description of one step's per-tensor norm vector (names and sizes, no values).

    Built from Python metadata only (which parameters have a gradient, their dtype and
    device), so reading it never waits for the accelerator.
    """

    # Group names in the order the trainer passed them.
    group_names: tuple[str, ...]
    # (group index, start, stop): norm-vector entries [start, stop) belong to that group. A group
    # owns several runs when its tensors span dtypes or devices, none when it has no gradient.
    runs: tuple[tuple[int, int, int], ...]
    # Number of gradient tensors (= length of the norm vector).
    num_tensors: int
    # Total number of gradient elements, the denominator of the zero fraction.
    numel: int


@dataclass(frozen=True, slots=True)
class GradBatch:
    """One step's gradients, bucketed for the foreach kernels, plus their layout."""

    # Dense gradients, one list per (device, dtype); their norms come first, in this order.
    buckets: tuple[list[torch.Tensor], ...]
    # Sparse gradients; their norms follow the dense ones.
    sparse: tuple[torch.Tensor, ...]
    layout: GradLayout
    # Device the norm vector is assembled on: the first gathered gradient's, as clip_grad_norm_
    # uses its first gradient's.
    device: torch.device


def gather(groups: Mapping[str, Iterable[torch.Tensor]]) -> GradBatch:
    """Bucket the gradients of ``groups`` (name -> parameters); parameters without one are skipped.

    Raises ``ValueError`` if a parameter appears in two groups: the global norm would count it
    twice and clipping would scale it twice, so shared parameters need a group of their own.
    """
    params = {name: list(group) for name, group in groups.items()}
    flat_params = [p for group in params.values() for p in group]
    if len(set(map(id, flat_params))) != len(flat_params):
        raise ValueError("a parameter appears in more than one gradient group")
    # One ``.grad`` read per parameter: a Python property call, a noticeable share of a
    # many-small-tensor step that every collector pays alike.
    return bucket_tensors(
        {name: [g for g in map(_grad, group) if g is not None] for name, group in params.items()}
    )


def bucket_tensors(groups: Mapping[str, Iterable[torch.Tensor]]) -> GradBatch:
    """Bucket the tensors of ``groups`` (name -> gradient tensors) as ``gather`` does.

    Given the parameters themselves, it gives the layout and bucket order their gradients
    will have: a compiled training step builds its ``GradBatch`` from that static plan,
    because the bucketing itself is Python work that cannot run inside a graph.
    """
    if RESERVED_GROUP_NAME in groups:
        raise ValueError(f"group name {RESERVED_GROUP_NAME!r} is reserved for the global norm")
    names = tuple(groups)
    per_group = [list(group) for group in groups.values()]

    dense: list[torch.Tensor] = []
    dense_bounds: list[tuple[int, int]] = []
    sparse: list[torch.Tensor] = []
    sparse_groups: list[int] = []
    for index, grads in enumerate(per_group):
        start = len(dense)
        if any(map(_is_sparse, grads)):  # rare: split the group's gradients by layout
            sparse += [g for g in grads if g.is_sparse]
            sparse_groups += [index] * (len(sparse) - len(sparse_groups))
            dense += [g for g in grads if not g.is_sparse]
        else:
            dense += grads
        dense_bounds.append((start, len(dense)))

    buckets: list[list[torch.Tensor]] = []
    runs: list[tuple[int, int, int]] = []
    if dense:
        # Stable grouping: within a bucket, tensors keep their relative order, so each group's
        # tensors form one contiguous run per bucket, found by bisecting the bucket's indices.
        grouped = torch._C._group_tensors_by_device_and_dtype([dense], True)
        for [tensors], indices in grouped.values():
            offset = sum(map(len, buckets))
            for group_index, (lo, hi) in enumerate(dense_bounds):
                start, stop = bisect_left(indices, lo), bisect_left(indices, hi)
                if stop > start:
                    runs.append((group_index, offset + start, offset + stop))
            buckets.append(tensors)
    offset = len(dense)
    runs.extend((group, offset + i, offset + i + 1) for i, group in enumerate(sparse_groups))

    every_grad = dense + sparse
    layout = GradLayout(
        group_names=names,
        runs=tuple(runs),
        num_tensors=len(every_grad),
        numel=sum(map(torch.Tensor.numel, every_grad)),
    )
    device = every_grad[0].device if every_grad else torch.device("cpu")
    return GradBatch(tuple(buckets), tuple(sparse), layout, device)
