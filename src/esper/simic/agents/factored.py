"""Factored, masked action distribution for MultiDiscrete action spaces.

One categorical head per action dimension. The first head chooses an *op*; a relevance
table ``relevance[op, head]`` says which heads that op actually uses, after Esper's causal
head masks (tachyon-beep/esper-lite ``leyline/causal_masks.py``): a step's log-probability
and entropy count only the heads its op uses, so a WAIT step, whose other heads the env
ignores, puts no gradient into the blueprint head (it would only be fitting noise).

Invalid actions are masked per head (Huang & Ontañón 2020, "A Closer Look at Invalid Action
Masking in Policy Gradient Algorithms", arXiv:2006.14171) with
:func:`~esper.simic.agents.networks.masked_logits`. At most one *conditional* head (the slot
head of ``esper/SeedLifecycle-v0``) has one mask row per op: it is sampled after the op, from
the row of the op that was sampled, with logits of its own per op (the slot worth pruning is
not the slot worth advancing).

Flat mask layout, as the env puts it in ``info["action_mask"]``: the op head's mask, then the
conditional head's ``[n_ops, size]`` rows (row = op), then every other head's mask in head
order. Without a conditional head this is the plain concatenation of the heads' masks.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Categorical

from esper.simic.agents.layers import POLICY_GAIN, init_layer, masked_logits


@dataclass(frozen=True, eq=False)
class FactoredSpec:
    """Sizes of the heads, which heads each op uses, and which head's mask depends on the op.

    Head 0 is the op head; ``relevance[op, 0]`` must be True for every op.
    """

    head_sizes: tuple[int, ...]
    relevance: torch.Tensor  # [n_ops, n_heads] bool
    conditional_head: int | None = None
    head_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        n_ops, n_heads = self.head_sizes[0], len(self.head_sizes)
        if tuple(self.relevance.shape) != (n_ops, n_heads) or self.relevance.dtype != torch.bool:
            raise ValueError(f"relevance must be a bool tensor [{n_ops}, {n_heads}]")
        if not bool(self.relevance[:, 0].all()):
            raise ValueError("the op head (head 0) must be relevant to every op")
        if self.conditional_head is not None and not 0 < self.conditional_head < n_heads:
            raise ValueError(f"conditional_head must be in 1..{n_heads - 1}")
        if not self.head_names:
            object.__setattr__(self, "head_names", tuple(f"head{h}" for h in range(n_heads)))
        if len(self.head_names) != n_heads:
            raise ValueError(f"head_names must name all {n_heads} heads")

    @classmethod
    def independent(cls, nvec: Sequence[int]) -> "FactoredSpec":
        """Any MultiDiscrete space: every head always relevant, no conditional head."""
        sizes = tuple(int(n) for n in nvec)
        return cls(sizes, torch.ones(sizes[0], len(sizes), dtype=torch.bool))

    @property
    def num_ops(self) -> int:
        return self.head_sizes[0]

    @property
    def mask_size(self) -> int:
        """Length of the flat mask."""
        c = self.conditional_head
        return sum(self.head_sizes) + (0 if c is None else (self.num_ops - 1) * self.head_sizes[c])

    def logit_sizes(self) -> tuple[int, ...]:
        """Outputs of each head's linear layer: the conditional head has a row per op."""
        return tuple(
            n * self.num_ops if h == self.conditional_head else n
            for h, n in enumerate(self.head_sizes)
        )

    def split_mask(self, mask: torch.Tensor) -> list[torch.Tensor]:
        """Flat ``[..., D]`` -> views ``[..., n_h]``; conditional: ``[..., n_ops, n_c]``."""
        if mask.shape[-1] != self.mask_size:
            raise ValueError(f"mask has {mask.shape[-1]} entries, expected {self.mask_size}")
        parts = list(mask.split(self.logit_sizes(), dim=-1))
        if self.conditional_head is not None:
            c = self.conditional_head
            parts[c] = parts[c].unflatten(-1, (self.num_ops, self.head_sizes[c]))
        return parts


def _gather(logp: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``logp[..., index]`` for one index per batch element."""
    return logp.gather(-1, index.unsqueeze(-1)).squeeze(-1)


def _entropy(logp: torch.Tensor) -> torch.Tensor:
    """Categorical entropy from masked log-probs; masked entries have p = 0 exactly."""
    return -(logp.exp() * logp).sum(-1)


class FactoredDistribution:
    """Joint distribution over ``[..., n_heads]`` actions, any leading (batch, time) dims.

    Offers what the learner and the rollout use of a torch Distribution: ``sample``,
    ``log_prob``, ``entropy``, ``mode``; plus :meth:`head_entropy` for per-head entropy
    coefficients and logging, and :meth:`masked_mass` as a diagnostic.
    """

    def __init__(
        self,
        spec: FactoredSpec,
        relevance: torch.Tensor,
        logits: Sequence[torch.Tensor],
        masks: Sequence[torch.Tensor] | None,
    ) -> None:
        self.spec = spec
        self.relevance = relevance  # [n_ops, n_heads] bool, on the logits' device
        c = spec.conditional_head
        self.raw_logits = [
            z.unflatten(-1, (spec.num_ops, spec.head_sizes[h])) if h == c else z
            for h, z in enumerate(logits)
        ]
        self.masks = masks
        self.logp = [
            torch.log_softmax(masked_logits(z, None if masks is None else masks[h]), dim=-1)
            for h, z in enumerate(self.raw_logits)
        ]

    def _head_logp(self, head: int, op: torch.Tensor) -> torch.Tensor:
        """Log-probs of ``head``'s values, ``[..., n_h]``; the op's row for the conditional head."""
        logp = self.logp[head]
        if head != self.spec.conditional_head:
            return logp
        row = op[..., None, None].expand(*op.shape, 1, logp.shape[-1])
        return logp.gather(-2, row).squeeze(-2)

    def _choose(self, pick: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Pick the op, then every other head given it (the conditional one from its row)."""
        op = pick(self.logp[0])
        heads = [op] + [pick(self._head_logp(h, op)) for h in range(1, len(self.logp))]
        return torch.stack(heads, dim=-1)

    def sample(self) -> torch.Tensor:
        """Op first, then every other head (the conditional one under the sampled op's row).

        Heads the op does not use are sampled too, within their masks, so that the action
        is a complete, legal MultiDiscrete action; their values do not enter the log-prob.
        """
        return self._choose(lambda logp: Categorical(logits=logp, validate_args=False).sample())

    @property
    def mode(self) -> torch.Tensor:
        """Argmax op, then the argmax of every other head (under that op's row)."""
        return self._choose(lambda logp: logp.argmax(-1))

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        """Sum of the log-probs of the heads that ``actions``' op uses, ``[...]``.

        ``torch.where`` rather than a product by 0, so an irrelevant head's term (possibly a
        masked value's huge negative log-prob) can neither overflow nor pass a gradient.
        """
        actions = actions.long()
        op = actions[..., 0]
        terms = torch.stack(
            [_gather(self._head_logp(h, op), actions[..., h]) for h in range(len(self.logp))],
            dim=-1,
        )
        return torch.where(self.relevance[op], terms, 0.0).sum(-1)

    def head_entropy(self) -> torch.Tensor:
        """Entropy per head, weighted by how likely the head is used, ``[..., n_heads]``.

        Head h contributes ``sum_op p(op) * relevance[op, h] * H_h(. | op)`` (op head: H(op)).
        The sum over heads is then exactly the entropy of the *effective* action (the op and
        the values of the heads it uses), since heads are independent given the op: a bonus
        on it spreads probability over distinct behaviours, never over values the env
        ignores. Gradients reach p(op) too, as the true entropy's do.
        """
        p_op = self.logp[0].exp()
        rows = [
            _entropy(logp) if h == self.spec.conditional_head else _entropy(logp)[..., None]
            for h, logp in enumerate(self.logp)
        ]
        per_op = torch.stack([r.expand_as(p_op) for r in rows], dim=-1)  # [..., n_ops, n_heads]
        return (p_op[..., None] * self.relevance * per_op).sum(-2)

    def entropy(self, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Entropy of the effective action, ``[...]``; ``weights`` [n_heads] scale each head's
        share (per-head entropy coefficients)."""
        per_head = self.head_entropy()
        return per_head.sum(-1) if weights is None else (per_head * weights).sum(-1)

    @torch.no_grad()
    def masked_mass(self) -> torch.Tensor:
        """Probability the *unmasked* logits put on illegal values, per head, ``[..., n_heads]``.

        How much the policy still "wants" illegal actions: masking hides it from the loss,
        so it is worth logging. The conditional head's is its rows' mass averaged over the
        ops that use it, weighted by their (masked) probability; 0 where no mask is given.
        """
        if self.masks is None:
            return torch.zeros(*self.logp[0].shape[:-1], len(self.logp), device=self.logp[0].device)
        mass = [
            (torch.softmax(z, -1) * ~m).sum(-1)
            for z, m in zip(self.raw_logits, self.masks, strict=True)
        ]
        c = self.spec.conditional_head
        if c is not None:
            weight = self.logp[0].exp() * self.relevance[:, c]
            mass[c] = (weight * mass[c]).sum(-1) / weight.sum(-1).clamp(min=1e-12)
        return torch.stack(mass, dim=-1)


class FactoredHead(nn.Module):
    """One linear layer per head on shared features, giving a :class:`FactoredDistribution`.

    ``entropy_weights`` scale each head's share of the entropy bonus (Esper's per-head
    entropy multipliers), by head name; 1 where absent.
    """

    def __init__(
        self, in_dim: int, spec: FactoredSpec, ortho: bool, entropy_weights: Mapping[str, float]
    ) -> None:
        super().__init__()
        unknown = set(entropy_weights) - set(spec.head_names)
        if unknown:
            raise ValueError(f"entropy weights for {sorted(unknown)}: heads are {spec.head_names}")
        self.spec = spec
        self.head_names = spec.head_names
        self.heads = nn.ModuleList(
            init_layer(nn.Linear(in_dim, n), POLICY_GAIN, ortho) for n in spec.logit_sizes()
        )
        # Derived from the spec and the config, not learned: kept out of checkpoints.
        self.register_buffer("relevance", spec.relevance.clone(), persistent=False)
        weights = torch.tensor([float(entropy_weights.get(n, 1.0)) for n in spec.head_names])
        self.register_buffer("entropy_weights", weights, persistent=False)

    def forward(
        self, features: torch.Tensor, mask: torch.Tensor | None = None
    ) -> FactoredDistribution:
        """``features`` [..., F], ``mask`` the flat [..., D] bool mask or None."""
        masks = None if mask is None else self.spec.split_mask(mask)
        logits = [head(features) for head in self.heads]
        return FactoredDistribution(self.spec, self.relevance, logits, masks)

    def entropy_terms(self, dist: FactoredDistribution) -> tuple[torch.Tensor, torch.Tensor]:
        """The weighted per-step entropy for the loss, and per-head diagnostics: each head's
        entropy, then its masked-out probability mass (``[..., 2 * heads]``, no gradient)."""
        per_head = torch.cat([dist.head_entropy(), dist.masked_mass()], dim=-1).detach()
        return dist.entropy(self.entropy_weights), per_head
