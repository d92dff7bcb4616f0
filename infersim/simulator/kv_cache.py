"""Paged KV cache: fixed-size blocks allocated as a request's computed tokens grow, with
optional prefix caching (vLLM V1's KVCacheManager and BlockPool, counted, not stored)."""

from __future__ import annotations

from collections import OrderedDict

from infersim.errors import ConfigError
from infersim.simulator.request import Request


class BlockManager:
    """A request holds ceil(tokens / block_size) blocks for the tokens it has computed or is
    computing. With prefix caching, a full block whose content hash is known stays cached
    after its request frees it; a later request with the same prefix reuses it (a hit), and
    cached blocks nobody holds are evicted least recently used first when blocks run out.

    Approximation: new blocks come from never-cached free blocks before evicting cached ones
    (vLLM pops one free queue in LRU order; the two agree once the cache is warm)."""

    __slots__ = ("_lru", "_plain_free", "_refs", "block_size", "caching", "hit_tokens",
                 "query_tokens", "total")

    def __init__(self, total_blocks: int, block_size: int, caching: bool = False) -> None:
        if total_blocks < 1:
            raise ConfigError("scheduler.num_gpu_blocks", total_blocks,
                              "the KV cache needs at least one block; the model may not fit")
        if block_size < 1:
            raise ConfigError("scheduler.block_size", block_size, "must be >= 1")
        self.total = total_blocks
        self.block_size = block_size
        self.caching = caching
        self._plain_free = total_blocks  # free blocks holding no cached content
        self._refs: dict[int, int] = {}  # cached block key -> requests holding it
        self._lru: OrderedDict[int, None] = OrderedDict()  # cached keys nobody holds
        self.hit_tokens = 0
        self.query_tokens = 0

    @property
    def free(self) -> int:
        """Blocks that can be allocated now (evictable cached blocks included)."""
        return self._plain_free + len(self._lru)

    @property
    def used(self) -> int:
        return self.total - self.free

    @property
    def cached_blocks(self) -> int:
        return len(self._refs) + len(self._lru)

    def held_by(self, holders) -> int:
        """Blocks the given requests hold, shared cached blocks counted once (must equal
        ``used``: the conservation invariant)."""
        return sum(r.blocks - len(r.cached_keys) for r in holders) + len(self._refs)

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    def _take(self, count: int) -> None:
        """Remove ``count`` free blocks: plain ones first, then evict LRU cached ones."""
        plain = min(count, self._plain_free)
        self._plain_free -= plain
        for _ in range(count - plain):
            self._lru.popitem(last=False)

    def allocate(self, req: Request, new_tokens: int, lookahead: int = 0) -> bool:
        """Grow ``req`` to hold ``new_tokens`` more (plus ``lookahead`` slots); False when the
        free blocks do not suffice (nothing changes then)."""
        need = self.blocks_for(req.num_computed + new_tokens + lookahead) - req.blocks
        if need <= 0:
            return True
        if need > self.free:
            return False
        self._take(need)
        req.blocks += need
        return True

    def grow(self, req: Request, tokens: int) -> None:
        """Hold blocks for ``tokens`` tokens (the caller has checked they are free)."""
        need = self.blocks_for(tokens) - req.blocks
        if need > 0:
            self._take(need)
            req.blocks += need

    def release(self, req: Request) -> None:
        """Free a request's blocks; its cached ones stay cached, last block evicted first."""
        private = req.blocks - len(req.cached_keys)
        self._plain_free += private
        for key in reversed(req.cached_keys):
            refs = self._refs[key] - 1
            if refs:
                self._refs[key] = refs
            else:
                del self._refs[key]
                self._lru[key] = None
        req.cached_keys = []
        req.published = 0
        req.blocks = 0

    # --- prefix caching -------------------------------------------------------------------
    def lookup(self, req: Request) -> int:
        """Leading blocks of ``req`` already cached (at most all but its last token, which
        must be recomputed to sample from)."""
        hashes = req.block_hashes
        if not self.caching or hashes is None or req.blocks:
            return 0
        limit = min(len(hashes), (req.prompt_len + req.num_output - 1) // self.block_size)
        hits = 0
        while hits < limit and (int(hashes[hits]) in self._refs or int(hashes[hits]) in
                                self._lru):
            hits += 1
        return hits

    def fits(self, req: Request, hits: int, upto: int, free: int | None = None) -> bool:
        """Could a waiting ``req`` take its first ``hits`` blocks from the cache and hold
        ``upto`` tokens in all, with ``free`` blocks (default: those free now)?"""
        free = self.free if free is None else free
        evictable = sum(1 for k in req.block_hashes[:hits] if int(k) in self._lru) if hits else 0
        return self.blocks_for(upto) - hits <= free - evictable

    def admit(self, req: Request, hits: int, upto: int) -> bool:
        """Give a waiting ``req`` its first ``hits`` blocks from the cache (its computed
        tokens start after them, or where they already were) and room for ``upto`` tokens;
        False (nothing changes) if they do not fit."""
        if not self.fits(req, hits, upto):
            return False
        keys = [int(k) for k in req.block_hashes[:hits]] if hits else []
        for key in keys:
            if key in self._lru:
                del self._lru[key]
                self._refs[key] = 1
            else:
                self._refs[key] += 1
        req.cached_keys = keys
        req.published = hits
        req.blocks = hits
        if self.caching:
            self.query_tokens += req.prompt_len + req.num_output - req.num_computed
            self.hit_tokens += max(hits * self.block_size - req.num_computed, 0)
        req.num_computed = max(req.num_computed, hits * self.block_size)
        self.grow(req, upto)
        return True

    def cache_full_blocks(self, req: Request) -> None:
        """Publish the request's newly completed full blocks under their content keys; a
        block whose content is already cached (computed concurrently by another request)
        stays private to this one, as a duplicate."""
        hashes = req.block_hashes
        if not self.caching or hashes is None:
            return
        full = min(req.num_computed // self.block_size, len(hashes))
        for j in range(req.published, full):
            key = int(hashes[j])
            if key not in self._refs and key not in self._lru:
                self._refs[key] = 1
                req.cached_keys.append(key)
        req.published = max(req.published, full)
