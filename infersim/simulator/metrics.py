"""Per-request and per-step records, and the summary in vLLM benchmark terms."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from infersim.simulator.request import Request

PERCENTILES = (50, 90, 99)


class LogHistogram:
    """Weighted samples in log-spaced bins (0.23% wide, 1 us to 10^4 s): exact count and
    mean, percentiles within a bin. Holds any number of inter-token gaps in 80 kB."""

    LOW, DECADES, PER_DECADE = 1e-6, 10, 1000

    def __init__(self) -> None:
        self.counts = np.zeros(self.DECADES * self.PER_DECADE + 2)
        self.total = 0.0
        self.weight = 0.0

    def add(self, values, weights=None) -> None:
        values = np.asarray(values, dtype=np.float64)
        if values.size == 0:
            return
        w = np.ones_like(values) if weights is None else np.broadcast_to(
            np.asarray(weights, dtype=np.float64), values.shape)
        pos = np.log10(np.maximum(values, self.LOW * 0.5) / self.LOW) * self.PER_DECADE
        idx = np.clip(np.floor(pos).astype(np.int64) + 1, 0, len(self.counts) - 1)
        np.add.at(self.counts, idx, w)
        self.total += float((values * w).sum())
        self.weight += float(w.sum())

    @property
    def mean(self) -> float:
        return self.total / self.weight if self.weight else math.nan

    def percentile(self, q: float) -> float:
        if not self.weight:
            return math.nan
        cum = np.cumsum(self.counts)
        i = int(np.searchsorted(cum, q / 100 * self.weight))
        if i == 0:
            return 0.0
        mid = (i - 1 + 0.5) / self.PER_DECADE  # geometric centre of bin i
        return self.LOW * 10 ** mid


class StepLog:
    """Columnar, growable log of engine steps (one row per step)."""

    COLUMNS = ("replica", "start_s", "duration_s", "prefill_tokens", "decode_tokens",
               "num_seqs", "kv_blocks_used", "preemptions", "prefill_seqs", "decode_context",
               "prefill_context", "prefill_qk", "prefill_qq", "sampled", "swapped_blocks")
    INTEGER = ("replica", "prefill_tokens", "decode_tokens", "num_seqs", "kv_blocks_used",
               "preemptions", "prefill_seqs", "decode_context", "prefill_context", "sampled",
               "swapped_blocks")

    SPECULATIVE = ("draft_s", "verify_s", "spec_seqs", "spec_tokens", "accepted_tokens")

    def __init__(self, enabled: bool = True, speculative: bool = False) -> None:
        self.enabled = enabled
        self.speculative = speculative  # add the speculation columns (draft/verify seconds,
        # verifies, drafts proposed and accepted)
        self.columns = self.COLUMNS + (self.SPECULATIVE if speculative else ())
        self._chunks: list[np.ndarray] = []
        self._rows: list[tuple] = []
        self.count = 0
        self.busy_s = 0.0

    def add(self, replica: int, start: float, duration: float, plan, kv_used: int) -> None:
        """One step of ``plan`` (a StepPlan); the aggregates let a step be replayed."""
        self.count += 1
        self.busy_s += duration
        if self.enabled:
            self._rows.append((replica, start, duration, plan.prefill_tokens, plan.decode_seqs,
                               len(plan.scheduled), kv_used, plan.preempted, plan.prefill_seqs,
                               plan.decode_context, plan.prefill_context, plan.prefill_qk,
                               plan.prefill_qq, plan.sampled,
                               plan.swapped_in + plan.swapped_out)
                              + ((plan.draft_s, plan.verify_s, plan.spec_seqs,
                                  plan.spec_tokens, plan.accepted) if self.speculative else ()))
            if len(self._rows) >= 65536:
                self._flush()

    def add_run(self, replica: int, starts: np.ndarray, durations: np.ndarray, seqs: int,
                kv_used: np.ndarray, context: np.ndarray) -> None:
        """Many decode-only steps at once (``context``: cached tokens of each step)."""
        n = len(starts)
        self.count += n
        self.busy_s += float(durations.sum())
        if self.enabled:
            self._flush()
            block = np.zeros((n, len(self.columns)))
            col = self.columns.index
            block[:, col("replica")] = replica
            block[:, col("start_s")] = starts
            block[:, col("duration_s")] = durations
            block[:, col("decode_tokens")] = seqs
            block[:, col("num_seqs")] = seqs
            block[:, col("sampled")] = seqs
            block[:, col("kv_blocks_used")] = kv_used
            block[:, col("decode_context")] = context
            self._chunks.append(block)

    def _flush(self) -> None:
        if self._rows:
            self._chunks.append(np.asarray(self._rows, dtype=np.float64))
            self._rows = []

    def frame(self) -> pd.DataFrame:
        self._flush()
        data = (np.concatenate(self._chunks) if self._chunks
                else np.empty((0, len(self.columns))))
        df = pd.DataFrame(data, columns=list(self.columns))
        integer = self.INTEGER + (self.SPECULATIVE[2:] if self.speculative else ())
        for col in integer:
            df[col] = df[col].astype(np.int64)
        return df.sort_values(["start_s", "replica"], kind="stable").reset_index(drop=True)


class RequestLog:
    """One row per request, filled as requests finish (columns, preallocated)."""

    def __init__(self, n: int) -> None:
        self.arrival = np.full(n, np.nan)
        self.prompt = np.zeros(n, dtype=np.int64)
        self.output = np.zeros(n, dtype=np.int64)
        self.first_scheduled = np.full(n, np.nan)
        self.first_token = np.full(n, np.nan)
        self.finish = np.full(n, np.nan)
        self.preemptions = np.zeros(n, dtype=np.int64)
        self.replica = np.full(n, -1, dtype=np.int64)
        self.generated = np.zeros(n, dtype=np.int64)
        self.rejected = np.zeros(n, dtype=bool)
        self.priority = np.zeros(n, dtype=np.int64)
        self.prefix_hit_tokens = np.zeros(n, dtype=np.int64)
        self.kv_transfer_bytes = np.zeros(n)
        self.kv_transfer_s = np.zeros(n)

    def arrived(self, req: Request) -> None:
        i = req.id
        self.arrival[i] = req.arrival
        self.prompt[i] = req.prompt_len
        self.output[i] = req.output_len
        self.priority[i] = req.priority

    def record(self, req: Request, finish: float | None) -> None:
        """Store a request's timestamps (``finish`` None: it did not finish)."""
        i = req.id
        self.first_scheduled[i] = req.first_scheduled if req.first_scheduled >= 0 else np.nan
        self.first_token[i] = req.first_token if req.first_token >= 0 else np.nan
        self.finish[i] = np.nan if finish is None else finish
        self.preemptions[i] = req.preemptions
        self.replica[i] = req.replica
        self.generated[i] = req.num_output
        self.prefix_hit_tokens[i] = req.prefix_hit_tokens
        self.kv_transfer_bytes[i] = req.kv_transfer_bytes
        self.kv_transfer_s[i] = req.kv_transfer_s

    def frame(self) -> pd.DataFrame:
        df = pd.DataFrame({
            "request_id": np.arange(len(self.arrival)),
            "replica": self.replica,
            "prompt_tokens": self.prompt,
            "output_tokens": self.output,
            "generated_tokens": self.generated,
            "arrival_s": self.arrival,
            "first_scheduled_s": self.first_scheduled,
            "first_token_s": self.first_token,
            "finish_s": self.finish,
            "preemptions": self.preemptions,
            "rejected": self.rejected,
            "priority": self.priority,
            "prefix_hit_tokens": self.prefix_hit_tokens,
            "kv_transfer_bytes": self.kv_transfer_bytes,
            "kv_transfer_s": self.kv_transfer_s,
        })
        df["finished"] = np.isfinite(df["finish_s"].to_numpy())
        df["ttft_s"] = df["first_token_s"] - df["arrival_s"]
        df["e2el_s"] = df["finish_s"] - df["arrival_s"]
        df["queue_s"] = df["first_scheduled_s"] - df["arrival_s"]
        decode_tokens = (df["output_tokens"] - 1).where(df["output_tokens"] > 1)
        df["tpot_s"] = (df["finish_s"] - df["first_token_s"]) / decode_tokens
        return df


def _stats(prefix: str, values_s: np.ndarray, out: dict) -> None:
    v = values_s[np.isfinite(values_s)] * 1e3
    out[f"mean_{prefix}_ms"] = float(v.mean()) if v.size else math.nan
    out[f"median_{prefix}_ms"] = float(np.median(v)) if v.size else math.nan
    out[f"std_{prefix}_ms"] = float(v.std()) if v.size else math.nan
    for p in PERCENTILES[1:]:
        out[f"p{p}_{prefix}_ms"] = float(np.percentile(v, p)) if v.size else math.nan


def summarize(requests: pd.DataFrame, steps: StepLog, itl: LogHistogram,
              slo: dict[str, float | None], kv_blocks_total: int, replicas: int) -> dict:
    """vLLM benchmark keys (``mean_ttft_ms`` ...) plus goodput, preemptions and utilisation.
    The duration runs from the first arrival to the last finish."""
    done = requests[requests["finished"]]
    start = float(requests["arrival_s"].min()) if len(requests) else 0.0
    end = float(done["finish_s"].max()) if len(done) else start
    duration = max(end - start, 1e-12)
    out_tokens = int(done["output_tokens"].sum())
    in_tokens = int(done["prompt_tokens"].sum())
    summary: dict = {
        "num_requests": len(requests),
        "completed": len(done),
        "rejected": int(requests["rejected"].sum()),
        "duration_s": duration,
        "total_input_tokens": in_tokens,
        "total_output_tokens": out_tokens,
        "request_throughput": len(done) / duration,
        "output_throughput": out_tokens / duration,
        "total_token_throughput": (in_tokens + out_tokens) / duration,
    }
    _stats("ttft", done["ttft_s"].to_numpy(), summary)
    _stats("tpot", done["tpot_s"].to_numpy(), summary)
    summary["mean_itl_ms"] = itl.mean * 1e3
    summary["median_itl_ms"] = itl.percentile(50) * 1e3
    for p in PERCENTILES[1:]:
        summary[f"p{p}_itl_ms"] = itl.percentile(p) * 1e3
    _stats("e2el", done["e2el_s"].to_numpy(), summary)
    ok = np.ones(len(done), dtype=bool)
    for key, column in (("ttft_ms", "ttft_s"), ("tpot_ms", "tpot_s"), ("e2el_ms", "e2el_s")):
        limit = slo.get(key)
        if limit is not None:
            values = done[column].to_numpy() * 1e3
            ok &= np.nan_to_num(values, nan=0.0) <= limit
    summary["slo"] = {k: v for k, v in slo.items() if v is not None}
    summary["goodput"] = float(ok.sum()) / duration
    # unfinished and rejected requests miss every SLO
    summary["slo_attainment"] = float(ok.sum()) / len(requests) if len(requests) else math.nan
    summary["num_preemptions"] = int(requests["preemptions"].sum())
    summary["num_steps"] = steps.count
    summary["busy_fraction"] = steps.busy_s / (duration * replicas)
    summary["kv_blocks_total"] = kv_blocks_total
    return summary
