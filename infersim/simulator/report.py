"""One figure per run: latency CDFs, batch size and KV-cache use over time."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from infersim.simulator.engine import SimResult

MAX_POINTS = 4000


def _cdf(ax, values_s, title: str) -> None:
    v = np.sort(values_s[np.isfinite(values_s)]) * 1e3
    if v.size:
        ax.plot(v, np.arange(1, v.size + 1) / v.size)
    ax.set_xlabel(f"{title} (ms)")
    ax.set_ylabel("fraction of requests")
    ax.grid(alpha=0.3)


def _binned(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Means of y over at most MAX_POINTS equal slices of the steps."""
    if len(x) <= MAX_POINTS:
        return x, y
    edges = np.linspace(0, len(x), MAX_POINTS + 1).astype(int)
    return (np.add.reduceat(x, edges[:-1]) / np.diff(edges),
            np.add.reduceat(y, edges[:-1]) / np.diff(edges))


def plot_report(result: SimResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    req, steps = result.requests, result.steps
    done = req[req["finished"]]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8), constrained_layout=True)
    _cdf(axes[0, 0], done["ttft_s"].to_numpy(), "TTFT")
    _cdf(axes[0, 1], done["tpot_s"].to_numpy(), "TPOT")
    _cdf(axes[0, 2], done["e2el_s"].to_numpy(), "E2E latency")
    if len(steps):
        t = steps["start_s"].to_numpy()
        x, seqs = _binned(t, steps["num_seqs"].to_numpy(dtype=float))
        axes[1, 0].plot(x, seqs)
        x, tokens = _binned(t, (steps["prefill_tokens"] + steps["decode_tokens"]).to_numpy(
            dtype=float))
        axes[1, 1].plot(x, tokens)
        x, kv = _binned(t, steps["kv_blocks_used"].to_numpy(dtype=float))
        axes[1, 2].plot(x, 100 * kv / result.summary["kv_blocks_total"])
    for ax, label in zip(axes[1], ("sequences per step", "tokens per step", "KV cache used (%)"),
                         strict=True):
        ax.set_xlabel("time (s)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    s = result.summary
    fig.suptitle(f"{result.config.model} on {result.config.replicas} x "
                 f"{result.config.device or result.config.device_file}: "
                 f"{s['completed']} requests, {s['request_throughput']:.2f} req/s, "
                 f"goodput {s['goodput']:.2f} req/s")
    fig.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(fig)
