"""The batched real host (``env.vectorization=batched``) against the per-env ``host="mlp"``."""

from typing import cast

import numpy as np
import pytest
import torch
from torch import nn

from esper.simic.bench.seed_lifecycle_batched import reference_results
from esper.simic.config import ConfigError
from esper.simic.envs.seed_lifecycle import Op, SeedLifecycleEnv, SeedStage, evaluate_policy
from esper.simic.envs.seed_lifecycle.banks import WeightBank
from esper.simic.envs.seed_lifecycle.batched_host import BatchedMlpHost
from esper.simic.envs.seed_lifecycle.constants import ALPHA_TARGET_FULL
from esper.simic.envs.seed_lifecycle.mlp_host import MlpHost
from esper.simic.envs.seed_lifecycle.vector import SeedLifecycleVectorEnv
from esper.simic.testing import compose_settings

MAX_EPOCHS = 26
# Past one episode's end, so the same-step autoreset is covered too.
STEPS = MAX_EPOCHS + 3


def scripted_action(env: int, t: int) -> list[int]:
    """Env ``env``'s fixed action at step ``t``: germinate, advance to HOLDING and fossilize
    one seed; germinate, blend and retarget a second; germinate a third; prune the second.
    Slots and blueprints vary by env, so some (slot, blueprint) groups hold several envs.
    Actions the mask forbids at that moment run as WAIT in both hosts alike."""
    first, blueprint = (env // 2) % 3, env % 5
    second, third = (first + 1) % 3, (first + 2) % 3
    script = (
        [(Op.GERMINATE, first, blueprint, 0, ALPHA_TARGET_FULL)]
        + [(Op.ADVANCE, first, 0, 0, 0)] * 8
        + [(Op.FOSSILIZE, first, 0, 0, 0)] * 2
        + [(Op.GERMINATE, second, (blueprint + 2) % 5, 1, 1)]
        + [(Op.ADVANCE, second, 0, 0, 0)] * 6
        + [(Op.SET_ALPHA_TARGET, second, 0, 0, ALPHA_TARGET_FULL)]
        + [(Op.GERMINATE, third, (blueprint + 1) % 5, 2, 0)]
        + [(Op.ADVANCE, third, 0, 0, 0)] * 2
        + [(Op.PRUNE, second, 0, 0, 0)] * 2
        + [(Op.WAIT, 0, 0, 0, 0)]
    )
    op, slot, bp, tempo, target = script[t % len(script)]
    return [int(op), slot, bp, tempo, target]


def readings(env: SeedLifecycleEnv) -> list[float]:
    """Every measurement the host feeds the env: accuracies, loss, counterfactuals, health."""
    values = [env.val_accuracy, env.val_loss, env.all_off_accuracy, env.committed_accuracy]
    for seed in env.seeds:
        if seed is not None:
            for value in (seed.contribution, seed.gradient_health, seed.alpha):
                values.append(np.nan if value is None else value)
    return values


def _adam_state(
    optimizer: torch.optim.Optimizer, param: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(exp_avg, exp_avg_sq, step) of ``param``, zeros before the first step as a bank holds."""
    state = optimizer.state.get(param, {})
    zeros = torch.zeros_like(param)
    step = float(state["step"]) if "step" in state else 0.0
    return state.get("exp_avg", zeros), state.get("exp_avg_sq", zeros), step


def _align_row(
    bank: WeightBank, row: int, module: nn.Module, optimizer: torch.optim.Optimizer, where: str
) -> None:
    """Check a bank row against a per-env module and its Adam, then copy the module's in."""
    for name, param in module.named_parameters():
        exp_avg, exp_avg_sq, step = _adam_state(optimizer, param)
        for held, reference in (
            (bank.params[name][row], param.detach()),
            (bank.exp_avg[name][row], exp_avg),
            (bank.exp_avg_sq[name][row], exp_avg_sq),
        ):
            torch.testing.assert_close(held, reference, rtol=1e-4, atol=1e-6, msg=where)
            held.copy_(reference)
        assert float(bank.steps[row]) == step, where


def _align_host(batched: BatchedMlpHost, row: int, host: MlpHost, where: str) -> None:
    """Check host row ``row`` and its seeds against ``host``; copy ``host``'s state in."""
    assert torch.equal(batched._gens[row].get_state(), host._gen.get_state()), where
    assert host._optimizer is not None
    modules = nn.ModuleDict({"layers": host._layers, "head": host._head})
    _align_row(batched._host, row, modules, host._optimizer, where)
    for slot, (module, optimizer) in enumerate(
        zip(host._seeds, host._seed_optimizers, strict=True)
    ):
        blueprint = batched._blueprint[row][slot]
        assert (module is None) == (blueprint is None), where
        if module is not None and optimizer is not None and blueprint is not None:
            bank = batched._banks[(slot, blueprint)]
            _align_row(bank, row, module, optimizer, f"{where} slot={slot}")


@torch.no_grad()
def align_hosts(batched: SeedLifecycleVectorEnv, single: list[SeedLifecycleEnv], t: int) -> None:
    """Check that each env's row of the batched host holds what its per-env host holds
    (weights and Adam state to float tolerance, step counts and generators exactly), then
    copy the per-env state in, so the next epoch starts both from the same numbers.

    Training is chaotic: Adam magnifies a last-bit difference (a kernel that rounds
    otherwise on another CPU) by about 10x per epoch, so hosts compared over a whole
    episode agree to the bit or not at all. Aligned each epoch, every epoch is checked
    to float tolerance on any CPU, and state carried across epochs (Adam moments, step
    counts, generators, seed banks) is checked too.
    """
    host = batched.host
    for i, env in enumerate(single):
        reference = cast(MlpHost, env.host)
        _align_host(host, i, reference, f"t={t} env={i}")
        if reference._twin is not None:  # twins hold no seeds
            _align_host(host, host.num_envs + i, reference._twin, f"t={t} twin={i}")


@pytest.mark.parametrize(
    ("num_envs", "mlp_task", "reward_mode"),
    [
        (1, "baseline", "shaped"),
        (3, "baseline", "shaped"),
        (8, "baseline", "shaped"),
        (3, "impaired", "shaped"),
        # PAIRED: the twins are extra host rows of the batch, validated at the last epoch.
        (1, "impaired", "paired"),
        (3, "impaired", "paired"),
    ],
)
def test_batched_host_gives_every_env_the_per_env_hosts_numbers(
    one_thread, num_envs, mlp_task, reward_mode
):
    kwargs = {"host": "mlp", "max_epochs": MAX_EPOCHS, "mlp_task": mlp_task, "reward": reward_mode}
    batched = SeedLifecycleVectorEnv(num_envs, **kwargs)
    single = [SeedLifecycleEnv(**kwargs) for _ in range(num_envs)]
    obs, _ = batched.reset(seed=7)
    np.testing.assert_allclose(obs, [e.reset(seed=7 + i)[0] for i, e in enumerate(single)])
    stages_seen: set[SeedStage] = set()
    for t in range(STEPS):
        align_hosts(batched, single, t)
        actions = np.array([scripted_action(i, t) for i in range(num_envs)])
        obs, rewards, terminated, _, info = batched.step(actions)
        for i, env in enumerate(single):
            env_obs, reward, done, _, env_info = env.step(actions[i])
            assert terminated[i] == done
            if done:
                np.testing.assert_allclose(info["final_obs"][i], env_obs, atol=1e-5)
                if reward_mode == "paired":  # the twin's accuracy is paid at the end
                    twin = env_info["reward_components"]["twin_accuracy"]
                    assert twin < 0.0
                    final_components = info["final_info"]["reward_components"]
                    assert final_components["twin_accuracy"][i] == pytest.approx(twin, abs=1e-6)
                env_obs, env_info = env.reset()
            else:
                components = info["reward_components"]
                for name, value in env_info["reward_components"].items():
                    assert components[name][i] == pytest.approx(value, abs=1e-4), (t, i, name)
            np.testing.assert_allclose(obs[i], env_obs, atol=1e-5, err_msg=f"t={t} env={i}")
            assert rewards[i] == pytest.approx(reward, abs=1e-4)
            np.testing.assert_array_equal(info["action_mask"][i], env_info["action_mask"])
            np.testing.assert_allclose(
                readings(batched.envs[i]), readings(env), atol=1e-4, err_msg=f"t={t} env={i}"
            )
            stages_seen.update(s.stage for s in env.seeds if s is not None)
    assert {SeedStage.BLENDING, SeedStage.FOSSILIZED, SeedStage.EMBARGOED} <= stages_seen


BATCHED = ["env=seed_lifecycle", "env.vectorization=batched"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["env=cartpole", "env.vectorization=batched"],
            "env.vectorization=batched: env.id=CartPole-v1 has no batched implementation: "
            "set env.vectorization=sync or async",
        ),
        (
            BATCHED,
            "env.vectorization=batched batches env.kwargs.host in ['mlp'], got 'surrogate': "
            "set ++env.kwargs.host=mlp or env.vectorization=sync",
        ),
        (
            [*BATCHED, "++env.kwargs.host=mlp", "env.max_episode_steps=10"],
            "env.vectorization=batched takes no env.max_episode_steps (got 10): "
            "set env.kwargs.max_epochs instead",
        ),
        (
            [*BATCHED, "++env.kwargs.host=mlp", "env.normalize_obs=true"],
            "env.vectorization=batched keeps observations on trainer.device, where "
            "env.normalize_obs (NumPy statistics) cannot run: set env.normalize_obs=false",
        ),
    ],
)
def test_batching_what_cannot_batch_is_one_line_at_the_door(overrides, message):
    with pytest.raises(ConfigError) as error:
        compose_settings(overrides)
    assert str(error.value) == message


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_a_device_the_batched_host_cannot_use_is_one_line_at_the_door():
    with pytest.raises(ConfigError) as error:
        compose_settings([*BATCHED, "++env.kwargs.host=mlp", "trainer.device=cuda:0"])
    assert str(error.value) == (
        "env.vectorization=batched puts the hosts on trainer.device=cuda:0, but this machine "
        "has 0 CUDA device(s): set trainer.device=cpu or auto"
    )
    settings, _ = compose_settings([*BATCHED, "++env.kwargs.host=mlp", "trainer.device=cpu"])
    assert settings.env.vectorization.value == "batched"


def test_reference_policies_score_the_same_on_the_batched_host(one_thread):
    kwargs = {"max_epochs": 14, "reward": "sparse"}
    batched = reference_results("heuristic", [3, 4], **kwargs)
    single = evaluate_policy("heuristic", [3, 4], host="mlp", **kwargs)
    for b, s in zip(batched, single, strict=True):
        assert b.episode_return == pytest.approx(s.episode_return, abs=1e-6)
        assert b.final_accuracy == pytest.approx(s.final_accuracy, abs=1e-4)
        assert (b.illegal_actions, b.fossilized_seeds) == (s.illegal_actions, s.fossilized_seeds)


def test_one_env_of_a_batch_steps_alone_with_the_per_env_numbers(one_thread):
    """A batch of one row (its Adam rows gathered and written back) leaves the others be."""
    kwargs = {"host": "mlp", "max_epochs": 16}
    batched = SeedLifecycleVectorEnv(3, **kwargs)
    batched.reset(seed=5)
    alone, single = batched.envs[1], SeedLifecycleEnv(**kwargs)
    single.reset(seed=6)
    for t in range(14):
        obs, reward, _, _, _ = alone.step(scripted_action(1, t))
        single_obs, single_reward, _, _, _ = single.step(scripted_action(1, t))
        np.testing.assert_allclose(obs, single_obs, atol=1e-5)
        assert reward == pytest.approx(single_reward, abs=1e-4)
        np.testing.assert_allclose(readings(alone), readings(single), atol=1e-4)
    assert any(s is not None and s.stage == SeedStage.FOSSILIZED for s in alone.seeds)
    # Env 0's host sat out those epochs: one more batched epoch is its second, as alone.
    first = SeedLifecycleEnv(**kwargs)
    first.reset(seed=5)
    wait = [int(Op.WAIT), 0, 0, 0, 0]
    obs, _, _, _, _ = batched.step(np.array([wait, wait, wait]))
    np.testing.assert_allclose(obs[0], first.step(wait)[0], atol=1e-5)
    np.testing.assert_allclose(readings(batched.envs[0]), readings(first), atol=1e-4)
