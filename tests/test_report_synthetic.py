"""``python -m esper.simic.report`` on synthetic run dirs whose answers are known.

Each fixture writes run dirs as ``python -m esper.simic`` does (``.hydra/config.yaml``,
``metrics.jsonl``, ``summary.json``); final returns are drawn from set distributions,
gradient statistics depend only on seed and step, so equal seeds must match.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from esper.simic.report.__main__ import main
from esper.simic.report.analysis import Report, Settings, analyze
from esper.simic.report.loading import load_local
from esper.simic.report.statistics import Bootstrap, Interval

STEPS = (1024, 2048, 3072, 4096)


def write_run(
    run_dir: Path,
    collector: str,
    seed: int,
    final: float,
    *,
    env_id: str = "CartPole-v1",
    learning_rate: float = 1e-3,
    step_axis: str = "global_step",
    metric: str = "eval/return_mean",
) -> None:
    config = {
        "experiment": "synthetic",
        "seed": seed,
        "agent": {"name": "ppo", "learning_rate": learning_rate},
        "env": {"id": env_id},
        "collector": {"name": collector},
        "logger": {"name": "none", "project": "esper-simic"},
    }
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    rows = [
        {
            step_axis: step,
            metric: final * step / STEPS[-1],
            "grad/global_norm": 1.0 + seed + step / 1000,
            "grad/health": 1.0,
            "time/update_s": 0.02 if collector == "foreach" else 0.03,
        }
        for step in STEPS
    ]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    summary = {"final_eval_return_mean": final, "env_steps_per_s": 1000.0, "seed": seed}
    (run_dir / "summary.json").write_text(json.dumps(summary))


def write_sweep(root: Path, groups: dict[str, np.ndarray]) -> Path:
    """One multirun dir: jobs 0, 1, ... with seed i in every group."""
    job = 0
    for collector, finals in groups.items():
        for seed, final in enumerate(finals):
            write_run(root / str(job), collector, seed, float(final))
            job += 1
    return root


def run_report(tmp_path: Path, *args: str) -> tuple[int, dict]:
    """The CLI end to end (figures included): exit code and ``report.json``."""
    out = tmp_path / "report"
    code = main([*args, "--out", str(out), "--no-wandb", "--reps", "1000"])
    report = json.loads((out / "report.json").read_text()) if code == 0 else {}
    return code, report


def analyze_dir(path: Path, *group_by: str, higher_is_better: bool = True) -> Report:
    """The report's numbers without drawing figures: what most tests check."""
    settings = Settings(
        group_by=group_by, higher_is_better=higher_is_better, bootstrap=Bootstrap(reps=1000)
    )
    return analyze(load_local([path]), settings, [str(path)])


@pytest.fixture
def known_sweep(tmp_path: Path) -> Path:
    """loop ~ N(100, 5), foreach ~ N(110, 5), 10 runs each."""
    rng = np.random.default_rng(3)
    return write_sweep(
        tmp_path / "sweep", {"loop": rng.normal(100, 5, 10), "foreach": rng.normal(110, 5, 10)}
    )


def _covers(interval: dict | Interval, truth: float) -> bool:
    if isinstance(interval, Interval):
        return interval.low <= truth <= interval.high
    return interval["low"] <= truth <= interval["high"]


def test_known_difference_is_found_and_intervals_cover_the_truth(known_sweep, tmp_path, capsys):
    code, report = run_report(tmp_path, str(known_sweep), "--group-by", "collector.name")
    assert code == 0
    groups = {group["label"]: group for group in report["groups"]}
    assert sorted(groups) == ["foreach", "loop"]
    assert len(groups["loop"]["runs"]) == len(groups["foreach"]["runs"]) == 10
    for label, truth in (("loop", 100), ("foreach", 110)):
        for name in ("mean", "median", "iqm"):
            assert _covers(groups[label][name], truth), (label, name)
    [comparison] = report["comparisons"]
    assert (comparison["a"], comparison["b"]) == ("foreach", "loop")
    assert _covers(comparison["mean_difference"], -10)
    # P(loop > foreach) for N(100, 5) vs N(110, 5) is 1 - Phi(10 / (5 sqrt 2)) = 0.079.
    assert _covers(comparison["p_b_better"], 0.0786)
    assert comparison["significant"]
    assert comparison["verdict"].startswith("foreach is better than loop: P(foreach>loop)=")
    assert comparison["verdict"] in capsys.readouterr().out


def test_report_files_tables_and_plots(known_sweep, tmp_path):
    code, report = run_report(tmp_path, str(known_sweep))
    assert code == 0
    out = tmp_path / "report"
    for name in report["figures"].values():
        assert (out / name).read_bytes().startswith(b"\x89PNG")
    assert set(report["figures"]) == {"learning_curves", "scores", "improvement", "gradients"}
    markdown = (out / "report.md").read_text()
    assert (
        "| group | runs | mean [95% CI] | median [95% CI] | IQM [95% CI] | min | max |" in markdown
    )
    assert "| foreach | 10 |" in markdown
    assert "![eval/return_mean against global_step](learning_curves.png)" in markdown
    assert "env steps/s" in markdown and "update time ms" in markdown
    html = (out / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == 4
    assert 'src="http' not in html and '.png"' not in html  # self-contained
    curve = report["curves"]["eval/return_mean"][0]
    assert curve["steps"] == list(STEPS)
    bands = zip(curve["low"], curve["mean"], curve["high"], strict=True)
    assert all(low <= mean <= high for low, mean, high in bands)
    assert {g["label"]: g["update_s"][0] for g in report["groups"]} == {
        "foreach": 0.02,
        "loop": 0.03,
    }


def test_group_keys_are_inferred_from_what_the_sweep_varied(known_sweep):
    report = analyze_dir(known_sweep)
    assert report.group_by == ["collector.name"]
    assert report.group_by_inferred


def test_equal_seeds_give_equal_gradient_statistics(known_sweep):
    [match] = analyze_dir(known_sweep).gradient_matches
    assert match.seeds == list(range(10))
    assert match.points == 10 * 2 * len(STEPS)  # 10 seeds x 2 grad keys x 4 steps
    assert match.max_abs_diff == 0.0
    assert match.matches


def test_different_gradients_are_reported_with_their_largest_gap(tmp_path):
    write_sweep(tmp_path / "sweep", {"loop": np.full(3, 100.0), "foreach": np.full(3, 100.0)})
    history = tmp_path / "sweep" / "3" / "metrics.jsonl"  # foreach, seed 0
    rows = [json.loads(line) for line in history.read_text().splitlines()]
    rows[2]["grad/global_norm"] += 0.5
    history.write_text("".join(json.dumps(row) + "\n" for row in rows))
    [match] = analyze_dir(tmp_path / "sweep").gradient_matches
    assert not match.matches
    assert match.max_abs_diff == pytest.approx(0.5)
    assert match.worst_key == "grad/global_norm"


def test_identical_groups_give_no_significant_difference(tmp_path, capsys):
    finals = np.random.default_rng(5).normal(100, 5, 10)
    write_sweep(tmp_path / "sweep", {"loop": finals, "foreach": finals})
    code, report = run_report(tmp_path, str(tmp_path / "sweep"))
    assert code == 0
    [comparison] = report["comparisons"]
    assert comparison["p_b_better"]["estimate"] == pytest.approx(0.5)
    assert not comparison["significant"]
    assert comparison["verdict"].startswith("no significant difference between loop and foreach")
    assert "no significant difference" in capsys.readouterr().out


def test_groups_from_one_distribution_give_no_significant_difference(tmp_path):
    rng = np.random.default_rng(11)
    write_sweep(
        tmp_path / "sweep", {"loop": rng.normal(100, 5, 10), "foreach": rng.normal(100, 5, 10)}
    )
    [comparison] = analyze_dir(tmp_path / "sweep").comparisons
    assert comparison.verdict.startswith("no significant difference")
    assert _covers(comparison.p_b_better, 0.5)


def test_too_few_runs_are_not_called_better(tmp_path):
    write_sweep(
        tmp_path / "sweep", {"loop": np.array([1.0, 2, 3]), "foreach": np.array([7.0, 8, 9])}
    )
    [comparison] = analyze_dir(tmp_path / "sweep").comparisons
    assert comparison.p_b_better.estimate == 0.0  # loop never beats foreach
    assert not comparison.significant
    assert "foreach looks better than loop but there are too few runs" in comparison.verdict


def test_lower_is_better_turns_the_verdict(known_sweep):
    [comparison] = analyze_dir(known_sweep, higher_is_better=False).comparisons
    assert comparison.verdict.startswith("loop is better than foreach")


def test_several_group_keys_and_environments(tmp_path):
    root = tmp_path / "sweep"
    for job, (env_id, lr, seed) in enumerate(
        (env, lr, seed) for env in ("A-v0", "B-v0") for lr in (1e-3, 3e-4) for seed in range(2)
    ):
        write_run(root / str(job), "foreach", seed, 10.0 * seed, env_id=env_id, learning_rate=lr)
    report = analyze_dir(root, "env.id", "agent.learning_rate")
    labels = [group.label for group in report.groups]
    assert labels == [
        "env=A-v0, learning_rate=0.0003",
        "env=A-v0, learning_rate=0.001",
        "env=B-v0, learning_rate=0.0003",
        "env=B-v0, learning_rate=0.001",
    ]
    # Only groups of one environment are compared: A with A, B with B.
    assert [(c.a[:8], c.b[:8]) for c in report.comparisons] == [
        ("env=A-v0", "env=A-v0"),
        ("env=B-v0", "env=B-v0"),
    ]
    pooled = analyze_dir(root, "agent.learning_rate")
    assert pooled.groups[0].environments == ["A-v0", "B-v0"]
    assert any("spans several environments" in warning for warning in pooled.warnings)


def test_a_config_node_as_group_key_is_labelled_by_what_differs(tmp_path):
    root = tmp_path / "sweep"
    for job, lr in enumerate((1e-3, 1e-3, 3e-4, 3e-4)):
        write_run(root / str(job), "loop", job % 2, 1.0, learning_rate=lr)
    report = analyze_dir(root, "agent")
    assert [g.label for g in report.groups] == ["learning_rate=0.0003", "learning_rate=0.001"]


def test_a_cut_off_last_history_line_is_ignored(known_sweep):
    with (known_sweep / "0" / "metrics.jsonl").open("a") as history:
        history.write('{"global_step": 5000, "eval/ret')
    assert len(analyze_dir(known_sweep).groups[1].runs) == 10


def _error(capsys) -> str:
    message = capsys.readouterr().err
    assert message.startswith("esper.simic.report: error: ")
    return message


def test_error_no_runs_found(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert run_report(tmp_path, str(tmp_path / "empty"))[0] == 2
    assert "no runs found under" in _error(capsys)


def test_error_runs_missing_the_metric_are_listed(known_sweep, tmp_path, capsys):
    (known_sweep / "9").rename(known_sweep / "renamed")
    write_run(known_sweep / "9", "loop", 9, 100.0, metric="eval/other")
    assert run_report(tmp_path, str(known_sweep))[0] == 2
    message = _error(capsys)
    assert "1 of 21 runs have no 'eval/return_mean' values: 9;" in message
    assert "eval/other" in message


def test_error_group_key_absent_in_some_runs_is_listed(known_sweep, tmp_path, capsys):
    for job in ("2", "5"):
        config_path = known_sweep / job / ".hydra" / "config.yaml"
        config = yaml.safe_load(config_path.read_text())
        del config["collector"]
        config_path.write_text(yaml.safe_dump(config))
    assert run_report(tmp_path, str(known_sweep), "--group-by", "collector.name")[0] == 2
    assert "group key 'collector.name' is absent in 2 of 20 runs: 2, 5" in _error(capsys)


def test_error_mixed_step_axes(known_sweep, tmp_path, capsys):
    (known_sweep / "4").rename(known_sweep / "x")
    write_run(known_sweep / "4", "loop", 4, 100.0, step_axis="_step")
    assert run_report(tmp_path, str(known_sweep))[0] == 2
    assert "mixed step axes: 1 of 21 runs log no 'global_step': 4" in _error(capsys)


def test_error_paths_and_wandb_together(known_sweep, tmp_path, capsys):
    assert run_report(tmp_path, str(known_sweep), "--wandb", "me/project")[0] == 2
    assert "one of the two" in _error(capsys)


def test_help_documents_the_verdict_rule(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--group-by KEY" in text and "excludes 0.5" in text


def test_no_interval_for_single_runs(tmp_path):
    write_sweep(tmp_path / "sweep", {"loop": np.array([1.0]), "foreach": np.array([2.0])})
    code, report = run_report(tmp_path, str(tmp_path / "sweep"))
    assert code == 0
    assert report["groups"][0]["mean"]["low"] is None  # NaN is written as null
    assert report["groups"][0]["mean"]["estimate"] == 2.0
    assert report["comparisons"][0]["verdict"].startswith("cannot compare")


def test_reference_levels_are_drawn_listed_and_kept(known_sweep, tmp_path):
    args = ("--reference", "heuristic=105", "--reference", "oracle=1.2e2")
    code, report = run_report(tmp_path, str(known_sweep), *args)
    assert code == 0
    assert report["references"] == {"heuristic": 105.0, "oracle": 120.0}
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "Dotted reference lines: heuristic 105, oracle 120." in markdown


@pytest.mark.parametrize("bad", ["heuristic", "=1.0", "oracle=high", "x=nan"])
def test_a_malformed_reference_is_one_clear_error(known_sweep, tmp_path, capsys, bad):
    with pytest.raises(SystemExit) as exit_info:
        run_report(tmp_path, str(known_sweep), "--reference", bad)
    assert exit_info.value.code == 2
    assert "needs LABEL=VALUE with a finite number" in capsys.readouterr().err


def test_failed_and_unfinished_runs_are_listed_with_their_reason(known_sweep, tmp_path, capsys):
    stopped = known_sweep / "20"
    write_run(stopped, "loop", 10, 90.0)
    (stopped / "summary.json").unlink()
    (stopped / "checkpoints").mkdir()
    failed = known_sweep / "21"
    (failed / ".hydra").mkdir(parents=True)
    (failed / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"experiment": "synthetic"}))
    (failed / "failed.json").write_text(json.dumps({"error": "ValueError: bad"}))

    code, report = run_report(tmp_path, str(known_sweep))

    assert code == 0
    warnings = report["warnings"]
    assert any(
        f"20 (unfinished: stopped or killed at step 4096; resume={stopped} continues it)" in w
        for w in warnings
    )
    assert f"no history to report: {failed}: failed: ValueError: bad" in warnings
    assert "failed: ValueError: bad" in capsys.readouterr().err


def test_the_report_defaults_to_a_folder_inside_the_sweep(tmp_path, monkeypatch):
    sweep = write_sweep(tmp_path / "sweep", {"loop": np.zeros(2), "foreach": np.ones(2)})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main([str(sweep), "--no-wandb", "--reps", "100"]) == 0
    (report,) = (sweep / "reports").glob("*/report.json")
    assert json.loads(report.read_text())["comparisons"]
    assert list(elsewhere.iterdir()) == []
    # The report is not a run: reading the sweep again finds the same four runs.
    assert len(load_local([sweep])) == 4
