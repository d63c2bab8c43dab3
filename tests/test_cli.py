"""The command line as a user meets it, in a subprocess."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from esper.simic.agents.lstm_resets import KERNEL_VARIABLE
from esper.simic.testing import TINY_OVERRIDES

REPO = Path(__file__).resolve().parents[1]
# The console scripts, installed beside this interpreter by `pip install -e .`.
SCRIPTS = Path(sys.executable).parent


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


def test_help_names_the_program_and_lists_the_config_groups(tmp_path):
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("esper-simic (or python -m esper.simic): train PPO")
    assert "powered by Hydra" not in result.stdout.splitlines()[0]
    for group in ("agent:", "env:", "collector:", "logger:", "experiment:"):
        assert group in result.stdout
    assert "cartpole_ppo" in result.stdout


@pytest.mark.parametrize(
    "args",
    [["--help"], ["--cfg", "job", "+experiment=acrobot_ppo"], ["agent.lerning_rate=0.1"]],
    ids=["help", "cfg", "typo"],
)
def test_the_console_script_is_the_module_form(args, tmp_path):
    module = run_cli(*args, cwd=tmp_path)
    script = subprocess.run(
        [str(SCRIPTS / "esper-simic"), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert (script.returncode, script.stdout, script.stderr) == (
        module.returncode,
        module.stdout,
        module.stderr,
    )
    assert module.stdout or module.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_report_console_script_is_the_module_form(tmp_path):
    results = [
        subprocess.run(
            [*command, "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=180
        )
        for command in (
            [sys.executable, "-m", "esper.simic.report"],
            [str(SCRIPTS / "esper-simic-report")],
        )
    ]
    module, script = ((r.returncode, r.stdout, r.stderr) for r in results)
    assert module == script
    assert module[1].startswith("usage: esper-simic-report")


def test_a_config_that_does_not_compose_is_one_line_and_exit_2(tmp_path):
    result = run_cli("env=nope", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "esper.simic: config error: env=nope is not an option of group 'env': choose one of "
        "acrobot, breakout, cartpole, cue_recall, halfcheetah, pendulum, seed_lifecycle, "
        "stateless_cartpole"
    ]
    assert list(tmp_path.iterdir()) == []


def test_without_a_compiler_rnn_impl_esper_trains_on_the_pytorch_kernel_after_one_warning(
    tmp_path,
):
    """CXX and PATH point at nothing and torch's extension cache is empty, as for a user
    without a compiler: the build fails before the run dir exists, the run goes on."""
    env = {
        **os.environ,
        "CXX": str(tmp_path / "no-compiler"),
        "PATH": str(tmp_path),
        "TORCH_EXTENSIONS_DIR": str(tmp_path / "cache"),
    }
    env.pop(KERNEL_VARIABLE, None)
    run_dir = tmp_path / "run"
    result = run_cli(
        "+experiment=stateless_cartpole_rppo", "agent.rnn.impl=esper", *TINY_OVERRIDES,
        "trainer.torch_threads=1", f"hydra.run.dir={run_dir}", cwd=tmp_path, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    (warning,) = [line for line in output.splitlines() if "pure-PyTorch" in line]
    assert "could not be built (" in warning
    assert "Traceback" not in output
    assert (run_dir / "summary.json").is_file()


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
