"""Where metrics go: one small interface, a sink per destination.

The training loop returns and hands over plain ``dict[str, float]`` metrics with a
step; sinks decide how to show or store them. Prefixes group them: ``train/``,
``rollout/``, ``grad/``, ``time/``, ``eval/``.
"""

import json
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any, Protocol


class MetricSink(Protocol):
    def log(self, metrics: Mapping[str, float], step: int) -> None:
        """Record the metrics of ``step`` (environment steps so far)."""

    def summarize(self, summary: Mapping[str, Any]) -> None:
        """Record the run's final results."""

    def log_artifacts(self, files: Mapping[str, Path]) -> None:
        """Keep the run's final files (``name -> path``) where the sink keeps runs."""

    def close(self) -> None:
        """Flush and release; called once, also after a failed run."""


class JsonlHistory:
    """Local history, one JSON line per log call: readable without any server.

    Flushed every line so a killed run loses at most the line being written.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file: IO[str] = path.open("a", encoding="utf-8")

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        self._file.write(json.dumps({"global_step": step, **metrics}) + "\n")
        self._file.flush()

    def summarize(self, summary: Mapping[str, Any]) -> None:
        """The summary has its own file, ``summary.json``."""

    def log_artifacts(self, files: Mapping[str, Path]) -> None:
        """The files are already in the run dir."""

    def close(self) -> None:
        self._file.close()


class Tracker:
    """Fans each log call out to every sink and closes them all, whatever fails."""

    def __init__(self, sinks: list[MetricSink]) -> None:
        self.sinks = sinks

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        for sink in self.sinks:
            sink.log(metrics, step)

    def summarize(self, summary: Mapping[str, Any]) -> None:
        for sink in self.sinks:
            sink.summarize(summary)

    def log_artifacts(self, files: Mapping[str, Path]) -> None:
        for sink in self.sinks:
            sink.log_artifacts(files)

    def close(self) -> None:
        errors: list[BaseException] = []
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as error:
                errors.append(error)
        if errors:
            raise errors[0]
