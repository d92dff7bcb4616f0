"""Paged KV cache: fixed-size blocks, allocated as a request's computed tokens grow."""

from __future__ import annotations

from infersim.errors import ConfigError
from infersim.simulator.request import Request


class BlockManager:
    """Counts blocks (vLLM V1's KVCacheManager without prefix caching): a request holds
    ceil(tokens / block_size) blocks for the tokens it has computed or is computing."""

    __slots__ = ("block_size", "free", "total")

    def __init__(self, total_blocks: int, block_size: int) -> None:
        if total_blocks < 1:
            raise ConfigError("scheduler.num_gpu_blocks", total_blocks,
                              "the KV cache needs at least one block; the model may not fit")
        if block_size < 1:
            raise ConfigError("scheduler.block_size", block_size, "must be >= 1")
        self.total = total_blocks
        self.free = total_blocks
        self.block_size = block_size

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    def allocate(self, req: Request, new_tokens: int, lookahead: int = 0) -> bool:
        """Grow ``req`` to hold ``new_tokens`` more (plus ``lookahead`` slots); False when the
        free blocks do not suffice (nothing changes then)."""
        need = self.blocks_for(req.num_computed + new_tokens + lookahead) - req.blocks
        if need <= 0:
            return True
        if need > self.free:
            return False
        self.free -= need
        req.blocks += need
        return True

    def release(self, req: Request) -> None:
        self.free += req.blocks
        req.blocks = 0

    @property
    def used(self) -> int:
        return self.total - self.free
