"""The MLP hosts and seeds of N envs trained and validated as one computation.

:class:`BatchedMlpHost` holds what N :class:`~.mlp_host.MlpHost` objects hold, stacked on
a leading env dimension: the host's weights as one tensor per layer, and each (slot,
blueprint) pair's seed weights as one bank with a row per env (rows of envs without
that seed are unused). A training step runs every env's host layer as one batched
matmul and each active (slot, blueprint, mode) group as the blueprint's module batched
over the envs that hold it. Adam runs over the stacked tensors with a step count per
row, so each env's update is the one its own ``torch.optim.Adam`` would make.

The batched ops are written out (``baddbmm``) rather than ``torch.func.vmap`` of the
modules: vmap's batched linear and LayerNorm round differently from the per-env
kernels in the last bit, and Adam magnifies that into visible drift within a few
epochs (docs/seed_lifecycle.md, sec. 12).

The numbers match the per-env host's: every env keeps its own ``torch.Generator``,
drawn from in the per-env host's order (host init, seed init, batch indices).
Validation runs each distinct network once: a counterfactual that switches off only
seeds which leave the output unchanged (empty, not yet blending, or in TRAINING,
where the straight-through estimator adds exactly zero) is the network as it is.

With ``twins=True`` (the PAIRED reward) each env's twin, its host trained with no seeds,
is one more host row (env ``e``'s at ``num_envs + e``) with a generator of its own, as
:class:`~.mlp_host.MlpHost` keeps it; twins train in the same batch as the envs and are
validated only when asked, all at once.
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 (torch convention)

from esper.simic.envs.seed_lifecycle.banks import WeightBank
from esper.simic.envs.seed_lifecycle.constants import (
    BLUEPRINTS,
    TRAINED_STAGES,
    SeedStage,
)
from esper.simic.envs.seed_lifecycle.host import Evaluation
from esper.simic.envs.seed_lifecycle.lifecycle import Seed
from esper.simic.envs.seed_lifecycle.mlp_host import (
    BATCH_SIZE,
    DEPTH,
    STEPS_PER_EPOCH,
    TRAIN_SIZE,
    MlpTask,
    build_host,
    draw_host_seed,
    gradient_health,
    make_dataset,
    make_seed_module,
    own_autograd,
)

# Validation networks evaluated per chunk: bounds activation memory (a conv_heavy seed's
# hidden layer is 2048 x 768 floats per network).
EVAL_CHUNK: Final = 16
# Stages whose seed changes the validation output (TRAINING's straight-through adds 0).
_BLENDED: Final = TRAINED_STAGES - {SeedStage.TRAINING}

# A validation network: (env position in the batch, which slots are switched off).
_Network = tuple[int, tuple[bool, ...]]


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """F.linear per row of a stack: [n, B, in] -> [n, B, out].

    ``baddbmm`` rather than ``vmap(F.linear)``: it rounds as the per-env host's ``addmm``
    does (bit-identical here), where vmap's matmul-then-add differs in the last bits
    at width 768, and Adam magnifies last-bit gradient differences within a few epochs.
    """
    return torch.baddbmm(bias.unsqueeze(1), x.expand(weight.shape[0], -1, -1), weight.mT)


def _seed_forward(kind: str, p: dict[str, torch.Tensor], h: torch.Tensor) -> torch.Tensor:
    """The blueprint modules of :func:`make_seed_module`, one per row of a stack."""
    if kind == "norm":
        # One call per env: a per-row weight needs the affine as separate ops, whose
        # backward rounds differently from the fused kernel the per-env host runs.
        return torch.stack(
            [
                F.layer_norm(x, x.shape[-1:], w, b)
                for x, w, b in zip(h, p["weight"], p["bias"], strict=True)
            ]
        )
    inner = _linear(
        torch.relu(_linear(h, p["up.weight"], p["up.bias"])), p["down.weight"], p["down.bias"]
    )
    if kind == "attention":
        return h * 2.0 * torch.sigmoid(inner)
    return h + inner


class _Blend(torch.autograd.Function):
    """``lerp(h, out, alpha)`` with alpha per row, differentiated as the per-env host's lerp.

    Its alpha is a Python float, so autograd scales h's gradient by ``1 - alpha`` taken
    in double precision; a float32 ``1 - alpha`` differs in the last bit (alpha 0.7).
    """

    @staticmethod
    def forward(ctx: Any, h: torch.Tensor, out: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        weight, one_minus = alpha.float(), (1.0 - alpha).float()  # alpha: float64
        ctx.save_for_backward(weight, one_minus)
        return torch.lerp(h, out, weight)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        alpha, one_minus = ctx.saved_tensors
        return grad * one_minus, grad * alpha, None


@dataclass
class _Group:
    """Networks that run one (slot, blueprint) seed in one mode, and where they sit."""

    slot: int
    blueprint: int
    training: bool  # TRAINING's straight-through rather than the blend
    positions: torch.Tensor  # [m] rows of the batch
    envs: torch.Tensor  # [m] env row of each, into the seed bank
    alpha: torch.Tensor  # [m, 1, 1] float64, as the env holds it


def _groups(
    running: Sequence[Sequence[tuple[int, SeedStage, float] | None]],
    envs: Sequence[int],
    device: torch.device,
) -> list[_Group]:
    """Group the batch's networks by the (slot, blueprint, mode) of the seeds they run.

    ``running[i][k]`` is (blueprint, stage, alpha) of network i's seed in slot k, or None
    where no seed runs there; ``envs[i]`` is network i's env row in the banks. Modes get
    separate groups so each runs exactly the per-env host's ops (the order in which
    autograd sums a tensor's gradients fixes its last bits).
    """
    members: dict[tuple[int, int, bool], list[tuple[int, float]]] = {}
    for position, slots in enumerate(running):
        for slot, entry in enumerate(slots):
            if entry is not None:
                blueprint, stage, alpha = entry
                key = (slot, blueprint, stage == SeedStage.TRAINING)
                members.setdefault(key, []).append((position, alpha))
    return [
        _Group(
            slot,
            blueprint,
            training,
            torch.tensor([p for p, _ in rows], device=device),
            torch.tensor([envs[p] for p, _ in rows], device=device),
            torch.tensor([a for _, a in rows], dtype=torch.float64, device=device).view(-1, 1, 1),
        )
        for (slot, blueprint, training), rows in sorted(members.items())
    ]


class BatchedMlpHost:
    """N real hosts with their seeds: ``host="mlp"`` for a whole vector env at once."""

    def __init__(
        self,
        num_envs: int,
        num_slots: int,
        device: torch.device,
        task: MlpTask,
        twins: bool = False,
    ) -> None:
        self.num_envs, self.num_slots, self.device, self._task = num_envs, num_slots, device, task
        self.twins = twins
        # Host rows: the envs', then (with twins) each env's twin.
        self._num_rows = 2 * num_envs if twins else num_envs
        data = make_dataset(task)
        self._x_train, self._y_train, self._x_val, self._y_val = (t.to(device) for t in data)
        self._gens = [torch.Generator() for _ in range(self._num_rows)]
        layers, head = build_host(torch.Generator().manual_seed(0), task)
        self._host_template = nn.ModuleDict({"layers": layers, "head": head})
        self._host = WeightBank(self._host_template, self._num_rows, device)
        self.host_params = sum(p.numel() for p in self._host_template.parameters())
        self._seed_templates = [
            make_seed_module(b, torch.Generator(), task.width) for b in range(len(BLUEPRINTS))
        ]
        self._seed_sizes = [sum(p.numel() for p in t.parameters()) for t in self._seed_templates]
        # Banks are made on first use: (slot, blueprint) -> stacked weights of all envs.
        self._banks: dict[tuple[int, int], WeightBank] = {}
        # The blueprint of each host row's module in each slot, None where there is none.
        self._blueprint: list[list[int | None]] = [
            [None] * num_slots for _ in range(self._num_rows)
        ]
        # Twins' validation accuracies since the last epoch, once asked for.
        self._twin_accuracies: list[float] | None = None

    @own_autograd
    def reset(self, env: int, rng: np.random.Generator) -> None:
        """Fresh host weights for ``env`` (and its twin) and no seeds, drawn as
        :class:`MlpHost` draws them."""
        seed = draw_host_seed(rng)
        for row in (env, self.num_envs + env) if self.twins else (env,):
            gen = self._gens[row].manual_seed(seed)
            layers, head = build_host(gen, self._task)
            self._host.write(row, nn.ModuleDict({"layers": layers, "head": head}))
        self._blueprint[env] = [None] * self.num_slots
        self._twin_accuracies = None

    @own_autograd
    def germinate(self, env: int, slot: int, blueprint: int) -> None:
        """Write a freshly initialised seed of ``blueprint`` into ``env``'s row of the bank."""
        module = make_seed_module(blueprint, self._gens[env], self._task.width)
        key = (slot, blueprint)
        if key not in self._banks:
            self._banks[key] = WeightBank(
                self._seed_templates[blueprint], self.num_envs, self.device
            )
        self._banks[key].write(env, module)
        self._blueprint[env][slot] = blueprint

    def remove(self, env: int, slot: int) -> None:
        """Forget ``env``'s seed in ``slot``; its bank row is overwritten at the next germinate."""
        self._blueprint[env][slot] = None

    def seed_params(self, env: int, slot: int) -> int:
        """Parameters of the module in ``env``'s ``slot``."""
        blueprint = self._blueprint[env][slot]
        return 0 if blueprint is None else self._seed_sizes[blueprint]

    def _forward(
        self,
        host: dict[str, torch.Tensor],
        x: torch.Tensor,
        groups: list[_Group],
        seed_params: list[dict[str, torch.Tensor]],
    ) -> torch.Tensor:
        """Logits [n, B, classes] of n networks; ``x`` is [n, B, in] or shared [B, in]."""
        h = x
        for depth in range(DEPTH):
            weight, bias = host[f"layers.{depth}.weight"], host[f"layers.{depth}.bias"]
            h = torch.relu(_linear(h, weight, bias))
            for group, params in zip(groups, seed_params, strict=True):
                if group.slot % DEPTH != depth:
                    continue
                h_in = h.index_select(0, group.positions)
                kind = BLUEPRINTS[group.blueprint].name
                if group.training:  # detached input, value unchanged: straight-through
                    out = _seed_forward(kind, params, h_in.detach())
                    mixed = h_in + (out - out.detach())
                else:  # host and seed co-adapt
                    mixed = _Blend.apply(h_in, _seed_forward(kind, params, h_in), group.alpha)
                # Validation (no grad) writes in place; training needs autograd's copy.
                if torch.is_grad_enabled():
                    h = h.index_copy(0, group.positions, mixed)
                else:
                    h.index_copy_(0, group.positions, mixed)
        return _linear(h, host["head.weight"], host["head.bias"])

    def train_epoch(
        self, envs: Sequence[int], seeds: Sequence[Sequence[Seed | None]]
    ) -> list[list[float | None]]:
        """One epoch of Adam steps for ``envs`` (and their twins, in the same batch); each
        env's seeds' gradient health per slot."""
        self._twin_accuracies = None
        if not self.twins:
            return self._train_rows(envs, seeds)
        twins = [self.num_envs + e for e in envs]
        no_seeds = [[None] * self.num_slots] * len(envs)
        return self._train_rows([*envs, *twins], [*seeds, *no_seeds])[: len(envs)]

    @torch.no_grad()
    def twin_accuracy(self, env: int) -> float:
        """Validation accuracy (%) of ``env``'s twin now; the first call after an epoch
        validates every env's twin in one pass."""
        if not self.twins:
            raise RuntimeError("this host trains no twins: build it with twins=True")
        if self._twin_accuracies is None:
            rows = [self.num_envs + e for e in range(self.num_envs)]
            no_seeds = [[None] * self.num_slots] * self.num_envs
            networks = [(i, (False,) * self.num_slots) for i in range(self.num_envs)]
            self._twin_accuracies, _ = self._validate(rows, no_seeds, networks, set())
        return self._twin_accuracies[env]

    @own_autograd
    def _train_rows(
        self, envs: Sequence[int], seeds: Sequence[Sequence[Seed | None]]
    ) -> list[list[float | None]]:
        """One epoch of Adam steps for the host rows ``envs``, with their seeds."""
        everyone = list(envs) == list(range(self._num_rows))
        rows = None if everyone else torch.tensor(envs, device=self.device)
        trained = [
            [
                None
                if seed is None or seed.stage not in TRAINED_STAGES or blueprints[k] is None
                else (blueprints[k], seed.stage, seed.alpha)
                for k, seed in enumerate(env_seeds)
            ]
            for env_seeds, blueprints in zip(seeds, (self._blueprint[e] for e in envs), strict=True)
        ]
        groups = _groups(trained, envs, self.device)
        grad_sq = torch.zeros(len(envs), self.num_slots, dtype=torch.float64, device=self.device)
        # The epoch's rows are gathered once and written back after its steps.
        host_bank = self._host.gather(rows)
        seed_banks = [self._banks[(g.slot, g.blueprint)].gather(g.envs) for g in groups]
        for _ in range(STEPS_PER_EPOCH):
            idx = torch.stack(
                [torch.randint(0, TRAIN_SIZE, (BATCH_SIZE,), generator=self._gens[e]) for e in envs]
            ).to(self.device)
            host = host_bank.take()
            seed_params = [bank.take() for bank in seed_banks]
            logits = self._forward(host, self._x_train[idx], groups, seed_params)
            losses = F.cross_entropy(
                logits.flatten(0, 1), self._y_train[idx].flatten(), reduction="none"
            )
            losses.view(len(envs), BATCH_SIZE).mean(dim=1).sum().backward()
            with torch.no_grad():
                for group, params in zip(groups, seed_params, strict=True):
                    sq = sum(_row_sq_norm(p.grad) for p in params.values())
                    grad_sq[group.positions, group.slot] += sq
            host_bank.adam_step(host)
            for bank, params in zip(seed_banks, seed_params, strict=True):
                bank.adam_step(params)
        self._host.scatter(rows, host_bank)
        for group, bank in zip(groups, seed_banks, strict=True):
            self._banks[(group.slot, group.blueprint)].scatter(group.envs, bank)
        grad_sq_host = grad_sq.cpu().tolist()
        return [
            [
                None if entry is None else gradient_health(grad_sq_host[i][k])
                for k, entry in enumerate(slots)
            ]
            for i, slots in enumerate(trained)
        ]

    @torch.no_grad()
    def evaluate(
        self, envs: Sequence[int], seeds: Sequence[Sequence[Seed | None]]
    ) -> list[Evaluation]:
        """Each env's validation as :meth:`MlpHost.evaluate` measures it, distinct nets once."""
        blended = [
            [
                seed is not None and seed.stage in _BLENDED and self._blueprint[e][k] is not None
                for k, seed in enumerate(env_seeds)
            ]
            for e, env_seeds in zip(envs, seeds, strict=True)
        ]
        # Each env's networks, keyed by which of its output-changing seeds are off.
        networks: dict[_Network, int] = {}
        wanted = []
        for i, env_seeds in enumerate(seeds):
            offs = _counterfactuals(env_seeds)
            keys = [tuple(o and b for o, b in zip(off, blended[i], strict=True)) for off in offs]
            for key in keys:
                networks.setdefault((i, key), len(networks))
            wanted.append(keys)
        as_is = {networks[(i, keys[0])] for i, keys in enumerate(wanted)}
        accuracy, loss = self._validate(envs, seeds, list(networks), as_is)
        evaluations = []
        for i, keys in enumerate(wanted):
            acc = iter(accuracy[networks[(i, key)]] for key in keys)
            as_is, all_off = next(acc), next(acc)
            slot_off = [
                next(acc) if seed is not None and seed.alpha > 0.0 else None for seed in seeds[i]
            ]
            fossilized = [s is not None and s.stage == SeedStage.FOSSILIZED for s in seeds[i]]
            # As MlpHost: nothing fossilized is the all-off net, everything is the net as is.
            committed = next(acc, all_off if not any(fossilized) else as_is)
            evaluations.append(
                Evaluation(as_is, loss[networks[(i, keys[0])]], all_off, slot_off, committed)
            )
        return evaluations

    def _validate(
        self,
        envs: Sequence[int],
        seeds: Sequence[Sequence[Seed | None]],
        networks: list[_Network],
        with_loss: set[int],
    ) -> tuple[list[float], dict[int, float]]:
        """Accuracy (%) of each (env position, seeds off) network on the val set, and the
        loss of those at the indices ``with_loss`` (the observation reads only the loss
        of the network as it is)."""
        correct, loss, loss_at = [], [], []
        for start, chunk in enumerate(_chunks(networks, EVAL_CHUNK)):
            chunk_envs = [envs[i] for i, _ in chunk]
            running = [
                [
                    None
                    if off[k] or seed is None or seed.stage not in _BLENDED or blueprint is None
                    else (blueprint, seed.stage, seed.alpha)
                    for k, (seed, blueprint) in enumerate(
                        zip(seeds[i], self._blueprint[envs[i]], strict=True)
                    )
                ]
                for i, off in chunk
            ]
            groups = _groups(running, chunk_envs, self.device)
            host = self._host.view(torch.tensor(chunk_envs, device=self.device))
            params = [self._banks[(g.slot, g.blueprint)].view(g.envs) for g in groups]
            logits = self._forward(host, self._x_val, groups, params)
            correct.append((logits.argmax(dim=2) == self._y_val).float().mean(dim=1))
            first = start * EVAL_CHUNK
            rows = [j for j in range(len(chunk)) if first + j in with_loss]
            if not rows:
                continue
            loss_at += [first + j for j in rows]
            # Classes on dim 1, samples contiguous: log-softmax vectorises across samples
            # (a 10-wide last dim cost ~3x more here).
            losses = F.cross_entropy(
                logits[rows].transpose(1, 2).contiguous(),
                self._y_val.expand(len(rows), -1),
                reduction="none",
            )
            loss.append(losses.mean(dim=1))
        # One device-to-host copy per epoch; float32 fractions to float, then %, as MlpHost.
        fractions = torch.cat(correct).cpu().tolist()
        losses_host = torch.cat(loss).cpu().tolist() if loss else []
        return [f * 100.0 for f in fractions], dict(zip(loss_at, losses_host, strict=True))


def _row_sq_norm(grad: torch.Tensor | None) -> torch.Tensor:
    """Per-row sum of squares, each row summed in float32 as the per-env host sums it."""
    assert grad is not None
    return grad.pow(2).flatten(1).sum(dim=1).double()


def _counterfactuals(seeds: Sequence[Seed | None]) -> list[tuple[bool, ...]]:
    """Off-patterns an env's evaluation needs: as is, all off, each blended slot off, and
    the committed network (only fossilized seeds on) when some but not all are."""
    k = len(seeds)
    offs = [(False,) * k, (True,) * k]
    offs += [
        tuple(i == slot for i in range(k))
        for slot, seed in enumerate(seeds)
        if seed is not None and seed.alpha > 0.0
    ]
    uncommitted = tuple(seed is None or seed.stage != SeedStage.FOSSILIZED for seed in seeds)
    if any(uncommitted) and not all(uncommitted):
        offs.append(uncommitted)
    return offs


def _chunks(items: list[_Network], size: int) -> Iterator[list[_Network]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
