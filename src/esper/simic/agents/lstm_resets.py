"""LSTM cores replayed over chunks that may hold episode starts (``rnn.impl=esper``).

torch's fused LSTM cannot reset its state inside a sequence, so the default layout
(``rnn.impl=torch``) splits chunks at episode ends and pads them; at CartPole's episode
lengths that pads 256 rollout steps to ~400-640 slots, and the kernel's cost is per slot. This
path keeps every chunk a plain window of ``seq_len`` steps and resets the state where an
episode starts inside it, in a small C++ kernel (``lstm_resets.cpp``, built by torch's
extension loader; ``lstm_resets_pytorch`` stands in where it cannot be built): no padding,
and the actor's and critic's cores step together in one batched matmul per time step. The
input projections stay ordinary ``F.linear`` calls (one large GEMM each, differentiated by
autograd); the kernel runs only the recurrence. The weights are the ``nn.LSTM`` modules'
own, so checkpoints do not depend on the implementation.
"""

import functools
import logging
import os
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn
from torch.nn import functional

from esper.simic.agents import lstm_resets_pytorch

SOURCE = Path(__file__).with_name("lstm_resets.cpp")
KERNEL_VARIABLE = "ESPER_LSTM_KERNEL"
"""Set to ``pytorch`` (by ``kernel()`` when the build fails, or by hand): this process and
those it starts use the pure-PyTorch kernel without trying to build the extension."""
log = logging.getLogger(__name__)


class KernelBuildError(RuntimeError):
    """The C++ extension could not be built or loaded."""


def build_extension() -> ModuleType:
    """The compiled kernel; the first call in a fresh cache builds it (~40 s, needs a C++
    compiler, Python headers and ninja), later processes load it from torch's cache."""
    compiler = os.environ.get("CXX", "c++")  # what torch's extension loader compiles with
    if shutil.which(compiler) is None:
        raise KernelBuildError(f"no C++ compiler: {compiler} is not on PATH")
    # Imported only here: it imports setuptools, and CUDA builds of torch print a line
    # about the CUDA runtime on import.
    from torch.utils.cpp_extension import load  # noqa: PLC0415

    log.info("loading esper's LSTM kernel (a first build takes ~40 s)")
    try:
        return load("esper_lstm_resets", [str(SOURCE)], extra_cflags=["-O3"])
    except (OSError, RuntimeError, ImportError) as error:
        raise KernelBuildError(build_failure(str(error))) from error


def build_failure(output: str) -> str:
    """One line of a failed build's output: the compiler's last error line, if any."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines[1:] if "error" in line.lower()]
    return (errors or lines or ["the build failed without a message"])[-1]


@functools.cache
def kernel() -> ModuleType:
    """The C++ kernel, or ``lstm_resets_pytorch`` (same results, slower) with one warning
    line when it cannot be built. The entry point calls this once before any job starts;
    a failure is passed on to the jobs through ``ESPER_LSTM_KERNEL`` so that N jobs do not
    retry N builds."""
    if os.environ.get(KERNEL_VARIABLE) == "pytorch":
        return lstm_resets_pytorch
    try:
        return build_extension()
    except KernelBuildError as error:
        log.warning(
            "agent.rnn.impl=esper: using the pure-PyTorch LSTM kernel (slower), the C++ one "
            "could not be built (%s); install a C++ compiler and `esper-simic[kernel]` for it",
            error,
        )
        os.environ[KERNEL_VARIABLE] = "pytorch"
        return lstm_resets_pytorch


# The kernel as torch custom ops (opaque nodes in a compiled graph, shaped by their fake
# implementations) and ``_Recurrence`` tying them together for autograd and torch.func.
_LIBRARY = torch.library.Library("esper", "DEF")
_LIBRARY.define(
    "lstm_resets(Tensor xg, Tensor w_hh, Tensor h0, Tensor c0, Tensor keep, Tensor init_h, "
    "Tensor init_c) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)"
)
_LIBRARY.define(
    "lstm_resets_backward(Tensor grad_hs, Tensor grad_c, Tensor w_hh, Tensor keep, "
    "Tensor gates, Tensor h_prev, Tensor c_prev, Tensor tanh_c) "
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)"
)


@torch.library.impl(_LIBRARY, "lstm_resets", "CPU")
def _recurrence(
    xg: torch.Tensor,
    w_hh: torch.Tensor,
    h0: torch.Tensor,
    c0: torch.Tensor,
    keep: torch.Tensor,
    init_h: torch.Tensor,
    init_c: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``xg`` [T, K, B, 4H] (input projection plus both biases), ``w_hh`` [K, 4H, H],
    ``h0``/``c0`` [K, B, H], ``keep`` [T, B] (0 where an episode starts), ``init_h``/``init_c``
    [K, 1, H] -> (h at every step [T, K, B, H], final c [K, B, H], then the activations
    the backward reads)."""
    hs, cs, gates, h_prev, c_prev, tanh_c = kernel().forward(xg, w_hh, h0, c0, keep, init_h, init_c)
    return hs, cs[-1].clone(), gates, h_prev, c_prev, tanh_c


@torch.library.register_fake("esper::lstm_resets", lib=_LIBRARY)
def _(
    xg: torch.Tensor,
    w_hh: torch.Tensor,
    h0: torch.Tensor,
    c0: torch.Tensor,
    keep: torch.Tensor,
    init_h: torch.Tensor,
    init_c: torch.Tensor,
) -> tuple[torch.Tensor, ...]:
    steps, cores, batch, gates = xg.shape

    def state() -> torch.Tensor:
        return xg.new_empty(steps, cores, batch, gates // 4)

    return state(), h0.new_empty(h0.shape), xg.new_empty(xg.shape), state(), state(), state()


@torch.library.impl(_LIBRARY, "lstm_resets_backward", "CPU")
def _recurrence_backward(
    grad_hs: torch.Tensor,
    grad_c: torch.Tensor,
    w_hh: torch.Tensor,
    keep: torch.Tensor,
    gates: torch.Tensor,
    h_prev: torch.Tensor,
    c_prev: torch.Tensor,
    tanh_c: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of ``_recurrence``'s inputs xg, w_hh, h0, c0, init_h, init_c from those of
    h at every step and of the final c."""
    d_xg, d_w_hh, d_h0, d_c0, d_init_h, d_init_c = kernel().backward(
        grad_hs, grad_c, w_hh, keep, gates, h_prev, c_prev, tanh_c
    )
    return d_xg, d_w_hh, d_h0, d_c0, d_init_h, d_init_c


@torch.library.register_fake("esper::lstm_resets_backward", lib=_LIBRARY)
def _(
    grad_hs: torch.Tensor,
    grad_c: torch.Tensor,
    w_hh: torch.Tensor,
    keep: torch.Tensor,
    gates: torch.Tensor,
    h_prev: torch.Tensor,
    c_prev: torch.Tensor,
    tanh_c: torch.Tensor,
) -> tuple[torch.Tensor, ...]:
    initial = grad_c.new_empty(grad_c.shape[0], 1, grad_c.shape[2])
    return (
        gates.new_empty(gates.shape),
        w_hh.new_empty(w_hh.shape),
        grad_c.new_empty(grad_c.shape),
        grad_c.new_empty(grad_c.shape),
        initial,
        initial.new_empty(initial.shape),
    )


class _Recurrence(torch.autograd.Function):
    """``_recurrence`` with its gradient, in the form torch.func transforms accept (the
    compiled step differentiates with ``torch.func.grad_and_value``)."""

    @staticmethod
    def forward(
        xg: torch.Tensor,
        w_hh: torch.Tensor,
        h0: torch.Tensor,
        c0: torch.Tensor,
        keep: torch.Tensor,
        init_h: torch.Tensor,
        init_c: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        return torch.ops.esper.lstm_resets(xg, w_hh, h0, c0, keep, init_h, init_c)

    @staticmethod
    def setup_context(
        ctx: Any, inputs: tuple[torch.Tensor, ...], output: tuple[torch.Tensor, ...]
    ) -> None:
        _, w_hh, _, _, keep, _, _ = inputs
        _, _, gates, h_prev, c_prev, tanh_c = output
        ctx.mark_non_differentiable(gates, h_prev, c_prev, tanh_c)
        ctx.save_for_backward(w_hh, keep, gates, h_prev, c_prev, tanh_c)

    @staticmethod
    def backward(
        ctx: Any, grad_hs: torch.Tensor, grad_c: torch.Tensor, *_: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        w_hh, keep, gates, h_prev, c_prev, tanh_c = ctx.saved_tensors
        d_xg, d_w_hh, d_h0, d_c0, d_init_h, d_init_c = torch.ops.esper.lstm_resets_backward(
            grad_hs, grad_c, w_hh, keep, gates, h_prev, c_prev, tanh_c
        )
        return d_xg, d_w_hh, d_h0, d_c0, None, d_init_h, d_init_c


def lstm_with_resets(
    cores: list[nn.LSTM],
    inputs: list[torch.Tensor],
    h0: torch.Tensor,
    c0: torch.Tensor,
    starts: torch.Tensor,
    init_h: torch.Tensor,
    init_c: torch.Tensor,
) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Replay ``cores`` (same hidden size and depth) over their ``inputs`` [L, B, F_k].

    ``h0``/``c0``/``init_h``/``init_c``: ``[cores x layers, B or 1, H]``, core by core as
    ``RecurrentState`` lays them out. ``starts`` [L, B] bool: an episode starts at that
    step, so the state is replaced by the initial state before it (at row 0 as anywhere).
    Returns each core's last-layer outputs [L, B, H] and the final h and c.
    """
    layers = cores[0].num_layers
    keep = (~starts).to(h0.dtype)
    # Layer l of core k is row k * layers + l of the state.
    order = [k * layers + layer for layer in range(layers) for k in range(len(cores))]
    finals_h, finals_c = [], []
    for layer in range(layers):
        rows = order[layer * len(cores) : (layer + 1) * len(cores)]
        xg = torch.stack(
            [
                functional.linear(
                    x,
                    getattr(core, f"weight_ih_l{layer}"),
                    getattr(core, f"bias_ih_l{layer}") + getattr(core, f"bias_hh_l{layer}"),
                )
                for core, x in zip(cores, inputs, strict=True)
            ],
            dim=1,
        )
        w_hh = torch.stack([getattr(core, f"weight_hh_l{layer}") for core in cores])
        hs, c, *_ = _Recurrence.apply(
            xg, w_hh, h0[rows], c0[rows], keep, init_h[rows], init_c[rows]
        )
        inputs = list(hs.unbind(1))
        finals_h.append(hs[-1])
        finals_c.append(c)
    # Back from (layer, core) order to the state's (core, layer) order.
    position = {row: i for i, row in enumerate(order)}
    state_order = [position[row] for row in range(len(order))]
    h = torch.cat(finals_h)[state_order]
    c = torch.cat(finals_c)[state_order]
    return inputs, h, c
