"""``optimize_schedule``: the optimal schedule and its bound next to every registered
scheduler on the same requests, with the optimum replayed through the simulator."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from infersim.errors import ConfigError, InfersimError, SolverError
from infersim.optimizer.schedule.instance import OBJECTIVES, ScheduleInstance, head
from infersim.optimizer.schedule.linearize import (
    LinearizedCost,
    ShapeRange,
    StepEnvelope,
    fit_envelope,
    shape_features,
)
from infersim.optimizer.schedule.result import SolveResult
from infersim.optimizer.schedule.solve import (
    ScheduleSolution,
    best_start,
    model_envelope,
    solve_schedule,
)
from infersim.simulator.schedulers.fixed import FixedStep, fixed_scheduler, recording
from infersim.workloads import RequestTable


@dataclass
class SchedulerRun:
    """A registered policy on the instance: its objective under the cost model and under
    the step envelope (each run separately, so its decisions see its own step times)."""

    name: str
    value: float
    value_linearized: float
    steps: int
    preemptions: int
    error: str | None = None
    schedule: list[FixedStep] = field(default_factory=list, repr=False)


@dataclass
class ScheduleReport:
    """Everything ``infersim optimize schedule`` prints. ``optimum``: the optimal schedule
    replayed through the simulator under the cost model (what it really achieves);
    ``replay_linearized``: the same replay under the envelope, which must reproduce the
    solver's objective (``replay_error``); ``linearization_gap``: optimum / replay under the
    envelope - 1 (how much the envelope under-estimates this schedule)."""

    config: object
    instance: ScheduleInstance
    envelope: StepEnvelope
    solution: ScheduleSolution
    optimum: float
    optimum_linearized: float
    replay_linearized: float
    runs: list[SchedulerRun]
    envelope_violations: int
    envelope_max_violation: float
    description: str = ""

    @property
    def result(self) -> SolveResult:
        return self.solution.result

    @property
    def replay_error(self) -> float:
        """|replay under the envelope - solver objective| / solver objective."""
        inc = self.result.incumbent
        if inc is None or not math.isfinite(self.replay_linearized):
            return math.inf
        return abs(self.replay_linearized - inc) / max(abs(inc), 1e-12)

    @property
    def linearization_gap(self) -> float:
        if not self.replay_linearized:
            return 0.0
        return self.optimum / self.replay_linearized - 1.0

    def table(self) -> pd.DataFrame:
        """One row per schedule: the optimum (or, without a proof, the best schedule found),
        the bound and each registered scheduler, with the value under the cost model and
        how far above the bound and the optimum it is."""
        res = self.result
        bound, best = res.bound, self.optimum
        name = "optimal" if res.optimal else "best found (not proven)"
        rows = [{"scheduler": name, "value": best,
                 "value_linearized": self.replay_linearized,
                 "steps": self.solution.trace.num_steps,
                 "preemptions": self.solution.trace.preemptions, "error": None},
                {"scheduler": "bound", "value": bound, "value_linearized": bound,
                 "steps": None, "preemptions": None, "error": None}]
        rows += [{"scheduler": r.name, "value": r.value, "value_linearized": r.value_linearized,
                  "steps": r.steps, "preemptions": r.preemptions, "error": r.error}
                 for r in self.runs]
        df = pd.DataFrame(rows)
        df["above_bound"] = [_above(v, bound) for v in df["value"]]
        df["above_optimum"] = [_above(v, best) for v in df["value"]]
        df.loc[df["scheduler"] == "bound", "above_optimum"] = np.nan
        return df

    def to_dict(self) -> dict:
        """Plain JSON data (non-finite numbers as null)."""
        table = self.table()
        return _json_safe({
            "instance": self.description,
            "objective": self.result.objective,
            "unit": self.result.unit,
            "result": self.result.to_dict(),
            "optimum": self.optimum,
            "optimum_linearized": self.optimum_linearized,
            "replay_linearized": self.replay_linearized,
            "replay_error": self.replay_error,
            "linearization_gap": self.linearization_gap,
            "envelope": self.envelope.to_dict(),
            "envelope_violations": self.envelope_violations,
            "envelope_max_violation": self.envelope_max_violation,
            "schedulers": [{k: _plain(v) for k, v in row.items()}
                           for row in table.to_dict(orient="records")],
            "schedule": [s.to_dict() for s in self.solution.schedule],
        })


def _json_safe(value):
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return _plain(value)


def _above(value, ref) -> float:
    if value is None or ref is None or not np.isfinite(value) or not np.isfinite(ref):
        return math.nan
    if ref <= 0:
        return 0.0 if value <= ref else math.inf
    return value / ref - 1.0


def _plain(v):
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


# --- the instance of a config ------------------------------------------------------------------
def instance_from_config(cfg, requests: int | None):
    """(instance, cost model, request table) for the first ``requests`` requests of the
    config's workload on its (single) replica, with its limits and KV capacity."""
    from infersim.costmodels import plan_memory
    from infersim.simulator.engine import build_cost_model, engine_limits
    from infersim.workloads import build_requests

    if cfg.pools or cfg.disaggregated:
        raise ConfigError("pools", len(cfg.pools), "the schedule optimizer models one engine; "
                          "remove pools")
    if cfg.replicas != 1:
        raise ConfigError("replicas", cfg.replicas, "the schedule optimizer models one "
                          "engine: use --set replicas=1")
    pool = cfg.resolved_pools()[0]
    cost = build_cost_model(cfg, pool)
    limits = engine_limits(pool, cost.placement.device)
    s = pool.scheduler
    if s.num_gpu_blocks is not None:
        blocks = s.num_gpu_blocks
    else:
        blocks = plan_memory(cost.model, cost.placement, s.block_size, s.gpu_memory_utilization,
                             limits.max_num_batched_tokens, limits.max_num_seqs,
                             cost.params.runtime_reserved).blocks
    table = head(build_requests(cfg.workload, cfg.seed), requests)
    slo = tuple((k, float(v)) for k, v in cfg.slo.model_dump().items() if v is not None)
    inst = ScheduleInstance(table.arrival_s, table.prompt_tokens, table.output_tokens,
                            limits.max_num_batched_tokens, limits.max_num_seqs, blocks,
                            s.block_size, cost.placement.ranks, slo)
    return inst, cost, table


def shape_range(inst: ScheduleInstance) -> ShapeRange:
    total = int(inst.length.sum())
    return ShapeRange(max_tokens=int(min(inst.max_num_batched_tokens, total)),
                      max_seqs=int(min(inst.max_num_seqs, inst.n)),
                      max_len=int(inst.length.max()),
                      max_kv=int(min(inst.capacity_tokens, total)))


# --- simulator runs ------------------------------------------------------------------------------
def _with_scheduler(cfg, name: str, **extra):
    sched = cfg.scheduler.model_copy(update={"name": name, **extra})
    return cfg.model_copy(update={"scheduler": sched, "record_steps": True})


def objective_value(res, objective: str, slo_ms: dict[str, float], devices: int) -> float:
    """An objective of a simulator run in reported units (NaN if a request did not finish,
    except for slo, where it counts as a violation)."""
    df = res.requests
    done = df["finished"].to_numpy()
    if objective == "slo":
        bad = ~done
        if slo_ms.get("ttft_ms") is not None:
            bad |= (df["ttft_s"].to_numpy() * 1e3 > slo_ms["ttft_ms"])
        if slo_ms.get("e2el_ms") is not None:
            bad |= (df["e2el_s"].to_numpy() * 1e3 > slo_ms["e2el_ms"])
        if slo_ms.get("tpot_ms") is not None:
            tpot = np.nan_to_num(df["tpot_s"].to_numpy() * 1e3, nan=0.0)
            bad |= tpot > slo_ms["tpot_ms"]
        return float(bad.sum())
    if not done.all():
        return math.nan
    if objective == "latency":
        return float((df["finish_s"] - df["arrival_s"]).sum())
    if objective == "makespan":
        return float(df["finish_s"].max() - df["arrival_s"].min())
    return float(res.steps["duration_s"].sum() * devices)


def replay(cfg, table: RequestTable, schedule, cost, check: bool = True):
    """Run ``schedule`` through the simulator with the ``fixed`` scheduler (chunked prefill
    on, invariants checked every step). Raises SolverError if the engine cannot run it."""
    from infersim.simulator import simulate

    n = len(table)
    for i, step in enumerate(schedule):
        for r in [r for r, _ in step.run] + list(step.preempt):
            if not 0 <= r < n:
                raise SolverError(f"schedule step {i}: request {r} is not among the {n} "
                                  "requests")
    rcfg = _with_scheduler(cfg, "fixed", enable_chunked_prefill=True)
    rcfg = rcfg.model_copy(update={"check": check})
    factory = fixed_scheduler(schedule)
    res = simulate(rcfg, requests=table, cost=cost, scheduler_factory=factory)
    for sched in factory.built:
        if sched.position < len(sched.steps):
            raise SolverError(f"schedule step {sched.position}: every request had finished; "
                              f"{len(sched.steps) - sched.position} step(s) left over")
    return res


def run_policy(cfg, table: RequestTable, name: str, cost):
    """Simulate the registered policy ``name``; (result, its recorded schedule)."""
    from infersim.simulator import simulate

    factory, log = recording(name)
    res = simulate(_with_scheduler(cfg, name), requests=table, cost=cost,
                   scheduler_factory=factory)
    return res, log


def policies() -> list[str]:
    """Registered scheduling policies (replay-only schedulers left out)."""
    from infersim.simulator import SCHEDULERS

    return [n for n, cls in SCHEDULERS.items() if not getattr(cls, "replay_only", False)]


def _envelope_check(envelope: StepEnvelope, steps: pd.DataFrame) -> tuple[int, float]:
    """Steps of a run where the envelope exceeds the cost model: (count, worst relative)."""
    if steps.empty:
        return 0, 0.0
    from infersim.costmodels import BatchShape

    b = BatchShape(decode_seqs=steps["decode_tokens"].to_numpy(),
                   decode_context=steps["decode_context"].to_numpy(),
                   prefill_seqs=steps["prefill_seqs"].to_numpy(),
                   prefill_tokens=steps["prefill_tokens"].to_numpy(),
                   prefill_context=steps["prefill_context"].to_numpy(),
                   sampled=steps["sampled"].to_numpy())
    env = np.atleast_1d(envelope.seconds(*shape_features(b)))
    real = steps["duration_s"].to_numpy()
    over = (env - real) / np.maximum(real, 1e-15)
    bad = over > 1e-9
    return int(bad.sum()), float(over[bad].max()) if bad.any() else 0.0


# --- the study --------------------------------------------------------------------------------
def optimize_schedule(config=None, requests: int | None = 30, objective: str = "latency", *,
                      preemption: bool = False, time_limit_s: float = 60.0,
                      num_workers: int = 2, seed: int = 0, overrides: list[str] | None = None,
                      kv_granularity: str = "block", gap_limit: float = 1e-4,
                      envelope_samples: int = 3000, log: bool = False,
                      warm_starts: list | None = None, progress=None) -> ScheduleReport:
    """The optimum and bound for the first ``requests`` requests of a config (a SimConfig,
    a YAML path or None for the default, with ``key=value`` overrides), next to every
    registered scheduler's value on the same requests.

    Every policy runs twice: under the cost model (its value) and under the step envelope;
    the best recorded schedule, by the model's objective, warm-starts CP-SAT. The optimum is
    replayed through the simulator with the ``fixed`` scheduler under the envelope (it must
    reproduce the solver's objective) and under the cost model (its real value).
    ``warm_starts``: more (name, schedule) candidates, e.g. the optimum without preemption
    for a solve with it."""
    from infersim.simulator import SimConfig

    if objective not in OBJECTIVES:
        raise ConfigError("--objective", objective, f"allowed: {', '.join(OBJECTIVES)}")
    cfg = config if isinstance(config, SimConfig) else SimConfig.load(
        Path(config) if config is not None else None, overrides)
    if isinstance(config, SimConfig) and overrides:
        raise ConfigError("overrides", overrides, "apply overrides when loading the config")
    say = progress or (lambda _msg: None)
    inst, cost, table = instance_from_config(cfg, requests)
    table = inst.table()  # lengths and arrivals only (no prefix ids, priorities kept out)
    say(f"fitting the step envelope for {inst.describe()}")
    envelope = fit_envelope(cost, shape_range(inst), samples=envelope_samples, seed=seed)
    lin = LinearizedCost(cost, envelope)
    ienv = model_envelope(inst, envelope, objective)
    slo, devices = inst.slo_ms, inst.devices
    runs: list[SchedulerRun] = []
    candidates: list[tuple[str, list[FixedStep]]] = list(warm_starts or [])

    def consider(name: str, schedule: list[FixedStep]) -> None:
        candidates.append((name, schedule))

    viol, worst = 0, 0.0
    for name in policies():
        say(f"simulating {name}")
        try:
            real, real_log = run_policy(cfg, table, name, cost)
            linr, lin_log = run_policy(cfg, table, name, lin)
        except InfersimError as exc:
            runs.append(SchedulerRun(name, math.nan, math.nan, 0, 0, str(exc)))
            continue
        v, w = _envelope_check(envelope, real.steps)
        viol, worst = viol + v, max(worst, w)
        runs.append(SchedulerRun(name, objective_value(real, objective, slo, devices),
                                 objective_value(linr, objective, slo, devices),
                                 int(real.summary["num_steps"]),
                                 int(real.summary["num_preemptions"]), None, real_log))
        consider(name, lin_log)
        consider(f"{name} (cost-model run)", real_log)
        if inst.arrival_s[-1] > inst.arrival_s[0]:  # wait for all, then serve one batch
            batch = RequestTable(np.zeros(inst.n), inst.prompt, inst.output)
            with contextlib.suppress(InfersimError):
                consider(f"{name} (as one batch)", run_policy(cfg, batch, name, lin)[1])
    warm_name, warm = best_start(inst, ienv, objective, candidates, preemption)
    say(f"solving with CP-SAT ({objective}, preemption {'on' if preemption else 'off'}, "
        f"warm start {warm_name}, {time_limit_s:g} s, {num_workers} workers)")
    sol = solve_schedule(inst, envelope, objective, preemption=preemption, warm_start=warm,
                         warm_start_name=warm_name, time_limit_s=time_limit_s,
                         num_workers=num_workers, seed=seed, kv_granularity=kv_granularity,
                         gap_limit=gap_limit, log=log)
    say("replaying the optimum through the simulator")
    rep_lin = replay(cfg, table, sol.schedule, lin)
    rep_real = replay(cfg, table, sol.schedule, cost)
    v, w = _envelope_check(envelope, rep_real.steps)
    viol, worst = viol + v, max(worst, w)
    device = cost.placement.device.name
    desc = (f"{cost.model.name} on {cost.placement.ranks} x {device}: {inst.describe()}")
    return ScheduleReport(cfg, inst, envelope, sol,
                          objective_value(rep_real, objective, slo, devices),
                          sol.trace.objective(objective, slo, 1e-3),
                          objective_value(rep_lin, objective, slo, devices), runs, viol, worst,
                          desc)

