"""The unit suite (``python -m esper.simic -m +suite=unit``), its cases trained in-process."""

import json
import math
from pathlib import Path

import pytest
import yaml

from esper.simic.testing import run_training

CONF = Path(__file__).resolve().parents[1] / "conf"

CASES = yaml.safe_load((CONF / "suite/unit.yaml").read_text())["hydra"]["sweeper"]["params"][
    "+suite/unit_case"
].split(",")


@pytest.mark.parametrize("case", CASES)
def test_unit_suite_case_trains_and_writes_its_summary(case, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    result = run_training(["+suite=unit", f"+suite/unit_case={case}"], tmp_path)
    assert result.total_env_steps >= 512
    assert math.isfinite(result.final_eval_return_mean)
    assert json.loads((tmp_path / "summary.json").read_text())["total_env_steps"] >= 512
