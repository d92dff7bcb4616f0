"""Helpers shared by benchmark scripts: where the reference data is, how to report."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("INFERSIM_SHARED_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "benchmarks" / "results"


def require(path: Path) -> Path:
    """Exit cleanly (status 0) with a message when reference data is absent."""
    if not path.exists():
        print(f"skipped: {path} is not here (set INFERSIM_SHARED_DATA to the shared data "
              "folder)")
        sys.exit(0)
    return path


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}")


def stats(values: np.ndarray) -> dict[str, float]:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return {"mean": float(v.mean()), "median": float(np.median(v)),
            "p90": float(np.percentile(v, 90)), "p99": float(np.percentile(v, 99))}


def write(name: str, text: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(text)
    return path


def fitted_table(fitted: dict[str, float], base, default_label: str) -> list[str]:
    """Markdown rows: each fitted efficiency parameter next to the base device's default."""
    from infersim.costmodels.params import resolve_params

    defaults = resolve_params(base).values
    rows = [f"| parameter | fitted | {default_label} |", "|---|---|---|"]
    return rows + [f"| {k} | {v:.4g} | {defaults[k]:.4g} |" for k, v in fitted.items()]
