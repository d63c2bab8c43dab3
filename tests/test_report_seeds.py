"""``esper-simic-report seeds`` on synthetic integration-suite sweep dirs whose answers are
known by hand: the per-seed JSON, the README table, and the table regenerated from the JSON.

Job dirs are written as ``python -m esper.simic -m +suite=integration`` writes them
(``.hydra/{config,hydra,overrides}.yaml``, ``summary.json``, ``failed.json``).
"""

import json
from pathlib import Path

import pytest
import yaml

from esper.simic.report.__main__ import main
from esper.simic.report.seeds import BEGIN, END, NOT_RUN

THRESHOLDS = {"cartpole_ppo": 75.0, "acrobot_ppo": -100.0}
COMMIT = "0123456789abcdef0123456789abcdef01234567"
README = f"# title\n\nbefore, quoting {BEGIN} in prose\n{BEGIN}\nold table\n{END}\nafter\n"


def write_job(
    job_dir: Path, preset: str, seed: int, final: float | None, *, error: str | None = None
) -> None:
    """One job dir; ``final=None`` with ``error`` is a failed job, without it a stopped one."""
    hydra_dir = job_dir / ".hydra"
    hydra_dir.mkdir(parents=True)
    config = {
        "experiment": preset,
        "seed": seed,
        "total_timesteps": 100_000,
        "trainer": {"eval_episodes": 10, "eval_deterministic": True},
    }
    hydra = {"hydra": {"callbacks": {"sweep_summary": {"thresholds": THRESHOLDS}}}}
    (hydra_dir / "config.yaml").write_text(yaml.safe_dump(config))
    (hydra_dir / "hydra.yaml").write_text(yaml.safe_dump(hydra))
    (hydra_dir / "overrides.yaml").write_text(yaml.safe_dump([f"seed={seed}"]))
    if final is not None:
        summary = {"final_eval_return_mean": final, "git_commit": COMMIT}
        (job_dir / "summary.json").write_text(json.dumps(summary))
    elif error is not None:
        (job_dir / "failed.json").write_text(json.dumps({"error": error, "traceback": ""}))


def write_sweep(root: Path, preset: str, finals: list[float]) -> Path:
    for seed, final in enumerate(finals):
        write_job(root / str(seed), preset, seed, final)
    return root


def table_rows(text: str) -> dict[str, list[list[str]]]:
    """Preset name -> the cells of its rows (one row per peer)."""
    rows: dict[str, list[list[str]]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `"):
            rows.setdefault(cells[0].strip("`"), []).append(cells)
    return rows


@pytest.fixture
def cartpole_sweep(tmp_path: Path) -> Path:
    """Seeds 0-9 ending at 10, 20, ..., 100: IQM 55 (mean of 30..80), 3 reach 75."""
    return write_sweep(tmp_path / "sweep", "cartpole_ppo", [10.0 * (s + 1) for s in range(10)])


def run_seeds(*args: str | Path) -> int:
    return main(["seeds", *map(str, args), "--reps", "500"])


def test_table_gives_iqm_with_its_interval_min_max_and_seeds_reaching(
    cartpole_sweep, tmp_path, capsys
):
    assert run_seeds(cartpole_sweep) == 0
    rows = table_rows(capsys.readouterr().out)
    (cartpole,) = rows["cartpole_ppo"]
    _, budget, threshold, iqm, low, high, reach, peer, *_ = cartpole
    assert (budget, threshold, low, high, reach, peer) == (
        "100k",
        ">= 75",
        "10",
        "100",
        "3/10",
        "-",
    )
    estimate, interval = iqm.split(" ", 1)
    ci_low, ci_high = (float(x) for x in interval.strip("[]").split(","))
    assert float(estimate) == 55.0
    assert 10 < ci_low < 55 < ci_high < 100
    assert rows["acrobot_ppo"][0][3] == NOT_RUN  # a threshold of the suite, no run


def test_json_keeps_every_seed_and_regenerates_the_same_readme_section(
    cartpole_sweep, tmp_path, capsys
):
    readme, out = tmp_path / "README.md", tmp_path / "results" / "seeds.json"
    readme.write_text(README)
    assert run_seeds(cartpole_sweep, "--json", out, "--readme", readme) == 0
    data = json.loads(out.read_text())
    assert data["thresholds"] == THRESHOLDS
    assert [(r["preset"], r["seed"], r["final_eval_return"]) for r in data["results"]] == [
        ("cartpole_ppo", s, 10.0 * (s + 1)) for s in range(10)
    ]
    assert {(r["budget"], r["commit"], r["runner"]) for r in data["results"]} == {
        (100_000, COMMIT, "esper-simic")
    }
    first = readme.read_text()
    assert first.startswith(f"# title\n\nbefore, quoting {BEGIN} in prose\n{BEGIN}\n| preset")
    assert first.endswith(f"{END}\nafter\n")
    assert "old table" not in first and COMMIT[:7] in first

    readme.write_text(README)  # from the JSON alone, the sweep gone
    for path in sorted(cartpole_sweep.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    assert run_seeds(out, "--readme", readme) == 0
    assert readme.read_text() == first


def test_peers_stand_beside_ours_and_later_inputs_replace_a_seed(cartpole_sweep, tmp_path, capsys):
    peers = tmp_path / "peers.json"
    results = [
        {
            "preset": "cartpole_ppo",
            "runner": "stable-baselines3",
            "seed": seed,
            "final_eval_return": 100.0 if seed else 20.0,
            "budget": 100_000,
            "commit": COMMIT,
            "eval_episodes": 10,
            "deterministic": True,
            "version": "2.7.0",
        }
        for seed in range(10)
    ]
    peers.write_text(json.dumps({"format": 1, "thresholds": THRESHOLDS, "results": results}))
    rerun = write_sweep(tmp_path / "rerun", "cartpole_ppo", [90.0])  # seed 0 again: 10 -> 90
    assert run_seeds(cartpole_sweep, peers, rerun) == 0
    (row,) = table_rows(capsys.readouterr().out)["cartpole_ppo"]
    assert row[4:8] == ["20", "100", "4/10", "stable-baselines3 2.7.0"]
    assert row[8].startswith("100") and row[9:] == ["20", "9/10"]


def test_failed_seeds_count_against_the_preset_and_stopped_ones_are_left_out(tmp_path, capsys):
    sweep = write_sweep(tmp_path / "sweep", "acrobot_ppo", [-80.0, -90.0, -120.0])
    write_job(sweep / "3", "acrobot_ppo", 3, None, error="RuntimeError: boom")
    write_job(sweep / "4", "acrobot_ppo", 4, None)  # stopped: no result yet
    assert run_seeds(sweep) == 0
    captured = capsys.readouterr()
    (row,) = table_rows(captured.out)["acrobot_ppo"]
    assert row[4:7] == ["-120", "-80", "2/4 (1 failed)"]
    assert "left out" in captured.err and f"{sweep / '4'}" in captured.err


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: [tmp / "nowhere"], "does not exist"),
        (lambda tmp: [tmp / "sweep", "--readme", tmp / "plain.md"], "needs the lines"),
        (lambda tmp: [tmp / "bad.json"], "is not a seeds JSON"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(cartpole_sweep, tmp_path, capsys, make, message):
    (tmp_path / "plain.md").write_text("no markers\n")
    (tmp_path / "bad.json").write_text('{"format": 1, "results": []}')
    out = tmp_path / "seeds.json"
    assert run_seeds(*make(tmp_path), "--json", out) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists() and (tmp_path / "plain.md").read_text() == "no markers\n"
