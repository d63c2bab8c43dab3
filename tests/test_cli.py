"""The command line as a user meets it, in a subprocess."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "esper.simic", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )


def test_cfg_job_prints_the_composed_config(tmp_path):
    result = run_cli("--cfg", "job", "+experiment=cartpole_ppo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "experiment: cartpole_ppo" in result.stdout
    assert "learning_rate: 0.001" in result.stdout
    assert "id: CartPole-v1" in result.stdout
    assert list(tmp_path.iterdir()) == []


def test_help_lists_the_config_groups(tmp_path):
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for group in ("agent:", "env:", "collector:", "logger:", "experiment:"):
        assert group in result.stdout
    assert "cartpole_ppo" in result.stdout


@pytest.mark.timeout(600)
def test_built_wheel_ships_the_config_and_runs_from_elsewhere(tmp_path):
    """A non-editable install must find conf/ inside the package, from any directory."""
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = tmp_path.glob("esper_simic-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(site)
    assert "esper/simic/conf/config.yaml" in names
    assert "esper/simic/conf/experiment/cartpole_ppo.yaml" in names
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = run_cli("--cfg", "job", "+experiment=acrobot_ppo", cwd=elsewhere, env=env)
    assert result.returncode == 0, result.stderr
    assert "id: Acrobot-v1" in result.stdout
    import_path = subprocess.run(
        [sys.executable, "-c", "import esper.simic; print(esper.simic.__file__)"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    ).stdout
    assert import_path.startswith(str(site))
