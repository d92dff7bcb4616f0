"""Build a cluster from a config and simulate it: ``simulate(config) -> SimResult``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import pandas as pd
import simpy

from infersim.costmodels import CostModel, MemoryPlan, Placement, plan_memory
from infersim.errors import ConfigError, UnknownNameError
from infersim.hardware import get_link, lowest_grade, resolve_device
from infersim.models import get_model
from infersim.simulator.cluster import Cluster, Pool, kv_block_keys
from infersim.simulator.config import PoolConfig, SimConfig
from infersim.simulator.kv_cache import BlockManager
from infersim.simulator.metrics import LogHistogram, RequestLog, StepLog, summarize
from infersim.simulator.replica import Replica
from infersim.simulator.request import Request
from infersim.simulator.routers import ROUTERS
from infersim.simulator.schedulers import SCHEDULERS, SchedulerLimits, make_scheduler
from infersim.simulator.speculation import Speculation, check_scheduler
from infersim.workloads import RequestTable, build_requests, stream_rng

ROUTING_STREAM = 0x524F5554  # random stream ids of the routers ("ROUT")
DECODE_ROUTING_STREAM = 0x524F5555
LARGE_GPU_BYTES = 70 * 2**30
SWAP_SPACE_BYTES = 4 * 2**30  # vLLM V0's default swap_space per GPU


@dataclass
class SimResult:
    """What a run produced: per-request and per-step frames and the summary."""

    config: SimConfig
    summary: dict
    requests: pd.DataFrame
    steps: pd.DataFrame
    memory: MemoryPlan | None


def engine_limits(pool: PoolConfig, device) -> SchedulerLimits:
    """The pool's limits, vLLM V1's defaults for the device where left out."""
    s = pool.scheduler
    if s.name not in SCHEDULERS:
        raise UnknownNameError("scheduler", s.name, SCHEDULERS)
    cls = SCHEDULERS[s.name]
    large = device.family == "gpu" and device.memory_bytes >= LARGE_GPU_BYTES \
        and not device.name.startswith("a100")
    limits = SchedulerLimits(
        max_num_seqs=s.max_num_seqs or (1024 if large else 256),
        max_num_batched_tokens=s.max_num_batched_tokens or (8192 if large else 2048),
        long_prefill_token_threshold=s.long_prefill_token_threshold,
        enable_chunked_prefill=s.enable_chunked_prefill,
        reserve_full_isl=s.reserve_full_isl,
        policy=s.policy,
        preemption=s.preemption,
        watermark=cls.default_watermark if s.watermark is None else s.watermark,
    )
    return cls.effective_limits(limits)


def build_cost_model(cfg: SimConfig, pool: PoolConfig | None = None) -> CostModel:
    pool = pool or cfg.resolved_pools()[0]
    device = resolve_device(pool.device, pool.device_file)
    p = pool.placement
    link = get_link(p.link) if p.link else None
    placement = Placement(device, tp=p.tp, pp=p.pp, ep=p.ep, dp=pool.replicas, link=link)
    return CostModel(get_model(cfg.model), placement, pool.dtype, pool.kv_dtype)


def _swap_seconds_per_block(cost: CostModel, memory: MemoryPlan, block_size: int) -> float:
    """Each rank copies its shard of a block over its own host link."""
    name = cost.placement.device.host_link
    if name is None:
        return 0.0
    link = get_link(name)
    return memory.kv_bytes_per_token * block_size / link.bandwidth.si


def _build_pool(cfg: SimConfig, pool_cfg: PoolConfig, env, first_index: int,
                steps: StepLog, itl: LogHistogram, on_done, cost: CostModel | None,
                scheduler_factory=None, speculation: Speculation | None = None) -> Pool:
    cost = cost or build_cost_model(cfg, pool_cfg)
    limits = engine_limits(pool_cfg, cost.placement.device)
    s = pool_cfg.scheduler
    memory = plan_memory(cost.model, cost.placement, s.block_size, s.gpu_memory_utilization,
                         limits.max_num_batched_tokens, limits.max_num_seqs,
                         cost.params.runtime_reserved)
    spec = None
    if speculation is not None and pool_cfg.role != "prefill":  # prefill pools never decode
        check_scheduler(s.name, SCHEDULERS[s.name])
        spec = speculation.speculator(cost)
    blocks = s.num_gpu_blocks or (spec.kv_blocks(memory, s.block_size) if spec else
                                  memory.blocks)
    swap_blocks = 0
    if limits.preemption == "swap" and memory.kv_bytes_per_token:
        swap_blocks = int(s.swap_space_gib * 2**30 // (memory.kv_bytes_per_token * s.block_size))
    limits = replace(limits, swap_blocks=swap_blocks)
    swap_s = _swap_seconds_per_block(cost, memory, s.block_size)
    replicas = []
    for i in range(pool_cfg.replicas):
        kv = BlockManager(blocks, s.block_size, caching=s.enable_prefix_caching)
        sched = (scheduler_factory(limits, kv) if scheduler_factory
                 else make_scheduler(s.name, limits, kv))
        sched.spec = spec
        replicas.append(Replica(env, first_index + i, pool_cfg.name, sched, cost, steps, itl,
                                on_done, blocks * s.block_size, swap_s, cfg.fast_forward,
                                cfg.check))
    return Pool(pool_cfg.name, pool_cfg.role, cost, limits, blocks, s.block_size, memory,
                replicas)


def simulate(cfg: SimConfig, requests: RequestTable | None = None,
             progress: Callable[[int, int], None] | None = None,
             cost: CostModel | None = None, scheduler_factory=None) -> SimResult:
    """Run ``cfg`` to completion. ``requests`` replaces the config's workload and ``cost``
    the cost model every pool would build (both for studies and tests);
    ``scheduler_factory(limits, kv)``, when given, builds each replica's scheduler instead
    of the registry (replays of a fixed schedule, recorders; the limits still come from
    ``cfg.scheduler.name``)."""
    table = requests if requests is not None else build_requests(cfg.workload, cfg.seed)
    n = len(table)
    if n == 0:
        raise ConfigError("workload", 0, "the workload has no requests")
    env = simpy.Environment()
    speculation = (Speculation(cfg.speculation, cfg.seed) if cfg.speculation.active
                   else None)
    req_log, itl = RequestLog(n), LogHistogram()
    step_log = StepLog(cfg.record_steps, speculative=speculation is not None)
    state = {"done": 0}
    all_done = env.event()
    every = max(1, n // 200)

    def finished(req: Request, completed: bool) -> None:
        req_log.record(req, env.now if completed else None)
        state["done"] += 1
        if progress and state["done"] % every == 0:
            progress(state["done"], n)
        if state["done"] >= n and not all_done.triggered:
            all_done.succeed()

    holder: dict[str, Cluster] = {}
    pools, index = [], 0
    for pool_cfg in cfg.resolved_pools():
        pool = _build_pool(cfg, pool_cfg, env, index, step_log, itl,
                           lambda *a: holder["cluster"].done(*a), cost, scheduler_factory,
                           speculation)
        pools.append(pool)
        index += len(pool.replicas)
    block_sizes = {p.block_size for p in pools}
    if table.prefix_ids is not None and len(block_sizes) > 1:
        raise ConfigError("pools.scheduler.block_size", sorted(block_sizes),
                          "prefix caching needs one block size across pools")
    link = get_link(cfg.kv_transfer.link) if cfg.disaggregated else None
    cluster = Cluster(env, pools,
                      ROUTERS[cfg.router](stream_rng(cfg.seed, ROUTING_STREAM)),
                      ROUTERS[cfg.kv_transfer.router](stream_rng(cfg.seed,
                                                                 DECODE_ROUTING_STREAM)),
                      link, cfg.kv_transfer.layerwise, finished)
    holder["cluster"] = cluster
    block_size = pools[0].block_size

    def arrivals():
        arrival, prompt, output = table.arrival_s, table.prompt_tokens, table.output_tokens
        priority, prefix = table.priority, table.prefix_ids
        for i in range(n):
            t = float(arrival[i])
            if t > env.now:
                yield env.timeout(t - env.now)
            covered = int(prompt[i]) + (int(output[i]) if table.prefix_covers_output else 0)
            hashes = None if prefix is None else kv_block_keys(
                prefix[i], table.prefix_block_tokens, block_size, covered)
            req = Request(i, t, int(prompt[i]), int(output[i]),
                          0 if priority is None else int(priority[i]), hashes)
            req_log.arrived(req)
            if not cluster.fits(req):
                req_log.rejected[i] = True  # can never fit: the engine would refuse it
                finished(req, False)
                continue
            cluster.arrive(req)

    env.process(arrivals())
    for replica in cluster.replicas:
        env.process(replica.run())
    env.run(until=all_done)
    for replica in cluster.replicas:
        replica.flush()
    summary = _summary(cfg, req_log, step_log, itl, pools)
    if speculation is not None:
        summary["speculation"] = speculation.summary(step_log.busy_s)
    return SimResult(cfg, summary, req_log.frame(), step_log.frame(), pools[0].memory)


def _summary(cfg: SimConfig, req_log: RequestLog, step_log: StepLog, itl: LogHistogram,
             pools: list[Pool]) -> dict:
    replicas = [r for p in pools for r in p.replicas]
    frame = req_log.frame()
    summary = summarize(frame, step_log, itl, cfg.slo.model_dump(), pools[0].blocks,
                        len(replicas))
    kvs = [r.scheduler.kv for r in replicas]
    queried = sum(kv.query_tokens for kv in kvs)
    summary["prefix_cache_hit_rate"] = (sum(kv.hit_tokens for kv in kvs) / queried
                                        if queried else 0.0)
    summary["recomputed_tokens"] = sum(r.scheduler.recomputed_tokens for r in replicas)
    summary["kv_transfer_bytes"] = float(frame["kv_transfer_bytes"].sum())
    summary["pools"] = [
        {"name": p.name, "role": p.role, "device": p.cost.placement.device.name,
         "replicas": len(p.replicas), "tp": p.cost.placement.tp, "pp": p.cost.placement.pp,
         "scheduler": p.replicas[0].scheduler.name, "kv_blocks": p.blocks,
         "max_num_seqs": p.limits.max_num_seqs,
         "max_num_batched_tokens": p.limits.max_num_batched_tokens,
         "devices": p.cost.placement.ranks * len(p.replicas),
         "price_per_hour": p.cost.placement.device.price_per_hour.si
         * p.cost.placement.ranks * len(p.replicas)}
        for p in pools
    ]
    summary["lowest_grade"] = lowest_grade([p.cost.grade for p in pools])
    return summary
