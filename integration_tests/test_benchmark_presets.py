"""The MuJoCo and Atari presets train end to end for a few thousand steps: the env ids,
imports, wrappers and (for Atari) the CNN policy as shipped. Each is skipped only where
its extra is not installed (``pip install -e ".[mujoco]"`` / ``".[atari]"``; the ``test``
extra brings both). Their learning results are in the README."""

import numpy as np
import pytest
import torch

from esper.simic.testing import run_training

pytestmark = pytest.mark.slow


def test_halfcheetah_preset_trains(quiet, tmp_path):
    pytest.importorskip("mujoco", reason='needs pip install -e ".[mujoco]"')
    result = run_training(
        ["+experiment=halfcheetah_ppo", "total_timesteps=4096", "trainer.eval_episodes=1", *quiet],
        tmp_path,
    )
    assert result.total_env_steps == 4096
    assert result.num_updates == 2
    assert np.isfinite(result.final_eval_return_mean)


def test_breakout_preset_trains_a_cnn_policy(quiet, tmp_path):
    pytest.importorskip("ale_py", reason='needs pip install -e ".[atari]"')
    pytest.importorskip("cv2", reason='needs pip install -e ".[atari]"')
    result = run_training(
        ["+experiment=breakout_ppo", "total_timesteps=2048", "trainer.eval_episodes=2", *quiet],
        tmp_path,
    )
    assert result.total_env_steps == 2048
    assert result.final_eval_return_mean >= 0
    weights = torch.load(tmp_path / "policy.pt", weights_only=True)
    assert weights["encoder.images.0.cnn.net.0.weight"].shape == (32, 4, 8, 8)
