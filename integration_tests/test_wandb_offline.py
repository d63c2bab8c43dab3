"""W&B offline runs as W&B itself reads them, and sweeps grouped in one W&B group."""

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

from wandb_records import history, records, run_record

from esper.simic.testing import TINY_OVERRIDES, run_training

WANDB_TINY = [*(o for o in TINY_OVERRIDES if not o.startswith("logger=")), "logger=wandb"]


def local_history(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_offline_run_is_a_w_and_b_run_with_our_history_and_model_artifact(tmp_path):
    run_training(WANDB_TINY, tmp_path)
    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    run_id = (tmp_path / "wandb_run_id.txt").read_text().strip()
    # The layout `wandb sync` expects: <dir>/offline-run-<time>-<id>/run-<id>.wandb.
    assert run.name.endswith(f"-{run_id}")
    assert {p.name for p in run.iterdir()} >= {f"run-{run_id}.wandb", "files", "logs"}
    run_file = run / f"run-{run_id}.wandb"

    assert run_record(run_file).run_id == run_id
    logged = history(run_file)
    ours = local_history(tmp_path)
    assert [row["global_step"] for row in logged] == [row["global_step"] for row in ours]
    for theirs, mine in zip(logged, ours, strict=True):
        assert {k: v for k, v in theirs.items() if not k.startswith("_")} == mine
    kinds = Counter(record.WhichOneof("record_type") for record in records(run_file))
    assert kinds["metric"] == 2  # global_step, and every metric stepped by it
    assert kinds["exit"] == 1  # finished, not left open for the next job
    (artifact,) = [r.artifact for r in records(run_file) if r.HasField("artifact")]
    assert artifact.type == "model"
    assert "final" in artifact.aliases
    assert {entry.path for entry in artifact.manifest.contents} == {"policy.pt", "checkpoint.pt"}


def test_multirun_jobs_are_separate_runs_in_one_sweep_group(tmp_path):
    sweep = tmp_path / "sweep"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "esper.simic",
            "-m",
            "seed=0,1",
            *WANDB_TINY,
            f"hydra.sweep.dir={sweep}",
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    run_files = sorted(sweep.glob("*/wandb/offline-run-*/run-*.wandb"))
    assert len(run_files) == 2
    runs = [run_record(path) for path in run_files]
    assert {run.run_group for run in runs} == {"default-sweep"}
    assert runs[0].run_id != runs[1].run_id
    for path in run_files:
        assert Counter(r.WhichOneof("record_type") for r in records(path))["exit"] == 1
