"""``host="mlp"``: a real ~6.8K-parameter MLP and real seed modules, trained each epoch.

It exists to check the surrogate against the real thing: the same lifecycle, with the
host and seeds trained by Adam on a small synthetic 10-class task, counterfactuals
measured by switching seed modules off on the same validation set (so they share its
noise, as the surrogate's do), and gradient health read from the seeds' gradient norms.

The dataset is generated once, from a fixed seed, by a random teacher network wider than
the host. Two tasks (:data:`MLP_TASKS`, ``env.kwargs.mlp_task``): ``baseline``, 32 inputs
with 10% label noise and a 48-wide host, which the data limits rather than capacity, so
seeds add nothing; ``impaired``, 4 noiseless inputs and an 8-wide host, which capacity
limits, so seeds pay (docs/seed_lifecycle.md, sec. 12).

Seeds follow Esper's slot semantics (``kasmina/slot.py`` L2060-2150, L2278-2292): in
TRAINING the seed sees detached host features and learns through a straight-through
estimator without changing the host's output; from BLENDING on the output is
``lerp(host, seed, alpha)`` and host and seed co-adapt, as Esper does for non-CNN hosts.
(Esper keeps CNN seeds' inputs detached; in this MLP that starves every host layer below
a fully blended seed of gradient, and the host falls ~3 pp behind training alone.)
Blueprints are MLP analogues with Esper's parameter counts at the baseline's width.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Final, TypeVar, cast

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 (torch convention)

from esper.simic.envs.seed_lifecycle.constants import BLUEPRINTS, TRAINED_STAGES, SeedStage
from esper.simic.envs.seed_lifecycle.host import Evaluation
from esper.simic.envs.seed_lifecycle.lifecycle import Seed

DEPTH: Final = 3
NUM_CLASSES: Final = 10
TEACHER_WIDTH: Final = 512
TRAIN_SIZE: Final = 8192
VAL_SIZE: Final = 2048
DATASET_SEED: Final = 20_240_601
BATCH_SIZE: Final = 128
STEPS_PER_EPOCH: Final = 8
LEARNING_RATE: Final = 2e-3
# A seed's gradient health falls from 1 to 0 as its gradient norm grows from 1 to 100.
HEALTHY_GRAD_NORM: Final = 1.0

_F = TypeVar("_F", bound=Callable[..., Any])


@dataclass(frozen=True)
class MlpTask:
    """The synthetic task's inputs and label noise, and the host's hidden width."""

    input_dim: int
    label_noise: float
    width: int


MLP_TASKS: Final = {
    # 32-48-48-48-10, 6,778 parameters: data-limited, the MLP ends near 61% with or
    # without seeds.
    "baseline": MlpTask(input_dim=32, label_noise=0.1, width=48),
    # 4-8-8-8-10, 274 parameters (Esper's cifar_impaired host has 77): capacity-limited,
    # near 75% alone, and a fossilized seed adds 2-5 pp.
    "impaired": MlpTask(input_dim=4, label_noise=0.0, width=8),
}


def own_autograd(method: _F) -> _F:
    """Run ``method`` with autograd on, whatever the caller's context.

    The host trains inside ``env.step``, which the rollout calls under
    ``torch.inference_mode``: without this, weights built there are inference tensors
    and ``loss.backward()`` finds nothing that requires grad.
    """
    return cast(_F, torch.inference_mode(False)(torch.enable_grad()(method)))


def make_dataset(task: MlpTask) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_val, y_val), always the same: labels of a random teacher."""
    gen = torch.Generator().manual_seed(DATASET_SEED)
    total = TRAIN_SIZE + VAL_SIZE
    x = torch.randn(total, task.input_dim, generator=gen)
    w1 = torch.randn(task.input_dim, TEACHER_WIDTH, generator=gen) / math.sqrt(task.input_dim)
    w2 = torch.randn(TEACHER_WIDTH, NUM_CLASSES, generator=gen) / math.sqrt(TEACHER_WIDTH)
    y = (torch.relu(x @ w1) @ w2).argmax(dim=1)
    noisy = torch.rand(total, generator=gen) < task.label_noise
    y[noisy] = torch.randint(0, NUM_CLASSES, (int(noisy.sum()),), generator=gen)
    return x[:TRAIN_SIZE], y[:TRAIN_SIZE], x[TRAIN_SIZE:], y[TRAIN_SIZE:]


class _Residual(nn.Module):
    """h + W2 relu(W1 h): the conv_* blueprints' analogue."""

    def __init__(self, width: int, hidden: int, gen: torch.Generator) -> None:
        super().__init__()
        self.up = _linear(width, hidden, gen)
        self.down = _linear(hidden, width, gen)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.down(torch.relu(self.up(h)))


class _ChannelAttention(nn.Module):
    """h * 2 sigmoid(W2 relu(W1 h)): squeeze-excite style feature gating ("attention")."""

    def __init__(self, width: int, hidden: int, gen: torch.Generator) -> None:
        super().__init__()
        self.up = _linear(width, hidden, gen)
        self.down = _linear(hidden, width, gen)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h * 2.0 * torch.sigmoid(self.down(torch.relu(self.up(h))))


def _linear(fan_in: int, fan_out: int, gen: torch.Generator) -> nn.Linear:
    """nn.Linear with PyTorch's default init drawn from ``gen``, not the global RNG."""
    layer = torch.nn.utils.skip_init(nn.Linear, fan_in, fan_out)
    nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=gen)
    bound = 1.0 / math.sqrt(fan_in)
    nn.init.uniform_(layer.bias, -bound, bound, generator=gen)
    return layer


def make_seed_module(blueprint: int, gen: torch.Generator, width: int) -> nn.Module:
    """The MLP analogue of an Esper blueprint on a ``width``-wide host: at width 48 its
    parameter count is close to Esper's; the hidden sizes stay at any width."""
    name = BLUEPRINTS[blueprint].name
    if name == "norm":
        return nn.LayerNorm(width)  # 96 parameters at width 48 (Esper: 130)
    if name == "attention":
        return _ChannelAttention(width, 20, gen)  # 1,988 (2K)
    hidden = {"conv_small": 43, "conv_light": 384, "conv_heavy": 768}[name]
    return _Residual(width, hidden, gen)  # 4,219 (4.2K), 37,296 (37K), 74,544 (74K)


def build_host(gen: torch.Generator, task: MlpTask) -> tuple[nn.ModuleList, nn.Linear]:
    """Fresh host layers and head, drawn from ``gen`` in a fixed order."""
    dims = [task.input_dim] + [task.width] * DEPTH
    layers = nn.ModuleList(_linear(a, b, gen) for a, b in pairwise(dims))
    return layers, _linear(task.width, NUM_CLASSES, gen)


def gradient_health(grad_sq_sum: float) -> float:
    """Health in [0, 1] from a seed's squared gradient norms summed over the epoch's steps."""
    norm = math.sqrt(grad_sq_sum / STEPS_PER_EPOCH)
    excess = math.log10(max(norm / HEALTHY_GRAD_NORM, 1.0))
    return min(max(1.0 - excess / 2.0, 0.0), 1.0)


def draw_host_seed(rng: np.random.Generator) -> int:
    """The seed of a host run's generator (host init, seed init, batch indices)."""
    return int(rng.integers(2**62))


class MlpHost:
    """The real host: slot k sits after hidden layer k mod 3.

    With ``twin=True`` it also trains a twin for the PAIRED reward: a second host from the
    same seed that never gets a seed module, so it draws the same initial weights and the
    same batches as this host under WAIT (germination draws seed weights from this host's
    generator, which shifts its later batches; the twin's own generator never sees them).
    """

    def __init__(self, num_slots: int, task: MlpTask, twin: bool = False) -> None:
        self._num_slots, self._task = num_slots, task
        self._x_train, self._y_train, self._x_val, self._y_val = make_dataset(task)
        self._gen = torch.Generator()
        self._layers = nn.ModuleList()
        self._head = _linear(task.width, NUM_CLASSES, self._gen)
        self._optimizer: torch.optim.Optimizer | None = None
        self._seeds: list[nn.Module | None] = [None] * num_slots
        self._seed_optimizers: list[torch.optim.Optimizer | None] = [None] * num_slots
        self._twin = MlpHost(num_slots, task) if twin else None
        self._build(draw_host_seed(np.random.default_rng(0)))
        self.host_params = sum(p.numel() for p in self._parameters())

    def _parameters(self) -> list[nn.Parameter]:
        return [*self._layers.parameters(), *self._head.parameters()]

    def _build(self, seed: int) -> None:
        """New weights, and the batch/init stream, drawn from a generator seeded ``seed``."""
        self._gen.manual_seed(seed)
        self._layers, self._head = build_host(self._gen, self._task)
        self._optimizer = torch.optim.Adam(self._parameters(), lr=LEARNING_RATE, foreach=True)

    @own_autograd
    def reset(self, rng: np.random.Generator, max_epochs: int) -> None:
        """Fresh host weights (the twin's the same) and no seeds; the dataset stays the same."""
        seed = draw_host_seed(rng)
        self._build(seed)
        if self._twin is not None:
            self._twin._build(seed)
        self._seeds = [None] * self._num_slots
        self._seed_optimizers = [None] * self._num_slots

    def twin_accuracy(self) -> float:
        """Validation accuracy (%) of the twin: this host's network under WAIT."""
        if self._twin is None:
            raise RuntimeError("this host trains no twin: build it with twin=True")
        no_seeds = [None] * self._num_slots
        return self._twin._accuracy_and_loss(no_seeds, [False] * self._num_slots)[0]

    @own_autograd
    def germinate(self, slot: int, blueprint: int) -> None:
        """A freshly initialised seed module with its own Adam optimiser."""
        module = make_seed_module(blueprint, self._gen, self._task.width)
        self._seeds[slot] = module
        self._seed_optimizers[slot] = torch.optim.Adam(
            module.parameters(), lr=LEARNING_RATE, foreach=True
        )

    def remove(self, slot: int) -> None:
        """Drop the pruned module."""
        self._seeds[slot] = None
        self._seed_optimizers[slot] = None

    def seed_params(self, slot: int) -> int:
        """Parameters of the module in ``slot``."""
        module = self._seeds[slot]
        return 0 if module is None else sum(p.numel() for p in module.parameters())

    def _forward(
        self, x: torch.Tensor, seeds: Sequence[Seed | None], off: Sequence[bool]
    ) -> torch.Tensor:
        """Host forward with each live seed in its stage's mode; ``off[k]`` skips slot k."""
        h = x
        for depth, layer in enumerate(self._layers):
            h = torch.relu(layer(h))
            for slot in range(depth, self._num_slots, DEPTH):
                seed, module = seeds[slot], self._seeds[slot]
                if seed is None or module is None or off[slot]:
                    continue
                if seed.stage == SeedStage.TRAINING:
                    out = module(h.detach())
                    h = h + (out - out.detach())  # straight-through: value unchanged
                elif seed.stage in TRAINED_STAGES:
                    h = torch.lerp(h, module(h), seed.alpha)  # co-adaptation, no detach
        return self._head(h)

    @own_autograd
    def train_epoch(self, seeds: Sequence[Seed | None]) -> list[float | None]:
        """Adam steps on host and trained seeds (and the twin's host); returns each trained
        seed's health."""
        assert self._optimizer is not None
        if self._twin is not None:
            self._twin.train_epoch([None] * self._num_slots)
        trained = [
            seed is not None and seed.stage in TRAINED_STAGES and self._seeds[i] is not None
            for i, seed in enumerate(seeds)
        ]
        on = [False] * self._num_slots
        grad_sq = [0.0] * self._num_slots
        for _ in range(STEPS_PER_EPOCH):
            idx = torch.randint(0, TRAIN_SIZE, (BATCH_SIZE,), generator=self._gen)
            logits = self._forward(self._x_train[idx], seeds, on)
            loss = F.cross_entropy(logits, self._y_train[idx])
            optimizers = [self._optimizer] + [
                opt for opt, t in zip(self._seed_optimizers, trained, strict=True) if t and opt
            ]
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
            loss.backward()
            for slot, module in enumerate(self._seeds):
                if trained[slot] and module is not None:
                    grads = [p.grad for p in module.parameters() if p.grad is not None]
                    grad_sq[slot] += sum(float(g.pow(2).sum()) for g in grads)
            for opt in optimizers:
                opt.step()
        health: list[float | None] = [None] * self._num_slots
        for slot in range(self._num_slots):
            if trained[slot]:
                health[slot] = gradient_health(grad_sq[slot])
        return health

    @torch.no_grad()
    def _accuracy_and_loss(
        self, seeds: Sequence[Seed | None], off: Sequence[bool]
    ) -> tuple[float, float]:
        logits = self._forward(self._x_val, seeds, off)
        accuracy = float((logits.argmax(dim=1) == self._y_val).float().mean()) * 100.0
        return accuracy, float(F.cross_entropy(logits, self._y_val))

    def evaluate(self, seeds: Sequence[Seed | None]) -> Evaluation:
        """Validation accuracy as is, with each blended slot off, and with all seeds off."""
        on = [False] * self._num_slots
        accuracy, loss = self._accuracy_and_loss(seeds, on)
        slot_off: list[float | None] = [None] * self._num_slots
        for slot, seed in enumerate(seeds):
            if seed is not None and seed.alpha > 0.0:
                off = [i == slot for i in range(self._num_slots)]
                slot_off[slot] = self._accuracy_and_loss(seeds, off)[0]
        all_off, _ = self._accuracy_and_loss(seeds, [True] * self._num_slots)
        uncommitted = [seed is None or seed.stage != SeedStage.FOSSILIZED for seed in seeds]
        # Nothing or everything fossilized: a network already measured above.
        if all(uncommitted):
            committed = all_off
        elif not any(uncommitted):
            committed = accuracy
        else:
            committed = self._accuracy_and_loss(seeds, uncommitted)[0]
        return Evaluation(accuracy, loss, all_off, slot_off, committed)
