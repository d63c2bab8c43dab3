"""A real sweep, then its report: ``collector=loop,foreach`` x 3 seeds on CartPole.

Both collectors measure the same gradients and clip them alike, so runs of equal
seed train identically: the report must find their gradient statistics equal at
every step and no difference in return.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SWEEP = [
    "+experiment=cartpole_ppo",
    "total_timesteps=4096",
    "trainer.eval_interval=4",
    "trainer.eval_episodes=5",
    "seed=0,1,2",
    "collector=loop,foreach",
    "logger=none",
    "trainer.progress=off",
]


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def test_report_on_a_real_collector_sweep(tmp_path):
    env = {
        **os.environ,
        "WANDB_DATA_DIR": str(tmp_path / "wandb-data"),
        "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"),
        "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"),
    }
    sweep = tmp_path / "sweep"
    _run(["-m", "esper.simic", "-m", *SWEEP, f"hydra.sweep.dir={sweep}"], tmp_path, env)
    out = tmp_path / "report"
    result = _run(
        ["-m", "esper.simic.report", str(sweep), "--group-by", "collector.name", "--out", str(out)],
        tmp_path,
        env,
    )
    assert "no significant difference between loop and foreach" in result.stdout
    assert list((out / "wandb").glob("offline-run-*/run-*.wandb"))  # the report's own W&B run

    report = json.loads((out / "report.json").read_text())
    groups = {group["label"]: group for group in report["groups"]}
    assert sorted(groups) == ["foreach", "loop"]
    for group in groups.values():
        assert sorted(group["seeds"]) == [0, 1, 2]
        assert len(group["env_steps_per_s"]) == 3 and min(group["env_steps_per_s"]) > 0
        assert len(group["update_s"]) == 3 and min(group["update_s"]) > 0
    assert groups["loop"]["scores"] == groups["foreach"]["scores"]  # same seeds, same training

    [match] = report["gradient_matches"]
    assert match["seeds"] == [0, 1, 2]
    assert match["points"] > 3 * 16 * 10  # 3 seeds x 16 updates x >10 grad/* keys
    assert match["matches"]
    assert match["max_rel_diff"] <= 1e-5

    for key in ("eval/return_mean", "grad/global_norm", "grad/health"):
        assert {curve["group"] for curve in report["curves"][key]} == {"loop", "foreach"}
    for name in report["figures"].values():
        assert (out / name).read_bytes().startswith(b"\x89PNG")
    assert set(report["figures"]) == {"learning_curves", "scores", "improvement", "gradients"}

    markdown = (out / "report.md").read_text()
    assert "| foreach | 3 |" in markdown and "| loop | 3 |" in markdown
    assert "| foreach | loop | 0, 1, 2 |" in markdown  # the gradient table
    assert markdown.count("![") == 4
    html = (out / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == 4
