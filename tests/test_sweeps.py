"""The sweep summary read off job dirs, and the sweep presets composing as users run them."""

import json
import math
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from esper.simic import sweeps
from esper.simic.app import CONFIG_MODULE, CONFIG_NAME
from esper.simic.config import register_schemas
from esper.simic.settings import SimicConfig
from esper.simic.testing import compose_config, compose_settings

CONF = Path(__file__).resolve().parents[1] / "conf"


def _job(sweep: Path, name: str, overrides: list[str], experiment: str = "cartpole_ppo") -> Path:
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra/overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job / ".hydra/config.yaml").write_text(yaml.safe_dump({"experiment": experiment}))
    return job


def _summary(job: Path, ret: float) -> None:
    summary = {"final_eval_return_mean": ret, "env_steps_per_s": 1000.0}
    (job / "summary.json").write_text(json.dumps(summary))


def test_rows_say_ok_failed_with_its_error_or_died_in_job_order(tmp_path):
    for num in (10, 2, 9):
        _summary(_job(tmp_path, str(num), [f"seed={num}"]), 480.0 + num)
    failed = _job(tmp_path, "1", ["env.id=Nope-v0"])
    (failed / "failed.json").write_text(json.dumps({"error": "ConfigError: env.id bad"}))
    _job(tmp_path, "0", ["seed=0"])  # killed: neither summary nor failed.json

    rows = sweeps.collect_jobs(tmp_path, {"cartpole_ppo": 485})

    assert [r.job for r in rows] == ["0", "1", "2", "9", "10"]
    assert [r.status for r in rows] == ["unfinished", "failed", "ok", "ok", "ok"]
    assert rows[0].error == "unfinished: stopped or killed before its first update, no checkpoint"
    assert rows[1].error == "failed: ConfigError: env.id bad"
    assert [r.passed for r in rows] == [False, False, False, True, True]
    assert rows[4].final_eval_return == 490.0
    table = sweeps.format_markdown(rows)
    assert "| 1 | env.id=Nope-v0 |  |  | failed: ConfigError: env.id bad | FAIL |" in table
    assert "3 of 5 jobs ok; 2 of 5 reached the threshold" in table


def test_without_thresholds_there_is_no_pass_column(tmp_path):
    _summary(_job(tmp_path, "0", ["seed=0"]), 9.0)
    table = sweeps.format_markdown(sweeps.collect_jobs(tmp_path))
    assert "pass" not in table
    assert "1 of 1 jobs ok" in table


def test_a_failing_sweep_job_writes_failed_json_and_returns_nan(tmp_path, monkeypatch):
    class Runtime:
        output_dir = str(tmp_path / "3")

    class Hydra:
        runtime = Runtime()

    monkeypatch.setattr(sweeps.HydraConfig, "get", staticmethod(Hydra))

    def task(cfg):
        raise FloatingPointError("non-finite gradient\nin actor.0.weight")

    assert math.isnan(sweeps.run_guarded(task, compose_config([])))
    record = json.loads((tmp_path / "3" / "failed.json").read_text())
    assert record["error"] == "FloatingPointError: non-finite gradient"
    assert "Traceback" in record["traceback"]


def _options(group: str) -> set[str]:
    return {p.stem for p in (CONF / group).glob("*.yaml")}


def _unit_cases() -> list[str]:
    spec = yaml.safe_load((CONF / "suite/unit.yaml").read_text())
    return spec["hydra"]["sweeper"]["params"]["+suite/unit_case"].split(",")


def test_unit_suite_cases_cover_every_option_of_every_group():
    assert set(_unit_cases()) == _options("suite/unit_case")
    seen: dict[str, set[str]] = {g: set() for g in ("agent", "collector", "env", "logger")}
    for case in _unit_cases():
        settings, _ = compose_settings(["+suite=unit", f"+suite/unit_case={case}"])
        assert settings.total_timesteps == 512
        assert settings.agent.network.actor_hidden == [16]
        defaults = yaml.safe_load((CONF / f"suite/unit_case/{case}.yaml").read_text())["defaults"]
        for entry in defaults:
            ((key, option),) = entry.items()
            seen[key.removeprefix("override /")].add(option)
    assert seen == {g: _options(g) for g in seen}


def _hydra_cfg(overrides: list[str]):
    register_schemas()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return compose(config_name=CONFIG_NAME, overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize(
    ("preset", "experiment"),
    [("ppo_optuna", "cartpole_ppo"), ("rppo_optuna", "stateless_cartpole_rppo")],
)
def test_search_spaces_name_real_keys_and_store_the_study_in_the_sweep_dir(preset, experiment):
    cfg = _hydra_cfg(
        [f"+experiment={experiment}", f"hparams_search={preset}", "total_timesteps=4096"]
    )
    sweeper = cfg.hydra.sweeper
    assert sweeper.direction == "maximize"
    assert sweeper.study_name == f"{experiment}-{preset.split('_')[0]}-4096steps"
    assert cfg.hydra.sweep.dir == f"multirun/hpo/{sweeper.study_name}"
    assert sweeper.storage == f"{cfg.hydra.sweep.dir}/optuna.journal"
    for key in sweeper.params:
        assert OmegaConf.select(cfg, key) is not None, key


def test_the_performance_suite_names_real_experiments():
    cfg = _hydra_cfg(["+suite=performance"])
    listed = set(cfg.hydra.sweeper.params["+experiment"].split(","))
    assert {"cartpole_ppo", "stateless_cartpole_rppo"} <= listed <= _options("experiment")
    for experiment in listed:
        settings, _ = compose_settings(["+suite=performance", f"+experiment={experiment}"])
        assert isinstance(settings, SimicConfig)


def test_the_integration_suite_judges_every_case_it_runs():
    """Each case is a preset under its own experiment name, which keys its threshold."""
    cfg = _hydra_cfg(["+suite=integration"])
    cases = cfg.hydra.sweeper.params["+suite/integration_case"].split(",")
    assert set(cases) == _options("suite/integration_case")
    assert cfg.hydra.sweeper.params["seed"] == "range(0,10)"
    thresholds = cfg.hydra.callbacks.sweep_summary.thresholds
    names = set()
    for case in cases:
        settings, _ = compose_settings(["+suite=integration", f"+suite/integration_case={case}"])
        names.add(settings.experiment)
    assert names == set(thresholds) and len(names) == len(cases)
    assert {"cartpole_ppo", "acrobot_ppo", "seed_lifecycle_rppo"} <= names


@pytest.mark.parametrize("launcher", ["parallel", "slurm", "slurm_local"])
def test_launcher_presets_compose(launcher):
    cfg = _hydra_cfg([f"hydra/launcher={launcher}"])
    assert cfg.hydra.launcher._target_.startswith("hydra_plugins.")


def test_the_slurm_preset_lets_submitit_requeue_a_timed_out_job():
    """submitit's default (0) ends a job at its time limit instead of requeueing it."""
    launcher = _hydra_cfg(["hydra/launcher=slurm"]).hydra.launcher
    assert launcher.max_num_timeout > 0
    assert launcher.signal_delay_s > 0
