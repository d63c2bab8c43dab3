"""The peers of the results table: Stable-Baselines3's PPO and sb3-contrib's RecurrentPPO
trained at a preset's own settings, read from the composed preset so they cannot drift.

Where the two differ by convention the mapping converts: Stable-Baselines3's value loss
is ``vf_coef * MSE``, ours ``vf_coef * MSE / 2`` (CleanRL's), so its ``vf_coef`` is half
ours; its schedules take the remaining progress (1 -> 0), so a linear decay to 0 is
``value * progress``. What is left different: sb3-contrib trains whole rollout sequences
where our recurrent preset trains ``agent.seq_len``-step chunks.
"""

import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from esper.simic.envs.registration import register_esper_envs
from esper.simic.report.seeds import SeedResult
from esper.simic.runinfo import git_commit
from esper.simic.settings import Activation, SimicConfig
from esper.simic.testing import compose_settings
from esper.simic.train import eval_seeds

PRESETS = ("cartpole_ppo", "acrobot_ppo", "pendulum_ppo", "stateless_cartpole_rppo")
"""The presets whose algorithm the peers have (not the factored, masked seed-lifecycle PPO;
cue recall is our own memory probe)."""

ACTIVATIONS = {Activation.tanh: torch.nn.Tanh, Activation.relu: torch.nn.ReLU}


@dataclass(frozen=True)
class PeerSetup:
    """What a peer run needs: the package, the env and the algorithm's keyword arguments."""

    runner: str  # stable-baselines3 | sb3-contrib
    env_id: str
    env_kwargs: dict[str, Any]
    num_envs: int
    normalize: dict[str, Any] | None  # VecNormalize's arguments, None without it
    algorithm: dict[str, Any]
    total_timesteps: int
    eval_episodes: int


def _schedule(value: float, anneal: bool) -> float | Callable[[float], float]:
    return (lambda progress: value * progress) if anneal else value


def peer_setup(settings: SimicConfig) -> PeerSetup:
    """The Stable-Baselines3 equivalent of a composed preset."""
    agent, env = settings.agent, settings.env
    network = agent.network
    if env.wrappers or agent.head_ent_coefs or not settings.trainer.eval_deterministic:
        raise ValueError(
            f"{settings.experiment}: env.wrappers, agent.head_ent_coefs and sampled "
            "evaluation have no Stable-Baselines3 equivalent here; use a preset of "
            f"{', '.join(PRESETS)}"
        )
    policy_kwargs: dict[str, Any] = {
        "net_arch": {"pi": list(network.actor_hidden), "vf": list(network.critic_hidden)},
        "activation_fn": ACTIVATIONS[network.activation],
        "ortho_init": network.ortho_init,
        "optimizer_kwargs": {"eps": agent.adam_eps},
    }
    if env.id == "Pendulum-v1" or network.log_std_init != 0.0:
        policy_kwargs["log_std_init"] = network.log_std_init
    runner, policy = "stable-baselines3", "MlpPolicy"
    if agent.rnn is not None:
        runner, policy = "sb3-contrib", "MlpLstmPolicy"
        policy_kwargs |= {
            "lstm_hidden_size": agent.rnn.hidden_size,
            "n_lstm_layers": agent.rnn.num_layers,
            "shared_lstm": agent.rnn.shared_core,
            "enable_critic_lstm": not agent.rnn.shared_core,
        }
    algorithm = {
        "policy": policy,
        "n_steps": agent.num_steps,
        "batch_size": agent.minibatch_size,
        "n_epochs": agent.update_epochs,
        "learning_rate": _schedule(agent.learning_rate, agent.anneal_lr),
        "clip_range": _schedule(agent.clip_coef, agent.anneal_clip),
        "clip_range_vf": agent.value_clip,
        "gamma": agent.gamma,
        "gae_lambda": agent.gae_lambda,
        "normalize_advantage": agent.norm_adv,
        "ent_coef": agent.ent_coef,
        "vf_coef": agent.vf_coef / 2,  # its value loss has no 1/2 (module docstring)
        "max_grad_norm": agent.max_grad_norm if agent.max_grad_norm is not None else float("inf"),
        "target_kl": agent.target_kl,
        "policy_kwargs": policy_kwargs,
    }
    normalize = None
    if env.normalize_obs or env.normalize_reward:
        normalize = {
            "norm_obs": env.normalize_obs,
            "norm_reward": env.normalize_reward,
            "clip_obs": env.clip_obs,
            "clip_reward": env.clip_reward,
            "gamma": agent.gamma,
        }
    env_kwargs = dict(env.kwargs)
    if env.max_episode_steps is not None:
        env_kwargs["max_episode_steps"] = env.max_episode_steps
    return PeerSetup(
        runner=runner,
        env_id=env.id,
        env_kwargs=env_kwargs,
        num_envs=env.num_envs,
        normalize=normalize,
        algorithm=algorithm,
        total_timesteps=settings.total_timesteps,
        eval_episodes=settings.trainer.eval_episodes,
    )


def train_peer(preset: str, seed: int, overrides: tuple[str, ...] = ()) -> SeedResult:
    """Train one seed and score the final policy greedily, one episode per env seed;
    ``overrides`` change the composed preset (tests shrink its budget)."""
    from sb3_contrib import RecurrentPPO  # noqa: PLC0415 - the bench extra
    from stable_baselines3 import PPO  # noqa: PLC0415
    from stable_baselines3.common.env_util import make_vec_env  # noqa: PLC0415
    from stable_baselines3.common.evaluation import evaluate_policy  # noqa: PLC0415
    from stable_baselines3.common.vec_env import VecNormalize  # noqa: PLC0415

    torch.set_num_threads(1)
    register_esper_envs()
    settings, _ = compose_settings([f"+experiment={preset}", f"seed={seed}", *overrides])
    setup = peer_setup(settings)
    envs = make_vec_env(setup.env_id, setup.num_envs, seed=seed, env_kwargs=setup.env_kwargs)
    # One env per eval episode, each on its own seed past the training seeds (train.py's).
    eval_envs = make_vec_env(setup.env_id, setup.eval_episodes, env_kwargs=setup.env_kwargs)
    eval_envs.seed(eval_seeds(seed, 0, setup.eval_episodes)[0])
    if setup.normalize is not None:
        envs = VecNormalize(envs, **setup.normalize)
        eval_envs = VecNormalize(eval_envs, training=False, norm_reward=False)
    algorithm = RecurrentPPO if setup.runner == "sb3-contrib" else PPO
    kwargs = dict(setup.algorithm)
    model = algorithm(kwargs.pop("policy"), envs, seed=seed, device="cpu", verbose=0, **kwargs)
    model.learn(setup.total_timesteps)
    if isinstance(envs, VecNormalize) and isinstance(eval_envs, VecNormalize):
        eval_envs.obs_rms = envs.obs_rms  # score with training's frozen statistics
    returns, _ = evaluate_policy(
        model,
        eval_envs,
        n_eval_episodes=setup.eval_episodes,
        deterministic=True,
        return_episode_rewards=True,
    )
    envs.close()
    eval_envs.close()
    return SeedResult(
        preset=preset,
        runner=setup.runner,
        seed=seed,
        final_eval_return=float(sum(returns) / len(returns)),
        budget=setup.total_timesteps,
        commit=git_commit(),
        eval_episodes=setup.eval_episodes,
        deterministic=True,
        version=importlib.metadata.version(setup.runner),
    )
