"""agent.rnn.impl=esper: the LSTM kernel that resets the state inside a sequence, the window
layout it trains on, and its compiled gradient step."""

import dataclasses
import logging
import os
import shutil
import subprocess
import sys

import pytest
import torch
from compile_support import needs_compile
from recurrent_reference import reference_step, window_batch
from test_whole_step import assert_same_update
from torch import nn

from esper.simic.agents import lstm_resets, lstm_resets_pytorch
from esper.simic.agents.batches import Rollout
from esper.simic.agents.batching import Windows
from esper.simic.agents.heads import DiscreteActions
from esper.simic.agents.lstm_resets import _Recurrence, lstm_with_resets
from esper.simic.agents.policy import PolicyState
from esper.simic.agents.ppo import PPOLearner
from esper.simic.agents.recurrent import RecurrentActorCritic
from esper.simic.agents.sequences import build_window_layout
from esper.simic.gradients import CollectorConfig, build_collector
from esper.simic.settings import AgentConfig, NetworkConfig, RNNConfig, RNNImpl

pytestmark = [pytest.mark.timeout(600), pytest.mark.usefixtures("one_thread")]

OBS_DIM = 3
NETWORK = NetworkConfig(actor_hidden=[16], critic_hidden=[8], ortho_init=False)


def make_policy(
    shared_core: bool, num_layers: int = 2, learned: bool = False, network: NetworkConfig = NETWORK
):
    torch.manual_seed(0)
    rnn = RNNConfig(
        hidden_size=8, num_layers=num_layers, shared_core=shared_core, learned_initial_state=learned
    )
    policy = RecurrentActorCritic(OBS_DIM, DiscreteActions(3), network, rnn)
    if learned:
        with torch.no_grad():
            policy.initial_h.normal_()
            policy.initial_c.normal_()
    return policy


# torch's extension loader compiles with $CXX, else c++; CI has one, so there the compiled
# kernel is always tested.
HAS_COMPILER = shutil.which(os.environ.get("CXX", "c++")) is not None
needs_compiler = pytest.mark.skipif(not HAS_COMPILER, reason="no C++ compiler to build it")


@pytest.fixture(params=["pytorch", pytest.param("extension", marks=needs_compiler)])
def implementation(request, monkeypatch):
    """Route the kernel's custom ops to one implementation."""
    chosen = lstm_resets_pytorch if request.param == "pytorch" else lstm_resets.build_extension()
    monkeypatch.setattr(lstm_resets, "kernel", lambda: chosen)
    return chosen


def kernel_inputs(dtype=torch.float64, steps=5, cores=2, batch=3, hidden=4, seed=0):
    """Inputs of the recurrence with resets inside the sequence, gradients required."""
    generator = torch.Generator().manual_seed(seed)

    def tensor(*shape, scale=1.0):
        x = torch.randn(*shape, generator=generator, dtype=dtype) * scale
        return x.requires_grad_()

    keep = (torch.rand(steps, batch, generator=generator) > 0.3).to(dtype)
    keep[2, 0] = 0.0  # a reset inside the sequence, whatever the draw
    return (
        tensor(steps, cores, batch, 4 * hidden),
        tensor(cores, 4 * hidden, hidden, scale=0.5),
        tensor(cores, batch, hidden),
        tensor(cores, batch, hidden),
        keep,
        tensor(cores, 1, hidden),
        tensor(cores, 1, hidden),
    )


def test_kernel_gradients_match_finite_differences_with_resets_and_initial_states(
    implementation,
):
    hs_and_final_c = lambda *args: _Recurrence.apply(*args)[:2]  # noqa: E731
    assert torch.autograd.gradcheck(hs_and_final_c, kernel_inputs())


@needs_compiler
def test_the_pytorch_kernel_gives_the_compiled_kernels_results():
    xg, w_hh, h0, c0, keep, init_h, init_c = kernel_inputs(
        torch.float32, steps=12, cores=2, batch=6, hidden=16, seed=3
    )
    extension = lstm_resets.build_extension()
    with torch.no_grad():
        forwards = [
            m.forward(xg, w_hh, h0, c0, keep, init_h, init_c)
            for m in (extension, lstm_resets_pytorch)
        ]
        for compiled, pytorch in zip(*forwards, strict=True):
            torch.testing.assert_close(pytorch, compiled)
        hs, cs, gates, h_prev, c_prev, tanh_c = forwards[0]
        grad_hs, grad_c = torch.randn_like(hs), torch.randn_like(cs[-1])
        backwards = [
            m.backward(grad_hs, grad_c, w_hh, keep, gates, h_prev, c_prev, tanh_c)
            for m in (extension, lstm_resets_pytorch)
        ]
    for compiled, pytorch in zip(*backwards, strict=True):
        torch.testing.assert_close(pytorch, compiled)
    assert backwards[1][4].abs().sum() > 0  # the resets sent gradient to the initial state


@pytest.fixture
def fresh_kernel_choice(monkeypatch):
    monkeypatch.delenv(lstm_resets.KERNEL_VARIABLE, raising=False)
    lstm_resets.kernel.cache_clear()
    yield
    lstm_resets.kernel.cache_clear()


def test_a_failed_build_falls_back_once_with_one_warning_and_tells_child_processes(
    fresh_kernel_choice, monkeypatch, caplog
):
    attempts = []

    def no_compiler():
        attempts.append(1)
        raise lstm_resets.KernelBuildError("Ninja is required to load C++ extensions")

    monkeypatch.setattr(lstm_resets, "build_extension", no_compiler)
    with caplog.at_level(logging.WARNING, logger=lstm_resets.__name__):
        assert lstm_resets.kernel() is lstm_resets_pytorch
        assert lstm_resets.kernel() is lstm_resets_pytorch
    (record,) = caplog.records
    assert "Ninja is required" in record.getMessage()
    assert "\n" not in record.getMessage()
    assert os.environ[lstm_resets.KERNEL_VARIABLE] == "pytorch"
    # A job process started from here inherits the variable and does not try again.
    lstm_resets.kernel.cache_clear()
    caplog.clear()
    assert lstm_resets.kernel() is lstm_resets_pytorch
    assert attempts == [1]
    assert caplog.records == []


@pytest.mark.parametrize(
    ("output", "line"),
    [
        (
            "Error building extension 'esper_lstm_resets': [1/2] c++ -c lstm_resets.cpp\n"
            "FAILED: lstm_resets.o\n"
            "lstm_resets.cpp:15:10: fatal error: Python.h: No such file or directory\n"
            "compilation terminated.\nninja: build stopped: subcommand failed.\n",
            "lstm_resets.cpp:15:10: fatal error: Python.h: No such file or directory",
        ),
        (
            "Ninja is required to load C++ extensions (pip install ninja to get it)",
            "Ninja is required to load C++ extensions (pip install ninja to get it)",
        ),
        ("", "the build failed without a message"),
    ],
)
def test_a_failed_build_is_told_by_its_most_telling_line(output, line):
    assert lstm_resets.build_failure(output) == line


def test_without_a_compiler_the_kernel_is_the_pytorch_one(tmp_path):
    """The real extension loader, with CXX and PATH pointing at nothing and an empty cache."""
    env = {
        **os.environ,
        "CXX": str(tmp_path / "no-compiler"),
        "PATH": str(tmp_path),
        "TORCH_EXTENSIONS_DIR": str(tmp_path / "cache"),
    }
    env.pop(lstm_resets.KERNEL_VARIABLE, None)
    code = (
        "from esper.simic.agents import lstm_resets; "
        "print(lstm_resets.kernel().__name__, lstm_resets.kernel().__name__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [lstm_resets_pytorch.__name__] * 2
    (warning,) = [line for line in result.stderr.splitlines() if "pure-PyTorch" in line]
    assert f"no C++ compiler: {env['CXX']} is not on PATH" in warning
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize("num_layers", [1, 2])
def test_without_resets_the_kernel_is_torch_lstm(num_layers, implementation):
    torch.manual_seed(0)
    cores = [nn.LSTM(5, 8, num_layers), nn.LSTM(3, 8, num_layers)]
    inputs = [torch.randn(9, 4, 5), torch.randn(9, 4, 3)]
    h0, c0 = torch.randn(2, 2 * num_layers, 4, 8)
    outputs, h, c = lstm_with_resets(
        cores, inputs, h0, c0, torch.zeros(9, 4, dtype=torch.bool),
        torch.zeros(2 * num_layers, 1, 8), torch.zeros(2 * num_layers, 1, 8),
    )  # fmt: skip
    for k, (core, x) in enumerate(zip(cores, inputs, strict=True)):
        rows = slice(k * num_layers, (k + 1) * num_layers)
        expected, (h_k, c_k) = core(x, (h0[rows], c0[rows]))
        torch.testing.assert_close(outputs[k], expected)
        torch.testing.assert_close(h[rows], h_k)
        torch.testing.assert_close(c[rows], c_k)
    # Gradients reach every weight of both cores.
    sum(o.sum() for o in outputs).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in cores[1].parameters())


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "separate"])
@pytest.mark.parametrize("learned", [False, True], ids=["zeros", "learned"])
def test_window_replay_equals_stepping_with_resets_mid_sequence(shared, learned, implementation):
    policy = make_policy(shared, learned=learned)
    steps, envs = 7, 4
    obs = torch.randn(steps, envs, OBS_DIM)
    init = policy.initial_state(envs)
    state = PolicyState(torch.randn_like(init.h), torch.randn_like(init.c))
    starts = torch.zeros(steps, envs, dtype=torch.bool)
    starts[0, 1] = starts[3, 0] = starts[3, 2] = starts[6, 3] = True
    dist, values, _, _ = policy(window_batch(obs, state, starts))
    stepped = state
    for t in range(steps):
        step_dist, step_value, stepped = reference_step(policy, obs[t], stepped, starts[t])
        torch.testing.assert_close(dist.logits[t], step_dist.logits)
        torch.testing.assert_close(values[t], step_value)
    if learned:  # the reset target is trained through the kernel
        values.sum().backward()
        assert policy.initial_h.grad.abs().sum() > 0
        assert policy.initial_c.grad.abs().sum() > 0


def test_window_layout_cuts_every_seq_len_steps_and_marks_episode_starts():
    dones = torch.zeros(5, 2, dtype=torch.bool)
    dones[1, 0] = dones[3, 1] = True  # episodes start at step 2 of env 0 and 4 of env 1
    layout = build_window_layout(dones, torch.tensor([True, False]), seq_len=3)
    # Env 0's windows [0, 3) and [3, 5) (padded), then env 1's: flat index t * N + n.
    assert layout.index.T.tolist() == [[0, 2, 4], [6, 8, 6], [1, 3, 5], [7, 9, 7]]
    assert layout.mask.T.tolist() == [[True] * 3, [True, True, False]] * 2
    assert layout.starts.T.tolist() == [
        [True, False, True],
        [False, False, False],
        [False, False, False],
        [False, True, False],
    ]
    assert layout.lengths.tolist() == [3, 2, 3, 2]
    assert layout.start_index.tolist() == [0, 6, 1, 7]
    with pytest.raises(ValueError, match="seq_len must be positive"):
        build_window_layout(dones, torch.tensor([True, False]), seq_len=0)


def learner(
    compile_step: bool, shared_core: bool = False, shared_trunk: bool = False
) -> tuple[PPOLearner, Rollout]:
    network = dataclasses.replace(NETWORK, shared_trunk=shared_trunk)
    policy = make_policy(shared_core, num_layers=1, learned=True, network=network)
    rnn = RNNConfig(hidden_size=8, shared_core=shared_core, impl=RNNImpl.esper)
    config = AgentConfig(
        name="recurrent_ppo", minibatch_size=32, update_epochs=2, learning_rate=3e-3,
        compile=compile_step, network=network, rnn=rnn, seq_len=8,
    )  # fmt: skip
    generator = torch.Generator().manual_seed(1)
    steps, envs = 16, 4
    dones = torch.rand(steps, envs, generator=generator) < 0.2
    init = policy.initial_state(envs)
    stored = torch.randn(steps, envs, *init.h.shape[::2], generator=generator)
    rollout = Rollout(
        torch.randn(steps, envs, OBS_DIM, generator=generator),
        torch.randint(0, 3, (steps, envs), generator=generator),
        torch.full((steps, envs), -1.1),
        *torch.randn(3, steps, envs, generator=generator),
        dones,
        None,
        stored,
        stored.tanh(),
        torch.ones(envs, dtype=torch.bool),
    )
    collector = build_collector(CollectorConfig())
    batching = Windows(config.seq_len, config.minibatch_size)
    return PPOLearner(policy, config, collector, batching, num_updates=4), rollout


@needs_compile
@pytest.mark.parametrize(
    ("shared_core", "shared_trunk"),
    [(False, False), (True, False), (False, True)],
    ids=["separate", "shared-core", "shared-encoder"],
)
def test_compiled_recurrent_step_matches_the_eager_step(shared_core, shared_trunk, implementation):
    """Two updates, eager against compiled, on either kernel: same weights, Adam moments and
    metrics. A shared core or encoder is one module under two names in the policy."""
    eager, chunks = learner(False, shared_core, shared_trunk)
    compiled, _ = learner(True, shared_core, shared_trunk)
    assert_same_update(eager, compiled, chunks)
