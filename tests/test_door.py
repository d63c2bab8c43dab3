"""door.Door: what runs once before Hydra creates a dir or starts a job."""

import os

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from esper.simic.agents import lstm_resets, lstm_resets_pytorch
from esper.simic.app import CONFIG_MODULE, CONFIG_NAME, task_config
from esper.simic.config import register_schemas
from esper.simic.door import Door, sweep_uses_kernel


def sweep(impl: str, task: list[str], params: dict | None = None):
    return OmegaConf.create(
        {
            "agent": {"rnn": {"impl": impl}},
            "hydra": {"overrides": {"task": task}, "sweeper": {"params": params}},
        }
    )


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (sweep("esper", []), True),
        (sweep("torch", ["seed=0,1"]), False),
        (sweep("torch", ["agent.rnn.impl=torch,esper"]), True),
        (sweep("torch", [], {"agent.rnn.impl": "choice(torch, esper)"}), True),
        (sweep("torch", [], {"agent.learning_rate": "interval(1e-4, 1e-3)"}), False),
    ],
)
def test_a_sweep_builds_the_kernel_only_when_a_job_may_use_it(config, expected):
    assert sweep_uses_kernel(config) is expected


def test_the_task_config_is_the_composition_without_hydras_node():
    register_schemas()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        config = compose(CONFIG_NAME, ["agent.learning_rate=0.01"], return_hydra_config=True)
    task = task_config(config)
    assert "hydra" in config
    assert "hydra" not in task
    assert task.agent.learning_rate == 0.01


@pytest.fixture
def no_compiler(monkeypatch):
    """A build that fails as it does without a compiler, and a fresh choice of kernel."""
    attempts = []

    def fail():
        attempts.append(1)
        raise lstm_resets.KernelBuildError("Ninja is required to load C++ extensions")

    monkeypatch.delenv(lstm_resets.KERNEL_VARIABLE, raising=False)
    monkeypatch.setattr(lstm_resets, "build_extension", fail)
    lstm_resets.kernel.cache_clear()
    yield attempts
    lstm_resets.kernel.cache_clear()


def test_a_sweep_start_tries_the_build_once_and_tells_the_jobs(no_compiler):
    Door().on_multirun_start(sweep("torch", ["agent.rnn.impl=esper,torch"]))
    assert no_compiler == [1]
    assert os.environ[lstm_resets.KERNEL_VARIABLE] == "pytorch"
    lstm_resets.kernel.cache_clear()  # as in a job's own process
    assert lstm_resets.kernel() is lstm_resets_pytorch
    assert no_compiler == [1]


def test_a_sweep_without_the_kernel_builds_nothing(no_compiler):
    Door().on_multirun_start(sweep("torch", ["seed=0,1"]))
    assert no_compiler == []
    assert lstm_resets.KERNEL_VARIABLE not in os.environ
