"""Pools of replicas behind routers; disaggregated prefill/decode with KV transfer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import simpy

from infersim.costmodels import CostModel, MemoryPlan
from infersim.hardware import LinkSpec
from infersim.simulator.replica import Replica
from infersim.simulator.request import WAITING, Request
from infersim.simulator.routers import Route
from infersim.simulator.schedulers import SchedulerLimits


@dataclass
class Pool:
    """Identical replicas: one device type, placement, scheduler and KV capacity."""

    name: str
    role: str
    cost: CostModel
    limits: SchedulerLimits
    blocks: int
    block_size: int
    memory: MemoryPlan | None
    replicas: list[Replica]

    @property
    def max_tokens(self) -> int:
        return self.blocks * self.block_size


class Cluster:
    """Sends each arriving request to a replica of the front pools (mixed, or prefill when
    disaggregated). A prefill replica computes the prompt (its sampled token is internal,
    as with vLLM's disaggregated serving) and hands the request over: its KV cache (prompt
    tokens x KV bytes per token) crosses ``link`` (each rank sends its shard in parallel;
    one transfer at a time per prefill replica); a decode replica then recomputes the last
    prompt token and emits the first token the user sees, and the rest. With ``layerwise``
    transfer, layers are sent as they are computed, so only the part not hidden behind the
    prompt's last step remains."""

    def __init__(self, env: simpy.Environment, pools: list[Pool], route_front: Route,
                 route_decode: Route, link: LinkSpec | None, layerwise: bool,
                 on_finished) -> None:
        self.env = env
        self.pools = pools
        self.front = [r for p in pools if p.role in ("mixed", "prefill") for r in p.replicas]
        self.back = [r for p in pools if p.role == "decode" for r in p.replicas]
        self.route_front, self.route_decode = route_front, route_decode
        self.link, self.layerwise = link, layerwise
        self.on_finished = on_finished  # called with (request, finished: bool)
        self._sending = {r.index: simpy.Resource(env, 1) for r in self.front} if self.back \
            else {}
        self._pool_of = {r.index: p for p in pools for r in p.replicas}

    @property
    def replicas(self) -> list[Replica]:
        return [r for p in self.pools for r in p.replicas]

    def fits(self, req: Request) -> bool:
        """Can some replica ever hold the request (the engine refuses it otherwise)?"""
        total = req.prompt_len + req.output_len
        if self.back:
            return (any(self._fits_front(r, req.prompt_len + 1) for r in self.front)
                    and any(r.max_tokens >= total for r in self.back))
        return any(self._fits_front(r, total) for r in self.front)

    def _fits_front(self, replica: Replica, tokens: int) -> bool:
        """Room in its KV cache, and a prompt that fits the token budget when the policy
        neither chunks prompts nor exceeds the budget (vLLM V0 refuses those)."""
        sched = replica.scheduler
        return replica.max_tokens >= tokens and (
            sched.limits.enable_chunked_prefill or not sched.obeys_token_budget
            or tokens - 1 <= sched.limits.max_num_batched_tokens)

    def arrive(self, req: Request) -> None:
        req.handoff = bool(self.back) and req.output_len > 1
        need = req.prompt_len + (1 if req.handoff else req.output_len)
        candidates = [r for r in self.front if self._fits_front(r, need)]
        candidates[self.route_front(candidates, req)].add(req)

    def done(self, replica: Replica, finished: list[Request], last_step: float) -> None:
        for req in finished:
            if req.handoff:
                self.env.process(self._transfer(req, replica, last_step))
            else:
                self.on_finished(req, True)

    def _transfer(self, req: Request, source: Replica, last_step: float):
        pool = self._pool_of[source.index]
        model = pool.cost.model
        nbytes = req.prompt_len * model.kv_bytes_per_token
        ranks = pool.cost.placement.ranks
        seconds = nbytes / (self.link.bandwidth.si * ranks) + self.link.latency.si
        if self.layerwise:
            layers = max(model.num_layers, 1)
            seconds = max(seconds / layers, seconds - last_step * (layers - 1) / layers)
        started = self.env.now
        with self._sending[source.index].request() as slot:
            yield slot
            yield self.env.timeout(seconds)
        req.kv_transfer_bytes = nbytes
        req.kv_transfer_s = self.env.now - started
        req.handoff = False
        req.status = WAITING
        req.num_output = 0  # the decode replica samples the first token the user sees
        req.first_token = req.last_token = -1.0
        req.num_computed = req.prompt_len - 1  # KV of the prompt arrived; its last token
        # is recomputed to get the logits
        total = req.prompt_len + req.output_len
        candidates = [r for r in self.back if r.max_tokens >= total]
        candidates[self.route_decode(candidates, req)].add(req)


def kv_block_keys(ids: np.ndarray, id_tokens: int, block_size: int, tokens: int
                  ) -> np.ndarray:
    """Content keys of the full KV blocks among a request's first ``tokens`` tokens from its
    chained prefix ids: block j is identified by the id of the prefix block holding its
    last token and its place in it."""
    n = min(len(ids) * id_tokens, tokens) // block_size
    last_token = np.arange(n) * block_size + block_size - 1
    per_id = max(1, id_tokens // block_size)
    sub = (np.arange(n) * block_size % id_tokens) // block_size
    return ids[last_token // id_tokens].astype(np.int64) * per_id + sub
