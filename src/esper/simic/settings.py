"""Typed settings of one run: plain dataclasses, free of Hydra and OmegaConf.

Hydra composes the YAML under ``conf/`` onto these schemas (``config.py`` registers
them); everything below the entry point receives these objects, never the config
tree. Range constraints sit in each field's metadata so one walker can check them
all and name the offending key (``config.check_bounds``).
"""

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from esper.simic.gradients import CollectorConfig, NonFinitePolicy


def bounded(
    default: Any,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
) -> Any:
    """A dataclass field whose (non-None) value must lie in the given open/closed bounds."""
    bounds = {k: v for k, v in {"gt": gt, "ge": ge, "lt": lt, "le": le}.items() if v is not None}
    return field(default=default, metadata={"bounds": bounds})


# The functional API because ``async`` is a keyword; OmegaConf matches members by name.
Vectorization = Enum("Vectorization", {"sync": "sync", "async": "async", "batched": "batched"})
"""How the ``num_envs`` copies run: in this process, one subprocess each, or (``batched``,
envs that register a ``vector_entry_point``) as one computation in this process."""


class Activation(Enum):
    tanh = "tanh"
    relu = "relu"
    gelu = "gelu"
    silu = "silu"


class RNNType(Enum):
    lstm = "lstm"
    gru = "gru"


class RNNImpl(Enum):
    """How training replays chunks (see ``agents/sequences.py`` and ``agents/lstm_resets.py``)."""

    torch = "torch"
    """Chunks split at episode starts and padded; one ``nn.LSTM``/``nn.GRU`` call per core."""
    esper = "esper"
    """Unpadded windows with the state reset inside; esper's C++ kernel (LSTM on the CPU)."""


class ActionBounds(Enum):
    """How a Gaussian policy's unbounded sample meets a ``Box`` action space's bounds."""

    clip = "clip"
    """Clip the sample to the bounds (CleanRL, SB3's default)."""
    squash = "squash"
    """Map it through tanh onto the bounds: ``low + (tanh(u) + 1) (high - low) / 2``."""


class LoggerName(Enum):
    wandb = "wandb"
    none = "none"


class WandbMode(Enum):
    """W&B's own modes; offline writes run files locally for a later ``wandb sync``."""

    offline = "offline"
    online = "online"
    disabled = "disabled"


class ProgressMode(Enum):
    """``auto`` draws a bar on a terminal and prints plain lines otherwise."""

    auto = "auto"
    bar = "bar"
    lines = "lines"
    off = "off"


@dataclass
class EnvConfig:
    id: str = "CartPole-v1"
    """gymnasium id, e.g. ``CartPole-v1``, ``esper/SeedLifecycle-v0``, or ``module:Name-v0``
    (gymnasium imports ``module`` first, which registers the env)."""
    imports: list[str] = field(default_factory=list)
    """Modules to import before making the env, for suites that register on import."""
    wrappers: list[dict[str, Any]] = field(default_factory=list)
    """gymnasium wrappers applied to each env in order, as Hydra ``_target_`` specs with
    their arguments, e.g. ``{_target_: gymnasium.wrappers.FrameStackObservation,
    stack_size: 4}``: each is called as ``wrapper(env, **arguments)``."""
    num_envs: int = bounded(8, gt=0)
    """Copies stepped in lockstep by the vector env."""
    vectorization: Vectorization = Vectorization["sync"]
    """``sync`` (one process) suits cheap envs; ``async`` runs each copy in a subprocess;
    ``batched`` steps all copies as one computation on ``trainer.device``
    (``esper/SeedLifecycle-v0`` with ``kwargs.host=mlp``)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for ``gymnasium.make``."""
    max_episode_steps: int | None = bounded(None, gt=0)
    """Override the registered time limit; ``None`` keeps it."""
    normalize_obs: bool = False
    """Running mean/std normalisation of observations (saved with checkpoints)."""
    normalize_reward: bool = False
    """Scale rewards by a running std of the discounted return (saved with checkpoints)."""
    clip_obs: float = bounded(10.0, gt=0)
    """Bound on normalised observations."""
    clip_reward: float = bounded(10.0, gt=0)
    """Bound on normalised rewards."""
    action_bounds: ActionBounds = ActionBounds.clip
    """``Box`` actions: ``clip`` the Gaussian sample to the bounds, or ``squash`` it (tanh)."""


@dataclass
class NetworkConfig:
    actor_hidden: list[int] = field(default_factory=lambda: [64, 64])
    """Hidden widths of the policy MLP (the shared trunk when ``shared_trunk``)."""
    critic_hidden: list[int] = field(default_factory=lambda: [64, 64])
    """Hidden widths of the value MLP (unused when ``shared_trunk``)."""
    shared_trunk: bool = False
    """One trunk feeds both heads; cheaper, but value and policy gradients interfere."""
    activation: Activation = Activation.tanh
    ortho_init: bool = True
    """Orthogonal init with sqrt(2) hidden gain, 0.01 policy and 1.0 value output gains."""
    log_std_init: float = 0.0
    """Initial state-independent log standard deviation for continuous actions."""


@dataclass
class RNNConfig:
    type: RNNType = RNNType.lstm
    hidden_size: int = bounded(64, gt=0)
    num_layers: int = bounded(1, gt=0)
    shared_core: bool = True
    """One recurrent core for actor and critic; ``False`` gives each its own."""
    learned_initial_state: bool = False
    """Train the state episodes start from instead of starting from zeros."""
    impl: RNNImpl = RNNImpl.torch
    """``torch`` (any core, any device) or ``esper`` (LSTM on the CPU, no padding, and a
    whole step compiles with ``agent.compile``; builds a C++ kernel on first use)."""


@dataclass
class AgentConfig:
    """PPO hyperparameters (Schulman et al. 2017); recurrent PPO adds ``rnn``."""

    name: str = "ppo"
    num_steps: int = bounded(128, gt=0)
    """Rollout length per env between updates."""
    minibatch_size: int = bounded(256, gt=1)
    """Samples per gradient step; must divide ``num_steps * env.num_envs`` (feed-forward).
    Recurrent PPO groups whole chunks into minibatches of about this many steps."""
    update_epochs: int = bounded(10, gt=0)
    """Passes over each rollout."""
    learning_rate: float = bounded(3e-4, gt=0)
    anneal_lr: bool = True
    """Decay the learning rate linearly to 0 over ``total_timesteps``."""
    adam_eps: float = bounded(1e-5, gt=0)
    gamma: float = bounded(0.99, gt=0, le=1)
    gae_lambda: float = bounded(0.95, ge=0, le=1)
    clip_coef: float = bounded(0.2, gt=0)
    """Surrogate clip range epsilon."""
    anneal_clip: bool = False
    """Decay the clip range linearly to 0 over ``total_timesteps`` (rl-zoo's ``lin_0.2``):
    late updates, on a nearly solved task, can then no longer move the policy far."""
    value_clip: float | None = bounded(None, gt=0)
    """Clip the value update to this range around the rollout's values; ``None`` disables."""
    norm_adv: bool = True
    """Normalise advantages per minibatch."""
    ent_coef: float = bounded(0.0, ge=0)
    head_ent_coefs: dict[str, float] = field(default_factory=dict)
    """Factored actions: multipliers of ``ent_coef`` per action head, by head name (1 if absent)."""
    vf_coef: float = bounded(0.5, ge=0)
    max_grad_norm: float | None = bounded(0.5, gt=0)
    """Global gradient-norm clip; ``None`` disables."""
    target_kl: float | None = bounded(None, gt=0)
    """Stop the update's epochs early once the approximate KL exceeds this."""
    on_nonfinite: NonFinitePolicy = NonFinitePolicy.skip
    """An optimiser step whose gradients hold NaN/Inf: ``skip`` it, ``abort`` the run after
    the update (checkpointing the state before it), or ``warn`` and apply it."""
    compile: bool = False
    """Compile each whole gradient step (forward, loss, backward, gradient statistics and
    clipping, Adam) into one graph (torch.compile): costs seconds up front, then makes
    each step faster. Recurrent PPO compiles with ``rnn.impl=esper`` only (torch's fused
    cores cannot be traced). See scripts/bench_ppo.py."""
    network: NetworkConfig = field(default_factory=NetworkConfig)
    rnn: RNNConfig | None = None
    """Recurrent core; set by ``agent=recurrent_ppo``."""
    seq_len: int = bounded(16, gt=0)
    """Recurrent PPO: longest chunk of an episode trained through (truncated BPTT); with
    ``rnn.impl=esper`` the window length."""
    burn_in: int = bounded(0, ge=0)
    """Recurrent PPO: steps replayed without gradient to refresh a chunk's stored state."""


@dataclass
class LoggerConfig:
    name: LoggerName = LoggerName.wandb
    mode: WandbMode = WandbMode.offline
    """``offline`` by default: no account or network needed; ``wandb sync`` uploads later."""
    project: str = "esper-simic"
    entity: str | None = None
    group: str | None = None
    job_type: str = "train"
    tags: list[str] = field(default_factory=list)
    run_name: str | None = None
    """Run name shown in W&B; ``None`` lets W&B choose."""
    notes: str | None = None
    init_timeout_s: float = bounded(30.0, gt=0)
    """Longest wait for an online W&B init before falling back to offline."""


@dataclass
class TrainerConfig:
    eval_interval: int = bounded(10, ge=0)
    """Evaluate every this many updates (0: only at the end)."""
    eval_episodes: int = bounded(10, gt=0)
    eval_deterministic: bool = True
    """Greedy actions (mode of the policy) during evaluation."""
    checkpoint_interval: int = bounded(50, ge=0)
    """Checkpoint every this many updates (0: only at the end)."""
    log_interval: int = bounded(1, gt=0)
    """Send metrics every this many updates."""
    device: str = "cpu"
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when available)."""
    torch_threads: int | None = bounded(1, gt=0)
    """Intra-op threads; ``None`` keeps torch's default (one per core). One suits small
    networks: their ops are too small to split, and idle-spinning OpenMP threads slow
    everything down when cores are shared with env workers or parallel sweep jobs."""
    progress: ProgressMode = ProgressMode.auto
    keep_checkpoints: int = bounded(3, ge=1)
    """Periodic checkpoints kept besides ``final.pt`` and ``best.pt``; more than one leaves
    an older one to fall back to when the newest is damaged."""


class DistBackend(Enum):
    """The torch.distributed backend of a multi-process run (``distributed.py``)."""

    auto = "auto"
    """NCCL when ``trainer.device`` is CUDA, gloo otherwise."""
    gloo = "gloo"
    nccl = "nccl"


@dataclass
class DistributedConfig:
    """How the processes of one data-parallel run talk (only read when ``torchrun`` or a
    multi-task SLURM job starts several; their number is the launcher's, not a key)."""

    backend: DistBackend = DistBackend.auto
    timeout_s: float = bounded(600.0, gt=0)
    """How long a rank waits for the others at a collective before the run ends with a
    message: what stops a run whose rank died from hanging. Rank 0 evaluates while the
    others wait, so it must exceed one evaluation."""


@dataclass
class SimicConfig:
    """One run: what to train, on what, for how long, and where results go."""

    experiment: str = "default"
    """Name of the preset, used for W&B naming and summaries."""
    seed: int = bounded(0, ge=0)
    total_timesteps: int = bounded(100_000, gt=0)
    """Environment steps summed over all envs."""
    agent: AgentConfig = field(default_factory=AgentConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    collector: CollectorConfig = field(default_factory=CollectorConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    resume: str | None = None
    """Run dir or checkpoint of a run to continue in its own dir (``resume.py``)."""
    resume_from_older: bool = False
    """Allow ``resume=`` from a checkpoint older than the run's newest, dropping the
    history after it; without it such a resume is refused rather than a silent rewind."""
