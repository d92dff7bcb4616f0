"""Draft trees: Sequoia's DP on the REFERENCE.md vector, chains for the vLLM MTP vector,
CP-SAT against the DP, and the best tree size for Llama-3.1-70B (TP4, H100) by batch.

Usage: python benchmarks/draft_trees.py   (writes benchmarks/results/draft_trees.md)
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime

from _common import machine, write

from infersim.optimizer import (
    best_tree,
    expected_tokens_chain,
    optimize_tree,
    solve_tree,
    tree_table,
)
from infersim.optimizer.trees import _table

SEQUOIA = (0.55, 0.15, 0.07, 0.04, 0.02)  # REFERENCE.md, positional (rank) acceptance
MTP = (0.7617, 0.6158, 0.5125, 0.4243, 0.3640, 0.3094, 0.2722, 0.2365)  # per position
DEPTH = 8
SIZES = (1, 2, 4, 8, 16, 32, 64, 128)
TARGET, DEVICE, TP, CONTEXT, DRAFTER = "llama-3.1-70b", "h100-sxm", 4, 1024, "llama-3.2-1b"


def sizes_table() -> list[str]:
    table = tree_table(SEQUOIA, max(SIZES), DEPTH)
    rows = ["| nodes (q) | depth | widths by depth | E[tokens] per verify |",
            "|---:|---:|---|---:|"]
    for n in SIZES:
        tree = table.tree(n)
        rows.append(f"| {n} | {tree.depth} | {'-'.join(map(str, tree.widths))} | "
                    f"{tree.score(SEQUOIA):.4f} |")
    return rows


def chain_table() -> list[str]:
    rows = ["| drafts K | nodes (q = K + 1) | E[tokens] per verify |", "|---:|---:|---:|"]
    for k in range(len(MTP) + 1):
        rows.append(f"| {k} | {k + 1} | {expected_tokens_chain(MTP, k):.4f} |")
    return rows


def dp_speed() -> str:
    times = []
    for _ in range(7):
        _table.cache_clear()
        started = time.perf_counter()
        table = tree_table(SEQUOIA, 128, 16)
        table.tree(128)
        times.append(time.perf_counter() - started)
    median_ms = statistics.median(times) * 1e3
    return (f"DP table and back-pointers, n = 128, depth <= 16: median {median_ms:.2f} ms over "
            f"7 runs (score {table.score(128):.4f}).")


def cpsat_table() -> list[str]:
    rows = ["| nodes | depth | DP | CP-SAT | difference | status | candidates | solve s |",
            "|---:|---:|---:|---:|---:|---|---:|---:|"]
    for n, d in ((8, 8), (16, 8), (32, 8), (64, 12)):
        dp = best_tree(SEQUOIA, n, d).score(SEQUOIA)
        r = solve_tree(SEQUOIA, n, d)
        rows.append(f"| {n} | {d} | {dp:.6f} | {r.objective:.6f} | {r.objective - dp:.1e} | "
                    f"{r.status} | {r.candidates} | {r.solve_time_s:.3f} |")
    for widths in ((2, 2, 2), (3, 3, 3, 3, 3, 3, 3, 3)):
        r = solve_tree(SEQUOIA, 32, 8, widths=widths)
        rows.append(f"| 32 | 8, widths <= {','.join(map(str, widths))} | "
                    f"{best_tree(SEQUOIA, 32, 8).score(SEQUOIA):.6f} (uncapped) | "
                    f"{r.objective:.6f} | - | {r.status} | {r.candidates} | "
                    f"{r.solve_time_s:.3f} |")
    return rows


def size_choice_table() -> list[str]:
    rows = ["| batch | drafter | best nodes | depth | E[tokens] | verify ms | draft ms | "
            "ms per token per sequence | tokens/s (batch) | plain decode ms | speedup |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for batch in (1, 8, 32):
        for drafter in (None, DRAFTER):
            plan = optimize_tree(SEQUOIA, 128, DEPTH, model=TARGET, device=DEVICE, tp=TP,
                                 batch=batch, context=CONTEXT, draft_model=drafter)
            c = plan.sizes
            b, plain = c.best, c.options[0]
            rows.append(f"| {batch} | {drafter or 'free (0 s)'} | {b.nodes} | {b.depth} | "
                        f"{b.expected_tokens:.3f} | {b.verify_s * 1e3:.2f} | "
                        f"{b.draft_s * 1e3:.2f} | {b.inter_token_s * 1e3:.2f} | "
                        f"{1 / b.time_per_token_s:,.0f} | {plain.verify_s * 1e3:.2f} | "
                        f"{c.speedup:.2f}x |")
    return rows


def main() -> None:
    lines = [
        "# Draft trees",
        "",
        f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `python benchmarks/draft_trees.py`"
        f" on {machine()}.",
        "",
        "Conventions: nodes include the root (the verify step's q); depth counts drafts on a "
        "path; E[tokens] includes the bonus token. See docs/speculative.md.",
        "",
        f"## Best tree by size, p = {', '.join(map(str, SEQUOIA))}, depth <= {DEPTH}",
        "",
        "REFERENCE.md: n = 8 -> 2.43, 16 -> 2.80, 32 -> 3.13.",
        "",
        *sizes_table(),
        "",
        "## Chains for the vLLM MTP vector (a_i = P(first i drafts accepted))",
        "",
        "This vector is per position along one chain (it sums to more than 1), not per rank, "
        "so it is scored as a chain: E[N] = 1 + sum of the first K entries. REFERENCE.md: "
        "K = 8 -> 4.496.",
        "",
        *chain_table(),
        "",
        "## Speed and CP-SAT agreement",
        "",
        dp_speed(),
        "",
        "CP-SAT (2 workers, seed 0, 10 s limit) against the DP on unconstrained instances, "
        "and with per-depth width caps (no DP answer; at most the uncapped value):",
        "",
        *cpsat_table(),
        "",
        f"## Best size for {TARGET} on {TP} x {DEVICE} (TP{TP}), context {CONTEXT}",
        "",
        f"p as above, up to 128 nodes, depth <= {DEPTH}; verify = one step of batch x nodes "
        "tokens from the roofline cost model (default parameters, lowest grade D); the "
        f"drafter {DRAFTER} runs on one {DEVICE}, one decode step per tree level. Speedup is "
        "over plain decoding (a 1-node tree).",
        "",
        *size_choice_table(),
        "",
    ]
    path = write("draft_trees.md", "\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
