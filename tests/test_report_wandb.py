"""W&B in and out without a server: a fake public API, offline runs, an unsaved Report."""

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import wandb_workspaces.reports.v2 as wr

from esper.simic.report import wandb_io
from esper.simic.report.__main__ import main
from esper.simic.report.analysis import Settings, analyze
from esper.simic.report.loading import ReportError
from esper.simic.report.render import markdown_text
from esper.simic.report.statistics import Bootstrap


@dataclass
class FakeRun:
    id: str
    collector: str
    seed: int
    final: float
    job_type: str | None = "train"

    @property
    def url(self) -> str:
        return f"https://wandb.example/me/proj/runs/{self.id}"

    @property
    def config(self) -> dict[str, Any]:
        return {"seed": self.seed, "collector": {"name": self.collector}, "env": {"id": "E"}}

    @property
    def summary_metrics(self) -> dict[str, Any]:
        return {"env_steps_per_s": 500.0}

    def scan_history(self) -> list[dict[str, Any]]:
        return [
            {
                "_step": i,
                "global_step": step,
                "eval/return_mean": self.final * step / 300,
                "grad/global_norm": self.seed + step / 100,
            }
            for i, step in enumerate((100, 200, 300))
        ]


@dataclass
class FakeApi:
    runs_found: list[FakeRun]
    calls: list[tuple[str, Any]] = field(default_factory=list)

    def runs(self, path: str, filters: dict[str, Any] | None = None) -> list[FakeRun]:
        self.calls.append((path, filters))
        return self.runs_found


def fake_project() -> FakeApi:
    rng = np.random.default_rng(0)
    runs = [
        FakeRun(f"{collector}{seed}", collector, seed, float(rng.normal(mean, 1)))
        for collector, mean in (("loop", 10), ("foreach", 20))
        for seed in range(6)
    ]
    return FakeApi([*runs, FakeRun("rep1", "loop", 0, 0.0, job_type="report")])


def test_fetch_runs_reads_config_summary_and_full_history():
    api = fake_project()
    runs = wandb_io.fetch_runs(api, "me/proj", {"group": "g"})
    assert api.calls == [("me/proj", {"group": "g"})]
    assert [run.name for run in runs][:2] == ["loop0", "loop1"]
    assert "rep1" not in {run.name for run in runs}  # earlier reports are not runs to compare
    assert runs[0].config_value("collector.name") == "loop"
    assert runs[0].summary["env_steps_per_s"] == 500.0
    steps, values = runs[3].series("grad/global_norm", "global_step")
    np.testing.assert_array_equal(steps, [100, 200, 300])
    np.testing.assert_allclose(values, [4.0, 5.0, 6.0])


def test_fetch_runs_errors_are_one_line():
    with pytest.raises(ReportError, match="no runs found in W&B project me/proj matching"):
        wandb_io.fetch_runs(FakeApi([]), "me/proj", None)

    class Broken:
        def runs(self, path, filters=None):
            raise RuntimeError("HTTP 404: project not found\ntraceback ...")

    with pytest.raises(
        ReportError, match=r"cannot read runs of me/proj: HTTP 404: project not found$"
    ):
        wandb_io.fetch_runs(Broken(), "me/proj", None)


@pytest.mark.parametrize("path", ["proj", "me/proj/extra", "/proj", "me/"])
def test_project_path_must_be_entity_slash_project(path):
    with pytest.raises(ReportError, match="ENTITY/PROJECT"):
        wandb_io.parse_project(path)


def test_filters_are_a_json_object():
    assert wandb_io.parse_filters('{"config.seed": {"$in": [0, 1]}}') == {
        "config.seed": {"$in": [0, 1]}
    }
    assert wandb_io.parse_filters(None) is None
    with pytest.raises(ReportError, match="not JSON"):
        wandb_io.parse_filters("{group: x}")
    with pytest.raises(ReportError, match="JSON object"):
        wandb_io.parse_filters("[1]")


def test_wandb_report_holds_the_comparison_and_grouped_panels():
    runs = wandb_io.fetch_runs(fake_project(), "me/proj", None)
    report = analyze(runs, Settings(bootstrap=Bootstrap(reps=200)), ["wandb:me/proj"])
    title = "collectors"
    built = wandb_io.build_wandb_report(
        report, runs, "me", "proj", title, markdown_text(report, title)
    )
    assert (built.entity, built.project, built.title) == ("me", "proj", title)
    markdown, grid = built.blocks
    assert isinstance(markdown, wr.MarkdownBlock) and isinstance(grid, wr.PanelGrid)
    assert "foreach is better than loop: P(foreach>loop)=1.00 [1.00, 1.00]" in markdown.text
    assert "| group | runs |" in markdown.text and "![" not in markdown.text
    [runset] = grid.runsets
    assert runset.groupby == ["config.collector.name"]
    assert "'loop0'" in runset.filters and "'rep1'" not in runset.filters
    assert [panel.y for panel in grid.panels] == [["eval/return_mean"], ["grad/global_norm"]]
    assert all(panel.x == "global_step" for panel in grid.panels)


def test_online_cli_fetches_builds_and_prints_the_report_url(tmp_path, monkeypatch, capsys):
    api = fake_project()
    logged: list[tuple[str, str | None, str]] = []
    monkeypatch.setattr(wandb_io, "connect", lambda: api)
    monkeypatch.setattr(wandb_io, "save_wandb_report", lambda r: f"https://wandb.example/{r.title}")

    def log_artifact(report, files, out_dir, project, entity, mode="offline"):
        logged.append((project, entity, mode))
        assert {Path(f).name for f in files} >= {"report.html", "report.json"}
        return "https://wandb.example/run"

    monkeypatch.setattr(wandb_io, "log_artifact", log_artifact)
    code = main(
        [
            "--wandb",
            "me/proj",
            "--wandb-filters",
            '{"group": "g"}',
            "--title",
            "T",
            "--out",
            str(tmp_path / "out"),
            "--reps",
            "200",
        ]
    )
    assert code == 0
    assert api.calls == [("me/proj", {"group": "g"})]
    assert logged == [("proj", "me", "online")]
    out = capsys.readouterr().out
    assert "W&B report: https://wandb.example/T" in out
    assert json.loads((tmp_path / "out" / "report.json").read_text())["sources"] == [
        "wandb:me/proj"
    ]


def test_offline_report_is_an_artifact_of_a_report_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    runs = wandb_io.fetch_runs(fake_project(), "me/proj", None)
    report = analyze(runs, Settings(bootstrap=Bootstrap(reps=200)), ["x"])
    out = tmp_path / "out"
    out.mkdir()
    files = []
    for name in ("report.html", "report.json"):
        (out / name).write_text(name)
        files.append(out / name)
    where = Path(wandb_io.log_artifact(report, files, out, "esper-simic", None))
    assert where.parent == out / "wandb" and where.name.startswith("offline-run-")
    [record_file] = where.glob("run-*.wandb")
    # The run and artifact records hold these strings verbatim (protobuf). wandb-core, a
    # process of its own, writes the file; under load its last blocks can land after
    # ``finish`` returns, so wait for them (bounded).
    expected = (b"simic-report", b"report.html", b"report.json", b"foreach is better than loop")
    deadline = time.monotonic() + 30
    while not all(text in record_file.read_bytes() for text in expected):
        assert time.monotonic() < deadline, record_file.read_bytes()[:200]
        time.sleep(0.2)
