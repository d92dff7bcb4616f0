"""Write a run's results to a folder, atomically: all files appear together or none."""

from __future__ import annotations

import json
import math
from pathlib import Path

from infersim.atomic import atomic_folder
from infersim.simulator.engine import SimResult


def _clean(value):
    """JSON without NaN/inf (they become null), for strict parsers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def summary_json(result: SimResult) -> str:
    return json.dumps(_clean(result.summary), indent=2) + "\n"


def write_result(result: SimResult, out_dir: str | Path, plot: bool = True) -> Path:
    """summary.json, requests.csv, steps.csv, config.yaml and report.png in ``out_dir``.
    Files are written to a temporary sibling folder that then replaces ``out_dir``."""
    with atomic_folder(out_dir) as tmp:
        (tmp / "summary.json").write_text(summary_json(result))
        (tmp / "config.yaml").write_text(result.config.to_yaml())
        result.requests.to_csv(tmp / "requests.csv", index=False)
        result.steps.to_csv(tmp / "steps.csv", index=False)
        if plot:
            from infersim.simulator.report import plot_report

            plot_report(result, tmp / "report.png")
    return Path(out_dir)
