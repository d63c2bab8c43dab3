"""Progress on the terminal: a tqdm bar on a TTY, plain log lines elsewhere (CI, files)."""

import math
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tqdm import tqdm

from esper.simic.settings import ProgressMode

# The metrics a person watches, with their short names on the bar and in log lines.
_HEADLINE = {
    "rollout/episode_return": "return",
    "eval/return_mean": "eval",
    "time/env_steps_per_s": "steps/s",
}


def _format(metrics: Mapping[str, float]) -> dict[str, str]:
    return {short: f"{metrics[key]:.4g}" for key, short in _HEADLINE.items() if key in metrics}


class ConsoleProgress:
    """Shows steps, steps/s, the last mean return and the ETA.

    ``lines`` mode prints about ``num_lines`` lines over the run, so logs stay readable
    when stderr is not a terminal.
    """

    def __init__(self, total_steps: int, mode: ProgressMode, num_lines: int = 20) -> None:
        if mode is ProgressMode.auto:
            mode = ProgressMode.bar if sys.stderr.isatty() else ProgressMode.lines
        self.mode = mode
        self.total_steps = total_steps
        self.line_every = max(1, math.ceil(total_steps / num_lines))
        self._next_line = self.line_every
        self._start = time.perf_counter()
        self._shown: dict[str, str] = {}
        self._bar = (
            tqdm(total=total_steps, unit="step", unit_scale=True, dynamic_ncols=True)
            if mode is ProgressMode.bar
            else None
        )

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        self._shown.update(_format(metrics))
        if self._bar is not None:
            self._bar.update(step - self._bar.n)
            self._bar.set_postfix(self._shown, refresh=False)
        elif self.mode is ProgressMode.lines and step >= self._next_line:
            self._next_line = (step // self.line_every + 1) * self.line_every
            self._print_line(step)

    def _print_line(self, step: int) -> None:
        elapsed = time.perf_counter() - self._start
        rate = step / elapsed if elapsed > 0 else 0.0
        eta = (self.total_steps - step) / rate if rate > 0 else float("inf")
        fields = " ".join(f"{k}={v}" for k, v in self._shown.items())
        print(
            f"[{step}/{self.total_steps} {100 * step / self.total_steps:.0f}%] {fields} "
            f"elapsed={elapsed:.0f}s eta={eta:.0f}s",
            file=sys.stderr,
            flush=True,
        )

    def summarize(self, summary: Mapping[str, Any]) -> None:
        self.close()
        if self.mode is ProgressMode.off:
            return
        print(
            f"final eval return {summary['final_eval_return_mean']:.4g} "
            f"± {summary['final_eval_return_std']:.3g} after {summary['total_env_steps']} steps "
            f"({summary['env_steps_per_s']:.0f} steps/s, {summary['wall_time_s']:.1f} s)",
            file=sys.stderr,
            flush=True,
        )

    def log_artifacts(self, files: Mapping[str, Path]) -> None:
        """Nothing to show: the run dir holds the files."""

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
