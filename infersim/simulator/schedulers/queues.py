"""Waiting queues: arrival order (FCFS) or kept sorted by a key (priority, shortest job)."""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable, Iterator

from infersim.simulator.request import Request


class FcfsQueue:
    """Arrival order; preempted requests go back to the front."""

    def __init__(self) -> None:
        self._q: deque[Request] = deque()

    def push(self, req: Request) -> None:
        self._q.append(req)

    def push_front(self, req: Request) -> None:
        self._q.appendleft(req)

    def peek(self) -> Request:
        return self._q[0]

    def pop(self) -> Request:
        return self._q.popleft()

    def __len__(self) -> int:
        return len(self._q)

    def __bool__(self) -> bool:
        return bool(self._q)

    def __iter__(self) -> Iterator[Request]:
        return iter(self._q)


class KeyedQueue:
    """Sorted by ``key`` (smallest first, ties by request id); a preempted request is
    re-inserted by its key like any other."""

    def __init__(self, key: Callable[[Request], tuple]) -> None:
        self._key = key
        self._items: list[tuple[tuple, int, Request]] = []

    def push(self, req: Request) -> None:
        bisect.insort(self._items, (self._key(req), req.id, req), key=lambda t: t[:2])

    push_front = push

    def peek(self) -> Request:
        return self._items[0][2]

    def pop(self) -> Request:
        return self._items.pop(0)[2]

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def __iter__(self) -> Iterator[Request]:
        return (item[2] for item in self._items)


def remaining_work(req: Request) -> int:
    """Tokens still to compute, output included (an oracle of the output length)."""
    return req.prompt_len + req.output_len - req.num_computed


POLICIES: dict[str, Callable[[Request], tuple] | None] = {
    "fcfs": None,
    "priority": lambda r: (r.priority, r.arrival),  # lower value = more important, as vLLM
    "sjf": lambda r: (remaining_work(r), r.arrival),
}


def make_queue(policy: str) -> FcfsQueue | KeyedQueue:
    key = POLICIES[policy]
    return FcfsQueue() if key is None else KeyedQueue(key)
