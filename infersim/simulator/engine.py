"""Build a cluster from a config and simulate it: ``simulate(config) -> SimResult``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import simpy

from infersim.costmodels import CostModel, MemoryPlan, Placement, plan_memory
from infersim.errors import ConfigError
from infersim.hardware import get_link, resolve_device
from infersim.models import get_model
from infersim.simulator.config import SimConfig
from infersim.simulator.kv_cache import BlockManager
from infersim.simulator.metrics import LogHistogram, RequestLog, StepLog, summarize
from infersim.simulator.replica import Replica
from infersim.simulator.request import Request
from infersim.simulator.routers import ROUTERS
from infersim.simulator.schedulers import SchedulerLimits, make_scheduler
from infersim.workloads import RequestTable, build_requests, stream_rng

ROUTING_STREAM = 0x524F5554  # random stream id of the router ("ROUT")
LARGE_GPU_BYTES = 70 * 2**30


@dataclass
class SimResult:
    """What a run produced: per-request and per-step frames and the summary."""

    config: SimConfig
    summary: dict
    requests: pd.DataFrame
    steps: pd.DataFrame
    memory: MemoryPlan | None


def engine_limits(cfg: SimConfig, device) -> SchedulerLimits:
    """The config's limits, vLLM V1's defaults for the device where left out."""
    s = cfg.scheduler
    large = device.family == "gpu" and device.memory_bytes >= LARGE_GPU_BYTES \
        and not device.name.startswith("a100")
    return SchedulerLimits(
        max_num_seqs=s.max_num_seqs or (1024 if large else 256),
        max_num_batched_tokens=s.max_num_batched_tokens or (8192 if large else 2048),
        long_prefill_token_threshold=s.long_prefill_token_threshold,
        enable_chunked_prefill=s.enable_chunked_prefill,
        reserve_full_isl=s.reserve_full_isl,
    )


def build_cost_model(cfg: SimConfig) -> CostModel:
    device = resolve_device(cfg.device, cfg.device_file)
    p = cfg.placement
    link = get_link(p.link) if p.link else None
    placement = Placement(device, tp=p.tp, pp=p.pp, ep=p.ep, dp=cfg.replicas, link=link)
    return CostModel(get_model(cfg.model), placement, cfg.dtype, cfg.kv_dtype)


def kv_blocks(cfg: SimConfig, cost: CostModel, limits: SchedulerLimits
              ) -> tuple[int, MemoryPlan | None]:
    plan = plan_memory(cost.model, cost.placement, cfg.scheduler.block_size,
                       cfg.scheduler.gpu_memory_utilization, limits.max_num_batched_tokens,
                       limits.max_num_seqs, cost.params.runtime_reserved)
    if cfg.scheduler.num_gpu_blocks is not None:
        return cfg.scheduler.num_gpu_blocks, plan
    return plan.blocks, plan


def simulate(cfg: SimConfig, requests: RequestTable | None = None,
             progress: Callable[[int, int], None] | None = None,
             cost: CostModel | None = None) -> SimResult:
    """Run ``cfg`` to completion. ``requests`` replaces the config's workload and ``cost``
    the cost model it would build (both for studies and tests)."""
    cost = cost or build_cost_model(cfg)
    limits = engine_limits(cfg, cost.placement.device)
    blocks, memory = kv_blocks(cfg, cost, limits)
    table = requests if requests is not None else build_requests(cfg.workload, cfg.seed)
    n = len(table)
    if n == 0:
        raise ConfigError("workload", 0, "the workload has no requests")

    env = simpy.Environment()
    req_log, step_log, itl = RequestLog(n), StepLog(cfg.record_steps), LogHistogram()
    done = {"count": 0}
    all_done = env.event()
    every = max(1, n // 200)

    def on_finish(count: int) -> None:
        before = done["count"]
        done["count"] += count
        if progress and done["count"] // every != before // every:
            progress(done["count"], n)
        if done["count"] >= n and not all_done.triggered:
            all_done.succeed()

    replicas = []
    for i in range(cfg.replicas):
        kv = BlockManager(blocks, cfg.scheduler.block_size)
        sched = make_scheduler(cfg.scheduler.name, limits, kv)
        replicas.append(Replica(env, i, sched, cost, req_log, step_log, itl, on_finish,
                                cfg.fast_forward, cfg.check))
    route = ROUTERS[cfg.router](stream_rng(cfg.seed, ROUTING_STREAM))
    max_tokens = blocks * cfg.scheduler.block_size

    def arrivals():
        arrival, prompt, output = table.arrival_s, table.prompt_tokens, table.output_tokens
        for i in range(n):
            t = float(arrival[i])
            if t > env.now:
                yield env.timeout(t - env.now)
            req = Request(i, t, int(prompt[i]), int(output[i]))
            req_log.arrived(req)
            if req.prompt_len + req.output_len > max_tokens or (
                    not limits.enable_chunked_prefill
                    and req.prompt_len > limits.max_num_batched_tokens):
                req_log.rejected[i] = True  # can never fit: the engine would refuse it
                req_log.record(req, None)
                on_finish(1)
                continue
            replicas[route(replicas)].add(req)

    env.process(arrivals())
    for r in replicas:
        env.process(r.run())
    env.run(until=all_done)
    for r in replicas:
        r.flush()

    frame = req_log.frame()
    summary = summarize(frame, step_log, itl, cfg.slo.model_dump(), blocks, cfg.replicas)
    summary["lowest_grade"] = cost.grade
    return SimResult(cfg, summary, frame, step_log.frame(), memory)
