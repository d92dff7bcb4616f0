"""How well a device file predicts a profile: per op class, fit and held-out MAPE and the
worst error, and a predicted-vs-measured plot."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from infersim.atomic import atomic_folder
from infersim.calibration.predict import (
    CLASSES,
    Split,
    evaluate,
    make_split,
    select_device_rows,
    summarize,
)
from infersim.calibration.profile import read_profile
from infersim.hardware import DeviceSpec


@dataclass(frozen=True)
class CalibrationReport:
    device: DeviceSpec
    profile: str
    split: Split
    evaluation: pd.DataFrame
    summary: pd.DataFrame

    def to_dict(self) -> dict:
        return {
            "device": self.device.name,
            "profile": self.profile,
            "calibrated_from": self.device.calibrated_from,
            "split": self.split.describe(),
            "kernels": len(self.evaluation),
            "classes": self.summary.to_dict(orient="records"),
        }


def report(profile: str | Path, device: DeviceSpec, device_name: str | None = None,
           split: str = "auto", holdout: tuple[str, ...] | None = None,
           every: int = 3) -> CalibrationReport:
    """Errors of ``device`` on ``profile`` (the split rules are the fit's, so the held-out
    rows are the ones the fit did not see when both use the same options)."""
    df = select_device_rows(read_profile(profile), device_name, str(profile))
    sp = make_split(df, split, holdout, every)
    ev = evaluate(df, device, sp)
    return CalibrationReport(device, str(profile), sp, ev, summarize(ev))


def plot_report(rep: CalibrationReport, path: str | Path) -> Path:
    """Predicted vs measured seconds, one panel per op class, fit and held-out kernels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ev = rep.evaluation
    classes = [c for c in CLASSES if c in set(ev["op_class"])]
    fig, axes = plt.subplots(1, len(classes), figsize=(4.6 * len(classes), 4.4), squeeze=False)
    for ax, cls in zip(axes[0], classes, strict=True):
        sub = ev[ev["op_class"] == cls]
        lo = min(sub["measured_s"].min(), sub["predicted_s"].min()) * 1e3 / 1.5
        hi = max(sub["measured_s"].max(), sub["predicted_s"].max()) * 1e3 * 1.5
        ax.plot([lo, hi], [lo, hi], color="0.6", lw=1)
        for which, color in (("fit", "tab:blue"), ("held-out", "tab:orange")):
            s = sub[sub["set"] == which]
            if len(s):
                row = rep.summary[(rep.summary["op_class"] == cls) & (rep.summary["set"] == which)]
                label = f"{which} (MAPE {row['mape'].iloc[0]:.1%})" if len(row) else which
                ax.scatter(s["measured_s"] * 1e3, s["predicted_s"] * 1e3, s=6, alpha=0.5,
                           color=color, label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel("measured (ms)")
        ax.set_ylabel("predicted (ms)")
        ax.set_title(cls)
        ax.legend(loc="upper left", fontsize=8)
    fig.suptitle(f"{rep.device.name} on {Path(rep.profile).name} ({rep.split.describe()})",
                 fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(rep: CalibrationReport, out_dir: str | Path, plot: bool = True) -> Path:
    """summary.json, kernels.csv (every kernel's error) and predicted_vs_measured.png in
    ``out_dir``, written to a temporary sibling folder that then replaces it."""
    with atomic_folder(out_dir) as tmp:
        (tmp / "summary.json").write_text(json.dumps(rep.to_dict(), indent=2) + "\n")
        rep.evaluation.to_csv(tmp / "kernels.csv", index=False)
        if plot:
            plot_report(rep, tmp / "predicted_vs_measured.png")
    return Path(out_dir)
