"""A request's mutable state while it is inside a replica."""

from __future__ import annotations

WAITING, RUNNING, FINISHED = 0, 1, 2


class Request:
    """Token-centric state, as in vLLM V1: the engine computes tokens until
    ``num_computed`` catches up with ``num_tokens`` (prompt + generated so far); reaching it
    samples the next output token."""

    __slots__ = ("arrival", "blocks", "first_scheduled", "first_token", "id", "last_token",
                 "num_computed", "num_output", "output_len", "preemptions", "prompt_len",
                 "replica", "status")

    def __init__(self, rid: int, arrival: float, prompt_len: int, output_len: int) -> None:
        self.id = rid
        self.arrival = arrival
        self.prompt_len = prompt_len
        self.output_len = output_len
        self.num_computed = 0
        self.num_output = 0
        self.blocks = 0
        self.first_scheduled = -1.0
        self.first_token = -1.0
        self.last_token = -1.0
        self.preemptions = 0
        self.replica = -1
        self.status = WAITING

    @property
    def num_tokens(self) -> int:
        return self.prompt_len + self.num_output

    @property
    def remaining_tokens(self) -> int:
        """Tokens still to compute before the next output token is sampled."""
        return self.prompt_len + self.num_output - self.num_computed

    def __repr__(self) -> str:
        return (f"Request({self.id}, prompt={self.prompt_len}, out={self.num_output}/"
                f"{self.output_len}, computed={self.num_computed}, blocks={self.blocks})")
