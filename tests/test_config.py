"""Config validation: every bad input stops the run with one clear line, before anything exists."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.torch_version import TorchVersion

from esper.simic.app import preflight
from esper.simic.config import ConfigError, compile_unsupported
from esper.simic.settings import Vectorization, WandbMode
from esper.simic.testing import compose_settings

BAD_INPUTS = [
    (
        "agent.lerning_rate=0.1",
        "agent.lerning_rate is not a config key; did you mean agent.learning_rate?",
    ),
    (
        "agent.learning_rate=abc",
        "agent.learning_rate: Value 'abc' of type 'str' could not be converted to Float",
    ),
    (
        "env=cartpol",
        "env=cartpol is not an option of group 'env': choose one of acrobot, breakout, cartpole",
    ),
    ("+experiment=nope", "experiment=nope is not an option of group 'experiment'"),
    (
        "agent.learning_rate=-0.001",
        "agent.learning_rate=-0.001 is out of range: expected agent.learning_rate > 0",
    ),
    ("env.num_envs=0", "env.num_envs=0 is out of range: expected env.num_envs > 0"),
    ("agent.clip_coef=0", "agent.clip_coef=0.0 is out of range: expected agent.clip_coef > 0"),
    ("agent.gamma=1.5", "agent.gamma=1.5 is out of range: expected agent.gamma <= 1"),
    (
        "env.id=CartPol-v1",
        "env.id='CartPol-v1' is not a registered gymnasium environment. Did you mean CartPole-v1",
    ),
    (
        "env.vectorization=threads",
        "env.vectorization: Invalid value 'threads', expected one of [sync, async, batched]",
    ),
    ("agent.minibatch_size=100", "agent.minibatch_size=100 must divide the rollout batch"),
    ("trainer.device=tpu", "trainer.device='tpu': expected cpu, cuda, cuda:N or auto"),
    ("logger.mode=sometimes", "logger.mode: Invalid value 'sometimes'"),
    (
        "agent.head_ent_coefs.op=2",
        "agent.head_ent_coefs.op is not a config key; agent.head_ent_coefs is a mapping: "
        "add an entry with +agent.head_ent_coefs.op=VALUE",
    ),
    ("agent=recurrent_ppo agent.burn_in=20", "agent.burn_in=20 must not exceed agent.seq_len=16"),
    (
        "agent=recurrent_ppo agent.compile=true",
        "agent.compile=true for recurrent PPO needs agent.rnn.impl=esper",
    ),
    (
        "agent=recurrent_ppo agent.rnn.impl=esper agent.rnn.type=gru",
        "agent.rnn.impl=esper implements LSTM cores only, got agent.rnn.type=gru",
    ),
    (
        "agent=recurrent_ppo agent.rnn.impl=esper trainer.device=cuda",
        "agent.rnn.impl=esper runs on the CPU only, got trainer.device=cuda",
    ),
    (
        "agent=recurrent_ppo agent.rnn.impl=esper agent.burn_in=4",
        "agent.burn_in=4 needs chunks that start at episode boundaries",
    ),
    ("agent=recurrent_ppo agent.rnn.impl=fast", "agent.rnn.impl: Invalid value 'fast'"),
]


@pytest.mark.parametrize(("override", "expected"), BAD_INPUTS)
def test_bad_input_is_one_clear_line(override, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        preflight(override.split())
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("esper.simic: config error: ")
    assert expected in err
    assert list(tmp_path.iterdir()) == []


def test_cli_exits_non_zero_and_creates_nothing(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "esper.simic", "agent.learning_rate=-1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "esper.simic: config error: agent.learning_rate=-1.0 is out of range: "
        "expected agent.learning_rate > 0"
    ]
    assert list(tmp_path.iterdir()) == []


def test_default_config_is_cartpole_ppo_offline_wandb():
    settings, _ = compose_settings([])
    assert settings.env.id == "CartPole-v1"
    assert settings.env.vectorization is Vectorization["sync"]
    assert settings.agent.name == "ppo"
    assert settings.logger.mode is WandbMode.offline


EXPERIMENTS = sorted(
    p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "experiment").glob("*.yaml")
)


def test_the_experiment_list_is_found():
    assert {"cartpole_ppo", "stateless_cartpole_rppo", "cue_recall_rppo"} <= set(EXPERIMENTS)


NEEDS_EXTRA = {"halfcheetah_ppo": "mujoco", "breakout_ppo": "ale_py"}
"""Presets whose env comes with an optional extra (the test extra installs them all)."""


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_validates(experiment):
    if experiment in NEEDS_EXTRA:
        pytest.importorskip(NEEDS_EXTRA[experiment])
    settings, container = compose_settings([f"+experiment={experiment}"])
    assert settings.experiment == experiment
    assert container["experiment"] == experiment


def test_valid_overrides_reach_the_typed_settings():
    settings, _ = compose_settings(
        ["agent.learning_rate=0.01", "env.vectorization=async", "agent.value_clip=0.2", "seed=0"]
    )
    assert settings.agent.learning_rate == 0.01
    assert settings.env.vectorization is Vectorization["async"]
    assert settings.agent.value_clip == 0.2
    assert settings.seed == 0


def test_load_settings_raises_config_error_for_programmatic_callers():
    with pytest.raises(ConfigError, match=r"env\.num_envs"):
        compose_settings(["env.num_envs=-3"])


def test_compile_on_a_torch_without_its_options_is_one_clear_line(monkeypatch):
    monkeypatch.setattr(torch, "__version__", TorchVersion("2.12.0"))
    with pytest.raises(ConfigError) as error:
        compose_settings(["agent.compile=true"])
    assert str(error.value) == (
        "agent.compile=true needs torch>=2.13, this is torch 2.12.0: upgrade torch or set "
        "agent.compile=false"
    )


def test_compile_on_the_cpu_without_a_compiler_is_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setattr(torch, "__version__", TorchVersion("2.13.0"))
    monkeypatch.setenv("CXX", str(tmp_path / "no-compiler"))
    assert compile_unsupported("cuda") is None  # inductor compiles for GPUs with Triton
    with pytest.raises(ConfigError) as error:
        compose_settings(["agent.compile=true", "trainer.device=cpu"])
    assert str(error.value) == (
        f"agent.compile=true on the CPU needs a C++ compiler (inductor's), {tmp_path}/no-compiler "
        "is not on PATH: install one or set agent.compile=false"
    )
