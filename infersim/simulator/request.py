"""A request's mutable state while it is inside the cluster."""

from __future__ import annotations

import numpy as np

WAITING, RUNNING, FINISHED, SWAPPED = 0, 1, 2, 3


class Request:
    """Token-centric state, as in vLLM V1: the engine computes tokens until
    ``num_computed`` catches up with ``num_tokens`` (prompt + generated so far); reaching it
    samples the next output token.

    ``block_hashes`` identify the content of its KV blocks (prefix caching); ``handoff``
    marks a request a prefill replica computes and hands to a decode replica."""

    __slots__ = ("arrival", "block_hashes", "blocks", "cached_keys", "first_scheduled",
                 "first_token", "handoff", "id", "kv_transfer_bytes", "kv_transfer_s",
                 "last_token", "num_computed", "num_output", "output_len", "preemptions",
                 "prefix_hit_tokens", "priority", "prompt_len", "published", "replica", "status",
                 "swapped")

    def __init__(self, rid: int, arrival: float, prompt_len: int, output_len: int,
                 priority: int = 0, block_hashes: np.ndarray | None = None) -> None:
        self.id = rid
        self.arrival = arrival
        self.prompt_len = prompt_len
        self.output_len = output_len
        self.priority = priority
        self.block_hashes = block_hashes
        self.num_computed = 0
        self.num_output = 0
        self.blocks = 0
        self.cached_keys: list[int] = []  # content keys of shared cache blocks it holds
        self.published = 0  # leading full blocks already offered to the prefix cache
        self.first_scheduled = -1.0
        self.first_token = -1.0
        self.last_token = -1.0
        self.preemptions = 0
        self.prefix_hit_tokens = 0
        self.replica = -1
        self.handoff = False
        self.kv_transfer_bytes = 0.0
        self.kv_transfer_s = 0.0
        self.swapped = 0  # blocks of its KV cache held in host memory
        self.status = WAITING

    @property
    def num_tokens(self) -> int:
        return self.prompt_len + self.num_output

    @property
    def done(self) -> bool:
        """Finished here: all output generated, or (handoff) the first token sampled."""
        return self.num_output >= (1 if self.handoff else self.output_len)

    def __repr__(self) -> str:
        return (f"Request({self.id}, prompt={self.prompt_len}, out={self.num_output}/"
                f"{self.output_len}, computed={self.num_computed}, blocks={self.blocks})")
