"""Per-tensor gradient norms, global-norm clipping and element counts over a ``GradBatch``.

Everything here returns tensors and never reads a value back to the host, so a CUDA step
can run ahead of the CPU; the one host sync per update happens in ``stats.materialize``.
"""

from __future__ import annotations

import torch

from esper.simic.gradients.gather import GradBatch

_HALF_DTYPES = (torch.float16, torch.bfloat16)


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype | None:
    """Dtype to accumulate a norm in: fp32 for fp16/bf16, else the input's own (``None``).

    A 100k-element fp16 tensor of 300.0 has L2 norm ~94868, above fp16's maximum 65504, and
    torch's own ``clip_grad_norm_`` returns inf for it (then zeroes every gradient). fp32 and
    fp64 keep their dtype so their norms match ``clip_grad_norm_`` bit for bit.
    """
    return torch.float32 if dtype in _HALF_DTYPES else None


def sparse_norm(grad: torch.Tensor) -> torch.Tensor:
    """L2 norm of a sparse COO gradient such as ``nn.Embedding(sparse=True)`` produces.

    ``linalg.vector_norm`` and ``_foreach_norm`` have no sparse kernel (``clip_grad_norm_``
    raises on such a gradient). Coalescing first sums duplicate indices: the norm of an
    uncoalesced tensor's raw values is wrong. On CUDA ``coalesce`` syncs with the host (its
    output size depends on the data), the one exception to this module's no-sync rule.
    """
    values = grad.coalesce().values()
    return torch.linalg.vector_norm(values, 2, dtype=accumulation_dtype(grad.dtype))


def loop_norms(batch: GradBatch) -> torch.Tensor:
    """Per-tensor L2 norms with one ``Tensor.norm`` call per gradient: Esper's original loop."""
    parts = [
        torch.stack([g.norm(2, dtype=accumulation_dtype(g.dtype)) for g in bucket])
        for bucket in batch.buckets
    ]
    return _assemble([*parts, *_sparse_norms(batch)], batch.device)


def foreach_norms(batch: GradBatch) -> torch.Tensor:
    """Per-tensor L2 norms with one ``torch._foreach_norm`` call per (device, dtype) bucket.

    The same kernel ``clip_grad_norm_`` uses (torch/nn/utils/clip_grad.py, ``_get_total_norm``);
    on CUDA it is a single multi-tensor launch per bucket instead of one launch per tensor.
    """
    parts = [torch.stack(_bucket_norms(bucket)) for bucket in batch.buckets]
    return _assemble([*parts, *_sparse_norms(batch)], batch.device)


def _bucket_norms(bucket: list[torch.Tensor]) -> list[torch.Tensor]:
    """``torch._foreach_norm`` of one bucket, or per-tensor norms while being compiled.

    In a compiled graph (``whole_step``) ``_foreach_norm`` stays an opaque call between the
    backward pass and the clipping (on CPU a loop of per-tensor norms of its own), whereas
    per-tensor norms become reductions that inductor fuses with the clipping and the
    optimiser step. Eager runs, which this module's collectors compare, keep the foreach
    kernel.
    """
    dtype = accumulation_dtype(bucket[0].dtype)
    if torch.compiler.is_compiling():
        return [torch.linalg.vector_norm(g, 2, dtype=dtype) for g in bucket]
    return torch._foreach_norm(bucket, 2, dtype=dtype)


def total_norm(norms: torch.Tensor) -> torch.Tensor:
    """Global L2 norm from per-tensor norms, the way ``clip_grad_norm_`` reduces them."""
    return torch.linalg.vector_norm(norms, 2)


def clip_(batch: GradBatch, norms: torch.Tensor, max_norm: float) -> torch.Tensor:
    """Scale the gradients in place so their global norm is at most ``max_norm``.

    Mirrors ``torch.nn.utils.clip_grads_with_norm_``: ``coef = max_norm / (total + 1e-6)``
    clamped to 1, multiplied in even when it is 1 because testing ``coef < 1`` would sync
    with the device. Returns the pre-clip global norm.
    """
    total = total_norm(norms)
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for bucket in batch.buckets:
        torch._foreach_mul_(bucket, coef.to(bucket[0].device))
    for grad in batch.sparse:
        grad.mul_(coef.to(grad.device))
    return total


def element_counts(batch: GradBatch) -> torch.Tensor:
    """int64 ``[zero, NaN, Inf]`` element counts over every gradient: an opt-in extra pass."""
    rows = [_dense_counts(g) for bucket in batch.buckets for g in bucket]
    rows += [_sparse_counts(g) for g in batch.sparse]
    if not rows:
        return torch.zeros(3, dtype=torch.int64, device=batch.device)
    return torch.stack([row.to(batch.device) for row in rows]).sum(0)


def _dense_counts(grad: torch.Tensor) -> torch.Tensor:
    return torch.stack((grad.eq(0).sum(), grad.isnan().sum(), grad.isinf().sum()))


def _sparse_counts(grad: torch.Tensor) -> torch.Tensor:
    values = grad.coalesce().values()
    # Elements a sparse tensor does not store are zeros.
    zeros = grad.numel() - values.ne(0).sum()
    return torch.stack((zeros, values.isnan().sum(), values.isinf().sum()))


def _sparse_norms(batch: GradBatch) -> list[torch.Tensor]:
    return [torch.stack([sparse_norm(g) for g in batch.sparse])] if batch.sparse else []


def _assemble(parts: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """Concatenate per-bucket norm vectors on ``device``; one bucket (the usual case) is free.

    ``torch.cat`` promotes dtypes (fp32 and fp64 norms give fp64) as ``clip_grad_norm_``'s
    ``torch.stack`` does.
    """
    if len(parts) == 1:
        return parts[0]
    if not parts:
        return torch.zeros(0, device=device)
    return torch.cat([part.to(device) for part in parts])
