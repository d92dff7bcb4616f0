"""Capacity search: the highest request rate a configuration serves within its SLOs, and
what a million tokens cost at that rate.

``find_capacity(cfg, slo, attainment, mode)`` simulates the configuration at a sequence of
request rates (probes) and returns a :class:`CapacityResult` with every probe in a
DataFrame. The search first finds a bracket by doubling (or halving) from a start rate,
then narrows it by k-section (k probes per round, run in parallel processes) until the
highest passing rate and the lowest failing rate are within a relative tolerance. It
assumes that a rate that meets the SLOs is met by every lower rate (monotonicity), and
reports any probe that contradicts this. See docs/capacity.md.

Pricing lives here, not in the simulator: the simulator knows nothing of money.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from infersim.errors import ConfigError, InfersimError
from infersim.simulator import SimConfig, simulate
from infersim.simulator.config import SloConfig

Mode = Literal["joint", "percentile"]
MODES: tuple[str, ...] = ("joint", "percentile")
SLO_KEYS: tuple[str, ...] = ("ttft_ms", "tpot_ms", "e2el_ms")
_COLUMN = {"ttft_ms": "ttft_s", "tpot_ms": "tpot_s", "e2el_ms": "e2el_s"}
_SLO_HELP = ("comma-separated key=value pairs with keys ttft_ms, tpot_ms, e2el_ms and values "
             "> 0 (milliseconds), e.g. ttft_ms=500,tpot_ms=50")
DOWN_LIMIT = 30
"""Halvings below the start rate after which the search gives up (2^-30 of the start)."""
UP_LIMIT = 20
"""Doublings above the start rate after which the search gives up (2^20 of the start)."""


# --- SLOs -----------------------------------------------------------------------------------
def parse_slo(text: str, option: str = "--slo") -> dict[str, float]:
    """``"ttft_ms=500,tpot_ms=50"`` -> ``{"ttft_ms": 500.0, "tpot_ms": 50.0}``."""
    out: dict[str, float] = {}
    for part in (p.strip() for p in str(text).split(",")):
        key, sep, raw = part.partition("=")
        key = key.strip()
        if not sep or key not in SLO_KEYS:
            raise ConfigError(option, text, _SLO_HELP)
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(option, text, _SLO_HELP) from None
        if not (math.isfinite(value) and value > 0) or key in out:
            raise ConfigError(option, text, _SLO_HELP)
        out[key] = value
    return out


def _slo_dict(slo: str | Mapping[str, float | None] | SloConfig | None,
              cfg: SimConfig) -> dict[str, float]:
    if slo is None:
        slo = cfg.slo
    if isinstance(slo, str):
        limits = parse_slo(slo)
    else:
        if isinstance(slo, SloConfig):
            slo = slo.model_dump()
        unknown = set(slo) - set(SLO_KEYS)
        if unknown:
            raise ConfigError("slo", sorted(unknown), f"allowed keys: {', '.join(SLO_KEYS)}")
        limits = {k: float(v) for k, v in slo.items() if v is not None}
        for k, v in limits.items():
            if not (math.isfinite(v) and v > 0):
                raise ConfigError(f"slo.{k}", v, "a number of milliseconds > 0")
    if not limits:
        raise ConfigError("slo", None, "give at least one limit: " + _SLO_HELP)
    return limits


# --- rates ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RateKnob:
    """How a request rate becomes a config. ``kind`` "arrival": the synthetic arrival
    process's ``rate``; "trace": ``trace.rate_scale`` = rate / ``base_rate`` (the replayed
    requests divided by their arrival span at rate_scale 1)."""

    kind: Literal["arrival", "trace"]
    base_rate: float
    requests: int

    def scale(self, rate: float) -> float:
        return rate if self.kind == "arrival" else rate / self.base_rate

    def apply(self, cfg: SimConfig, rate: float) -> SimConfig:
        w = cfg.workload
        if self.kind == "arrival":
            w = w.model_copy(update={"arrival": w.arrival.model_copy(update={"rate": rate})})
        else:
            w = w.model_copy(update={"trace": w.trace.model_copy(
                update={"rate_scale": rate / self.base_rate})})
        return cfg.model_copy(update={"workload": w})


def rate_knob(cfg: SimConfig) -> tuple[RateKnob, float]:
    """The knob that sets ``cfg``'s request rate, and the rate the config has now."""
    from infersim.workloads import build_requests

    w = cfg.workload
    if w.trace is not None:
        natural = w.model_copy(update={"trace": w.trace.model_copy(update={"rate_scale": 1.0})})
        table = build_requests(natural, cfg.seed)
        if len(table) < 2 or table.duration_s <= 0:
            raise ConfigError("workload.trace", str(w.trace.path),
                              "capacity search needs at least two requests at distinct times")
        base = len(table) / table.duration_s
        return RateKnob("trace", base, len(table)), base * w.trace.rate_scale
    rate = getattr(w.arrival, "rate", None)
    if rate is None:
        raise ConfigError("workload.arrival.process", w.arrival.process,
                          "capacity search scales the arrival rate; use poisson, gamma or "
                          "constant")
    return RateKnob("arrival", 1.0, w.num_requests or 0), float(rate)


def limit_workload(cfg: SimConfig, max_requests: int | None = None,
                   window_s: float | None = None) -> SimConfig:
    """Keep probes fast: at most ``max_requests`` requests (synthetic: exactly that many)
    and, for a trace, only its first ``window_s`` seconds after ``start_s`` (trace time,
    before rate scaling)."""
    w = cfg.workload
    update: dict[str, Any] = {}
    if max_requests is not None:
        if max_requests < 2:
            raise ConfigError("--max-requests", max_requests, "an integer >= 2")
        update["num_requests"] = int(max_requests)
    if window_s is not None:
        if w.trace is None:
            raise ConfigError("--window", window_s, "a time window needs a trace workload; "
                              "use --max-requests for synthetic ones")
        if not (math.isfinite(window_s) and window_s > 0):
            raise ConfigError("--window", window_s, "a number of seconds > 0")
        end = w.trace.start_s + window_s
        if w.trace.end_s is not None:
            end = min(end, w.trace.end_s)
        update["trace"] = w.trace.model_copy(update={"end_s": end})
    return cfg.model_copy(update={"workload": w.model_copy(update=update)}) if update else cfg


# --- one probe ------------------------------------------------------------------------------
def _quantile(values: np.ndarray, q: float) -> float:
    """numpy's linear percentile with +inf allowed (misses); NaN values are left out."""
    v = values[~np.isnan(values)]
    if v.size == 0:
        return math.nan
    big = np.finfo(np.float64).max
    x = float(np.percentile(np.where(np.isinf(v), big, v), q))
    return math.inf if x > 1e300 else x


def measure(requests: pd.DataFrame, slo: Mapping[str, float], attainment: float,
            mode: Mode) -> dict[str, Any]:
    """Attainment and percentiles of one run's per-request frame.

    ``attainment``: the fraction of all requests that finished and met every limit in
    ``slo`` (the goodput definition). ``<key>`` (ttft_ms, tpot_ms, e2el_ms): the
    100*A-th percentile over all requests, an unfinished one counting as infinite; TPOT of
    one-token outputs is undefined and left out (it meets a TPOT limit in the joint count).
    ``passed``: joint mode, attainment >= A; percentile mode, every limited percentile <=
    its limit."""
    n = len(requests)
    finished = requests["finished"].to_numpy(dtype=bool)
    ok = finished.copy()
    out: dict[str, Any] = {}
    for key, column in _COLUMN.items():
        values = np.where(finished, requests[column].to_numpy(dtype=np.float64) * 1e3,
                          math.inf)
        out[key] = _quantile(values, attainment * 100)
        limit = slo.get(key)
        if limit is not None:
            ok &= ~(values > limit)  # NaN (undefined TPOT) meets
    good = int(ok.sum())
    out["attainment"] = good / n if n else math.nan
    if mode == "joint":
        out["passed"] = good >= math.ceil(attainment * n - 1e-9)
    else:
        out["passed"] = not any(out[k] > limit for k, limit in slo.items())
    return out


def run_probe(cfg: SimConfig, rate: float, knob: RateKnob, slo: Mapping[str, float],
              attainment: float, mode: Mode, cost=None) -> dict[str, Any]:
    """Simulate ``cfg`` at ``rate`` requests/s and measure it (one row of the probes)."""
    started = time.perf_counter()
    probe_cfg = knob.apply(cfg, rate).model_copy(update={
        "slo": SloConfig(**slo), "record_steps": False})
    try:
        result = simulate(probe_cfg, cost=cost)
    except InfersimError as exc:  # subclasses do not pickle back from a worker: flatten
        raise InfersimError(f"probe at {rate:.6g} req/s: {exc}") from None
    s, frame = result.summary, result.requests
    row = {"rate": rate, "rate_scale": knob.scale(rate) if knob.kind == "trace" else math.nan}
    row.update(measure(frame, slo, attainment, mode))
    row.update({
        "num_requests": s["num_requests"], "completed": s["completed"],
        "goodput": s["goodput"], "output_throughput": s["output_throughput"],
        "mean_output_tokens": float(frame["output_tokens"].mean()),
        "mean_total_tokens": float((frame["output_tokens"] + frame["prompt_tokens"]).mean()),
        "duration_s": s["duration_s"], "lowest_grade": s["lowest_grade"],
        "wall_s": time.perf_counter() - started,
    })
    return row


# --- the search -----------------------------------------------------------------------------
@dataclass
class SearchOutcome:
    """Where a search stopped: ``lo`` the highest passing rate below every failing one (0
    if none passed), ``hi`` the lowest failing rate (inf if none failed), ``converged``
    whether hi / lo - 1 <= tolerance, ``non_monotone`` (passing rate, lower failing rate)
    pairs, ``results`` every probed rate -> passed, ``rounds`` how many rounds ran."""

    lo: float
    hi: float
    converged: bool
    rounds: int
    results: dict[float, bool]
    non_monotone: list[tuple[float, float]] = field(default_factory=list)
    note: str = ""


def next_rates(lo: float, hi: float, start: float, per_round: int, first: bool
               ) -> list[float]:
    """The rates of the next round. First round: a ladder of powers of two around
    ``start``; no failure yet: doubling up from ``lo``; no pass yet: halving down from
    ``hi``; else ``per_round`` evenly spaced rates inside (lo, hi)."""
    k = per_round
    if first:
        return [start * 2.0 ** (i - (k - 1) // 2) for i in range(k)]
    if math.isinf(hi):
        return [lo * 2.0 ** (i + 1) for i in range(k)]
    if lo == 0:
        return [hi / 2.0 ** (i + 1) for i in range(k)]
    return [lo + (hi - lo) * (i + 1) / (k + 1) for i in range(k)]


def _round_sig(x: float, digits: int) -> float:
    """``x`` to ``digits`` significant digits (probe rates read well and can be retyped)."""
    return float(f"{x:.{digits}g}")


def search_max_rate(evaluate: Callable[[int, list[float]], Sequence[bool]], start: float,
                    *, tolerance: float = 0.02, per_round: int = 1, max_rounds: int = 40,
                    ) -> SearchOutcome:
    """The highest rate for which ``evaluate`` passes, to a relative ``tolerance``.

    ``evaluate(round, rates)`` returns pass/fail for each rate (it may run them in
    parallel). Rates are rounded to max(4, 3 + ceil(-log10(tolerance))) significant
    digits. Monotonicity is assumed (every rate below a passing one passes); the
    bracket is always [highest pass below the lowest fail, lowest fail], so a contradicting
    probe cannot derail the search, and contradictions are listed in ``non_monotone``."""
    if not (math.isfinite(start) and start > 0):
        raise ConfigError("start_rate", start, "a number of requests/s > 0")
    if not (tolerance > 0):
        raise ConfigError("tolerance", tolerance, "a relative tolerance > 0, e.g. 0.02")
    if per_round < 1:
        raise ConfigError("per_round", per_round, "an integer >= 1")
    digits = max(4, 3 + math.ceil(-math.log10(tolerance)))
    results: dict[float, bool] = {}
    lo, hi = 0.0, math.inf
    note = ""
    rounds = 0
    while True:
        if lo > 0 and not math.isinf(hi) and hi / lo - 1 <= tolerance:
            break
        if rounds >= max_rounds:
            note = f"stopped after {max_rounds} rounds before converging"
            break
        if math.isinf(hi) and lo >= start * 2.0 ** UP_LIMIT:
            note = (f"no failing rate found up to {lo:.4g} requests/s (2^{UP_LIMIT} times "
                    "the start rate): a finite workload that meets the SLOs even when all "
                    "its requests arrive at once has no capacity limit; use more requests "
                    "or tighter SLOs")
            break
        if lo == 0 and not math.isinf(hi) and hi < start * 2.0 ** -DOWN_LIMIT:
            note = (f"the SLOs are missed even at {hi:.3g} requests/s "
                    f"(2^-{DOWN_LIMIT} of the start rate): capacity 0")
            break
        rates = [_round_sig(r, digits) for r in next_rates(lo, hi, start, per_round,
                                                           rounds == 0)]
        rates = [r for r in dict.fromkeys(rates) if r not in results and r > lo
                 and r < hi]
        if not rates:  # rounding resolution reached
            note = "the bracket cannot be narrowed further at this rate resolution"
            break
        passed = list(evaluate(rounds, rates))
        if len(passed) != len(rates):
            raise ValueError("evaluate must return one result per rate")
        results.update(zip(rates, (bool(p) for p in passed), strict=True))
        rounds += 1
        hi = min((r for r, p in results.items() if not p), default=math.inf)
        lo = max((r for r, p in results.items() if p and r < hi), default=0.0)
    fails = sorted(r for r, p in results.items() if not p)
    pairs = [(r, next(f for f in fails if f < r)) for r, p in sorted(results.items())
             if p and fails and fails[0] < r]
    converged = lo > 0 and not math.isinf(hi) and hi / lo - 1 <= tolerance
    return SearchOutcome(lo, hi, converged, rounds, results, pairs, note)


# --- prices ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class FleetPrice:
    """What the configured fleet costs per hour, and the lowest grade of the prices."""

    usd_per_hour: float
    devices: int
    grade: str
    description: str


def fleet_price(cfg: SimConfig) -> FleetPrice:
    """Sum over pools of price_per_hour x devices per replica (tp x pp) x replicas."""
    from infersim.hardware import lowest_grade, resolve_device

    pools = cfg.resolved_pools() if hasattr(cfg, "resolved_pools") else [cfg]
    total, count, grades, parts = 0.0, 0, [], []
    for pool in pools:
        device = resolve_device(pool.device, pool.device_file)
        n = pool.placement.tp * pool.placement.pp * pool.replicas
        price = device.price_per_hour
        total += price.si * n
        count += n
        grades.append(price.grade)
        parts.append(f"{n} x {device.name} at {price.si:.2f} USD/h (grade {price.grade})")
    return FleetPrice(total, count, lowest_grade(grades), " + ".join(parts))


def usd_per_million(usd_per_hour: float, tokens_per_s: float) -> float:
    """Dollars per million tokens for a fleet costing ``usd_per_hour`` that serves
    ``tokens_per_s``: usd_per_hour / (tokens_per_s x 3600) x 1e6."""
    if tokens_per_s <= 0:
        return math.inf
    return usd_per_hour / (tokens_per_s * 3600.0) * 1e6


# --- result ---------------------------------------------------------------------------------
@dataclass
class CapacityResult:
    """The highest request rate that met the SLOs and what tokens cost there.

    ``max_rate`` (requests/s) is the highest passing probe below the lowest failing one;
    ``hi_rate`` that failing rate (inf if none failed). Token rates at ``max_rate`` are the
    offered load, max_rate x mean tokens per request (the fleet kept busy at exactly that
    rate); costs divide the fleet's hourly price by them. ``probes`` has one row per
    simulation, sorted by round then rate."""

    config: SimConfig
    slo: dict[str, float]
    attainment: float
    mode: str
    tolerance: float
    per_round: int
    workers: int
    max_rate: float
    hi_rate: float
    max_rate_scale: float | None
    converged: bool
    rounds: int
    output_tokens_per_s: float
    total_tokens_per_s: float
    price: FleetPrice
    usd_per_million_output_tokens: float
    usd_per_million_tokens: float
    lowest_grade: str
    non_monotone: list[tuple[float, float]]
    notes: list[str]
    probes: pd.DataFrame
    wall_s: float

    @property
    def best(self) -> pd.Series | None:
        """The probe at ``max_rate`` (None if nothing passed)."""
        hit = self.probes[self.probes["rate"] == self.max_rate]
        return hit.iloc[0] if self.max_rate > 0 and len(hit) else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (infinities and NaN become None)."""
        def clean(x: Any) -> Any:
            if isinstance(x, float | np.floating):
                return float(x) if math.isfinite(x) else None
            if isinstance(x, np.integer):
                return int(x)
            if isinstance(x, np.bool_):
                return bool(x)
            if isinstance(x, dict):
                return {k: clean(v) for k, v in x.items()}
            if isinstance(x, list | tuple):
                return [clean(v) for v in x]
            return x

        return clean({
            "model": self.config.model, "device": self.config.device,
            "scheduler": self.config.scheduler.name, "seed": self.config.seed,
            "slo": self.slo, "attainment": self.attainment, "mode": self.mode,
            "tolerance": self.tolerance, "per_round": self.per_round,
            "max_rate": self.max_rate, "hi_rate": self.hi_rate,
            "max_rate_scale": self.max_rate_scale, "converged": self.converged,
            "rounds": self.rounds, "output_tokens_per_s": self.output_tokens_per_s,
            "total_tokens_per_s": self.total_tokens_per_s,
            "usd_per_hour": self.price.usd_per_hour, "devices": self.price.devices,
            "fleet": self.price.description, "price_grade": self.price.grade,
            "usd_per_million_output_tokens": self.usd_per_million_output_tokens,
            "usd_per_million_tokens": self.usd_per_million_tokens,
            "lowest_grade": self.lowest_grade,
            "non_monotone": [list(p) for p in self.non_monotone], "notes": self.notes,
            "wall_s": self.wall_s,
            "probes": self.probes.to_dict(orient="records"),
        })


# --- the API --------------------------------------------------------------------------------
def check_options(mode: str, attainment: float, tolerance: float, workers: int | None,
                  per_round: int | None) -> tuple[int, int]:
    """Raise ConfigError for a bad option; return (workers, per_round) with defaults."""
    if mode not in MODES:
        raise ConfigError("mode", mode, f"one of {', '.join(MODES)}")
    if not (0 < attainment <= 1):
        raise ConfigError("attainment", attainment, "a fraction in (0, 1], e.g. 0.9")
    if not (tolerance > 0 and math.isfinite(tolerance)):
        raise ConfigError("tolerance", tolerance, "a relative tolerance > 0, e.g. 0.02")
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise ConfigError("workers", workers, "an integer >= 1")
    per_round = workers if per_round is None else per_round
    if per_round < 1:
        raise ConfigError("per_round", per_round, "an integer >= 1")
    return workers, per_round


def find_capacity(
    cfg: SimConfig,
    slo: str | Mapping[str, float | None] | SloConfig | None = None,
    attainment: float = 0.9,
    mode: Mode = "joint",
    *,
    tolerance: float = 0.02,
    workers: int | None = None,
    per_round: int | None = None,
    start_rate: float | None = None,
    max_requests: int | None = None,
    window_s: float | None = None,
    max_rounds: int = 40,
    on_probe: Callable[[dict[str, Any]], None] | None = None,
    cost=None,
    executor: Executor | None = None,
) -> CapacityResult:
    """The highest request rate at which ``cfg`` meets ``slo`` (default: the config's own)
    at ``attainment``, found by doubling then k-section to a relative ``tolerance``.

    ``mode`` "joint": at least a fraction A of all requests meet every limit (goodput's
    definition); "percentile": each limited metric's p(100*A) is within its limit.
    Unfinished and rejected requests miss. ``per_round`` rates are probed per round
    (default: ``workers``, default os.cpu_count()), each in its own process when workers >
    1; the probes, and so the answer, depend on ``per_round`` but never on ``workers``.
    ``start_rate`` defaults to the config's rate. ``on_probe`` gets each probe's row as it
    completes. ``cost`` replaces the cost model (it must pickle when workers > 1);
    ``executor`` replaces the process pool."""
    started = time.perf_counter()
    workers, per_round = check_options(mode, attainment, tolerance, workers, per_round)
    limits = _slo_dict(slo, cfg)
    cfg = limit_workload(cfg, max_requests, window_s)
    knob, config_rate = rate_knob(cfg)
    start = config_rate if start_rate is None else float(start_rate)
    if not (math.isfinite(start) and start > 0):
        raise ConfigError("start_rate", start_rate, "a number of requests/s > 0")
    price = fleet_price(cfg)  # fails early on an unknown device

    rows: list[dict[str, Any]] = []
    pool = executor
    own_pool = pool is None and workers > 1
    if own_pool:
        pool = ProcessPoolExecutor(max_workers=min(workers, per_round))

    def evaluate(round_no: int, rates: list[float]) -> list[bool]:
        done: dict[float, dict[str, Any]] = {}

        def finish(row: dict[str, Any]) -> None:
            row["round"] = round_no
            done[row["rate"]] = row
            if on_probe is not None:
                on_probe(dict(row))

        args = (knob, limits, attainment, mode, cost)
        if pool is None:
            for rate in rates:
                finish(run_probe(cfg, rate, *args))
        else:
            futures = [pool.submit(run_probe, cfg, rate, *args) for rate in rates]
            for fut in as_completed(futures):
                finish(fut.result())
        rows.extend(done[r] for r in rates)
        return [done[r]["passed"] for r in rates]

    try:
        outcome = search_max_rate(evaluate, start, tolerance=tolerance, per_round=per_round,
                                  max_rounds=max_rounds)
    finally:
        if own_pool:
            pool.shutdown(wait=True, cancel_futures=True)

    columns = ["round", "rate", "rate_scale", "passed", "attainment", "ttft_ms", "tpot_ms",
               "e2el_ms", "num_requests", "completed", "goodput", "output_throughput",
               "mean_output_tokens", "mean_total_tokens", "duration_s", "lowest_grade",
               "wall_s"]
    probes = pd.DataFrame(rows, columns=columns).sort_values(["round", "rate"], kind="stable")
    probes = probes.reset_index(drop=True)
    bad = {p for p, _ in outcome.non_monotone}
    probes["non_monotone"] = probes["rate"].isin(bad)

    notes = [outcome.note] if outcome.note else []
    if outcome.non_monotone:
        notes.append("non-monotone: " + "; ".join(
            f"{p:.4g} req/s passed although {f:.4g} req/s failed"
            for p, f in outcome.non_monotone))
    notes.append(f"prices are grade {price.grade}"
                 + (" (assumptions: typical on-demand cloud prices)" if price.grade == "D"
                    else ""))
    best = probes[probes["rate"] == outcome.lo]
    out_rate = total_rate = 0.0
    if outcome.lo > 0 and len(best):
        b = best.iloc[0]
        out_rate = outcome.lo * float(b["mean_output_tokens"])
        total_rate = outcome.lo * float(b["mean_total_tokens"])
    from infersim.hardware import lowest_grade

    return CapacityResult(
        config=cfg, slo=limits, attainment=attainment, mode=mode, tolerance=tolerance,
        per_round=per_round, workers=workers, max_rate=outcome.lo, hi_rate=outcome.hi,
        max_rate_scale=knob.scale(outcome.lo) if knob.kind == "trace" else None,
        converged=outcome.converged, rounds=outcome.rounds,
        output_tokens_per_s=out_rate, total_tokens_per_s=total_rate, price=price,
        usd_per_million_output_tokens=usd_per_million(price.usd_per_hour, out_rate),
        usd_per_million_tokens=usd_per_million(price.usd_per_hour, total_rate),
        lowest_grade=lowest_grade([*probes["lowest_grade"].tolist(), price.grade]),
        non_monotone=outcome.non_monotone, notes=notes, probes=probes,
        wall_s=time.perf_counter() - started,
    )
