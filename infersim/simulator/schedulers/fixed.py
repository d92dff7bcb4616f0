"""``fixed``: replay a given schedule step by step (optimal schedules, recorded runs).

A schedule is a list of steps; each step names the requests whose KV cache it drops first
(recompute preemption: their computed tokens go back to 0) and then the (request id, tokens)
pairs it computes. The scheduler waits (the replica idles) until every request the next step
names has arrived, then runs that step exactly; it never decides anything. A step the engine
could not run (a request not there or finished, more tokens than it has to compute, the token
budget, the sequence cap or the KV cache exceeded) raises ``SolverError`` naming the step.

Build one with ``fixed_scheduler(schedule)`` and pass it to
``simulate(cfg, scheduler_factory=...)`` (with ``cfg.scheduler.name = "fixed"``);
``recording(name)`` runs a registered policy and records its schedule in the same form.
Unlike the policies, a fixed schedule may idle while work is queued (an optimum may wait
for an arrival to batch with), so the work-conservation invariant does not apply to it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from infersim.errors import ConfigError, SolverError
from infersim.simulator.kv_cache import BlockManager
from infersim.simulator.request import RUNNING, WAITING, Request
from infersim.simulator.schedulers.base import (
    SCHEDULERS,
    Scheduler,
    SchedulerLimits,
    StepPlan,
    register,
)


@dataclass(frozen=True)
class FixedStep:
    """One engine step: ``preempt`` (ids whose KV is dropped before it) and ``run``
    ((id, tokens) pairs it computes, in order)."""

    run: tuple[tuple[int, int], ...]
    preempt: tuple[int, ...] = ()

    @property
    def tokens(self) -> int:
        return sum(n for _, n in self.run)

    def to_dict(self) -> dict:
        return {"run": [list(p) for p in self.run], "preempt": list(self.preempt)}


def as_steps(schedule: Iterable) -> tuple[FixedStep, ...]:
    """Normalise a schedule: FixedSteps, or plain lists of (id, tokens) pairs. Steps that do
    nothing are dropped."""
    out = []
    for i, step in enumerate(schedule):
        if not isinstance(step, FixedStep):
            try:
                step = FixedStep(tuple((int(r), int(n)) for r, n in step))
            except (TypeError, ValueError):
                raise ConfigError(f"schedule[{i}]", step, "a step is a list of "
                                  "(request id, tokens) pairs or a FixedStep") from None
        if step.run or step.preempt:
            out.append(step)
    return tuple(out)


class _Waiting:
    """Waiting requests in arrival order, removable from anywhere (the replay picks)."""

    def __init__(self) -> None:
        self._items: dict[int, Request] = {}

    def push(self, req: Request) -> None:
        self._items[req.id] = req

    push_front = push

    def peek(self) -> Request:
        return next(iter(self._items.values()))

    def pop(self) -> Request:
        return self._items.pop(next(iter(self._items)))

    def remove(self, req: Request) -> None:
        del self._items[req.id]

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def __iter__(self) -> Iterator[Request]:
        return iter(list(self._items.values()))


@register("fixed")
class FixedScheduler(Scheduler):
    replay_only = True  # not a policy: left out when every policy is compared
    fast_forward = False
    supports_speculation = False  # a replay computes exactly the tokens it names

    def __init__(self, limits: SchedulerLimits, kv: BlockManager,
                 schedule: Sequence | None = None) -> None:
        super().__init__(limits, kv)
        if schedule is None:
            raise ConfigError("scheduler.name", "fixed", "the fixed scheduler replays a given "
                              "schedule: build it with fixed_scheduler(schedule) and pass it "
                              "to simulate(..., scheduler_factory=...)")
        self.steps = as_steps(schedule)
        self.position = 0
        self.waiting = _Waiting()
        self._present: dict[int, Request] = {}
        self._finished: set[int] = set()

    def add(self, req: Request) -> None:
        super().add(req)
        self._present[req.id] = req

    @property
    def has_work(self) -> bool:
        """Ready to run the next step: all of its requests are here (or one finished, an
        error ``schedule`` reports); past the end with requests left, ``schedule`` reports
        them."""
        if not (self.waiting or self.running):
            return False
        if self.position >= len(self.steps):
            return True
        step = self.steps[self.position]
        ids = [r for r, _ in step.run] + list(step.preempt)
        return all(r in self._present or r in self._finished for r in ids)

    def schedule(self, now: float) -> StepPlan:
        if self.position >= len(self.steps):
            left = sorted(r.id for r in [*self.running, *self.waiting])
            raise SolverError(f"fixed schedule: it ended with request(s) {left} unfinished")
        index, step = self.position, self.steps[self.position]
        self.position += 1

        def fail(problem: str):
            raise SolverError(f"fixed schedule, step {index}: {problem}")

        plan = StepPlan()
        for rid in step.preempt:
            req = self._present.get(rid)
            if req is None or req.status != RUNNING:
                fail(f"request {rid} holds no KV cache to drop")
            self._drop(req, plan)
        budget = self.limits.max_num_batched_tokens
        seen: set[int] = set()
        for rid, new in step.run:
            req = self._present.get(rid)
            if req is None:
                fail(f"request {rid} " + ("has finished" if rid in self._finished
                                          else "has not arrived"))
            if rid in seen:
                fail(f"request {rid} appears twice")
            seen.add(rid)
            todo = req.prompt_len + req.num_output - req.num_computed
            if not 1 <= new <= todo:
                fail(f"request {rid} computes {new} tokens; it has {todo} to compute")
            budget -= new
            if budget < 0:
                fail(f"{step.tokens} tokens exceed max_num_batched_tokens "
                     f"{self.limits.max_num_batched_tokens}")
            if req.status == WAITING:
                if len(self.running) >= self.limits.max_num_seqs:
                    fail(f"admitting request {rid} exceeds max_num_seqs "
                         f"{self.limits.max_num_seqs}")
                if not self.kv.allocate(req, new):
                    fail(f"request {rid} does not fit the KV cache ({self.kv.free} free blocks)")
                self.waiting.remove(req)
                req.status = RUNNING
                if req.first_scheduled < 0:
                    req.first_scheduled = now
                self.running.append(req)
            elif not self.kv.allocate(req, new):
                fail(f"request {rid} cannot grow in the KV cache ({self.kv.free} free blocks)")
            plan.add(req, new)
        return plan

    def _drop(self, req: Request, plan: StepPlan) -> None:
        """Recompute preemption (never swap: the schedule model knows no host memory)."""
        self.running.remove(req)
        plan.preempted += 1
        req.preemptions += 1
        self.kv.release(req)
        self.recomputed_tokens += req.num_computed
        req.num_computed = 0
        req.status = WAITING
        self.waiting.push(req)

    def complete(self, plan: StepPlan, now: float, itl: list[float]) -> list[Request]:
        finished = super().complete(plan, now, itl)
        for req in finished:
            self._present.pop(req.id, None)
            self._finished.add(req.id)
        return finished


def fixed_scheduler(schedule: Iterable) -> Callable[[SchedulerLimits, BlockManager],
                                                    FixedScheduler]:
    """A scheduler factory replaying ``schedule`` (for ``simulate(scheduler_factory=)``);
    ``factory.built`` lists the schedulers it made (``position`` < ``len(steps)`` after a
    run: the schedule had steps left when every request had finished)."""
    steps = as_steps(schedule)
    built: list[FixedScheduler] = []

    def build(limits: SchedulerLimits, kv: BlockManager) -> FixedScheduler:
        sched = FixedScheduler(limits, kv, steps)
        built.append(sched)
        return sched

    build.built = built
    return build


def recording(name: str) -> tuple[Callable[[SchedulerLimits, BlockManager], Scheduler],
                                  list[FixedStep]]:
    """A factory building the registered policy ``name`` that appends every step it takes
    to the returned list, as a replayable schedule (runs of decode steps are stepped one by
    one). Preemptions are recorded as recompute preemptions."""
    if name not in SCHEDULERS:
        from infersim.errors import UnknownNameError

        raise UnknownNameError("scheduler", name, SCHEDULERS)
    cls = SCHEDULERS[name]
    log: list[FixedStep] = []

    class Recording(cls):
        fast_forward = False

        def schedule(self, now: float) -> StepPlan:
            self._dropped: list[int] = []
            plan = super().schedule(now)
            log.append(FixedStep(tuple((r.id, n) for r, n in plan.scheduled),
                                 tuple(self._dropped)))
            return plan

        def decode_run(self, max_steps: int):
            return None

        def preempt(self, req: Request, *args, **kwargs):
            if hasattr(self, "_dropped"):
                self._dropped.append(req.id)
            return super().preempt(req, *args, **kwargs)

    Recording.__name__ = Recording.__qualname__ = f"Recording{cls.__name__}"
    return Recording, log
